"""Host-side (numpy) layouts: the vision tower's batch of differently sized images, and M-RoPE positions.

The vision tower takes a batch of images in one jitted call. Each image becomes one row of
`windows_per_image * window_patches` patch slots: its attention windows one after another, each window's
patches (in merged-token row-major order, the 4 patches of a merged token together) followed by padding up to
`window_patches`. Then
  * full-attention blocks attend within a row (one image), masking padding slots;
  * window blocks reshape the rows to `[images * windows_per_image, window_patches]` and attend within each;
  * the merger takes every 4 consecutive slots (one merged token); the merged tokens are gathered to the
    decoder's image-token positions by `image_token_slot`.
Rows beyond the real images (image-count bucket) are all padding.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from shuffle_r1_jax.models.qwen2_5_vl.config import Qwen25VLConfig, VisionConfig


class LayoutError(ValueError):
    """Inputs that cannot be laid out: token/feature count mismatch, bad grid, too many images."""


@dataclasses.dataclass(frozen=True)
class VisionBatch:
    """A batch of images laid out for the vision tower (all numpy).

    Attributes:
      patches: `float32[images, slots, patch_dim]` patch rows (zeros in padding slots).
      patch_pos: `int32[images, slots, 2]` (row, column) of each patch in patch units.
      patch_valid: `bool[images, slots]`, False at padding slots.
      windows_per_image: static window count per row; slots = windows_per_image * window_patches.
    """

    patches: np.ndarray
    patch_pos: np.ndarray
    patch_valid: np.ndarray
    windows_per_image: int


@dataclasses.dataclass(frozen=True)
class ImageSlots:
    """Where each image's merged tokens live in the merger output `[images * slots / merge_unit]`.

    Attributes:
      merged_slot: `int32[total_image_tokens]` merger-output index of each image token, in the order the decoder
        consumes image tokens.
      tokens_per_image: `int64[images]` merged tokens of each real image.
    """

    merged_slot: np.ndarray
    tokens_per_image: np.ndarray


def windows_of_grid(grid_h: int, grid_w: int, vision: VisionConfig) -> tuple[int, int]:
    """Number of attention windows along height and width for an image of grid_h x grid_w patches."""
    m, wm = vision.spatial_merge_size, vision.window_merged
    return math.ceil(grid_h // m / wm), math.ceil(grid_w // m / wm)


def check_grid(image_grid_thw: np.ndarray, vision: VisionConfig) -> np.ndarray:
    """Validates an image grid array.

    Args:
      image_grid_thw: `[images, 3]` (t, h, w) patch grid of each image.
      vision: the vision config (spatial_merge_size).

    Returns:
      The grid as `int64[images, 3]`.

    Raises:
      LayoutError: naming the image when t != 1 (videos) or h, w are not positive multiples of
        spatial_merge_size.
    """
    grid = np.asarray(image_grid_thw, dtype=np.int64).reshape(-1, 3)
    for i, (t, h, w) in enumerate(grid):
        if t != 1:
            raise LayoutError(
                f"image_grid_thw[{i}] = {tuple(grid[i])}: temporal size {t} != 1 (videos are not supported)"
            )
        if h <= 0 or w <= 0 or h % vision.spatial_merge_size or w % vision.spatial_merge_size:
            raise LayoutError(
                f"image_grid_thw[{i}] = {tuple(grid[i])}: height and width must be positive multiples of "
                f"spatial_merge_size = {vision.spatial_merge_size}"
            )
    return grid


def layout_images(
    pixel_values: np.ndarray,
    image_grid_thw: np.ndarray,
    vision: VisionConfig,
    *,
    images_bucket: int | None = None,
    windows_bucket: int | None = None,
) -> tuple[VisionBatch, ImageSlots]:
    """Lays out HF-processor output for the vision tower.

    Args:
      pixel_values: `float[total_patches, patch_dim]`, images concatenated, each in merge-block order.
      image_grid_thw: `int[images, 3]`.
      vision: the vision config.
      images_bucket: pad the image count (rows) up to at least this.
      windows_bucket: pad the windows per image up to at least this.

    Returns:
      (`VisionBatch` with max(images, images_bucket, 1) rows of windows_per_image * window_patches slots, where
      windows_per_image is the most windows of any image or `windows_bucket` if larger; `ImageSlots` of the real
      images).

    Raises:
      LayoutError: when the grid is invalid (see `check_grid`) or `pixel_values` does not have the
        `[total_patches, patch_dim]` shape the grid implies.
    """
    grid = check_grid(image_grid_thw, vision)
    pixel_values = np.asarray(pixel_values, dtype=np.float32)
    n_patches = int(grid.prod(-1).sum())
    if pixel_values.ndim != 2 or pixel_values.shape != (n_patches, vision.patch_dim):
        raise LayoutError(
            f"pixel_values has shape {pixel_values.shape}; image_grid_thw needs ({n_patches}, {vision.patch_dim})"
        )
    n_images = len(grid)
    windows = [int(np.prod(windows_of_grid(h, w, vision))) for _, h, w in grid]
    n_win = max(max(windows, default=1), windows_bucket or 0)
    n_rows = max(n_images, images_bucket or 0, 1)
    wp, unit, m, wm = vision.window_patches, vision.merge_unit, vision.spatial_merge_size, vision.window_merged
    slots = n_win * wp

    patches = np.zeros((n_rows, slots, vision.patch_dim), np.float32)
    pos = np.zeros((n_rows, slots, 2), np.int32)
    valid = np.zeros((n_rows, slots), bool)
    merged_slot, tokens_per_image = [], []
    offset = 0
    for img, (_, h, w) in enumerate(grid):
        mh, mw = h // m, w // m
        n_win_w = math.ceil(mw / wm)
        mr, mc = np.meshgrid(np.arange(mh), np.arange(mw), indexing="ij")
        mr, mc = mr.ravel(), mc.ravel()  # merged tokens in row-major (HF output) order
        window = (mr // wm) * n_win_w + mc // wm
        in_window = (mr % wm) * wm + mc % wm
        token_slot = window * (wp // unit) + in_window  # merged-token slot within the row
        k = np.arange(unit)
        patch_slot = (token_slot[:, None] * unit + k).ravel()
        patches[img, patch_slot] = pixel_values[offset : offset + h * w]
        pos[img, patch_slot, 0] = (mr[:, None] * m + k // m).ravel()
        pos[img, patch_slot, 1] = (mc[:, None] * m + k % m).ravel()
        valid[img, patch_slot] = True
        merged_slot.append(img * (slots // unit) + token_slot)
        tokens_per_image.append(mh * mw)
        offset += h * w
    batch = VisionBatch(patches=patches, patch_pos=pos, patch_valid=valid, windows_per_image=n_win)
    image_slots = ImageSlots(
        merged_slot=np.concatenate(merged_slot).astype(np.int32) if merged_slot else np.zeros((0,), np.int32),
        tokens_per_image=np.asarray(tokens_per_image, np.int64),
    )
    return batch, image_slots


def image_token_slots(input_ids: np.ndarray, image_token_id: int, image_slots: ImageSlots) -> np.ndarray:
    """Maps each image-token position of `input_ids` to its merged-token slot.

    Image tokens are filled in reading order (sample by sample, left to right), as HF does.

    Args:
      input_ids: `[batch, length]` token ids.
      image_token_id: the image placeholder token.
      image_slots: the merged-token slots of the laid-out images.

    Returns:
      `int32[batch, length]`, -1 at non-image positions.

    Raises:
      LayoutError: when the number of image tokens differs from the number of image features.
    """
    input_ids = np.asarray(input_ids)
    is_image = input_ids == image_token_id
    n_tokens, n_features = int(is_image.sum()), len(image_slots.merged_slot)
    if n_tokens != n_features:
        raise LayoutError(
            f"image tokens and image features do not match: input_ids has {n_tokens} image tokens "
            f"(id {image_token_id}) but the images give {n_features} features "
            f"(per image: {image_slots.tokens_per_image.tolist()}). Likely cause: the prompt was truncated "
            "below its image tokens (raise max_prompt_length), or image_grid_thw does not belong to these prompts."
        )
    slots = np.full(input_ids.shape, -1, np.int32)
    slots[is_image] = image_slots.merged_slot
    return slots


def mrope_positions(
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    image_grid_thw: np.ndarray | None,
    config: Qwen25VLConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """M-RoPE position ids and rope deltas for a (left- or right-) padded batch.

    Text tokens take a running index on all three rows; an image starting at running index s takes
    (t, h, w) = (s, s + row, s + col) over its merged grid, and text after it resumes at
    s + max(merged_h, merged_w). Padding positions get 0.

    Args:
      input_ids: `[batch, length]` token ids.
      attention_mask: `[batch, length]`, nonzero at valid tokens.
      image_grid_thw: `[images, 3]` for the images in reading order, or None for text only.
      config: the model config (image token id, spatial_merge_size).

    Returns:
      (position_ids `int32[3, batch, length]`, rope_deltas `int32[batch]`) where
      rope_delta = max position + 1 - number of valid tokens, so a token appended after the n-th valid token
      has position n + rope_delta on all three rows.

    Raises:
      LayoutError: when the grid is invalid (see `check_grid`), the image-token runs and the images of
        `image_grid_thw` do not match one to one, or an image has fewer consecutive image tokens than its merged
        grid needs.
    """
    input_ids = np.asarray(input_ids)
    attention_mask = np.asarray(attention_mask).astype(bool)
    m = config.vision.spatial_merge_size
    grids = (
        iter(check_grid(image_grid_thw, config.vision).tolist())
        if image_grid_thw is not None and len(image_grid_thw)
        else iter(())
    )
    batch, length = input_ids.shape
    positions = np.zeros((3, batch, length), np.int32)
    deltas = np.zeros((batch,), np.int32)
    for b in range(batch):
        ids = input_ids[b, attention_mask[b]]
        pos = np.zeros((3, len(ids)), np.int64)
        i, current = 0, 0
        while i < len(ids):
            if ids[i] != config.image_token_id:
                j = i
                while j < len(ids) and ids[j] != config.image_token_id:
                    j += 1
                pos[:, i:j] = current + np.arange(j - i)
                current += j - i
                i = j
                continue
            grid = next(grids, None)
            if grid is None:
                raise LayoutError(f"sample {b}: more image-token runs than images in image_grid_thw")
            _, h, w = grid
            mh, mw = h // m, w // m
            n = mh * mw
            if i + n > len(ids) or np.any(ids[i : i + n] != config.image_token_id):
                raise LayoutError(
                    f"sample {b}: an image of grid {tuple(grid)} needs {n} consecutive image tokens at position {i}; "
                    "the prompt has fewer (truncated prompt or wrong image_grid_thw)"
                )
            rows, cols = np.meshgrid(np.arange(mh), np.arange(mw), indexing="ij")
            pos[0, i : i + n] = current
            pos[1, i : i + n] = current + rows.ravel()
            pos[2, i : i + n] = current + cols.ravel()
            current += max(mh, mw)
            i += n
        positions[:, b, attention_mask[b]] = pos
        deltas[b] = (pos.max() + 1 - len(ids)) if len(ids) else 0
    if next(grids, None) is not None:
        raise LayoutError("image_grid_thw has more images than the image-token runs in input_ids")
    return positions, deltas
