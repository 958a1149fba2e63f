"""Video preprocessing against hand-computed cases and an independent reference: frames read back with decord,
the qwen-vl-utils sampling and sizing rules and the HF video processor's patch order written out here again."""

import math

import decord
import numpy as np
import pytest
from PIL import Image

from shuffle_r1_jax.processing import video_io
from shuffle_r1_jax.processing.image import ImagePreprocessConfig
from shuffle_r1_jax.processing.video import (
    VideoPreprocessConfig,
    preprocess_video,
    sampled_frame_count,
    sampled_frame_indices,
    video_frame_size,
)
from shuffle_r1_jax.processing.video_io import VideoDecodeError, read_video, write_video

PATCHES = ImagePreprocessConfig()


@pytest.mark.parametrize(
    "total, video_fps, expected",
    [
        (100, 25.0, 8),  # 4 s at 2 fps
        (7, 30.0, 4),  # 0.47 wanted, raised to min_frames
        (3, 30.0, 2),  # the video caps the count: floor(3 / 2) * 2
        (3000, 30.0, 200),
        (20000, 10.0, 768),  # max_frames
        (41, 4.0, 20),  # 20.5 wanted, floored to the temporal patch size
    ],
)
def test_frame_count_by_hand(total, video_fps, expected):
    assert sampled_frame_count(total, video_fps, VideoPreprocessConfig()) == expected


def test_frame_indices_and_sizes_by_hand():
    np.testing.assert_array_equal(sampled_frame_indices(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(sampled_frame_indices(8, 4), [0, 2, 5, 7])  # 2.33 and 4.67
    np.testing.assert_array_equal(sampled_frame_indices(6, 5), [0, 1, 2, 4, 5])  # 2.5 -> 2 (half to even)
    config = VideoPreprocessConfig()
    # 4 frames: the 768 * 28 * 28 cap binds; 480 x 640 rounds to 476 x 644 inside it
    assert video_frame_size(480, 640, 4, config, PATCHES) == (476, 644)
    # 768 frames: 128000 * 784 * 0.9 / 768 * 2 = 235200 pixels a frame; sqrt(307200 / 235200) scales to 420 x 560
    assert video_frame_size(480, 640, 768, config, PATCHES) == (420, 560)
    # a low max_pixels wins over the budget: sqrt(307200 / 78400) scales to 224 x 308
    low = VideoPreprocessConfig(min_pixels=28 * 28 * 50, max_pixels=28 * 28 * 100)
    assert video_frame_size(480, 640, 4, low, PATCHES) == (224, 308)
    # a tiny total budget is floored at min_pixels * 1.05 = 164640: sqrt(307200 / 164640) scales to 336 x 448
    tiny = VideoPreprocessConfig(min_pixels=28 * 28 * 200, total_pixels=28 * 28)
    assert video_frame_size(480, 640, 4, tiny, PATCHES) == (336, 448)


def test_frame_rules_reject_bad_input():
    with pytest.raises(ValueError, match="has 1 frames; at least 2"):
        sampled_frame_count(1, 30.0, VideoPreprocessConfig())
    with pytest.raises(ValueError, match="frame rate 0.0 is not positive"):
        sampled_frame_count(10, 0.0, VideoPreprocessConfig())
    with pytest.raises(ValueError, match="video_fps = 0"):
        VideoPreprocessConfig(fps=0)
    with pytest.raises(ValueError, match="video_min_frames = 10 exceeds video_max_frames = 4"):
        VideoPreprocessConfig(min_frames=10, max_frames=4)
    with pytest.raises(ValueError, match="video_max_frames = 1 must be at least 2"):
        VideoPreprocessConfig(min_frames=1, max_frames=1)
    with pytest.raises(ValueError, match="video_min_pixels = 5000 exceeds video_max_pixels = 4000"):
        VideoPreprocessConfig(min_pixels=5000, max_pixels=4000)
    with pytest.raises(ValueError, match="video_max_frames = 2 leaves fewer than 4 frames"):
        sampled_frame_count(100, 30.0, VideoPreprocessConfig(min_frames=1, max_frames=2), factor=4)
    with pytest.raises(ValueError, match=r"frames must be \[frames, height, width, 3\]"):
        preprocess_video(np.zeros((3, 28, 28), np.uint8), 2.0)


def _reference_count(total, video_fps, config):
    lower = 2 * math.ceil(config.min_frames / 2)
    upper = 2 * math.floor(min(config.max_frames, total) / 2)
    return 2 * math.floor(min(min(max(total / video_fps * config.fps, lower), upper), total) / 2)


def _reference_size(height, width, frames, config):
    cap = max(min(768 * 28 * 28, config.total_pixels / frames * 2), int(config.min_pixels * 1.05))
    top, bottom = min(config.max_pixels, cap), config.min_pixels
    h, w = round(height / 28) * 28, round(width / 28) * 28
    if h * w > top:
        beta = math.sqrt(height * width / top)
        h, w = max(28, math.floor(height / beta / 28) * 28), max(28, math.floor(width / beta / 28) * 28)
    elif h * w < bottom:
        beta = math.sqrt(bottom / (height * width))
        h, w = math.ceil(height * beta / 28) * 28, math.ceil(width * beta / 28) * 28
    return h, w


def _reference_pixels(frames, size):
    """Resize, rescale, normalize; pad to an even count with the last frame; the HF video processor's patch order:
    (t, tp, C, gh/2, 2, 14, gw/2, 2, 14) permuted to (t, gh/2, gw/2, 2, 2, C, tp, 14, 14)."""
    h, w = size
    mean, std = np.asarray(PATCHES.image_mean, np.float32), np.asarray(PATCHES.image_std, np.float32)
    out = []
    for f in frames:
        resized = np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BICUBIC)).astype(np.float64) / 255
        out.append(((resized.astype(np.float32) - mean) / std).transpose(2, 0, 1))  # C, H, W
    if len(out) % 2:
        out.append(out[-1])
    video = np.stack(out)
    t, gh, gw = len(video) // 2, h // 14, w // 14
    patches = video.reshape(t, 2, 3, gh // 2, 2, 14, gw // 2, 2, 14).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return patches.reshape(t * gh * gw, 3 * 2 * 14 * 14), (t, gh, gw)


@pytest.mark.parametrize(
    "frames, height, width, fps, config",
    [
        (9, 50, 38, 4.0, VideoPreprocessConfig(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 6)),  # down to 56 x 56
        (31, 66, 94, 10.0, VideoPreprocessConfig(fps=3.0, min_pixels=28 * 28 * 12, max_pixels=28 * 28 * 20)),
        (5, 30, 44, 25.0, VideoPreprocessConfig(min_pixels=28 * 28 * 3, max_pixels=28 * 28 * 8)),  # min_frames: 4
    ],
)
def test_read_and_preprocess_match_the_reference(tmp_path, frames, height, width, fps, config):
    rng = np.random.default_rng(frames)
    clip = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    path = tmp_path / "clip.mkv"
    write_video(path, clip, fps, codec="ffv1")

    reader = decord.VideoReader(str(path))
    total, video_fps = len(reader), reader.get_avg_fps()
    count = _reference_count(total, video_fps, config)
    indices = np.round(np.linspace(0, total - 1, count)).astype(int)
    reference_frames = reader.get_batch(indices.tolist()).asnumpy()
    size = _reference_size(height, width, count, config)
    ref_pixels, ref_grid = _reference_pixels(reference_frames, size)

    decoded = read_video(path, config)
    assert decoded.total_frames == total == frames and decoded.video_fps == pytest.approx(video_fps)
    np.testing.assert_array_equal(decoded.frames, reference_frames)
    assert decoded.sample_fps == pytest.approx(count / total * video_fps)
    video = preprocess_video(decoded.frames, decoded.sample_fps, config, PATCHES)
    assert video.grid_thw == ref_grid and video.frame_size == (height, width)
    assert video.second_per_grid_t == pytest.approx(2 / (count / total * video_fps))
    np.testing.assert_allclose(video.pixel_values, ref_pixels, rtol=0, atol=1e-6)


def test_an_odd_frame_count_repeats_the_last_frame():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 56, 84, 3), dtype=np.uint8)
    config = VideoPreprocessConfig(min_pixels=28 * 28, max_pixels=28 * 28 * 6)
    video = preprocess_video(frames, 2.0, config, PATCHES)
    ref_pixels, ref_grid = _reference_pixels(frames, (56, 84))
    assert video.grid_thw == ref_grid == (3, 4, 6)
    np.testing.assert_allclose(video.pixel_values, ref_pixels, rtol=0, atol=1e-6)
    last = video.pixel_values[-24:].reshape(24, 3, 2, 196)
    np.testing.assert_array_equal(last[:, :, 0], last[:, :, 1])  # both frames of the last temporal patch alike


