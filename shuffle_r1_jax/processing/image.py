"""Qwen2.5-VL image preprocessing on the host: smart_resize, normalize, patchify in merge-block order.

Reproduces the layout of the Hugging Face `Qwen2VLImageProcessor` (PIL backend): every image becomes
`grid_h * grid_w` rows of `3 * temporal_patch_size * patch_size**2` (= 1176) float32 values, each row
ordered [channel, frame, row, col]; rows are ordered so that each `merge_size x merge_size` block of
patches is contiguous (block rows, block cols, then the patches inside a block row-major).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from shuffle_r1_jax.processing.image_io import to_rgb

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_ASPECT_RATIO = 200


@dataclasses.dataclass(frozen=True)
class ImagePreprocessConfig:
    """Settings of the Qwen2.5-VL image processor; the defaults are the released model's.

    Attributes:
      min_pixels: the smallest resized area (pixels).
      max_pixels: the largest resized area (pixels).
      patch_size: side of a vision patch (pixels).
      merge_size: side of a block of patches merged into one token.
      temporal_patch_size: frames per patch (a still image is repeated this many times).
      image_mean: per-channel mean of the normalization.
      image_std: per-channel standard deviation of the normalization.
    """

    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 16384
    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD

    @property
    def factor(self) -> int:
        """Both resized sides are multiples of this (patch_size * merge_size = 28)."""
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        """Values per patch row: 3 * temporal_patch_size * patch_size**2 (= 1176)."""
        return 3 * self.temporal_patch_size * self.patch_size * self.patch_size

    def hf_preprocessor_config(self) -> dict:
        """The `preprocessor_config.json` content that makes HF build the same Qwen2-VL image processor."""
        return {
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen2_5_VLProcessor",
            "do_convert_rgb": True,
            "do_resize": True,
            "resample": int(Image.Resampling.BICUBIC),
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
            "patch_size": self.patch_size,
            "merge_size": self.merge_size,
            "temporal_patch_size": self.temporal_patch_size,
        }


def load_image_config(path: str | os.PathLike) -> ImagePreprocessConfig:
    """The settings in a checkpoint's `preprocessor_config.json`.

    min/max pixels come from `min_pixels` / `max_pixels` when present (they override `size`, as in the HF
    processor), else from `size.shortest_edge` / `size.longest_edge`, else the defaults; every other key
    missing from the file takes its default too.

    Args:
      path: the checkpoint directory or the json file itself.

    Returns:
      The `ImagePreprocessConfig`.

    Raises:
      FileNotFoundError: naming the file, when it is missing.
    """
    path = os.fspath(path)
    file = os.path.join(path, "preprocessor_config.json") if os.path.isdir(path) else path
    if not os.path.exists(file):
        raise FileNotFoundError(f"no preprocessor_config.json at {file!r}")
    with open(file) as f:
        raw = json.load(f)
    size = raw.get("size") or {}
    default = ImagePreprocessConfig()
    return ImagePreprocessConfig(
        min_pixels=int(raw.get("min_pixels") or size.get("shortest_edge") or default.min_pixels),
        max_pixels=int(raw.get("max_pixels") or size.get("longest_edge") or default.max_pixels),
        patch_size=int(raw.get("patch_size", default.patch_size)),
        merge_size=int(raw.get("merge_size", default.merge_size)),
        temporal_patch_size=int(raw.get("temporal_patch_size", default.temporal_patch_size)),
        image_mean=tuple(float(v) for v in raw.get("image_mean", default.image_mean)),
        image_std=tuple(float(v) for v in raw.get("image_std", default.image_std)),
    )


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = 56 * 56,
    max_pixels: int = 28 * 28 * 16384,
) -> tuple[int, int]:
    """The (height, width) an image is resized to: sides multiples of `factor`, area near [min, max] pixels.

    Each side is rounded to the nearest multiple of `factor` (Python `round`, half to even). If the area
    then exceeds `max_pixels`, both sides are scaled by 1/sqrt(area / max_pixels) (area of the original size)
    and floored to a multiple of `factor` (never below `factor`); if it is below `min_pixels` they are scaled
    up by sqrt(min_pixels / area) and ceiled.

    Args:
      height: the original height in pixels.
      width: the original width in pixels.
      factor: both resized sides are multiples of it (patch_size * merge_size).
      min_pixels: the smallest target area.
      max_pixels: the largest target area.

    Returns:
      (height, width) of the resized image.

    Raises:
      ValueError: a side is not positive, or the aspect ratio exceeds 200.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image has no pixels: height={height}, width={width}")
    aspect = max(height, width) / min(height, width)
    if aspect > MAX_ASPECT_RATIO:
        raise ValueError(
            f"aspect ratio {aspect:.1f} of image height={height}, width={width} exceeds {MAX_ASPECT_RATIO}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def image_grid(
    height: int, width: int, config: ImagePreprocessConfig = ImagePreprocessConfig()
) -> tuple[int, int, int]:
    """The (t, h, w) patch grid of an image of the given original size: (1, H / patch, W / patch)."""
    resized_h, resized_w = smart_resize(height, width, config.factor, config.min_pixels, config.max_pixels)
    return 1, resized_h // config.patch_size, resized_w // config.patch_size


