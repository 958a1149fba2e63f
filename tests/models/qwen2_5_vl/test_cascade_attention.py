"""Cascade attention (shared prompt keys + per-row response keys, merged by log-sum-exp) against plain softmax
attention over the concatenated keys, written in NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shuffle_r1_jax.models.qwen2_5_vl.cascade_attention import SharedPrefixCache, suffix_layout

PROMPTS, N, PROMPT_LEN, HEADS, KV_HEADS, HEAD_DIM = 3, 2, 7, 4, 2, 8
BLOCK, CAPACITY = 4, 12
SCALE = HEAD_DIM**-0.5


def reference_attention(q, prefix_k, prefix_v, prefix_valid, suffix_k, suffix_v, length):
    """Softmax attention of each row's query over [its prompt's valid keys | its first `length` response keys].

    q `[R, N, Dh]`, prefix `[P, Lp, K, Dh]`, prefix_valid `bool[P, Lp]`, suffix `[R, S, K, Dh]`; returns `[R, N, Dh]`.
    """
    rows = q.shape[0]
    n, groups = rows // prefix_k.shape[0], HEADS // KV_HEADS
    out = np.zeros(q.shape, np.float64)
    for r in range(rows):
        p = r // n
        for h in range(HEADS):
            kv = h // groups
            keys = np.concatenate([prefix_k[p, prefix_valid[p], kv], suffix_k[r, :length, kv]])
            values = np.concatenate([prefix_v[p, prefix_valid[p], kv], suffix_v[r, :length, kv]])
            scores = keys.astype(np.float64) @ q[r, h] * SCALE
            weights = np.exp(scores - scores.max())
            out[r, h] = weights @ values / weights.sum()
    return out


@pytest.mark.parametrize("written", [0, 3, 4, 9])  # the new token lands in block 0, 0, 1 (first slot), 2 (partly)
def test_attend_equals_softmax_over_the_concatenated_keys(written):
    rng = np.random.default_rng(written)
    rows = PROMPTS * N

    def normal(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    prefix_k, prefix_v = (
        normal(PROMPTS, PROMPT_LEN, KV_HEADS, HEAD_DIM),
        normal(PROMPTS, PROMPT_LEN, KV_HEADS, HEAD_DIM),
    )
    prefix_valid = np.arange(PROMPT_LEN)[None, :] >= np.asarray([0, 2, 5])[:, None]  # left padding of 0, 2, 5 keys
    # response slots: written ones random, unwritten ones large (a leak past `length` would show)
    suffix_k, suffix_v = (
        50 * normal(rows, CAPACITY, KV_HEADS, HEAD_DIM),
        50 * normal(rows, CAPACITY, KV_HEADS, HEAD_DIM),
    )
    suffix_k[:, :written], suffix_v[:, :written] = (
        normal(rows, written, KV_HEADS, HEAD_DIM),
        normal(rows, written, KV_HEADS, HEAD_DIM),
    )
    q, k_new, v_new = (
        normal(rows, 1, HEADS, HEAD_DIM),
        normal(rows, 1, KV_HEADS, HEAD_DIM),
        normal(rows, 1, KV_HEADS, HEAD_DIM),
    )
    cache = SharedPrefixCache(
        *map(jnp.asarray, (prefix_k, prefix_v, prefix_valid, suffix_k, suffix_v)), jnp.int32(written), BLOCK
    )
    out, updated = jax.jit(lambda c, q, k, v: c.attend(q, k, v, scale=SCALE))(cache, q, k_new, v_new)

    suffix_k[:, written], suffix_v[:, written] = k_new[:, 0], v_new[:, 0]
    expected = reference_attention(q[:, 0], prefix_k, prefix_v, prefix_valid, suffix_k, suffix_v, written + 1)
    np.testing.assert_allclose(np.asarray(out)[:, 0], expected, atol=1e-5, rtol=1e-5)
    assert int(updated.length) == written + 1
    np.testing.assert_array_equal(np.asarray(updated.suffix_k), suffix_k)
    np.testing.assert_array_equal(np.asarray(updated.suffix_v), suffix_v)


def test_suffix_layout_rounds_the_capacity_up_to_whole_blocks():
    assert suffix_layout(256, 64) == (64, 256)
    assert suffix_layout(100, 64) == (64, 128)
    assert suffix_layout(6, 64) == (6, 6)
    with pytest.raises(ValueError, match="decode block = 0"):
        suffix_layout(8, 0)
