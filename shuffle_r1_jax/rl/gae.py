"""Generalized Advantage Estimation for PPO with a critic, VC-PPO's decoupled GAE, and the critic's statistics.

Layout: per-token arrays are `float[..., T]`, any leading dims (e.g. `[B, T]` or `[G, n, T]`), T response
positions; the response mask `bool|0/1[..., T]` marks the valid ones. Values are the critic's predictions
V_t at each position, rewards the per-token rewards (an outcome reward on the last valid token, a KL
penalty spread over the tokens).

GAE runs over the VALID positions of a row only. With the valid positions t_1 < ... < t_k:
  delta_i   = r_{t_i} + gamma * V_{t_{i+1}} - V_{t_i}     (V after the last valid position is 0)
  A_i       = delta_i + gamma * lam * A_{i+1}             (A after the last valid position is 0)
  returns_i = A_i + V_{t_i}                               (the critic's regression target)
Invalid positions get advantage 0 and return 0; their rewards and values are never read, so a masked
position in the middle of a row is skipped, and a right-padded row gives the plain recursion.

Decoupled GAE (VC-PPO) takes the policy's advantages at `actor_lam` and the critic's targets at
`critic_lam`; critic_lam = 1 makes the targets the discounted sum of the remaining rewards, free of the
critic's own bias. Whitening the advantages is `advantages.masked_whiten`; their statistics before and
after it are `metrics.advantage_stats`.

All functions are jittable: shapes are static; gamma and the lambdas may be Python floats or traced scalars.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

from shuffle_r1_jax.rl.metrics import masked_max, masked_mean, masked_min


def gae(
    token_rewards: jax.Array,
    values: jax.Array,
    mask: jax.Array,
    *,
    gamma: float | jax.Array,
    lam: float | jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Generalized Advantage Estimation over the valid positions of each row (see the module docstring).

    A reverse `lax.scan` over the last axis carries the value and advantage of the next valid position;
    an invalid position passes them on unchanged.

    Args:
      token_rewards: `float[..., T]` per-token rewards.
      values: `float[..., T]` the critic's value predictions.
      mask: `bool[..., T]` (or 0/1 numbers) response mask.
      gamma: the discount factor (Python float or traced scalar).
      lam: the GAE lambda (Python float or traced scalar).

    Returns:
      (advantages, returns), both `float32[..., T]`, 0 outside the mask.
    """
    valid = jnp.moveaxis(mask.astype(bool), -1, 0)
    rewards = jnp.moveaxis(token_rewards.astype(jnp.float32), -1, 0)
    vals = jnp.moveaxis(values.astype(jnp.float32), -1, 0)
    discount = jnp.asarray(gamma, jnp.float32)
    trace_decay = discount * jnp.asarray(lam, jnp.float32)

    def step(next_valid_position, position):
        next_value, next_advantage = next_valid_position
        is_valid, reward, value = position
        advantage = reward + discount * next_value - value + trace_decay * next_advantage
        carry = (jnp.where(is_valid, value, next_value), jnp.where(is_valid, advantage, next_advantage))
        return carry, (jnp.where(is_valid, advantage, 0.0), jnp.where(is_valid, advantage + value, 0.0))

    zeros = jnp.zeros(rewards.shape[1:], jnp.float32)
    _, (advantages, returns) = jax.lax.scan(step, (zeros, zeros), (valid, rewards, vals), reverse=True)
    return jnp.moveaxis(advantages, 0, -1), jnp.moveaxis(returns, 0, -1)


def decoupled_gae(
    token_rewards: jax.Array,
    values: jax.Array,
    mask: jax.Array,
    *,
    gamma: float | jax.Array,
    actor_lam: float | jax.Array,
    critic_lam: float | jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """VC-PPO's decoupled GAE: the policy's advantages at `actor_lam`, the critic's targets at `critic_lam`.

    When both lambdas are the same Python number this is one `gae` call; traced lambdas always take two.

    Args:
      token_rewards: `float[..., T]` per-token rewards.
      values: `float[..., T]` the critic's value predictions.
      mask: `bool[..., T]` (or 0/1 numbers) response mask.
      gamma: the discount factor (Python float or traced scalar).
      actor_lam: the lambda of the advantages the policy loss uses.
      critic_lam: the lambda of the returns the value loss regresses to (1.0: the discounted sum of the
        remaining rewards).

    Returns:
      (advantages, returns), both `float32[..., T]`, 0 outside the mask: the advantages of `gae` at
      `actor_lam` and the returns of `gae` at `critic_lam`.
    """
    if _same_number(actor_lam, critic_lam):
        return gae(token_rewards, values, mask, gamma=gamma, lam=actor_lam)
    advantages, _ = gae(token_rewards, values, mask, gamma=gamma, lam=actor_lam)
    _, returns = gae(token_rewards, values, mask, gamma=gamma, lam=critic_lam)
    return advantages, returns


def _same_number(a: float | jax.Array, b: float | jax.Array) -> bool:
    """True when `a` and `b` are equal Python (or NumPy) real numbers, False for arrays and tracers."""
    return isinstance(a, numbers.Real) and isinstance(b, numbers.Real) and a == b


def value_metrics(values: jax.Array, returns: jax.Array, mask: jax.Array) -> dict:
    """Statistics of the critic's predictions and targets over the valid tokens.

    Explained variance is 1 - Var(returns - values) / Var(returns) with population variances over the
    valid tokens: 1 for a perfect critic, 0 for one predicting the mean return, negative for one worse
    than that. When the returns are constant over the valid tokens (or there are none) Var(returns) is
    0 and the ratio undefined; it is then reported as 0.0, not NaN or inf.

    Args:
      values: `float[..., T]` the critic's value predictions.
      returns: `float[..., T]` the critic's targets (e.g. from `gae` or `decoupled_gae`).
      mask: `bool[..., T]` (or 0/1 numbers) response mask.

    Returns:
      dict of float32 scalars `critic/values_mean`, `critic/values_max`, `critic/values_min`,
      `critic/returns_mean`, `critic/explained_variance`; all 0 for an empty mask.
    """
    v = jax.lax.stop_gradient(values.astype(jnp.float32))
    ret = jax.lax.stop_gradient(returns.astype(jnp.float32))
    returns_mean = masked_mean(ret, mask)
    residual = ret - v
    residual_var = masked_mean(jnp.square(residual - masked_mean(residual, mask)), mask)
    returns_var = masked_mean(jnp.square(ret - returns_mean), mask)
    constant_returns = (masked_max(ret, mask) == masked_min(ret, mask)) | (returns_var <= 0.0)
    safe_returns_var = jnp.where(constant_returns, 1.0, returns_var)
    explained_variance = jnp.where(constant_returns, 0.0, 1.0 - residual_var / safe_returns_var)
    return {
        "critic/values_mean": masked_mean(v, mask),
        "critic/values_max": masked_max(v, mask),
        "critic/values_min": masked_min(v, mask),
        "critic/returns_mean": returns_mean,
        "critic/explained_variance": explained_variance,
    }
