"""Every numeric setting is range-checked when the config resolves: the error names the key and the value."""

import pytest

from shuffle_r1_jax.demo.assets import check_demo_section
from shuffle_r1_jax.demo.config import demo_config
from shuffle_r1_jax.train import settings


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("optim.learning_rate", float("nan"), "optim.learning_rate = nan must be a finite number"),
        ("loss.kl_coef", float("inf"), "loss.kl_coef = inf must be a finite number"),
        ("loss.dual_clip", float("nan"), "loss.dual_clip = nan must be a finite number"),
        ("rl.cppo_prune", -0.5, r"rl.cppo_prune = -0.5 must be in \[0, 1\)"),  # checked whatever the algorithm
        ("distributed.initialization_timeout_s", 0, "distributed.initialization_timeout_s = 0 must be > 0"),
        ("data.max_consecutive_bad_records", -1, "data.max_consecutive_bad_records = -1 must be >= 0"),
        ("data.warn_bad_fraction", 1.5, r"data.warn_bad_fraction = 1.5 must be in \[0, 1\]"),
        ("checkpoint.every", 0, "checkpoint.every = 0 must be >= 1"),
        ("reward.timeout_s", -1.0, "reward.timeout_s = -1.0 must be > 0"),
        ("data.rollout_batch_prompts", 0, "data.rollout_batch_prompts = 0 must be >= 1"),
        ("eval.pass_k", (1, 0), r"eval.pass_k = \(1, 0\) must hold integers >= 1"),
        ("data.video_fps", 0.0, "data.video_fps = 0.0 must be positive"),
        ("data.num_threads", -1, "data.num_threads = -1 must be >= 0"),
        ("data.video_max_frames", 2, "data.video_min_frames = 4 exceeds data.video_max_frames = 2"),
        ("data.video_total_pixels", 0, "data.video_total_pixels = 0 must be at least 1"),
    ],
)
def test_an_out_of_range_value_names_the_key(key, value, message):
    c = demo_config()
    section, name = key.split(".")
    c[section][name] = value
    with pytest.raises(settings.ConfigError, match=message):
        settings.resolve(c, check_inputs=False)


def test_a_tuple_with_a_non_finite_entry_is_named():
    c = demo_config()
    c.demo.difficulty_weights = (0.5, float("inf"), 0.1, 0.1)
    with pytest.raises(settings.ConfigError, match=r"demo.difficulty_weights = \(0.5, inf, 0.1, 0.1\) must be a fin"):
        settings.resolve(c, check_inputs=False)


def test_the_demo_seed_is_checked_before_assets_are_built():
    c = demo_config()
    c.demo.seed = -1
    with pytest.raises(ValueError, match=r"demo.seed = -1 must be in \[0, 2\*\*32\)"):
        check_demo_section(c.demo)