def num_image_tokens(height: int, width: int, config: ImagePreprocessConfig = ImagePreprocessConfig()) -> int:
    """Number of `<|image_pad|>` tokens (merged patches) for an image of the given original size."""
    t, h, w = image_grid(height, width, config)
    return t * h * w // (config.merge_size**2)


def normalize(pixels: np.ndarray, config: ImagePreprocessConfig = ImagePreprocessConfig()) -> np.ndarray:
    """Rescales and normalizes pixels: x / 255 (computed in float64), then (x - mean) / std in float32.

    Args:
      pixels: `uint8[H, W, 3]` RGB pixels.
      config: supplies image_mean and image_std.

    Returns:
      `float32[H, W, 3]`.
    """
    scaled = (pixels.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.asarray(config.image_mean, dtype=np.float32)
    std = np.asarray(config.image_std, dtype=np.float32)
    return (scaled - mean) / std


def patchify_frames(frames: np.ndarray, config: ImagePreprocessConfig = ImagePreprocessConfig()) -> np.ndarray:
    """Cuts frames into patch rows: temporal patch by temporal patch, each in merge-block order (see the module
    docstring); `temporal_patch_size` consecutive frames form one temporal patch.

    Args:
      frames: `float32[T, H, W, C]`, T a multiple of temporal_patch_size, H and W multiples of
        patch_size * merge_size.
      config: the patch, merge and temporal sizes.

    Returns:
      `float32[T / temporal * H * W / patch**2, C * temporal * patch**2]`, each row ordered
      [channel, frame, row, col].

    Raises:
      ValueError: T, H or W is not a multiple of its factor.
    """
    frame_count, height, width, channels = frames.shape
    p, m, t = config.patch_size, config.merge_size, config.temporal_patch_size
    if height % (p * m) or width % (p * m):
        raise ValueError(f"frame size {height}x{width} is not a multiple of {p * m}")
    if frame_count % t:
        raise ValueError(f"{frame_count} frames is not a multiple of temporal_patch_size = {t}")
    blocks = frames.reshape(frame_count // t, t, height // (p * m), m, p, width // (p * m), m, p, channels)
    # -> (temporal patch, block_row, block_col, row_in_block, col_in_block, channel, frame, pixel_row, pixel_col)
    blocks = blocks.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)
    return blocks.reshape((frame_count // t) * (height // p) * (width // p), channels * t * p * p)


def patchify(image: np.ndarray, config: ImagePreprocessConfig = ImagePreprocessConfig()) -> np.ndarray:
    """Cuts one image into patch rows (`patchify_frames` of the image repeated `temporal_patch_size` times).

    Args:
      image: `float32[H, W, C]`, H and W multiples of patch_size * merge_size.
      config: the patch, merge and temporal sizes.

    Returns:
      `float32[H * W / patch**2, C * temporal * patch**2]`, each row ordered [channel, frame, row, col].

    Raises:
      ValueError: H or W is not a multiple of patch_size * merge_size.
    """
    return patchify_frames(np.repeat(image[None], config.temporal_patch_size, axis=0), config)


def preprocess_image(
    image: Image.Image, config: ImagePreprocessConfig = ImagePreprocessConfig()
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Converts to RGB, resizes (`smart_resize`, bicubic), normalizes and patchifies one PIL image.

    Returns:
      (patches, grid_thw): patches `float32[grid_h * grid_w, patch_dim]` (patch_dim = 1176 with the default
      settings), grid_thw the tuple (1, grid_h, grid_w).

    Raises:
      ValueError: the image cannot be resized (see `smart_resize`).
    """
    rgb = to_rgb(image)
    height, width = smart_resize(rgb.height, rgb.width, config.factor, config.min_pixels, config.max_pixels)
    resized = rgb.resize((width, height), resample=Image.Resampling.BICUBIC)
    pixels = normalize(np.asarray(resized, dtype=np.uint8), config)
    return patchify(pixels, config), (1, height // config.patch_size, width // config.patch_size)


def preprocess_images(
    images: Sequence[Image.Image], config: ImagePreprocessConfig = ImagePreprocessConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """Preprocesses a list of PIL images, as the HF Qwen2-VL image processor does.

    Patches of all images are concatenated in order, exactly as the HF processor returns them; an empty list
    gives arrays with zero rows.

    Returns:
      (pixel_values, image_grid_thw): pixel_values `float32[total_patches, patch_dim]` (patch_dim = 1176 with
      the default settings), image_grid_thw `int64[n_images, 3]`.

    Raises:
      ValueError: an image cannot be resized (see `smart_resize`).
    """
    patches, grids = [], []
    for image in images:
        rows, grid = preprocess_image(image, config)
        patches.append(rows)
        grids.append(grid)
    if not patches:
        return np.zeros((0, config.patch_dim), np.float32), np.zeros((0, 3), np.int64)
    return np.concatenate(patches, axis=0), np.asarray(grids, dtype=np.int64)
