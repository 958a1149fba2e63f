"""The demo section's checks, before any asset is built."""

import pytest

from shuffle_r1_jax.demo.assets import check_demo_section
from shuffle_r1_jax.demo.config import demo_config


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("task_family", "dots", "demo.task_family / demo.difficulty_weights: task family 'dots' is unknown"),
        ("difficulty_weights", (0.5, 0.5), "must be 4 non-negative shares"),
        ("difficulty_weights", (0, 0, 0, 0), "must be 4 non-negative shares, not all 0"),
        ("preset", "huge", "demo.preset = 'huge'"),
        ("image_size", 20, "demo.image_size = 20 must be >= 28"),
    ],
)
def test_a_bad_demo_value_names_its_key(key, value, message):
    d = demo_config().demo
    d[key] = value
    with pytest.raises(ValueError, match=message):
        check_demo_section(d)


def test_a_video_family_needs_even_frames():
    d = demo_config().demo
    d.task_family, d.image_size = "color_over_time", 57
    with pytest.raises(ValueError, match="demo.image_size = 57 must be even for a video family"):
        check_demo_section(d)
    d.image_size = 56
    check_demo_section(d)


def test_the_demo_section_passes():
    check_demo_section(demo_config().demo)
