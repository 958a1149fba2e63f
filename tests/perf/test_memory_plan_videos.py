"""The memory planner sizes a batch with videos: their grid by hand, the extra vision rows in the rollout batch."""

import pytest

from shuffle_r1_jax.perf import memory_plan as mp
from tests.perf.test_memory_plan import small_settings, tiny_model_config

IMAGES = mp.DataShapes(images_per_prompt=1, image_tokens=16)
# 2 s at 4 fps = 8 frames, sampled at 2 fps: 4 frames = 2 temporal patches; 56 x 84 fits [784, 4704] pixels: 4 x 6
WITH_VIDEO = mp.DataShapes(
    images_per_prompt=1,
    image_tokens=16,
    videos_per_prompt=1,
    video_seconds=2.0,
    video_size=(56, 84),
    video_source_fps=4.0,
)
VIDEO_KEYS = dict(data__video_min_pixels=28 * 28, data__video_max_pixels=28 * 28 * 6)


def test_videos_add_one_vision_row_per_temporal_patch():
    settings = small_settings(**VIDEO_KEYS)
    config = tiny_model_config()
    assert WITH_VIDEO.video_grid(config, settings.data.video) == (2, 4, 6)
    quiet = dict(model_name="tiny", programs=("image_features",), log=lambda _: None)
    images = mp.plan_memory(settings, config, data=IMAGES, **quiet)
    videos = mp.plan_memory(settings, config, data=WITH_VIDEO, **quiet)
    assert videos.program("image_features").stats is not None, videos.program("image_features").error
    # 8 prompts x 2 temporal patches = 16 more rows over the 4 batch shards, each of the image's 64 patch slots
    # (a 4 x 4 merged image has 2 x 2 windows of 16 patches; a 2 x 3 merged frame only 1 x 2): patches (fp32),
    # (row, column) (int32) and the valid flag (bool); and the frozen tower's bf16 features of their 16 merged slots
    hidden = config.text.hidden_size
    assert videos.rollouts - images.rollouts == 16 // 4 * (64 * (1176 * 4 + 2 * 4 + 1) + 64 // 4 * hidden * 2)
    assert videos.video_grid == (2, 4, 6)
    assert "1 video(s) of 2 s at 56x84 (2 temporal patches of 4x6 patches, 12 tokens)" in mp.format_plan(videos)


def test_videos_that_do_not_fit_are_named():
    settings = small_settings(**VIDEO_KEYS)
    long = mp.DataShapes(images_per_prompt=0, videos_per_prompt=1, video_seconds=60.0, video_size=(56, 84))
    with pytest.raises(ValueError, match=r"1 video\(s\) of 60.0 s at \(56, 84\) \(360 tokens in all\) do not fit"):
        mp.plan_memory(settings, tiny_model_config(), model_name="tiny", data=long, programs=(), log=lambda _: None)
    short = mp.DataShapes(images_per_prompt=0, videos_per_prompt=1, video_seconds=0.01)
    with pytest.raises(ValueError, match="the video has 0 frames"):
        mp.plan_memory(settings, tiny_model_config(), model_name="tiny", data=short, programs=(), log=lambda _: None)
