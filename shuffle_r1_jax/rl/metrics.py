"""Step metrics of the RL core: masked reductions, advantage collapse, selection metrics, utilization, entropy.

Every function is pure and jittable. Masks may be bool or 0/1 floats of the same shape as the values.
A reduction over an empty mask returns 0 instead of NaN, so metrics of a batch whose every row was
dropped (for instance ABS shortfall slots) stay finite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# An advantage with |A| below this is "collapsed": it gives (almost) no gradient.
COLLAPSE_EPS = 1e-6


def masked_sum(values: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
    """Sum of `values` where `mask` is set. Shapes broadcast; result float32."""
    return jnp.sum(values.astype(jnp.float32) * mask.astype(jnp.float32), axis=axis)


def masked_mean(values: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
    """Mean of `values` where `mask` is set; 0 where the mask is empty. Result float32."""
    count = jnp.sum(jnp.broadcast_to(mask, values.shape).astype(jnp.float32), axis=axis)
    return masked_sum(values, mask, axis=axis) / jnp.maximum(count, 1.0)


def masked_max(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Largest of `values` where `mask` is set (scalar float32); 0 for an empty mask."""
    mask = jnp.broadcast_to(mask, values.shape).astype(bool)
    out = jnp.max(jnp.where(mask, values.astype(jnp.float32), -jnp.inf))
    return jnp.where(jnp.any(mask), out, 0.0)


def masked_min(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Smallest of `values` where `mask` is set (scalar float32); 0 for an empty mask."""
    return -masked_max(-values.astype(jnp.float32), mask)


def advantage_collapse(advantages: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Fraction (float32 scalar) of entries with |A| < 1e-6, among those where `mask` is set.

    Args:
      advantages: float array of any shape, e.g. per-rollout `[groups, n]` or per-token `[B, T]`.
      mask: optional bool (or 0/1) array of the same shape; all entries count when omitted.

    Returns:
      float32 scalar.
    """
    if mask is None:
        mask = jnp.ones(advantages.shape, jnp.float32)
    return masked_mean(jnp.abs(advantages) < COLLAPSE_EPS, mask)


def advantage_stats(advantages: jax.Array, mask: jax.Array | None = None, prefix: str = "advantage") -> dict:
    """Mean, std (population), max, min and collapse fraction of masked advantages.

    Args:
      advantages: float array of any shape.
      mask: optional bool (or 0/1) array of the same shape; all entries count when omitted.
      prefix: the metric-name prefix.

    Returns:
      dict of float32 scalars `<prefix>/mean`, `<prefix>/std`, `<prefix>/max`, `<prefix>/min`, `<prefix>/collapse`.
    """
    if mask is None:
        mask = jnp.ones(advantages.shape, jnp.float32)
    mean = masked_mean(advantages, mask)
    var = masked_mean(jnp.square(advantages.astype(jnp.float32) - mean), mask)
    return {
        f"{prefix}/mean": mean,
        f"{prefix}/std": jnp.sqrt(var),
        f"{prefix}/max": masked_max(advantages, mask),
        f"{prefix}/min": masked_min(advantages, mask),
        f"{prefix}/collapse": advantage_collapse(advantages, mask),
    }


def selection_metrics(rollout_advantages: jax.Array, rows: jax.Array, valid: jax.Array, mask: jax.Array) -> dict:
    """Advantage statistics, collapse before and after update-batch selection, and rollout / token utilization.

    Args:
      rollout_advantages: `float32[G, n]`.
      rows: `int32[U]`, the update batch's flat rollout ids.
      valid: `bool[U]`, which update-batch slots count.
      mask: `int[G * n, T]` or `bool[G * n, T]` response mask of the rollout batch.

    Returns:
      float32 scalars: `advantage/...` (over all rollouts), `advantage/collapse_before`, `advantage/collapse_after`
      (over the valid update rows), `utilization/rollouts_nonzero_advantage` (valid update rows with |A| >= eps
      per generated rollout) and `utilization/tokens_nonzero_advantage` (their response tokens per generated
      response token).
    """
    flat = rollout_advantages.reshape(-1)
    selected = flat[rows]
    nonzero = jnp.abs(selected) >= COLLAPSE_EPS
    selected_tokens = mask[rows] * valid[:, None] * nonzero[:, None]
    out = advantage_stats(flat)
    out["advantage/collapse_before"] = advantage_collapse(flat)
    out["advantage/collapse_after"] = advantage_collapse(selected, valid)
    out["utilization/rollouts_nonzero_advantage"] = jnp.sum(nonzero & valid) / flat.shape[0]
    out["utilization/tokens_nonzero_advantage"] = jnp.sum(selected_tokens) / jnp.maximum(jnp.sum(mask), 1)
    return out


def utilization(active_tokens: jax.Array, mask: jax.Array) -> dict:
    """Token and rollout utilization of an update.

    Args:
      active_tokens: `bool[B, T]`, True where a token carries gradient (non-zero advantage and an
        unclipped ratio; see `policy_loss.ppo_policy_loss`).
      mask: `bool[B, T]` (or 0/1 numbers) response mask of the update batch.

    Returns:
      dict with float32 scalars `token_utilization` (fraction of valid tokens that are active) and
      `rollout_utilization` (fraction of non-empty rows with at least one active token).
    """
    valid = mask.astype(bool)
    active = jnp.logical_and(active_tokens, valid)
    rows = jnp.any(valid, axis=-1)
    return {
        "token_utilization": masked_mean(active, valid),
        "rollout_utilization": masked_mean(jnp.any(active, axis=-1), rows),
    }


def entropy_from_logits(logits: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Entropy of softmax(logits / temperature) over the last axis, in float32.

    Computed as logsumexp(z) - sum(softmax(z) * z) on z shifted by its row maximum, which never forms
    log(0) and does not lose precision for large logits; entries of -inf (masked vocabulary, e.g. the
    image token) contribute 0 (and a finite gradient).

    Args:
      logits: `float[..., V]` (any float dtype; upcast to float32).
      temperature: the sampling temperature the log-probs use.

    Returns:
      `float32[...]`.
    """
    z = logits.astype(jnp.float32) / temperature
    # Shift by the row max so the two terms below stay O(log V) and do not cancel at large magnitudes.
    z = z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    log_norm = jax.nn.logsumexp(z, axis=-1)
    probs = jax.nn.softmax(z, axis=-1)
    expected = jnp.sum(probs * jnp.where(probs > 0, z, 0.0), axis=-1)
    return log_norm - expected
