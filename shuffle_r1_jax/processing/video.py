"""Qwen2.5-VL video preprocessing on the host: how many frames, which ones, their size, and the patch rows.

The rules are those of qwen-vl-utils (the library the Qwen2.5-VL release reads videos with, and EasyR1 with its own
pixel bounds) followed by the Hugging Face Qwen2-VL video processor:
  * frames: n = total_frames / video_fps * fps, clamped to [min_frames, min(max_frames, total_frames)] (both
    bounds rounded to the temporal patch size, the lower one up, the upper one down), then floored to a multiple
    of the temporal patch size; frame indices are linspace(0, total_frames - 1, n) rounded (half to even); the
    sampled rate is n / total_frames * video_fps;
  * size: `smart_resize` with min_pixels and max_pixels = min(config.max_pixels,
    max(min(768 * 28 * 28, total_pixels / n * 2), int(min_pixels * 1.05))), so longer videos get smaller frames;
  * pixels: each frame resized (bicubic), rescaled and normalized as images are; a frame count that is not a
    multiple of the temporal patch size is padded by repeating the last frame; every `temporal_patch_size`
    consecutive frames form one temporal patch, so the grid is (ceil(n / 2), H / 14, W / 14) and one temporal patch
    spans second_per_grid_t = temporal_patch_size / sampled fps seconds.
Frames are resized with PIL's bicubic filter, as images are; qwen-vl-utils resizes with torchvision's
antialiased bicubic, which follows the same kernel but may round a pixel one level differently.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image

from shuffle_r1_jax.processing.image import ImagePreprocessConfig, normalize, patchify_frames, smart_resize

VIDEO_FRAME_MAX_PIXELS = 768 * 28 * 28  # qwen-vl-utils' per-frame cap, whatever max_pixels says


@dataclasses.dataclass(frozen=True)
class VideoPreprocessConfig:
    """How videos are sampled and sized; the defaults are qwen-vl-utils'.

    Attributes:
      fps: frames sampled per second of video.
      min_frames: the fewest frames sampled (rounded up to the temporal patch size).
      max_frames: the most frames sampled (rounded down to the temporal patch size).
      min_pixels: the smallest resized frame area.
      max_pixels: the largest resized frame area (also capped by `total_pixels` and 768 * 28 * 28).
      total_pixels: the pixel budget of the whole video: frame area at most total_pixels / frames * 2.

    Raises:
      ValueError: naming the field as its `data.video_*` config key, when fps is not positive, a frame count
        or pixel bound is below 1, max_frames is below 2, or a lower bound exceeds its upper bound.
    """

    fps: float = 2.0
    min_frames: int = 4
    max_frames: int = 768
    min_pixels: int = 128 * 28 * 28
    max_pixels: int = 768 * 28 * 28
    total_pixels: int = int(128000 * 28 * 28 * 0.9)

    def __post_init__(self):
        if not self.fps > 0:
            raise ValueError(f"video_fps = {self.fps} must be positive")
        for name in ("min_frames", "max_frames", "min_pixels", "max_pixels", "total_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"video_{name} = {getattr(self, name)} must be at least 1")
        if self.min_frames > self.max_frames:
            raise ValueError(f"video_min_frames = {self.min_frames} exceeds video_max_frames = {self.max_frames}")
        if self.max_frames < 2:
            raise ValueError(f"video_max_frames = {self.max_frames} must be at least 2 (one temporal patch)")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"video_min_pixels = {self.min_pixels} exceeds video_max_pixels = {self.max_pixels}")


@dataclasses.dataclass(frozen=True)
class DecodedVideo:
    """The sampled frames of one video.

    Attributes:
      frames: `uint8[n, H, W, 3]` RGB frames, in time order.
      sample_fps: frames sampled per second of video (n / total_frames * video_fps).
      total_frames: frames in the video.
      video_fps: the video's average frame rate.
    """

    frames: np.ndarray
    sample_fps: float
    total_frames: int
    video_fps: float


@dataclasses.dataclass(frozen=True)
class PreprocessedVideo:
    """One video as the model takes it.

    Attributes:
      pixel_values: `float32[t * h * w, patch_dim]` patch rows, temporal patch by temporal patch.
      grid_thw: (t, h, w): temporal patches and the patch grid of a frame.
      second_per_grid_t: seconds of video one temporal patch spans.
      frame_size: (height, width) of the original frames.
    """

    pixel_values: np.ndarray
    grid_thw: tuple[int, int, int]
    second_per_grid_t: float
    frame_size: tuple[int, int]


def sampled_frame_count(total_frames: int, video_fps: float, config: VideoPreprocessConfig, factor: int = 2) -> int:
    """How many frames to sample from a video (the module docstring's rule).

    Args:
      total_frames: frames in the video.
      video_fps: the video's frame rate.
      config: the sampling settings.
      factor: the temporal patch size; the count is a multiple of it.

    Returns:
      The frame count, a multiple of `factor` in [factor, total_frames].

    Raises:
      ValueError: naming the values, when the video has fewer than `factor` frames or no positive frame rate, or
        `config.max_frames` leaves fewer than `factor`.
    """
    if total_frames < factor:
        raise ValueError(f"the video has {total_frames} frames; at least {factor} are needed")
    if not video_fps > 0:
        raise ValueError(f"the video's frame rate {video_fps} is not positive")
    min_frames = math.ceil(config.min_frames / factor) * factor
    max_frames = math.floor(min(config.max_frames, total_frames) / factor) * factor
    wanted = total_frames / video_fps * config.fps
    count = math.floor(min(max(wanted, min_frames), max_frames, total_frames) / factor) * factor
    if count < factor:
        raise ValueError(f"video_max_frames = {config.max_frames} leaves fewer than {factor} frames to sample")
    return count


def sampled_frame_indices(total_frames: int, count: int) -> np.ndarray:
    """`int64[count]`: `count` frame indices spread evenly over [0, total_frames - 1], rounded half to even."""
    return np.round(np.linspace(0, total_frames - 1, count)).astype(np.int64)


def video_frame_size(
    height: int, width: int, frames: int, config: VideoPreprocessConfig, patches: ImagePreprocessConfig
) -> tuple[int, int]:
    """The (height, width) every frame of a video of `frames` sampled frames is resized to.

    Raises:
      ValueError: the frame cannot be resized (see `smart_resize`).
    """
    budget = max(
        min(VIDEO_FRAME_MAX_PIXELS, config.total_pixels / frames * patches.temporal_patch_size),
        int(config.min_pixels * 1.05),
    )
    return smart_resize(height, width, patches.factor, config.min_pixels, min(config.max_pixels, budget))


def preprocess_video(
    frames: np.ndarray,
    sample_fps: float,
    config: VideoPreprocessConfig = VideoPreprocessConfig(),
    patches: ImagePreprocessConfig = ImagePreprocessConfig(),
) -> PreprocessedVideo:
    """Resizes, normalizes and patchifies the sampled frames of one video.

    Args:
      frames: `uint8[n, H, W, 3]` RGB frames, already sampled (`sampled_frame_indices`).
      sample_fps: the rate the frames were sampled at (frames per second of video).
      config: the size limits.
      patches: patch, merge and temporal sizes, mean and std (the checkpoint's image settings).

    Returns:
      The `PreprocessedVideo`.

    Raises:
      ValueError: naming the values, when frames is not `[n, H, W, 3]` with n >= 1, sample_fps is not positive,
        or the frame cannot be resized.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"video frames must be [frames, height, width, 3] with frames >= 1; got {frames.shape}")
    if not sample_fps > 0:
        raise ValueError(f"sample_fps = {sample_fps} must be positive")
    n, height, width, _ = frames.shape
    size_h, size_w = video_frame_size(height, width, n, config, patches)
    resized = np.stack(
        [
            normalize(
                np.asarray(Image.fromarray(f.astype(np.uint8)).resize((size_w, size_h), Image.Resampling.BICUBIC)),
                patches,
            )
            for f in frames
        ]
    )
    step = patches.temporal_patch_size
    padded = np.concatenate([resized, np.repeat(resized[-1:], -n % step, axis=0)])
    grid = (len(padded) // step, size_h // patches.patch_size, size_w // patches.patch_size)
    return PreprocessedVideo(
        pixel_values=patchify_frames(padded, patches),
        grid_thw=grid,
        second_per_grid_t=step / sample_fps,
        frame_size=(height, width),
    )
