"""Host-side layouts: M-RoPE positions against transformers' get_rope_index and a reference of the rule; the
vision batch layout of images and videos."""

import numpy as np
import pytest
import torch

from shuffle_r1_jax.models.qwen2_5_vl import LayoutError, config_from_dict, layout_vision, mrope_positions
from shuffle_r1_jax.models.qwen2_5_vl.layout import check_grid, vision_token_slots
from tests.models.qwen2_5_vl.hf_reference import (
    TOKENS,
    build_sample,
    mm_token_type_ids,
    pad_batch,
    random_pixels,
    tiny_hf_config,
    video,
)


@pytest.fixture(scope="module")
def configs():
    hf_config = tiny_hf_config()
    return hf_config, config_from_dict(hf_config.to_dict())


def _hf_rope_index(hf_config, ids, mask, grids, video_grids=None, seconds=None):
    from transformers import Qwen2_5_VLModel

    with torch.device("meta"):
        model = Qwen2_5_VLModel(hf_config)
    pos, deltas = model.get_rope_index(
        torch.as_tensor(ids),
        mm_token_type_ids=torch.as_tensor(mm_token_type_ids(ids)),
        image_grid_thw=torch.as_tensor(np.asarray(grids)) if grids else None,
        video_grid_thw=torch.as_tensor(np.asarray(video_grids)) if video_grids else None,
        second_per_grid_ts=torch.as_tensor(np.asarray(seconds, np.float32)) if seconds is not None else None,
        attention_mask=torch.as_tensor(mask),
    )
    return pos.numpy(), deltas.numpy().reshape(-1)


