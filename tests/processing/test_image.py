"""Parity of the image preprocessing with the Hugging Face Qwen2-VL image processor (PIL backend).

Tolerance: atol 1e-6, rtol 0 on normalized values (|x| <= ~2.2). Both pipelines do the same uint8 PIL
bicubic resize and the same float64 rescale followed by a float32 (x - mean) / std, so the values are
bit-identical today; 1e-6 (a few float32 ulps at this magnitude) only leaves room for a different
evaluation order of the normalization in another numpy/transformers version. Any resampling, channel
or patch-order difference moves values by at least one uint8 step, 1 / 255 / 0.27 ~= 0.0146, and fails.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

from shuffle_r1_jax.processing.image import (
    ImagePreprocessConfig,
    image_grid,
    num_image_tokens,
    patchify,
    preprocess_images,
    smart_resize,
)

ATOL = 1e-6
SHUFFLE_R1 = ImagePreprocessConfig(min_pixels=262144, max_pixels=4194304)
SMALL_MAX = ImagePreprocessConfig(min_pixels=3136, max_pixels=40000)


def _random_image(rng, height, width, mode="RGB"):
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode)


def _assert_parity(images, config):
    reference = Qwen2VLImageProcessorPil(min_pixels=config.min_pixels, max_pixels=config.max_pixels)
    expected = reference(images=images, return_tensors="np")
    pixel_values, grid_thw = preprocess_images(images, config)
    assert pixel_values.dtype == np.float32 and grid_thw.dtype == np.int64
    np.testing.assert_array_equal(grid_thw, expected["image_grid_thw"])
    assert pixel_values.shape == expected["pixel_values"].shape
    np.testing.assert_allclose(pixel_values, expected["pixel_values"], rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    "height,width,config",
    [
        (1, 1, ImagePreprocessConfig()),  # tiny: scaled up to min_pixels
        (5, 7, ImagePreprocessConfig()),
        (56, 56, ImagePreprocessConfig()),  # exactly min_pixels
        (42, 70, ImagePreprocessConfig()),  # round half to even on both sides (1.5 -> 2, 2.5 -> 2)
        (100, 33, ImagePreprocessConfig()),
        (3, 590, ImagePreprocessConfig()),  # very wide, aspect ~197
        (700, 4, ImagePreprocessConfig()),  # very tall, aspect 175
        (300, 400, SMALL_MAX),  # clamped down to max_pixels
        (28, 5000, SMALL_MAX),  # wide and clamped: one side floors to `factor`
        (120, 90, SHUFFLE_R1),  # Shuffle-R1 training clamps: scaled up to 262144
    ],
)
def test_matches_hf_processor(height, width, config):
    _assert_parity([_random_image(np.random.default_rng(height * 7919 + width), height, width)], config)


@settings(max_examples=20, deadline=None)
@given(
    sizes=st.lists(st.tuples(st.integers(1, 160), st.integers(1, 160)), min_size=1, max_size=3),
    max_pixels=st.sampled_from([3136 * 2, 20000, 12845056]),
    seed=st.integers(0, 2**31),
)
def test_matches_hf_processor_random_batches(sizes, max_pixels, seed):
    rng = np.random.default_rng(seed)
    images = [_random_image(rng, h, w) for h, w in sizes if max(h, w) / min(h, w) <= 200]
    if images:
        _assert_parity(images, ImagePreprocessConfig(min_pixels=3136, max_pixels=max_pixels))


@pytest.mark.parametrize("mode", ["RGBA", "L", "P"])
def test_non_rgb_modes_match_hf(mode):
    rng = np.random.default_rng(3)
    if mode == "P":
        image = _random_image(rng, 40, 60).convert("P", palette=Image.Palette.ADAPTIVE)
        image.info["transparency"] = 0
    else:
        image = _random_image(rng, 40, 60, mode)
    _assert_parity([image], ImagePreprocessConfig())


@settings(max_examples=300, deadline=None)
@given(
    height=st.integers(1, 40000),
    width=st.integers(1, 40000),
    min_pixels=st.sampled_from([3136, 262144]),
    max_pixels=st.sampled_from([40000, 4194304, 12845056]),
)
def test_smart_resize_matches_hf(height, width, min_pixels, max_pixels):
    if max(height, width) / min(height, width) > 200:
        with pytest.raises(ValueError):
            smart_resize(height, width, 28, min_pixels, max_pixels)
        return
    ours = smart_resize(height, width, 28, min_pixels, max_pixels)
    assert ours == hf_smart_resize(height, width, 28, min_pixels, max_pixels)
    assert ours[0] % 28 == 0 and ours[1] % 28 == 0


def test_smart_resize_respects_clamps():
    h, w = smart_resize(8000, 6000, max_pixels=4194304)
    assert h * w <= 4194304 and (h, w) == (2352, 1764)
    h, w = smart_resize(10, 10, min_pixels=262144)
    assert h * w >= 262144 and h == w == 532


def test_smart_resize_rejects_extreme_aspect_ratio():
    with pytest.raises(ValueError, match=r"aspect ratio .*height=2, width=401"):
        smart_resize(2, 401)
    assert smart_resize(2, 400) == (28, 812)  # ratio exactly 200 is allowed (scaled up to min_pixels)


@pytest.mark.parametrize("height,width", [(0, 10), (10, 0), (-1, 5)])
def test_smart_resize_rejects_empty_image(height, width):
    with pytest.raises(ValueError, match=f"no pixels: height={height}, width={width}"):
        smart_resize(height, width)


def test_patchify_layout():
    """Row k of the output is patch (block_r*2 + r, block_c*2 + c) with values [channel, frame, y, x]."""
    config = ImagePreprocessConfig()
    height, width = 56, 84  # grid 4 x 6 patches
    image = np.random.default_rng(0).normal(size=(height, width, 3)).astype(np.float32)
    rows = patchify(image, config)
    assert rows.shape == (24, 1176)
    k = 0
    for block_r in range(2):
        for block_c in range(3):
            for r in range(2):
                for c in range(2):
                    py, px = block_r * 2 + r, block_c * 2 + c
                    patch = image[py * 14 : (py + 1) * 14, px * 14 : (px + 1) * 14].transpose(2, 0, 1)
                    expected = np.stack([patch, patch], axis=1)  # [channel, frame, y, x]
                    np.testing.assert_array_equal(rows[k].reshape(3, 2, 14, 14), expected)
                    k += 1


def test_grid_helpers_and_empty_batch():
    assert image_grid(100, 33) == (1, 8, 2)
    assert num_image_tokens(100, 33) == 4
    assert num_image_tokens(56, 56) == 4
    pixel_values, grid_thw = preprocess_images([])
    assert pixel_values.shape == (0, 1176) and grid_thw.shape == (0, 3)


def test_hf_preprocessor_config_builds_the_same_processor():
    config = ImagePreprocessConfig(min_pixels=262144, max_pixels=4194304)
    reference = Qwen2VLImageProcessorPil(
        **{
            k: v
            for k, v in config.hf_preprocessor_config().items()
            if k not in ("image_processor_type", "processor_class")
        }
    )
    assert reference.size["shortest_edge"] == 262144 and reference.size["longest_edge"] == 4194304
    assert math.isclose(reference.rescale_factor, 1 / 255)
