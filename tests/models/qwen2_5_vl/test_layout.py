"""Host-side layouts: M-RoPE positions against transformers' get_rope_index; the vision batch layout."""

import numpy as np
import pytest
import torch

from shuffle_r1_jax.models.qwen2_5_vl import LayoutError, config_from_dict, layout_images, mrope_positions
from tests.models.qwen2_5_vl.hf_reference import TOKENS, build_sample, pad_batch, random_pixels, tiny_hf_config


@pytest.fixture(scope="module")
def configs():
    hf_config = tiny_hf_config()
    return hf_config, config_from_dict(hf_config.to_dict())


def _hf_rope_index(hf_config, ids, mask, grids):
    from transformers import Qwen2_5_VLModel

    with torch.device("meta"):
        model = Qwen2_5_VLModel(hf_config)
    pos, deltas = model.get_rope_index(
        torch.as_tensor(ids),
        mm_token_type_ids=torch.as_tensor((ids == TOKENS["image_token_id"]).astype(np.int64)),
        image_grid_thw=torch.as_tensor(np.asarray(grids)) if grids else None,
        attention_mask=torch.as_tensor(mask),
    )
    return pos.numpy(), deltas.numpy().reshape(-1)


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


def test_layout_places_every_patch_once_with_windows_padded(configs):
    _, config = configs
    vision = config.vision
    rng = np.random.default_rng(1)
    grids = np.array([(1, 8, 12), (1, 6, 10)])
    pixels = random_pixels(rng, grids.tolist())
    batch, slots = layout_images(pixels, grids, vision, images_bucket=3, windows_bucket=8)
    assert batch.patches.shape == (3, 8 * vision.window_patches, vision.patch_dim)
    assert batch.windows_per_image == 8
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


def test_layout_errors_name_the_problem(configs):
    _, config = configs
    rng = np.random.default_rng(2)
    with pytest.raises(LayoutError, match="videos are not supported"):
        layout_images(random_pixels(rng, [(2, 4, 4)]), np.array([(2, 4, 4)]), config.vision)
    with pytest.raises(LayoutError, match="multiples of spatial_merge_size"):
        layout_images(random_pixels(rng, [(1, 3, 4)]), np.array([(1, 3, 4)]), config.vision)
    with pytest.raises(LayoutError, match=r"pixel_values has shape \(10, 1176\)"):
        layout_images(random_pixels(rng, [(1, 2, 5)]), np.array([(1, 4, 4)]), config.vision)
