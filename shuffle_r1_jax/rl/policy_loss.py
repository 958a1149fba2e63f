"""The clipped policy-gradient loss (PPO / DAPO clip-higher / dual clip / GSPO) and its metrics.

Per token, with log-ratio l = clamp(logp - old_logp, -20, 20), ratio r = exp(l) and advantage A:
  loss_t = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))
  dual clip (A < 0 only): loss_t = min(loss_t, -A * dual_clip)
GSPO (`ratio_level="sequence"`): r is replaced, on every token of a sequence, by the sequence ratio
exp(mean over its valid tokens of l); pair it with agg_mode "seq-mean-token-mean" and tiny clip ranges
(clip_low 3e-4, clip_high 4e-4) for the GSPO objective. Presets: PPO clip_low = clip_high = 0.2 (the
Shuffle-R1 setting); DAPO clip-higher clip_low 0.2, clip_high 0.28.

The per-token losses are reduced by `aggregation.aggregate_loss` (pass the mini-batch's global counts
when accumulating gradients over micro-batches).

Clip metrics count the valid tokens where a clip is ACTIVE, i.e. where the token's gradient is cut:
  higher: A > 0 and r > 1 + clip_high        lower: A < 0 and r < 1 - clip_low
  dual:   A < 0 and r > dual_clip
A token is "utilized" when |A| >= 1e-6 and no clip is active.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from shuffle_r1_jax.rl.aggregation import aggregate_loss, validate_agg_mode
from shuffle_r1_jax.rl.metrics import COLLAPSE_EPS, masked_mean, utilization

LOG_RATIO_CLAMP = 20.0
RATIO_LEVELS = ("token", "sequence")


def check_clip_settings(clip_low: float, clip_high: float, dual_clip: float | None, ratio_level: str) -> None:
    """Checks the surrogate's settings.

    Raises:
      ValueError: a clip range is out of range, dual_clip is not above 1 (or None), or ratio_level is unknown; the
        message names the setting and its value.
    """
    if not 0.0 <= clip_low < 1.0:
        raise ValueError(f"policy loss clip_low must be in [0, 1), got clip_low={clip_low!r}")
    if clip_high < 0.0:
        raise ValueError(f"policy loss clip_high must be >= 0, got clip_high={clip_high!r}")
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"policy loss dual_clip must be > 1 (or None to disable), got dual_clip={dual_clip!r}")
    if ratio_level not in RATIO_LEVELS:
        raise ValueError(f"unknown ratio_level {ratio_level!r}; known: {', '.join(RATIO_LEVELS)}")


def ppo_policy_loss(
    logp: jax.Array,
    old_logp: jax.Array,
    advantages: jax.Array,
    mask: jax.Array,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = 3.0,
    ratio_level: str = "token",
    agg_mode: str = "token-mean",
    num_tokens: jax.Array | float | None = None,
    num_sequences: jax.Array | float | None = None,
    norm_constant: float | None = None,
    group_rows: int | None = None,
    num_groups: float | None = None,
) -> tuple[jax.Array, dict]:
    """Clipped surrogate policy loss (to minimize) and its metrics.

    Args:
      logp: `float[B, T]` log-probs of the sampled tokens under the current policy (differentiated).
      old_logp: `float[B, T]` log-probs under the policy that sampled them (constant).
      advantages: `float[B, T]` per-token, or `float[B]` per-sequence (broadcast over T).
      mask: `bool[B, T]` (or 0/1 numbers) response mask (AND-ed with the ABS validity by the caller).
      clip_low: static clip range eps_low in [0, 1).
      clip_high: static clip range eps_high >= 0.
      dual_clip: static constant c > 1 of the dual clip for A < 0, or None to disable.
      ratio_level: "token" (PPO) or "sequence" (GSPO).
      agg_mode: loss aggregation mode, one of `aggregation.AGG_MODES`.
      num_tokens: global valid-token count for token-mean (see `aggregation.aggregate_loss`).
      num_sequences: global non-empty-row count for the seq-mean modes (see `aggregation.aggregate_loss`).
      norm_constant: the constant of seq-mean-token-sum-norm (see `aggregation.aggregate_loss`).
      group_rows, num_groups: rows per group and the global group count of micro-token-mean (see
        `aggregation.aggregate_loss`).

    Returns:
      (float32 scalar loss, metrics) with float32 scalar metrics: pg_loss, pg_clipfrac_higher,
      pg_clipfrac_lower, pg_clipfrac_dual, approx_kl (masked mean of old_logp - logp, the k1 estimate
      of KL(old || current)), ratio_mean, token_utilization, rollout_utilization and
      advantage_collapse (fraction of valid tokens with |A| < 1e-6). Metric means are over this
      batch's valid tokens.

    Raises:
      ValueError: a clip setting out of range, an unknown `ratio_level` or `agg_mode`, or seq-mean-token-sum-norm
        without a positive `norm_constant`; the message names the value.
    """
    check_clip_settings(clip_low, clip_high, dual_clip, ratio_level)
    validate_agg_mode(agg_mode)
    lp = logp.astype(jnp.float32)
    old = old_logp.astype(jnp.float32)
    m = mask.astype(jnp.float32)
    adv = advantages.astype(jnp.float32)
    if adv.ndim == lp.ndim - 1:
        adv = adv[..., None]
    adv = jnp.broadcast_to(adv, lp.shape)

    log_ratio = jnp.clip(lp - old, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    if ratio_level == "sequence":
        seq_log_ratio = jnp.sum(log_ratio * m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0)
        log_ratio = jnp.broadcast_to(seq_log_ratio[..., None], lp.shape)
    ratio = jnp.exp(log_ratio)
    clipped_ratio = jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = jnp.maximum(-adv * ratio, -adv * clipped_ratio)
    if dual_clip is not None:
        per_token = jnp.where(adv < 0, jnp.minimum(per_token, -adv * dual_clip), per_token)
    loss = aggregate_loss(
        per_token,
        m,
        agg_mode,
        num_tokens=num_tokens,
        num_sequences=num_sequences,
        norm_constant=norm_constant,
        group_rows=group_rows,
        num_groups=num_groups,
    )

    r = jax.lax.stop_gradient(ratio)
    higher = (adv > 0) & (r > 1.0 + clip_high)
    lower = (adv < 0) & (r < 1.0 - clip_low)
    dual = (adv < 0) & (r > dual_clip) if dual_clip is not None else jnp.zeros_like(higher)
    nonzero = jnp.abs(adv) >= COLLAPSE_EPS
    active = nonzero & ~(higher | lower | dual)
    metrics = {
        "pg_loss": loss,
        "pg_clipfrac_higher": masked_mean(higher, m),
        "pg_clipfrac_lower": masked_mean(lower, m),
        "pg_clipfrac_dual": masked_mean(dual, m),
        "approx_kl": masked_mean(jax.lax.stop_gradient(old - lp), m),
        "ratio_mean": masked_mean(r, m),
        "advantage_collapse": masked_mean(~nonzero, m),
        **utilization(active, m),
    }
    return loss, metrics
