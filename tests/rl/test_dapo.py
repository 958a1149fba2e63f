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


def np_overlong(length, max_length, cache, factor):
    out = []
    for n in length:
        if n <= max_length - cache:
            out.append(0.0)
        elif n <= max_length:
            out.append((max_length - cache - n) / cache * factor)
        else:
            out.append(-factor)
    return np.array(out)


@pytest.mark.parametrize("max_length, cache, factor", [(20, 4, 1.0), (16, 16, 0.5), (10, 1, 2.0)])
def test_overlong_penalty(max_length, cache, factor):
    lengths = np.arange(0, 25)
    fn = jax.jit(dapo.overlong_reward_penalty, static_argnames=("max_length", "cache_length", "factor"))
    out = fn(jnp.asarray(lengths), max_length=max_length, cache_length=cache, factor=factor)
    np.testing.assert_allclose(out, np_overlong(lengths, max_length, cache, factor), rtol=1e-6, atol=1e-7)


def test_overlong_config_errors():
    with pytest.raises(ValueError, match="cache_length=0"):
        dapo.overlong_reward_penalty(jnp.arange(3), max_length=8, cache_length=0)
    with pytest.raises(ValueError, match="cache_length=9"):
        dapo.overlong_reward_penalty(jnp.arange(3), max_length=8, cache_length=9)
