"""OPMD's squared-error loss against NumPy written here: value, gradient, micro-batch sums, the first step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shuffle_r1_jax.rl.opmd import opmd_loss

B, T = 6, 7
TAU = 0.3


def random_batch(seed):
    """Rows of different lengths (a right-padded mask), row 2 empty, rewards centered per group of 3 rows."""
    rng = np.random.default_rng(seed)
    lengths = np.array([7, 3, 0, 5, 1, 6])
    mask = np.arange(T)[None, :] < lengths[:, None]
    rewards = rng.uniform(0.0, 1.0, B)
    centered = (rewards.reshape(2, 3) - rewards.reshape(2, 3).mean(-1, keepdims=True)).reshape(B)
    token_centered = centered[:, None] * mask  # as the dr_grpo estimator gives: 0 outside the mask
    old = -rng.uniform(0.1, 3.0, (B, T))
    lp = old + rng.normal(0.0, 0.3, (B, T))
    return lp, old, token_centered, mask, centered


def np_opmd(lp, old, centered, mask, tau, nseq):
    """Loss and d loss / d logp, one row at a time."""
    loss, grad = 0.0, np.zeros_like(lp)
    for b in range(lp.shape[0]):
        valid = mask[b].astype(bool)
        if not valid.any():
            continue
        error = centered[b] - tau * (lp[b, valid] - old[b, valid]).sum()
        loss += error**2 / nseq
        grad[b, valid] = -2.0 * tau * error / nseq
    return loss, grad


def jax_loss_and_grad(lp, old, adv, mask, **kwargs):
    def loss(x):
        return opmd_loss(x, jnp.asarray(old, jnp.float32), jnp.asarray(adv, jnp.float32), jnp.asarray(mask), **kwargs)

    (value, metrics), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(lp, jnp.float32))
    return float(value), np.asarray(grad), metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("per_row", [False, True])
def test_loss_grad_and_metrics_match_numpy(seed, per_row):
    lp, old, token_centered, mask, centered = random_batch(seed)
    adv = centered if per_row else token_centered
    value, grad, metrics = jax_loss_and_grad(lp, old, adv, mask, tau=TAU)
    want, want_grad = np_opmd(lp, old, centered, mask, TAU, nseq=5)  # 5 non-empty rows
    np.testing.assert_allclose(value, want, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(float(metrics["pg_loss"]), want, rtol=1e-5)
    seq_log_ratio = ((lp - old) * mask).sum(-1)[mask.any(-1)]
    np.testing.assert_allclose(float(metrics["opmd/log_ratio_mean"]), seq_log_ratio.mean(), rtol=1e-4)
    np.testing.assert_allclose(float(metrics["opmd/tau_log_ratio_mean"]), TAU * seq_log_ratio.mean(), rtol=1e-4)
    np.testing.assert_allclose(float(metrics["opmd/sq_error_mean"]), want, rtol=1e-5)  # the batch is one micro-batch
    np.testing.assert_allclose(float(metrics["approx_kl"]), (old - lp)[mask].mean(), rtol=1e-4)


def test_micro_batches_with_the_global_sequence_count_sum_to_the_batch_loss():
    lp, old, adv, mask, _ = random_batch(3)
    whole, whole_grad, _ = jax_loss_and_grad(lp, old, adv, mask, tau=TAU)
    parts = [
        jax_loss_and_grad(lp[s], old[s], adv[s], mask[s], tau=TAU, num_sequences=5.0) for s in np.split(np.arange(B), 3)
    ]
    np.testing.assert_allclose(sum(part[0] for part in parts), whole, rtol=1e-5)
    np.testing.assert_allclose(np.concatenate([part[1] for part in parts]), whole_grad, rtol=1e-5, atol=1e-8)
    alone = jax_loss_and_grad(lp[:2], old[:2], adv[:2], mask[:2], tau=TAU)[0]
    assert not np.isclose(alone, parts[0][0])  # a micro-batch's own count would weigh its rows differently


def test_first_step_gradient_is_minus_two_tau_centered_reward_over_the_sequence_count():
    _, old, adv, mask, centered = random_batch(4)
    value, grad, metrics = jax_loss_and_grad(old, old, adv, mask, tau=TAU)
    np.testing.assert_allclose(grad, -2.0 * TAU * centered[:, None] * mask / 5, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(value, (centered[mask.any(-1)] ** 2).sum() / 5, rtol=1e-5)  # the empty row left out
    assert float(metrics["opmd/log_ratio_mean"]) == 0.0 and float(metrics["approx_kl"]) == 0.0


def test_an_empty_batch_gives_zero_loss_and_finite_metrics():
    lp, old, adv, _, _ = random_batch(5)
    value, grad, metrics = jax_loss_and_grad(lp, old, adv, np.zeros((B, T), bool), tau=TAU)
    assert value == 0.0 and not grad.any()
    assert all(np.isfinite(float(v)) for v in metrics.values())


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan")])
def test_tau_must_be_positive(tau):
    lp, old, adv, mask, _ = random_batch(0)
    with pytest.raises(ValueError, match="OPMD loss tau must be > 0, got tau="):
        opmd_loss(jnp.asarray(lp), jnp.asarray(old), jnp.asarray(adv), jnp.asarray(mask), tau=tau)
