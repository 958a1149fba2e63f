"""Online policy mirror descent (OPMD): Kimi K1.5's squared-error surrogate (arXiv 2501.12599, section 2.3.2).

For a prompt x with n sampled responses y_j, rewards r_j and their group mean rbar (Kimi's approximation of
tau log Z), the loss is
  L = (1/n) sum_j (r_j - rbar - tau * log(pi_theta(y_j|x) / pi_old(y_j|x)))^2
with the SEQUENCE log-ratio: the sum over a response's valid tokens of logp - old_logp. tau > 0 sets how
strongly the new policy is kept near the old one. Over a mini-batch the loss is the sum of the rows' squared
errors divided by the global number of non-empty rows, so micro-batch losses (and gradients) sum exactly to the
mini-batch's, as in `aggregation.aggregate_loss`. Kimi's length penalty and its other terms are not built.

The centered rewards r_j - rbar are what the "dr_grpo" advantage estimator gives, broadcast to the tokens.
The loss is quadratic in the log-ratio (no exponential), so it needs no clamp to stay finite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from shuffle_r1_jax.rl.aggregation import count_sequences
from shuffle_r1_jax.rl.metrics import COLLAPSE_EPS, masked_mean


def opmd_loss(
    logp: jax.Array,
    old_logp: jax.Array,
    centered_rewards: jax.Array,
    mask: jax.Array,
    *,
    tau: float,
    num_sequences: jax.Array | float | None = None,
) -> tuple[jax.Array, dict]:
    """OPMD squared-error loss (to minimize) and its metrics.

    Args:
      logp: `float[B, T]` log-probs of the sampled tokens under the current policy (differentiated).
      old_logp: `float[B, T]` log-probs under the policy that sampled them (constant).
      centered_rewards: `float[B, T]` each row's r - rbar on its valid tokens (a "dr_grpo" token advantage; the
        row's value is its mean over the valid tokens), or `float[B]` per row.
      mask: `bool[B, T]` (or 0/1 numbers) response mask (AND-ed with the row validity by the caller); rows with an
        empty mask contribute 0.
      tau: static regularization strength, > 0.
      num_sequences: global non-empty-row count of the mini-batch, the loss's denominator (default: the non-empty
        rows of `mask`).

    Returns:
      (float32 scalar loss, metrics) with float32 scalar metrics: pg_loss (the loss), opmd/sq_error_mean (mean
      squared error per valid row), opmd/log_ratio_mean (mean sequence log-ratio log(pi / pi_old) per valid row),
      opmd/tau_log_ratio_mean (tau times it, the term that is compared with r - rbar), approx_kl (masked token
      mean of old_logp - logp, the k1 estimate of KL(old || current)) and advantage_collapse (fraction of valid
      tokens whose row has |r - rbar| < 1e-6). Metric means are over this batch's valid rows or tokens.

    Raises:
      ValueError: `tau` is not > 0; the message names the value.
    """
    if not tau > 0:
        raise ValueError(f"OPMD loss tau must be > 0, got tau={tau!r}")
    lp = logp.astype(jnp.float32)
    old = old_logp.astype(jnp.float32)
    m = mask.astype(jnp.float32)
    lengths = jnp.sum(m, axis=-1)
    rows = (lengths > 0).astype(jnp.float32)
    centered = centered_rewards.astype(jnp.float32)
    if centered.ndim == lp.ndim:
        centered = jnp.sum(centered * m, axis=-1) / jnp.maximum(lengths, 1.0)

    seq_log_ratio = jnp.sum((lp - old) * m, axis=-1)
    error = centered - tau * seq_log_ratio
    squared = rows * jnp.square(error)
    nseq = count_sequences(mask) if num_sequences is None else jnp.asarray(num_sequences, jnp.float32)
    loss = jnp.sum(squared) / jnp.maximum(nseq, 1.0)

    local_rows = jnp.maximum(jnp.sum(rows), 1.0)
    log_ratio_mean = jnp.sum(rows * jax.lax.stop_gradient(seq_log_ratio)) / local_rows
    collapsed = jnp.broadcast_to((jnp.abs(centered) < COLLAPSE_EPS)[..., None], lp.shape)
    metrics = {
        "pg_loss": loss,
        "opmd/sq_error_mean": jnp.sum(jax.lax.stop_gradient(squared)) / local_rows,
        "opmd/log_ratio_mean": log_ratio_mean,
        "opmd/tau_log_ratio_mean": tau * log_ratio_mean,
        "approx_kl": masked_mean(jax.lax.stop_gradient(old - lp), m),
        "advantage_collapse": masked_mean(collapsed, m),
    }
    return loss, metrics
