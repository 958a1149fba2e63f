"""KL divergence to the reference policy: per-token estimators, the KL loss term, the reward penalty.

With samples from the current policy pi, logp = log pi(y_t) and ref_logp = log pi_ref(y_t):
  k1  ("kl"):         logp - ref_logp
  k2  ("mse"):        0.5 * (logp - ref_logp)^2
  k3  ("low_var_kl"): exp(d) - d - 1 with d = ref_logp - logp clamped to [-20, 20], the result clamped
                      to [-10, 10]
  abs:                |logp - ref_logp|
All are jittable and computed in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from shuffle_r1_jax.rl.aggregation import aggregate_loss
from shuffle_r1_jax.rl.metrics import masked_mean

KL_ESTIMATORS = ("k1", "k2", "k3", "abs")
_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}

LOG_RATIO_CLAMP = 20.0
K3_CLAMP = 10.0


def canonical_kl_kind(kind: str) -> str:
    """The estimator name of `kind` (aliases resolved).

    Raises:
      ValueError: `kind` is neither an estimator nor an alias; the message lists the known ones.
    """
    kind = _ALIASES.get(kind, kind)
    if kind not in KL_ESTIMATORS:
        known = ", ".join(KL_ESTIMATORS + tuple(_ALIASES))
        raise ValueError(f"unknown KL estimator {kind!r}; known estimators: {known}")
    return kind


def kl_estimate(logp: jax.Array, ref_logp: jax.Array, kind: str = "k3") -> jax.Array:
    """Per-token KL estimate of the sampled tokens (the estimators are listed in the module docstring).

    Args:
      logp: `float[...]` log-probs under the current policy.
      ref_logp: `float[...]` log-probs under the reference policy (broadcasts with `logp`).
      kind: "k1", "k2", "k3", "abs", or an alias "kl", "mse", "low_var_kl".

    Returns:
      `float32` of the inputs' (broadcast) shape.

    Raises:
      ValueError: `kind` is unknown; the message lists the known estimators.
    """
    kind = canonical_kl_kind(kind)
    diff = logp.astype(jnp.float32) - ref_logp.astype(jnp.float32)
    if kind == "k1":
        return diff
    if kind == "k2":
        return 0.5 * jnp.square(diff)
    if kind == "abs":
        return jnp.abs(diff)
    d = jnp.clip(-diff, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return jnp.clip(jnp.exp(d) - d - 1.0, -K3_CLAMP, K3_CLAMP)


def kl_loss(
    logp: jax.Array,
    ref_logp: jax.Array,
    mask: jax.Array,
    *,
    kind: str = "k3",
    agg_mode: str = "token-mean",
    num_tokens: jax.Array | float | None = None,
    num_sequences: jax.Array | float | None = None,
    norm_constant: float | None = None,
    group_rows: int | None = None,
    num_groups: float | None = None,
) -> tuple[jax.Array, dict]:
    """KL-to-reference loss term (add beta * loss to the policy loss).

    Args:
      logp: `float[B, T]` log-probs of the sampled tokens under the policy (differentiated).
      ref_logp: `float[B, T]` log-probs of the same tokens under the reference.
      mask: `bool[B, T]` (or 0/1 numbers) response mask.
      kind: a KL estimator name (see `kl_estimate`).
      agg_mode: loss aggregation mode, one of `aggregation.AGG_MODES`.
      num_tokens: global valid-token count for token-mean (pass global counts for gradient accumulation; see
        `aggregation.aggregate_loss`).
      num_sequences: global non-empty-row count for the seq-mean modes (see `aggregation.aggregate_loss`).
      norm_constant: the constant of seq-mean-token-sum-norm (see `aggregation.aggregate_loss`).
      group_rows, num_groups: rows per group and the global group count of micro-token-mean (see
        `aggregation.aggregate_loss`).

    Returns:
      (float32 scalar loss, {"kl_loss": loss, "kl_ref": masked mean of the estimate}).

    Raises:
      ValueError: an unknown `kind` or `agg_mode`, or seq-mean-token-sum-norm without a positive `norm_constant`.
    """
    per_token = kl_estimate(logp, ref_logp, kind)
    loss = aggregate_loss(
        per_token,
        mask,
        agg_mode,
        num_tokens=num_tokens,
        num_sequences=num_sequences,
        norm_constant=norm_constant,
        group_rows=group_rows,
        num_groups=num_groups,
    )
    return loss, {"kl_loss": loss, "kl_ref": masked_mean(jax.lax.stop_gradient(per_token), mask)}


def kl_reward_penalty(
    token_rewards: jax.Array,
    logp: jax.Array,
    ref_logp: jax.Array,
    mask: jax.Array,
    *,
    coef: float,
    kind: str = "k1",
) -> tuple[jax.Array, dict]:
    """KL as a per-token reward penalty: r_t - coef * kl_t on valid tokens (apply before advantages).

    Args:
      token_rewards: `float[..., T]` token rewards (e.g. from `advantages.outcome_token_rewards`).
      logp: `float[..., T]` log-probs of the sampled tokens under the sampling policy.
      ref_logp: `float[..., T]` log-probs of the same tokens under the reference.
      mask: `bool[..., T]` (or 0/1 numbers) response mask.
      coef: the KL coefficient beta.
      kind: a KL estimator name (see `kl_estimate`).

    Returns:
      (`float32[..., T]` penalized rewards, {"kl_penalty": masked mean of the estimate}).

    Raises:
      ValueError: `kind` is unknown.
    """
    per_token = kl_estimate(logp, ref_logp, kind) * mask.astype(jnp.float32)
    return token_rewards.astype(jnp.float32) - coef * per_token, {"kl_penalty": masked_mean(per_token, mask)}
