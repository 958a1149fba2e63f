"""KL estimators, KL loss and KL reward penalty against NumPy written here."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shuffle_r1_jax.rl import kl

SETTINGS = settings(max_examples=30, deadline=None)
SIZE = 16


def np_kl(logp, ref, kind):
    if kind in ("k1", "kl"):
        return logp - ref
    if kind in ("k2", "mse"):
        return 0.5 * (logp - ref) ** 2
    if kind == "abs":
        return np.abs(logp - ref)
    d = np.clip(ref - logp, -20, 20)
    return np.clip(np.exp(d) - d - 1, -10, 10)


values = st.lists(st.floats(-40, 0, width=32, allow_subnormal=False), min_size=SIZE, max_size=SIZE)


@SETTINGS
@given(values, values, st.sampled_from(["k1", "k2", "k3", "abs", "kl", "mse", "low_var_kl"]))
def test_estimators_match_numpy(logp, ref, kind):
    logp, ref = np.array(logp, np.float32), np.array(ref, np.float32)
    out = jax.jit(kl.kl_estimate, static_argnums=2)(jnp.asarray(logp), jnp.asarray(ref), kind)
    np.testing.assert_allclose(out, np_kl(logp.astype(np.float64), ref.astype(np.float64), kind), rtol=1e-5, atol=1e-5)
    assert out.dtype == jnp.float32


def test_k3_clamps():
    # d = ref - logp: -30 -> clamped to -20 -> e^-20 + 19 -> clamped to 10; +1000 -> 20 -> e^20 - 21 -> 10.
    logp, ref = jnp.array([0.0, -1000.0, 0.0, -1.0]), jnp.array([-30.0, 0.0, 0.0, 0.0])
    out = kl.kl_estimate(logp, ref, "low_var_kl")
    np.testing.assert_allclose(out, [10.0, 10.0, 0.0, np.e - 2], rtol=1e-6)
    grad = jax.grad(lambda x: kl.kl_estimate(x, ref, "k3").sum())(logp)
    assert np.all(np.isfinite(grad))


def test_kl_loss_token_mean_and_metrics():
    rng = np.random.default_rng(0)
    logp, ref = rng.normal(size=(2, 3, 5)).astype(np.float32) - 2
    mask = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], np.float32)
    loss, metrics = jax.jit(functools.partial(kl.kl_loss, kind="k2"))(logp, ref, mask)
    expected = (np_kl(logp, ref, "k2") * mask).sum() / mask.sum()
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(metrics["kl_ref"], expected, rtol=1e-6)
    loss_global, _ = kl.kl_loss(logp, ref, mask, kind="k2", num_tokens=100.0)
    np.testing.assert_allclose(loss_global, (np_kl(logp, ref, "k2") * mask).sum() / 100, rtol=1e-6)


def test_kl_reward_penalty():
    rng = np.random.default_rng(1)
    rewards = rng.normal(size=(3, 4)).astype(np.float32)
    logp, ref = rng.normal(size=(2, 3, 4)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], np.float32)
    out, metrics = kl.kl_reward_penalty(rewards, logp, ref, mask, coef=0.1)
    np.testing.assert_allclose(out, rewards - 0.1 * (logp - ref) * mask, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(metrics["kl_penalty"], ((logp - ref) * mask).sum() / mask.sum(), rtol=1e-5)


def test_unknown_estimator():
    with pytest.raises(ValueError, match="k4") as err:
        kl.kl_estimate(jnp.zeros(2), jnp.zeros(2), "k4")
    assert "low_var_kl" in str(err.value)
