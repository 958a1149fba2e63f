"""PPO's clipped value loss (the critic's regression to its GAE returns) and its metrics.

Per token, with new predictions V, the predictions V_old made when the rollouts were scored, and the
targets R (the returns of `gae.gae` or `gae.decoupled_gae`):
  V_clipped = V_old + clip(V - V_old, -clip_range, clip_range)
  loss_t    = 0.5 * max((V - R)^2, (V_clipped - R)^2)
so a prediction that moved more than clip_range away from V_old, in the direction that raises the error,
gets no gradient. clip_range None disables the clip: loss_t = 0.5 * (V - R)^2.

The per-token losses are reduced by `aggregation.aggregate_loss` (pass the mini-batch's global counts
when accumulating gradients over micro-batches), exactly as `policy_loss.ppo_policy_loss` does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from shuffle_r1_jax.rl.aggregation import aggregate_loss, validate_agg_mode
from shuffle_r1_jax.rl.metrics import masked_mean


def clipped_value_loss(
    values: jax.Array,
    old_values: jax.Array,
    returns: jax.Array,
    mask: jax.Array,
    *,
    clip_range: float | None,
    agg_mode: str = "token-mean",
    num_tokens: jax.Array | float | None = None,
    num_sequences: jax.Array | float | None = None,
    norm_constant: float | None = None,
    group_rows: int | None = None,
    num_groups: float | None = None,
) -> tuple[jax.Array, dict]:
    """Clipped value loss (to minimize) and its metrics.

    Args:
      values: `float[B, T]` the critic's new predictions (differentiated).
      old_values: `float[B, T]` the critic's predictions when the rollouts were scored (constant).
      returns: `float[B, T]` the targets (constant).
      mask: `bool[B, T]` (or 0/1 numbers) response mask.
      clip_range: static clip range >= 0 of the prediction around `old_values`, or None to disable the clip.
      agg_mode: loss aggregation mode, one of `aggregation.AGG_MODES`.
      num_tokens: global valid-token count for token-mean (see `aggregation.aggregate_loss`).
      num_sequences: global non-empty-row count for the seq-mean modes (see `aggregation.aggregate_loss`).
      norm_constant: the constant of seq-mean-token-sum-norm (see `aggregation.aggregate_loss`).
      group_rows, num_groups: rows per group and the global group count of micro-token-mean (see
        `aggregation.aggregate_loss`).

    Returns:
      (float32 scalar loss, metrics) with float32 scalar metrics `critic/value_loss` (the loss),
      `critic/value_clip_fraction` (fraction of valid tokens whose clipped term is strictly larger, i.e. the
      clip is active), `critic/value_error` (mean of the unclipped (V - R)^2) and `critic/new_values_mean`
      (mean of the new predictions). Metric means are over this batch's valid tokens.

    Raises:
      ValueError: a negative `clip_range`, an unknown `agg_mode`, or seq-mean-token-sum-norm without a positive
        `norm_constant`; the message names the value.
    """
    if clip_range is not None and clip_range < 0:
        raise ValueError(f"value loss clip_range must be >= 0 (or None to disable), got clip_range={clip_range!r}")
    validate_agg_mode(agg_mode)
    v = values.astype(jnp.float32)
    old = jax.lax.stop_gradient(old_values.astype(jnp.float32))
    targets = jax.lax.stop_gradient(returns.astype(jnp.float32))
    m = mask.astype(jnp.float32)

    unclipped_error = jnp.square(v - targets)
    if clip_range is None:
        per_token_error = unclipped_error
        clip_active = jnp.zeros(v.shape, bool)
    else:
        clipped_error = jnp.square(old + jnp.clip(v - old, -clip_range, clip_range) - targets)
        per_token_error = jnp.maximum(unclipped_error, clipped_error)
        clip_active = jax.lax.stop_gradient(clipped_error > unclipped_error)
    loss = aggregate_loss(
        0.5 * per_token_error,
        m,
        agg_mode,
        num_tokens=num_tokens,
        num_sequences=num_sequences,
        norm_constant=norm_constant,
        group_rows=group_rows,
        num_groups=num_groups,
    )
    metrics = {
        "critic/value_loss": loss,
        "critic/value_clip_fraction": masked_mean(clip_active, m),
        "critic/value_error": masked_mean(jax.lax.stop_gradient(unclipped_error), m),
        "critic/new_values_mean": masked_mean(jax.lax.stop_gradient(v), m),
    }
    return loss, metrics
