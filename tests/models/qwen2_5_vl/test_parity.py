"""Logit parity with transformers' Qwen2_5_VLForConditionalGeneration (fp32, random weights)."""

import jax.numpy as jnp
import numpy as np
import pytest

from shuffle_r1_jax.models.qwen2_5_vl import LayoutError, forward_logits, load_pretrained, prepare_inputs
from tests.models.qwen2_5_vl.hf_reference import build_sample, hf_logits, pad_batch, random_pixels, video

TOL = 1e-4


def _compare(hf_model, ours, ids, mask, pixels=None, grids=None):
    grid_arr = None if grids is None else np.asarray(grids)
    ref = hf_logits(hf_model, ids, mask, pixels, grid_arr)
    got = np.asarray(forward_logits(ours, ids, mask, pixels, grid_arr))
    valid = mask.astype(bool)
    return np.abs(ref[valid] - got[valid]).max()


def test_two_images_of_different_sizes_with_padded_windows(untied_pair):
    hf_model, ours = untied_pair
    rng = np.random.default_rng(0)
    grids = [(1, 8, 12), (1, 6, 10)]  # merged grids 4x6 and 3x5: both need padded 2x2 windows
    ids, mask = pad_batch([build_sample(rng, [5, grids[0], 7, grids[1], 4])], "left")
    assert _compare(hf_model, ours, ids, mask, random_pixels(rng, grids), grids) <= TOL


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_with_a_text_only_sample(untied_pair, side):
    hf_model, ours = untied_pair
    rng = np.random.default_rng(1)
    grids = [(1, 6, 10), (1, 4, 4), (1, 8, 12)]
    samples = [
        build_sample(rng, [3, grids[0], 9]),
        build_sample(rng, [17]),  # text only
        build_sample(rng, [2, grids[1], 4, grids[2], 1]),
    ]
    ids, mask = pad_batch(samples, side)
    assert _compare(hf_model, ours, ids, mask, random_pixels(rng, grids), grids) <= TOL


def test_videos_of_different_lengths_with_images_and_text_only_rows(untied_pair):
    """Videos of 4, 3 and 2 temporal patches at 0.75, 0.25 and 1.0 s per patch (fractional time steps), an image
    and a text-only row; transformers builds its own positions from second_per_grid_ts."""
    hf_model, ours = untied_pair
    rng = np.random.default_rng(6)
    images, videos, seconds = [(1, 6, 10)], [(4, 8, 12), (3, 4, 4), (2, 6, 10)], [0.75, 0.25, 1.0]
    samples = [
        build_sample(rng, [3, video(*videos[0]), 5]),
        build_sample(rng, [2, images[0], 4, video(*videos[1]), 6]),
        build_sample(rng, [13]),
        build_sample(rng, [video(*videos[2]), 7]),
    ]
    ids, mask = pad_batch(samples, "left")
    pixels, video_pixels = random_pixels(rng, images), random_pixels(rng, videos)
    kw = dict(pixel_values_videos=video_pixels, video_grid_thw=np.asarray(videos), second_per_grid_ts=seconds)
    ref = hf_logits(hf_model, ids, mask, pixels, np.asarray(images), **kw)
    got = np.asarray(forward_logits(ours, ids, mask, pixels, np.asarray(images), **kw))
    valid = mask.astype(bool)
    assert np.abs(ref[valid] - got[valid]).max() <= TOL


def test_text_after_a_long_video_given_the_same_positions(untied_pair):
    """Where transformers >= 5.3 places text after a long video differently (see `layout.mrope_positions`), the
    logits still agree once both take our positions."""
    hf_model, ours = untied_pair
    rng = np.random.default_rng(7)
    videos = [(6, 4, 4)]
    ids, mask = pad_batch([build_sample(rng, [2, video(*videos[0]), 9]), build_sample(rng, [5])], "right")
    kw = dict(
        pixel_values_videos=random_pixels(rng, videos), video_grid_thw=np.asarray(videos), second_per_grid_ts=[1.0]
    )
    positions = prepare_inputs(ours.config, ids, mask, **kw).position_ids
    ref = hf_logits(hf_model, ids, mask, position_ids=positions, **kw)
    got = np.asarray(forward_logits(ours, ids, mask, **kw))
    valid = mask.astype(bool)
    assert np.abs(ref[valid] - got[valid]).max() <= TOL


def test_text_only_batch(untied_pair):
    hf_model, ours = untied_pair
    rng = np.random.default_rng(2)
    ids, mask = pad_batch([build_sample(rng, [11]), build_sample(rng, [6])], "left")
    assert _compare(hf_model, ours, ids, mask) <= TOL


def test_tied_embeddings(tied_checkpoint):
    hf_model, path = tied_checkpoint
    ours, config = load_pretrained(path)
    assert config.tie_word_embeddings and ours.lm_head is None
    rng = np.random.default_rng(3)
    grids = [(1, 8, 12)]
    ids, mask = pad_batch([build_sample(rng, [4, grids[0], 6])], "left")
    assert _compare(hf_model, ours, ids, mask, random_pixels(rng, grids), grids) <= TOL


def test_bf16_forward_close_to_fp32(untied_checkpoint):
    """bf16 weights and compute (norms, softmax in fp32): logits within 0.1 abs of fp32 (|logits| ~ 1-3)."""
    _, path = untied_checkpoint
    f32, _ = load_pretrained(path, jnp.float32)
    b16, _ = load_pretrained(path, jnp.bfloat16)
    rng = np.random.default_rng(4)
    grids = [(1, 8, 12), (1, 6, 10)]
    ids, mask = pad_batch([build_sample(rng, [5, grids[0], 7, grids[1], 4])], "left")
    pixels = random_pixels(rng, grids)
    ref = np.asarray(forward_logits(f32, ids, mask, pixels, np.asarray(grids)))
    got = forward_logits(b16, ids, mask, pixels, np.asarray(grids))
    assert got.dtype == jnp.bfloat16
    err = np.abs(np.asarray(got, np.float32) - ref).max()
    assert err <= 0.1, err
    assert np.mean(np.argmax(np.asarray(got, np.float32), -1) == np.argmax(ref, -1)) >= 0.9


def test_image_token_count_mismatch_is_a_clear_error(untied_pair):
    _, ours = untied_pair
    rng = np.random.default_rng(5)
    grids = [(1, 8, 12)]
    ids, mask = pad_batch([build_sample(rng, [5, grids[0], 3])[:20]], "left")  # truncated inside the image
    with pytest.raises(LayoutError, match=r"(?s)14 image tokens.*24 features.*truncated"):
        forward_logits(ours, ids, mask, random_pixels(rng, grids), np.asarray(grids))
