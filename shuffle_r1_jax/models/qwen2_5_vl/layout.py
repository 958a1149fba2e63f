"""Host-side (numpy) layouts: the vision tower's batch of images and video frames, and M-RoPE positions.

A vision item is an image (grid t = 1) or a video (grid t >= 1, one temporal patch of `temporal_patch_size`
frames per t). The vision tower treats each temporal patch of a video exactly like an image of the video's
(h, w) grid: full attention within it, windows within it, 2D rotary over (row, column) alone. So the layout
gives every image and every temporal patch of every video one row of the vision batch.

Each row has `windows_per_row * window_patches` patch slots: its attention windows one after another, each
window's patches (in merged-token row-major order, the 4 patches of a merged token together) followed by padding
up to `window_patches`. Then
  * full-attention blocks attend within a row, masking padding slots;
  * window blocks reshape the rows to `[rows * windows_per_row, window_patches]` and attend within each;
  * the merger takes every 4 consecutive slots (one merged token); the merged tokens are gathered to the
    decoder's image- and video-token positions by `vision_token_slots`.
Rows beyond the real ones (row-count bucket) are all padding.
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
    """Images and video temporal patches laid out for the vision tower (all numpy).

    Attributes:
      patches: `float32[rows, slots, patch_dim]` patch rows (zeros in padding slots).
      patch_pos: `int32[rows, slots, 2]` (row, column) of each patch in patch units.
      patch_valid: `bool[rows, slots]`, False at padding slots.
      windows_per_row: static window count per row; slots = windows_per_row * window_patches.
    """

    patches: np.ndarray
    patch_pos: np.ndarray
    patch_valid: np.ndarray
    windows_per_row: int


@dataclasses.dataclass(frozen=True)
class VisionSlots:
    """Where each vision item's merged tokens live in the merger output `[rows * slots / merge_unit]`.

    Attributes:
      merged_slot: `int32[total_vision_tokens]` merger-output index of each merged token, items in order, and
        within an item in the order the decoder consumes its tokens (temporal patch, row, column).
      tokens_per_item: `int64[items]` merged tokens of each item (t * h * w / merge_unit).
    """

    merged_slot: np.ndarray
    tokens_per_item: np.ndarray


def windows_of_grid(grid_h: int, grid_w: int, vision: VisionConfig) -> tuple[int, int]:
    """Number of attention windows along height and width for an image of grid_h x grid_w patches."""
    m, wm = vision.spatial_merge_size, vision.window_merged
    return math.ceil(grid_h // m / wm), math.ceil(grid_w // m / wm)


def check_grid(grid_thw: np.ndarray, vision: VisionConfig, name: str = "image_grid_thw") -> np.ndarray:
    """Validates a grid array of images (t must be 1) or videos (t >= 1).

    Args:
      grid_thw: `[items, 3]` (t, h, w) patch grid of each item.
      vision: the vision config (spatial_merge_size).
      name: the array's name for the messages; "image_grid_thw" also requires t = 1.

    Returns:
      The grid as `int64[items, 3]`.

    Raises:
      LayoutError: naming the item when t is not 1 for an image (or below 1 for a video), or h, w are not
        positive multiples of spatial_merge_size.
    """
    grid = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
    for i, (t, h, w) in enumerate(grid):
        if name == "image_grid_thw" and t != 1:
            raise LayoutError(
                f"{name}[{i}] = {tuple(grid[i])}: temporal size {t} != 1 (a video goes in video_grid_thw)"
            )
        if t < 1:
            raise LayoutError(f"{name}[{i}] = {tuple(grid[i])}: temporal size {t} must be at least 1")
        if h <= 0 or w <= 0 or h % vision.spatial_merge_size or w % vision.spatial_merge_size:
            raise LayoutError(
                f"{name}[{i}] = {tuple(grid[i])}: height and width must be positive multiples of "
                f"spatial_merge_size = {vision.spatial_merge_size}"
            )
    return grid


def layout_vision(
    pixel_values: np.ndarray,
    grid_thw: np.ndarray,
    vision: VisionConfig,
    *,
    rows_bucket: int | None = None,
    windows_bucket: int | None = None,
) -> tuple[VisionBatch, VisionSlots]:
    """Lays out HF-processor output (images, videos, or both concatenated) for the vision tower.

    Args:
      pixel_values: `float[total_patches, patch_dim]`, items concatenated, each in (temporal patch,
        merge-block) order as the HF image and video processors emit them.
      grid_thw: `int[items, 3]` (t, h, w) of each item.
      vision: the vision config.
      rows_bucket: pad the row count (images plus video temporal patches) up to at least this.
      windows_bucket: pad the windows per row up to at least this.

    Returns:
      (`VisionBatch` with max(rows, rows_bucket, 1) rows of windows_per_row * window_patches slots, where
      windows_per_row is the most windows of any item or `windows_bucket` if larger; `VisionSlots` of the
      real items).

    Raises:
      LayoutError: when the grid is invalid (see `check_grid`) or `pixel_values` does not have the
        `[total_patches, patch_dim]` shape the grid implies.
    """
    grid = check_grid(grid_thw, vision, "grid_thw")
    pixel_values = np.asarray(pixel_values, dtype=np.float32)
    n_patches = int(grid.prod(-1).sum())
    if pixel_values.ndim != 2 or pixel_values.shape != (n_patches, vision.patch_dim):
        raise LayoutError(
            f"pixel_values has shape {pixel_values.shape}; the grids need ({n_patches}, {vision.patch_dim})"
        )
    windows = [int(np.prod(windows_of_grid(h, w, vision))) for _, h, w in grid]
    n_win = max(max(windows, default=1), windows_bucket or 0)
    n_rows = max(int(grid[:, 0].sum()), rows_bucket or 0, 1)
    wp, unit, m, wm = vision.window_patches, vision.merge_unit, vision.spatial_merge_size, vision.window_merged
    slots = n_win * wp

    patches = np.zeros((n_rows, slots, vision.patch_dim), np.float32)
    pos = np.zeros((n_rows, slots, 2), np.int32)
    valid = np.zeros((n_rows, slots), bool)
    merged_slot = []
    row, offset = 0, 0
    for t, h, w in grid:
        mh, mw = h // m, w // m
        n_win_w = math.ceil(mw / wm)
        mr, mc = np.meshgrid(np.arange(mh), np.arange(mw), indexing="ij")
        mr, mc = mr.ravel(), mc.ravel()  # merged tokens in row-major (HF output) order
        window = (mr // wm) * n_win_w + mc // wm
        in_window = (mr % wm) * wm + mc % wm
        token_slot = window * (wp // unit) + in_window  # merged-token slot within the row
        k = np.arange(unit)
        patch_slot = (token_slot[:, None] * unit + k).ravel()
        for _ in range(t):
            patches[row, patch_slot] = pixel_values[offset : offset + h * w]
            pos[row, patch_slot, 0] = (mr[:, None] * m + k // m).ravel()
            pos[row, patch_slot, 1] = (mc[:, None] * m + k % m).ravel()
            valid[row, patch_slot] = True
            merged_slot.append(row * (slots // unit) + token_slot)
            row += 1
            offset += h * w
    batch = VisionBatch(patches=patches, patch_pos=pos, patch_valid=valid, windows_per_row=n_win)
    vision_slots = VisionSlots(
        merged_slot=np.concatenate(merged_slot).astype(np.int32) if merged_slot else np.zeros((0,), np.int32),
        tokens_per_item=grid.prod(-1) // unit,
    )
    return batch, vision_slots


def vision_token_slots(
    input_ids: np.ndarray, config: Qwen25VLConfig, slots: VisionSlots, num_images: int
) -> np.ndarray:
    """Maps each image- and video-token position of `input_ids` to its merged-token slot.

    The first `num_images` items of `slots` are the images, the rest the videos. Image tokens take the images'
    merged tokens and video tokens the videos', each in reading order (sample by sample, left to right), as
    HF does.

    Args:
      input_ids: `[batch, length]` token ids.
      config: the model config (image and video token ids).
      slots: the merged-token slots of the laid-out images, then videos.
      num_images: how many of the items are images.

    Returns:
      `int32[batch, length]`, -1 at text positions.

    Raises:
      LayoutError: when the number of image (or video) tokens differs from the images' (videos') features.
    """
    input_ids = np.asarray(input_ids)
    split = int(slots.tokens_per_item[:num_images].sum())
    out = np.full(input_ids.shape, -1, np.int32)
    kinds = (
        ("image", config.image_token_id, slots.merged_slot[:split], slots.tokens_per_item[:num_images]),
        ("video", config.video_token_id, slots.merged_slot[split:], slots.tokens_per_item[num_images:]),
    )
    for kind, token_id, merged, per_item in kinds:
        is_kind = input_ids == token_id
        n_tokens, n_features = int(is_kind.sum()), len(merged)
        if n_tokens != n_features:
            raise LayoutError(
                f"{kind} tokens and {kind} features do not match: input_ids has {n_tokens} {kind} tokens "
                f"(id {token_id}) but the {kind}s give {n_features} features (per {kind}: {per_item.tolist()}). "
                "Likely cause: the prompt was truncated below its vision tokens (raise max_prompt_length), or "
                f"{kind}_grid_thw does not belong to these prompts."
            )
        out[is_kind] = merged
    return out


def video_time_steps(grid_t: int, second_per_grid_t: float, tokens_per_second: int) -> np.ndarray:
    """Temporal M-RoPE offsets of a video's temporal patches: floor(k * tokens_per_second * second_per_grid_t).

    Computed in float32 and truncated, as transformers does (so 0.5 s per grid at 2 tokens per second gives
    0, 1, 2, ...).

    Args:
      grid_t: temporal patches of the video.
      second_per_grid_t: seconds of video one temporal patch spans (temporal_patch_size / sampled fps).
      tokens_per_second: the vision config's time scale.

    Returns:
      `int64[grid_t]`.
    """
    interval = np.float32(tokens_per_second) * np.float32(second_per_grid_t)
    return (np.arange(grid_t, dtype=np.float32) * interval).astype(np.int64)


def mrope_positions(
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    image_grid_thw: np.ndarray | None,
    config: Qwen25VLConfig,
    video_grid_thw: np.ndarray | None = None,
    second_per_grid_ts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """M-RoPE position ids and rope deltas for a (left- or right-) padded batch.

    Text tokens take a running index on all three rows. A vision item starting at running index s takes
    (t, h, w) = (s + time_k, s + row, s + col) over its merged grid, with time_k = 0 for an image and
    `video_time_steps` for the k-th temporal patch of a video; text after it resumes at the item's largest
    position + 1. For images that is s + max(merged_h, merged_w), as in every transformers release. For
    videos it is the rule of the Qwen2.5-VL release, vLLM and transformers up to 5.2 (what EasyR1 trains with):
    transformers from 5.3 resumes at s + max(merged_h, merged_w) whatever the video's length, which differs
    once the video's time span exceeds its merged height and width. Padding positions get 0.

    Args:
      input_ids: `[batch, length]` token ids.
      attention_mask: `[batch, length]`, nonzero at valid tokens.
      image_grid_thw: `[images, 3]` for the images in reading order, or None.
      config: the model config (image/video token ids, spatial_merge_size, tokens_per_second).
      video_grid_thw: `[videos, 3]` for the videos in reading order, or None.
      second_per_grid_ts: `float[videos]` seconds per temporal patch of each video; None means 1.0 each.

    Returns:
      (position_ids `int32[3, batch, length]`, rope_deltas `int32[batch]`) where
      rope_delta = max position + 1 - number of valid tokens, so a token appended after the n-th valid token
      has position n + rope_delta on all three rows.

    Raises:
      LayoutError: when a grid is invalid (see `check_grid`), the image- or video-token runs and the items of
        the grids do not match one to one, an item has fewer consecutive tokens than its merged grid needs,
        or second_per_grid_ts does not give one value per video.
    """
    input_ids = np.asarray(input_ids)
    attention_mask = np.asarray(attention_mask).astype(bool)
    vision = config.vision
    m = vision.spatial_merge_size

    def grids_of(grid_thw, name):
        has = grid_thw is not None and len(grid_thw)
        return check_grid(grid_thw, vision, name).tolist() if has else []

    image_grids, video_grids = grids_of(image_grid_thw, "image_grid_thw"), grids_of(video_grid_thw, "video_grid_thw")
    seconds = np.ones(len(video_grids)) if second_per_grid_ts is None else np.asarray(second_per_grid_ts, float)
    if seconds.shape != (len(video_grids),):
        raise LayoutError(
            f"second_per_grid_ts has shape {seconds.shape}; expected one value per video ({len(video_grids)})"
        )
    items = {
        config.image_token_id: ("image", iter(image_grids), None),
        config.video_token_id: ("video", iter(video_grids), iter(seconds)),
    }
    batch, length = input_ids.shape
    positions = np.zeros((3, batch, length), np.int32)
    deltas = np.zeros((batch,), np.int32)
    for b in range(batch):
        ids = input_ids[b, attention_mask[b]]
        is_vision = np.isin(ids, list(items))
        vision_at = np.flatnonzero(is_vision)
        pos = np.zeros((3, len(ids)), np.int64)
        i, current = 0, 0
        while i < len(ids):
            if not is_vision[i]:
                k = np.searchsorted(vision_at, i)  # the text run ends at the next vision token
                j = int(vision_at[k]) if k < len(vision_at) else len(ids)
                pos[:, i:j] = current + np.arange(j - i)
                current += j - i
                i = j
                continue
            kind, grids, seconds_iter = items[int(ids[i])]
            grid = next(grids, None)
            if grid is None:
                raise LayoutError(f"sample {b}: more {kind}-token runs than {kind}s in {kind}_grid_thw")
            t, h, w = grid
            mh, mw = h // m, w // m
            n = t * mh * mw
            if i + n > len(ids) or np.any(ids[i : i + n] != ids[i]):
                raise LayoutError(
                    f"sample {b}: a {kind} of grid {tuple(grid)} needs {n} consecutive {kind} tokens at position "
                    f"{i}; the prompt has fewer (truncated prompt or wrong {kind}_grid_thw)"
                )
            time = video_time_steps(t, next(seconds_iter), vision.tokens_per_second) if kind == "video" else [0]
            tt, rows, cols = np.meshgrid(time, np.arange(mh), np.arange(mw), indexing="ij")
            pos[:, i : i + n] = current + np.stack([tt.ravel(), rows.ravel(), cols.ravel()])
            current = int(pos[:, i : i + n].max()) + 1
            i += n
        positions[:, b, attention_mask[b]] = pos
        deltas[b] = (pos.max() + 1 - len(ids)) if len(ids) else 0
    for kind, grids, _ in items.values():
        if next(grids, None) is not None:
            raise LayoutError(f"{kind}_grid_thw has more {kind}s than the {kind}-token runs in input_ids")
    return positions, deltas
