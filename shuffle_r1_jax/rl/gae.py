"""Generalized Advantage Estimation for PPO with a critic, VC-PPO's decoupled GAE, and the critic's statistics.

Layout: per-token arrays are `float[..., T]`, any leading dims (e.g. `[B, T]` or `[G, n, T]`), T response
positions; the response mask `bool|0/1[..., T]` marks the valid ones. Values are the critic's predictions
V_t at each position, rewards the per-token rewards (`advantages.response_token_rewards`: the outcome score
on the last valid token plus the reward's span rewards at their tokens).

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

import dataclasses
import numbers

import jax
import jax.numpy as jnp

from shuffle_r1_jax.rl.advantages import Advantages, masked_whiten, response_token_rewards
from shuffle_r1_jax.rl.metrics import advantage_stats, masked_max, masked_mean, masked_min

# A variance of the returns below this counts as constant returns (explained variance reported as 0).
CONSTANT_RETURNS_VAR = 1e-10


@dataclasses.dataclass(frozen=True)
class GAEConfig:
    """Settings of the GAE advantages of a value-based algorithm; static (hashable) for jit.

    Attributes:
      gamma: the discount factor, in [0, 1].
      actor_lam: the lambda of the policy's advantages, in [0, 1].
      critic_lam: the lambda of the critic's value targets, in [0, 1] (VC-PPO: 1.0).
      whiten: whiten the advantages over the batch's valid tokens (zero mean, unit variance).

    Raises:
      ValueError: a value outside [0, 1]; the message names it.
    """

    gamma: float = 1.0
    actor_lam: float = 1.0
    critic_lam: float = 1.0
    whiten: bool = True

    def __post_init__(self):
        for name in ("gamma", "actor_lam", "critic_lam"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"GAE {name} = {value!r} must be in [0, 1]")


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
    than that. When the returns are constant over the valid tokens (or there are none, or their variance is
    below `CONSTANT_RETURNS_VAR`: GAE at lambda 1 returns a constant reward up to rounding) Var(returns) is
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
    constant_returns = (masked_max(ret, mask) == masked_min(ret, mask)) | (returns_var < CONSTANT_RETURNS_VAR)
    safe_returns_var = jnp.where(constant_returns, 1.0, returns_var)
    explained_variance = jnp.where(constant_returns, 0.0, 1.0 - residual_var / safe_returns_var)
    return {
        "critic/values_mean": masked_mean(v, mask),
        "critic/values_max": masked_max(v, mask),
        "critic/values_min": masked_min(v, mask),
        "critic/returns_mean": returns_mean,
        "critic/explained_variance": explained_variance,
    }


def advantages_from_values(
    scores: jax.Array,
    response_mask: jax.Array,
    values: jax.Array,
    n: int,
    cfg: GAEConfig,
    span_rewards: jax.Array | None = None,
) -> tuple[Advantages, jax.Array, dict]:
    """GAE advantages and the critic's targets of a flat rollout batch whose rows are grouped by prompt.

    The rewards are each response's outcome score on its last valid token plus its span rewards at their tokens
    (`advantages.response_token_rewards`); the
    advantages are `decoupled_gae`'s at `cfg.actor_lam`, whitened over the batch's valid tokens with
    `cfg.whiten`; the returns are at `cfg.critic_lam`. A rollout's advantage (what PTS, ABS and CPPO rank) is
    the mean of its token advantages over its valid tokens (0 for an empty response).

    Args:
      scores: `float[R]` outcome score of each rollout, R = G * n.
      response_mask: `int[R, T]` or `bool[R, T]`.
      values: `float[R, T]` the critic's predictions at the response positions.
      n: rollouts per prompt (static).
      cfg: the GAE settings (static).
      span_rewards: `float[R, T]` span rewards at their tokens, or None.

    Returns:
      (`Advantages` with token `float32[G, n, T]` and rollout `float32[G, n]`, returns `float32[R, T]`, metrics:
      float32 scalars of `value_metrics` and `advantage_stats` of the token advantages before ("gae/raw/*") and
      after ("gae/advantage/*") whitening).
    """
    mask = jnp.asarray(response_mask)
    spans = None if span_rewards is None else jnp.asarray(span_rewards)
    token_rewards = response_token_rewards(jnp.asarray(scores, jnp.float32), mask, spans)
    raw, returns = decoupled_gae(
        token_rewards, values, mask, gamma=cfg.gamma, actor_lam=cfg.actor_lam, critic_lam=cfg.critic_lam
    )
    token = masked_whiten(raw, mask) if cfg.whiten else raw
    metrics = {
        **value_metrics(values, returns, mask),
        **advantage_stats(raw, mask, prefix="gae/raw"),
        **advantage_stats(token, mask, prefix="gae/advantage"),
    }
    grouped = token.reshape(-1, n, token.shape[-1])
    group_mask = mask.reshape(grouped.shape)
    return Advantages(token=grouped, rollout=masked_mean(grouped, group_mask, axis=-1)), returns, metrics