def test_bad_videos_raise_a_decode_error_naming_the_source(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    path = tmp_path / "clip.mkv"
    write_video(path, rng.integers(0, 256, (12, 28, 28, 3), dtype=np.uint8), 6.0, codec="ffv1")
    data = path.read_bytes()
    with pytest.raises(VideoDecodeError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(VideoDecodeError, match="<20 bytes>"):
        read_video(b"definitely not video")
    with pytest.raises(VideoDecodeError, match="neither bytes nor path"):
        read_video({"bytes": None, "path": None})
    single = tmp_path / "single.mkv"
    write_video(single, rng.integers(0, 256, (1, 28, 28, 3), dtype=np.uint8), 6.0, codec="ffv1")
    with pytest.raises(VideoDecodeError, match="has 1 frames; at least 2"):
        read_video(single)
    text = tmp_path / "notes.mp4"
    text.write_text("hello")
    with pytest.raises(VideoDecodeError, match="notes.mp4"):
        read_video(text)
    assert read_video({"bytes": data, "path": "ignored.mkv"}).total_frames == 12
    with pytest.raises(VideoDecodeError, match="<200 bytes>"):
        read_video(data[:200])  # the header alone
    # a container that lists more frames than its stream decodes to
    monkeypatch.setattr(video_io, "_count_and_rate", lambda source: (20, 6.0))
    with pytest.raises(VideoDecodeError, match="decodes to 12 frames, but its container lists more"):
        read_video(path)
