"""Advantage estimators of the GRPO family, a registry to pick one by name, and CPPO pruning.

Layout: rollouts are grouped by prompt. Per-rollout arrays are `[G, n]` (G prompt groups, n rollouts
each); per-token arrays are `[G, n, T]` (T response positions; the response mask marks the valid ones).
A flat `[G * n, ...]` batch whose rows are ordered group by group reshapes to this layout for free.

Registered estimators share one signature,

    estimator(token_rewards: float32[G, n, T], response_mask: bool|float32[G, n, T], **options) -> Advantages

where a rollout's score is the sum of its token rewards over valid tokens (`response_token_rewards`: the
outcome score on the last valid token plus the reward's span rewards at their tokens). The outcome
estimators (grpo, dr_grpo, rloo) see only that sum; REINFORCE++ and its baseline variant use the
returns-to-go of the token rewards, so a span reward reaches the tokens up to its own. Options
are keyword arguments specific to an estimator (e.g. `eps`, `gamma`). Add one with

    @register_advantage_estimator("my_estimator")
    def my_estimator(token_rewards, response_mask, **options) -> Advantages: ...

All functions are jittable: shapes are static; options are Python numbers (gamma and eps may also be traced).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from shuffle_r1_jax.rl.metrics import masked_mean
from shuffle_r1_jax.rl.registry import Registry

GRPO_EPS = 1e-6
WHITEN_EPS = 1e-8


class Advantages(NamedTuple):
    """Output of an advantage estimator.

    Attributes:
      token: `float32[G, n, T]`, the advantage of every response token, 0 outside the response mask.
      rollout: `float32[G, n]`, one advantage per rollout, the value PTS / ABS / CPPO rank. For outcome
        estimators it is the value broadcast to the tokens; for REINFORCE++ it is the mean of the
        rollout's token advantages over its valid tokens (0 for an empty response).
    """

    token: jax.Array
    rollout: jax.Array


AdvantageEstimator = Callable[..., Advantages]

_ESTIMATORS: Registry[AdvantageEstimator] = Registry("advantage estimator", missing=KeyError)


def register_advantage_estimator(name: str) -> Callable[[AdvantageEstimator], AdvantageEstimator]:
    """Decorator registering an estimator under `name`.

    Raises:
      ValueError: `name` is already registered.
    """
    return _ESTIMATORS.register(name)


def available_advantage_estimators() -> tuple[str, ...]:
    """Sorted names of the registered estimators."""
    return _ESTIMATORS.names()


def get_advantage_estimator(name: str) -> AdvantageEstimator:
    """The estimator registered under `name`.

    Raises:
      KeyError: `name` is not registered; the message lists the known names.
    """
    return _ESTIMATORS.get(name)


def rollout_scores(token_rewards: jax.Array, response_mask: jax.Array) -> jax.Array:
    """Each rollout's score: the sum of its token rewards over its valid tokens.

    Args:
      token_rewards: `float[..., T]` (e.g. `[G, n, T]`).
      response_mask: `bool[..., T]` (or 0/1 numbers).

    Returns:
      `float32[...]` (e.g. `[G, n]`).
    """
    return jnp.sum(token_rewards.astype(jnp.float32) * response_mask.astype(jnp.float32), axis=-1)


def outcome_token_rewards(scores: jax.Array, response_mask: jax.Array) -> jax.Array:
    """Place each rollout's scalar score on its last valid token.

    Args:
      scores: `float[...]` (e.g. `[G, n]`).
      response_mask: `bool[..., T]` (or 0/1 numbers).

    Returns:
      `float32[..., T]`, zero except at the last valid position of each row. A row with an empty mask
      gets no reward (its score is then 0 for every estimator).
    """
    mask = response_mask.astype(bool)
    t = mask.shape[-1]
    last = t - 1 - jnp.argmax(mask[..., ::-1], axis=-1)
    has_any = jnp.any(mask, axis=-1)
    onehot = jax.nn.one_hot(last, t, dtype=jnp.float32)
    return onehot * jnp.where(has_any, scores.astype(jnp.float32), 0.0)[..., None]


def response_token_rewards(
    scores: jax.Array, response_mask: jax.Array, span_rewards: jax.Array | None = None
) -> jax.Array:
    """Each response's per-token rewards: its outcome score on its last valid token plus its span rewards.

    Args:
      scores: `float[...]` outcome scores (e.g. `[R]` or `[G, n]`).
      response_mask: `bool[..., T]` (or 0/1 numbers).
      span_rewards: `float[..., T]` the rewards' span rewards at their tokens (`rollout.token_rewards`), or None
        (none: the outcome rewards alone, bit for bit).

    Returns:
      `float32[..., T]`, 0 outside the mask.
    """
    rewards = outcome_token_rewards(scores, response_mask)
    if span_rewards is None:
        return rewards
    return rewards + span_rewards.astype(jnp.float32) * response_mask.astype(jnp.float32)


def advantages_from_scores(
    estimator: str, scores: jax.Array, response_mask: jax.Array, n: int, span_rewards: jax.Array | None = None
) -> Advantages:
    """Advantages of a flat rollout batch whose rows are grouped by prompt, from one score per rollout and its span
    rewards (`response_token_rewards`).

    Args:
      estimator: a registered estimator name (static).
      scores: `float[R]` outcome score of each rollout, R = G * n, rows g * n .. g * n + n - 1 of prompt g.
      response_mask: `int[R, T]` or `bool[R, T]`.
      n: rollouts per prompt (static).
      span_rewards: `float[R, T]` span rewards at their tokens, or None.

    Returns:
      `Advantages` with token `float32[G, n, T]` and rollout `float32[G, n]`. On row-sharded global arrays a
      prompt's n rows sit on one shard, so the group reductions need no communication.

    Raises:
      KeyError: `estimator` is not registered.
    """
    group_mask = jnp.asarray(response_mask).reshape(-1, n, response_mask.shape[1])
    spans = None if span_rewards is None else jnp.asarray(span_rewards).reshape(group_mask.shape)
    token_rewards = response_token_rewards(jnp.asarray(scores, jnp.float32).reshape(-1, n), group_mask, spans)
    return get_advantage_estimator(estimator)(token_rewards, group_mask)


def _require_group_size(scores: jax.Array, minimum: int, what: str) -> None:
    if scores.ndim != 2:
        raise ValueError(f"{what} expects scores of shape [groups, n], got shape {scores.shape}")
    if scores.shape[-1] < minimum:
        raise ValueError(f"{what} needs at least {minimum} rollouts per group, got n={scores.shape[-1]}")


def _centered(scores: jax.Array) -> jax.Array:
    """Score minus group mean over the last axis, exactly 0 for an all-equal group.

    The float mean of equal values can be 1 ulp off, which GRPO's division by std + eps would blow up to a
    spurious advantage of ~1e-3.
    """
    centered = scores - jnp.mean(scores, axis=-1, keepdims=True)
    all_equal = jnp.all(scores == scores[..., :1], axis=-1, keepdims=True)
    return jnp.where(all_equal, 0.0, centered)


def grpo_outcome_advantages(scores: jax.Array, eps: float = GRPO_EPS) -> jax.Array:
    """GRPO: (score - group mean) / (unbiased group std + eps).

    An all-equal group gives exactly 0 for every rollout.

    Args:
      scores: `float[G, n]` per-rollout scores, n >= 2.
      eps: added to the std.

    Returns:
      `float32[G, n]`.

    Raises:
      ValueError: `scores` is not 2-D or n < 2.
    """
    _require_group_size(scores, 2, "GRPO")
    s = scores.astype(jnp.float32)
    std = jnp.std(s, axis=-1, keepdims=True, ddof=1)
    return _centered(s) / (std + eps)


def dr_grpo_outcome_advantages(scores: jax.Array) -> jax.Array:
    """Dr.GRPO: score - group mean (no std normalization).

    Args:
      scores: `float[G, n]` per-rollout scores, n >= 1.

    Returns:
      `float32[G, n]`.

    Raises:
      ValueError: `scores` is not 2-D or n < 1.
    """
    _require_group_size(scores, 1, "Dr.GRPO")
    return _centered(scores.astype(jnp.float32))


def rloo_outcome_advantages(scores: jax.Array) -> jax.Array:
    """RLOO: score - mean of the other n-1 scores = n/(n-1) (score - mean).

    Args:
      scores: `float[G, n]` per-rollout scores, n >= 2.

    Returns:
      `float32[G, n]`.

    Raises:
      ValueError: `scores` is not 2-D or n < 2.
    """
    _require_group_size(scores, 2, "RLOO")
    n = scores.shape[-1]
    return _centered(scores.astype(jnp.float32)) * (n / (n - 1))


def discounted_returns(token_rewards: jax.Array, response_mask: jax.Array, gamma: float = 1.0) -> jax.Array:
    """Per-token discounted return R_t = r_t + gamma * m_{t+1} * R_{t+1} (R_T = 0).

    Rewards outside the mask are ignored; the factor m_{t+1} resets the return after the last valid
    token (EOS), so padding never leaks into a response. Computed with a parallel (associative) scan.

    Args:
      token_rewards: `float[..., T]`.
      response_mask: `bool[..., T]` (or 0/1 numbers), the m_t above.
      gamma: the discount factor (may be traced).

    Returns:
      `float32[..., T]`.
    """
    m = response_mask.astype(jnp.float32)
    r = token_rewards.astype(jnp.float32) * m
    next_valid = jnp.concatenate([m[..., 1:], jnp.zeros_like(m[..., :1])], axis=-1)
    decay = gamma * next_valid

    def compose(later, earlier):
        # Elements are affine maps x -> a x + b applied from the end of the sequence backwards.
        a_later, b_later = later
        a_earlier, b_earlier = earlier
        return a_earlier * a_later, a_earlier * b_later + b_earlier

    _, returns = jax.lax.associative_scan(compose, (decay, r), reverse=True, axis=r.ndim - 1)
    return returns


def masked_whiten(values: jax.Array, mask: jax.Array, eps: float = WHITEN_EPS) -> jax.Array:
    """(x - mean) * rsqrt(var + eps) over ALL valid entries, with the Bessel-corrected variance.

    The variance divides by max(count - 1, 1), so one valid entry gives 0 and no valid entry gives 0
    (no NaN).

    Args:
      values: float array of any shape.
      mask: bool (or 0/1) array of the same shape, the entries the mean and variance are taken over.
      eps: added to the variance.

    Returns:
      `float32` of `values`' shape, 0 outside the mask.
    """
    m = mask.astype(jnp.float32)
    x = values.astype(jnp.float32)
    count = jnp.sum(m)
    mean = jnp.sum(x * m) / jnp.maximum(count, 1.0)
    var = jnp.sum(jnp.square(x - mean) * m) / jnp.maximum(count - 1.0, 1.0)
    return (x - mean) * jax.lax.rsqrt(var + eps) * m


def _broadcast_outcome(rollout: jax.Array, response_mask: jax.Array) -> Advantages:
    return Advantages(token=rollout[..., None] * response_mask.astype(jnp.float32), rollout=rollout)


def _token_to_rollout(token: jax.Array, response_mask: jax.Array) -> Advantages:
    return Advantages(token=token, rollout=masked_mean(token, response_mask, axis=-1))


@register_advantage_estimator("grpo")
def grpo(token_rewards: jax.Array, response_mask: jax.Array, *, eps: float = GRPO_EPS) -> Advantages:
    """GRPO outcome advantage (unbiased std, eps 1e-6) broadcast to every valid token.

    Args:
      token_rewards: `float[G, n, T]`; a rollout's score is their sum over its valid tokens.
      response_mask: `bool[G, n, T]` (or 0/1 numbers).
      eps: added to the group std.

    Returns:
      `Advantages`: rollout `float32[G, n]` and token `float32[G, n, T]` (rollout broadcast, 0 outside the mask).

    Raises:
      ValueError: n < 2.
    """
    return _broadcast_outcome(grpo_outcome_advantages(rollout_scores(token_rewards, response_mask), eps), response_mask)


@register_advantage_estimator("dr_grpo")
def dr_grpo(token_rewards: jax.Array, response_mask: jax.Array) -> Advantages:
    """Dr.GRPO outcome advantage (score - group mean) broadcast to every valid token.

    Args:
      token_rewards: `float[G, n, T]`; a rollout's score is their sum over its valid tokens.
      response_mask: `bool[G, n, T]` (or 0/1 numbers).

    Returns:
      `Advantages`: rollout `float32[G, n]` and token `float32[G, n, T]` (rollout broadcast, 0 outside the mask).
    """
    return _broadcast_outcome(dr_grpo_outcome_advantages(rollout_scores(token_rewards, response_mask)), response_mask)


@register_advantage_estimator("rloo")
def rloo(token_rewards: jax.Array, response_mask: jax.Array) -> Advantages:
    """RLOO outcome advantage (leave-one-out baseline) broadcast to every valid token.

    Args:
      token_rewards: `float[G, n, T]`; a rollout's score is their sum over its valid tokens.
      response_mask: `bool[G, n, T]` (or 0/1 numbers).

    Returns:
      `Advantages`: rollout `float32[G, n]` and token `float32[G, n, T]` (rollout broadcast, 0 outside the mask).

    Raises:
      ValueError: n < 2.
    """
    return _broadcast_outcome(rloo_outcome_advantages(rollout_scores(token_rewards, response_mask)), response_mask)


@register_advantage_estimator("reinforce_plus_plus")
def reinforce_plus_plus(token_rewards: jax.Array, response_mask: jax.Array, *, gamma: float = 1.0) -> Advantages:
    """REINFORCE++: per-token discounted returns, whitened over all valid tokens of the batch.

    Args:
      token_rewards: `float[G, n, T]`.
      response_mask: `bool[G, n, T]` (or 0/1 numbers).
      gamma: the discount factor of `discounted_returns`.

    Returns:
      `Advantages`: token `float32[G, n, T]` (0 outside the mask) and rollout `float32[G, n]`, the mean of each
      rollout's token advantages over its valid tokens.
    """
    returns = discounted_returns(token_rewards, response_mask, gamma)
    return _token_to_rollout(masked_whiten(returns, response_mask), response_mask)


@register_advantage_estimator("reinforce_plus_plus_baseline")
def reinforce_plus_plus_baseline(token_rewards: jax.Array, response_mask: jax.Array) -> Advantages:
    """REINFORCE++-baseline: each token's return-to-go (gamma 1) minus the group's mean score, whitened over all
    valid tokens.

    It is computed as (score - group mean) + (return-to-go - score): with outcome rewards alone the second term is
    exactly 0, so this is the centered score broadcast to the tokens, and an all-equal group is exactly 0 before
    whitening.

    Args:
      token_rewards: `float[G, n, T]`; a rollout's score is their sum over its valid tokens.
      response_mask: `bool[G, n, T]` (or 0/1 numbers).

    Returns:
      `Advantages`: token `float32[G, n, T]` (0 outside the mask) and rollout `float32[G, n]`, the mean of each
      rollout's token advantages over its valid tokens.
    """
    scores = rollout_scores(token_rewards, response_mask)
    to_go = discounted_returns(token_rewards, response_mask) - scores[..., None]
    token = dr_grpo_outcome_advantages(scores)[..., None] + to_go
    return _token_to_rollout(masked_whiten(token, response_mask), response_mask)


def cppo_num_kept(group_size: int, prune_ratio: float) -> int:
    """Number of rollouts CPPO keeps per group, k = int(n * (1 - prune_ratio)).

    Args:
      group_size: n, rollouts per group.
      prune_ratio: fraction of each group to prune, in [0, 1).

    Returns:
      k >= 1.

    Raises:
      ValueError: `prune_ratio` is outside [0, 1), or k < 1; the message names the values.
    """
    if not 0.0 <= prune_ratio < 1.0:
        raise ValueError(f"CPPO prune_ratio must be in [0, 1), got {prune_ratio!r}")
    k = int(group_size * (1.0 - prune_ratio))
    if k < 1:
        raise ValueError(
            f"CPPO keeps int(n * (1 - prune_ratio)) = {k} rollouts for n={group_size}, "
            f"prune_ratio={prune_ratio!r}; it must keep at least 1"
        )
    return k


def cppo_fill_batches(group_size: int, prune_ratio: float) -> int:
    """Prompt batches CPPO's fill merges into one rollout batch, m = ceil(n / k) with k = `cppo_num_kept`: the m * k
    rollouts kept per prompt of the step's batch fill the n slots pruning freed (m * k >= n; equal when k divides n).

    Args:
      group_size: n, rollouts per group.
      prune_ratio: fraction of each group to prune, in [0, 1).

    Returns:
      m >= 1 (1 at prune_ratio 0).

    Raises:
      ValueError: as `cppo_num_kept`.
    """
    return -(-group_size // cppo_num_kept(group_size, prune_ratio))


def cppo_prune(advantages: jax.Array, prune_ratio: float) -> jax.Array:
    """CPPO: per group, the indices of the k = int(n (1 - prune_ratio)) rollouts with the largest |A|.

    Args:
      advantages: `float[G, n]` per-rollout advantages (not recomputed on the kept subset).
      prune_ratio: static float in [0, 1).

    Returns:
      `int32[G, k]` indices into each group's rollouts, by descending |A|; ties keep the lower index
      first (the order of a stable descending sort).

    Raises:
      ValueError: `prune_ratio` is outside [0, 1), or k < 1 (see `cppo_num_kept`).
    """
    k = cppo_num_kept(advantages.shape[-1], prune_ratio)
    _, indices = jax.lax.top_k(jnp.abs(advantages.astype(jnp.float32)), k)
    return indices.astype(jnp.int32)
