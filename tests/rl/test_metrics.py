"""Metric helpers: entropy from logits, advantage collapse and stats, utilization, masked reductions."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shuffle_r1_jax.rl import metrics

SETTINGS = settings(max_examples=25, deadline=None)


def np_entropy(logits, temperature):
    z = logits.astype(np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    logp = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -(p * logp).sum(-1)


@SETTINGS
@given(
    st.lists(st.floats(-30, 30, width=32, allow_subnormal=False), min_size=24, max_size=24),
    st.sampled_from([1.0, 0.5, 2.0]),
)
def test_entropy_matches_numpy(values, temperature):
    logits = np.array(values, np.float32).reshape(2, 3, 4)
    out = jax.jit(metrics.entropy_from_logits, static_argnums=1)(jnp.asarray(logits), temperature)
    np.testing.assert_allclose(out, np_entropy(logits, temperature), rtol=1e-4, atol=1e-5)
    assert out.dtype == jnp.float32 and out.shape == (2, 3)


def test_entropy_with_masked_vocab_bf16_and_large_logits():
    logits = jnp.array([[0.0, 0.0, -jnp.inf, 0.0], [1e4, 1e4, 0.0, -jnp.inf]])
    out = metrics.entropy_from_logits(logits.astype(jnp.bfloat16))
    np.testing.assert_allclose(out, [np.log(3), np.log(2)], rtol=1e-6)
    grad = jax.grad(lambda x: metrics.entropy_from_logits(x).sum())(logits)
    assert np.all(np.isfinite(grad))


def test_advantage_collapse_and_stats():
    adv = jnp.array([[0.0, 1e-7, -2.0, 1.0], [0.5, 0.0, 0.0, -1e-6]])
    assert float(metrics.advantage_collapse(adv)) == 4 / 8
    mask = jnp.array([[1, 1, 1, 1], [0, 0, 0, 0]])
    assert float(metrics.advantage_collapse(adv, mask)) == 2 / 4
    stats = metrics.advantage_stats(adv, mask)
    a = np.array([0.0, 1e-7, -2.0, 1.0])
    np.testing.assert_allclose(stats["advantage/mean"], a.mean(), atol=1e-7)
    np.testing.assert_allclose(stats["advantage/std"], a.std(), rtol=1e-6)
    assert float(stats["advantage/max"]) == 1.0 and float(stats["advantage/min"]) == -2.0
    empty = metrics.advantage_stats(adv, jnp.zeros_like(adv))
    assert all(float(v) == 0.0 for v in empty.values())


def test_utilization():
    mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], bool)
    active = jnp.array([[0, 1, 0, 1], [0, 0, 0, 1], [1, 1, 1, 1]], bool)
    out = metrics.utilization(active, mask)
    assert float(out["token_utilization"]) == np.float32(1 / 5)
    assert float(out["rollout_utilization"]) == 1 / 2