def _reference_positions(segments, seconds, tokens_per_second=2):
    """The documented rule, from the segment list: text counts on; a vision item at s takes (s + time, s + row,
    s + col) with time = int(k * tokens_per_second * seconds) for the k-th temporal patch of a video (0 for an
    image); the next text starts at the item's largest position + 1. Vision start/end tokens are text."""
    rows, current, seconds = [], 0, iter(seconds)
    for seg in segments:
        if isinstance(seg, int):
            rows += [(current + k,) * 3 for k in range(seg)]
            current += seg
            continue
        rows.append((current,) * 3)  # vision start
        current += 1
        t, h, w = seg[-3:]
        step = np.float32(tokens_per_second) * np.float32(next(seconds)) if seg[0] == "video" else 0.0
        item = [
            (current + int(np.float32(k) * step), current + r, current + c)
            for k in range(t)
            for r in range(h // 2)
            for c in range(w // 2)
        ]
        rows += item
        current = max(max(p) for p in item) + 1
        rows.append((current,) * 3)  # vision end
        current += 1
    return np.asarray(rows).T


@pytest.mark.parametrize("side", ["left", "right"])
def test_mrope_positions_match_transformers(configs, side):
    hf_config, config = configs
    rng = np.random.default_rng(0)
    grids = [(1, 6, 10), (1, 4, 4), (1, 8, 12), (1, 2, 18)]
    samples = [
        build_sample(rng, [3, grids[0], 9]),
        build_sample(rng, [17]),
        build_sample(rng, [2, grids[1], 4, grids[2], 1]),
        build_sample(rng, [grids[3], 2]),
    ]
    ids, mask = pad_batch(samples, side)
    ref_pos, ref_delta = _hf_rope_index(hf_config, ids, mask, grids)
    pos, delta = mrope_positions(ids, mask, np.asarray(grids), config)
    valid = mask.astype(bool)
    np.testing.assert_array_equal(pos[:, valid], ref_pos[:, valid])
    np.testing.assert_array_equal(delta, ref_delta)


@pytest.mark.parametrize("side", ["left", "right"])
def test_video_positions_follow_real_time_as_transformers_does(configs, side):
    """Videos whose time span stays within their merged height and width, where every transformers release
    agrees: fractional intervals (0.25 s x 2 tokens/s = 0.5 per patch, 0.75 s -> 1.5) truncate per patch."""
    hf_config, config = configs
    rng = np.random.default_rng(3)
    images, videos, seconds = [(1, 6, 10)], [(4, 8, 12), (3, 4, 4)], [0.75, 0.25]
    segments = [
        [3, video(*videos[0]), 5],
        [2, images[0], 4, video(*videos[1]), 6],
        [9],
    ]
    ids, mask = pad_batch([build_sample(rng, seg) for seg in segments], side)
    ref_pos, ref_delta = _hf_rope_index(hf_config, ids, mask, images, videos, seconds)
    pos, delta = mrope_positions(ids, mask, np.asarray(images), config, np.asarray(videos), np.asarray(seconds))
    valid = mask.astype(bool)
    np.testing.assert_array_equal(pos[:, valid], ref_pos[:, valid])
    np.testing.assert_array_equal(delta, ref_delta)
    first = pos[:, 0, valid[0]]
    np.testing.assert_array_equal(first, _reference_positions(segments[0], seconds[:1]))
    np.testing.assert_array_equal(np.unique(first[0, 4:100]), [4, 5, 7, 8])  # int(k * 1.5) + 4


def test_text_after_a_long_video_resumes_after_its_last_time_step(configs):
    """6 temporal patches at 1 s each span 10 time steps, more than the 2x2 merged grid: text after the video
    starts at its largest position + 1 (Qwen2.5-VL's release, vLLM, transformers <= 5.2); transformers >= 5.3
    agrees on every position up to the video's end token."""
    hf_config, config = configs
    rng = np.random.default_rng(4)
    segments = [2, video(6, 4, 4), 3]
    ids, mask = pad_batch([build_sample(rng, segments)], "left")
    pos, delta = mrope_positions(ids, mask, None, config, np.asarray([(6, 4, 4)]), np.asarray([1.0]))
    expected = _reference_positions(segments, [1.0])
    np.testing.assert_array_equal(pos[:, 0], expected)
    assert expected[0, -4] == 2 + 1 + 10 + 1  # the video's end token: after time step 10 of a video starting at 3
    assert delta[0] == expected.max() + 1 - ids.shape[1]
    ref_pos, _ = _hf_rope_index(hf_config, ids, mask, None, [(6, 4, 4)], [1.0])
    end = 2 + 1 + 6 * 4
    np.testing.assert_array_equal(pos[:, 0, :end], ref_pos[:, 0, :end])


def test_video_positions_errors_name_the_problem(configs):
    _, config = configs
    rng = np.random.default_rng(5)
    ids, mask = pad_batch([build_sample(rng, [2, video(2, 4, 4), 3])], "left")
    with pytest.raises(LayoutError, match="second_per_grid_ts has shape"):
        mrope_positions(ids, mask, None, config, np.asarray([(2, 4, 4)]), np.asarray([1.0, 2.0]))
    with pytest.raises(LayoutError, match="video of grid .* needs 12 consecutive video tokens"):
        mrope_positions(ids, mask, None, config, np.asarray([(3, 4, 4)]), None)
    with pytest.raises(LayoutError, match="video_grid_thw has more videos"):
        mrope_positions(ids, mask, None, config, np.asarray([(2, 4, 4), (1, 4, 4)]), None)
    with pytest.raises(LayoutError, match="more image-token runs than images"):
        mrope_positions(np.where(ids == TOKENS["video_token_id"], TOKENS["image_token_id"], ids), mask, None, config)


def test_layout_places_every_patch_once_with_windows_padded(configs):
    _, config = configs
    vision = config.vision
    rng = np.random.default_rng(1)
    grids = np.array([(1, 8, 12), (1, 6, 10)])
    pixels = random_pixels(rng, grids.tolist())
    batch, slots = layout_vision(pixels, grids, vision, rows_bucket=3, windows_bucket=8)
    assert batch.patches.shape == (3, 8 * vision.window_patches, vision.patch_dim)
    assert batch.windows_per_row == 8
    # every input patch appears exactly once, in its own image's row
    assert batch.patch_valid.sum() == len(pixels)
    assert batch.patch_valid[2].sum() == 0
    np.testing.assert_array_equal(np.sort(batch.patches[batch.patch_valid][:, 0]), np.sort(pixels[:, 0]))
    # merged slots of image 1 point into row 1, and hold its 4 patches in merge-block order
    unit = vision.merge_unit
    row1 = slots.merged_slot[96 // unit :]
    assert np.all(row1 // (batch.patches.shape[1] // unit) == 1)
    first = row1[0] % (batch.patches.shape[1] // unit)
    np.testing.assert_array_equal(batch.patches[1, first * unit : first * unit + unit], pixels[96 : 96 + unit])
    np.testing.assert_array_equal(
        batch.patch_pos[1, first * unit : first * unit + unit], [[0, 0], [0, 1], [1, 0], [1, 1]]
    )


def test_a_video_takes_one_row_per_temporal_patch_after_the_images(configs):
    """A video of t temporal patches lays out as t consecutive rows, each exactly like an image of its (h, w)
    grid; video tokens map to the video's merged tokens in (time, row, column) order."""
    _, config = configs
    vision = config.vision
    rng = np.random.default_rng(6)
    image, clip = (1, 6, 10), (3, 6, 10)
    pixels = random_pixels(rng, [image, clip])
    batch, slots = layout_vision(pixels, np.array([image, clip]), vision)
    assert batch.patches.shape[0] == 4
    for row in range(1, 4):
        alone, _ = layout_vision(pixels[60 * row : 60 * (row + 1)], np.array([image]), vision)
        np.testing.assert_array_equal(batch.patches[row], alone.patches[0])
        np.testing.assert_array_equal(batch.patch_pos[row], alone.patch_pos[0])
        np.testing.assert_array_equal(batch.patch_valid[row], alone.patch_valid[0])
    np.testing.assert_array_equal(slots.tokens_per_item, [15, 45])
    per_row = batch.patches.shape[1] // vision.merge_unit
    np.testing.assert_array_equal(
        slots.merged_slot[15:], np.concatenate([slots.merged_slot[:15] + r * per_row for r in (1, 2, 3)])
    )
    ids, _ = pad_batch([build_sample(rng, [2, video(*clip), 1, image, 3])], "left")
    token_slots = vision_token_slots(ids, config, slots, num_images=1)
    np.testing.assert_array_equal(token_slots[ids == TOKENS["video_token_id"]], slots.merged_slot[15:])
    np.testing.assert_array_equal(token_slots[ids == TOKENS["image_token_id"]], slots.merged_slot[:15])
    with pytest.raises(LayoutError, match="video tokens and video features do not match"):
        vision_token_slots(ids[:, 5:], config, slots, num_images=1)  # cut inside the video


def test_layout_errors_name_the_problem(configs):
    _, config = configs
    rng = np.random.default_rng(2)
    with pytest.raises(LayoutError, match=r"temporal size 2 != 1 \(a video goes in video_grid_thw\)"):
        check_grid(np.array([(2, 4, 4)]), config.vision)
    with pytest.raises(LayoutError, match="multiples of spatial_merge_size"):
        check_grid(np.array([(1, 3, 4)]), config.vision)
    with pytest.raises(LayoutError, match=r"video_grid_thw\[0\].*temporal size 0 must be at least 1"):
        check_grid(np.array([(0, 4, 4)]), config.vision, "video_grid_thw")
    with pytest.raises(LayoutError, match=r"pixel_values has shape \(10, 1176\)"):
        layout_vision(random_pixels(rng, [(1, 2, 5)]), np.array([(1, 4, 4)]), config.vision)
