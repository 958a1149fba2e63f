"""DAPO dynamic-sampling filter and overlong reward shaping against NumPy written here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shuffle_r1_jax.rl import dapo

SETTINGS = settings(max_examples=30, deadline=None)


@SETTINGS
@given(st.lists(st.lists(st.sampled_from([0.0, 0.1, 1.0]), min_size=4, max_size=4), min_size=6, max_size=6))
def test_dynamic_sampling_keep_mask(groups):
    scores = np.array(groups, np.float32)
    keep = np.asarray(jax.jit(dapo.dynamic_sampling_keep_mask)(jnp.asarray(scores)))
    np.testing.assert_array_equal(keep, [len(np.unique(row)) > 1 for row in scores])
    assert keep.dtype == bool


def test_keep_mask_examples():
    scores = jnp.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.1, 0.1, 0.1]])
    np.testing.assert_array_equal(dapo.dynamic_sampling_keep_mask(scores), [False, False, True, False])


def np_overlong(length, max_length, buffer, factor):
    out = []
    for n in length:
        if n <= max_length - buffer:
            out.append(0.0)
        elif n <= max_length:
            out.append((max_length - buffer - n) / buffer * factor)
        else:
            out.append(-factor)
    return np.array(out)


@pytest.mark.parametrize("max_length, buffer, factor", [(20, 4, 1.0), (16, 16, 0.5), (10, 1, 2.0)])
def test_overlong_penalty(max_length, buffer, factor):
    lengths = np.arange(0, 25)
    fn = jax.jit(dapo.overlong_reward_penalty, static_argnames=("max_length", "buffer_length", "factor"))
    out = fn(jnp.asarray(lengths), max_length=max_length, buffer_length=buffer, factor=factor)
    np.testing.assert_allclose(out, np_overlong(lengths, max_length, buffer, factor), rtol=1e-6, atol=1e-7)


def test_overlong_penalty_at_the_band_boundaries():
    """L_max 20, L_cache 8: 0 up to 12 tokens, -1/8 one token into the band, -1/2 in its middle, -1 at L_max."""
    fn = jax.jit(dapo.overlong_reward_penalty, static_argnames=("max_length", "buffer_length", "factor"))
    lengths = jnp.asarray([0, 12, 13, 16, 19, 20], jnp.int32)
    out = fn(lengths, max_length=20, buffer_length=8, factor=1.0)
    assert out.dtype == jnp.float32 and out.shape == (6,)
    np.testing.assert_allclose(out, [0.0, 0.0, -0.125, -0.5, -0.875, -1.0], atol=1e-7)
    np.testing.assert_allclose(
        fn(lengths, max_length=20, buffer_length=8, factor=0.5)[2:], [-0.0625, -0.25, -0.4375, -0.5]
    )
    np.testing.assert_array_equal(fn(lengths, max_length=20, buffer_length=0, factor=1.0), np.zeros(6, np.float32))


def test_overlong_config_errors():
    with pytest.raises(ValueError, match="buffer_length=-1"):
        dapo.overlong_reward_penalty(jnp.arange(3), max_length=8, buffer_length=-1)
    with pytest.raises(ValueError, match="buffer_length=9"):
        dapo.overlong_reward_penalty(jnp.arange(3), max_length=8, buffer_length=9)
