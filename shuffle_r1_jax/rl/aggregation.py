"""Loss aggregation: how a per-token loss matrix `[B, T]` becomes one scalar.

Every mode is a masked sum divided by a denominator. The denominators are GLOBAL quantities of the
optimizer mini-batch and can be passed in: when a mini-batch is split into micro-batches for gradient
accumulation, pass the mini-batch's counts to every micro-batch and SUM the micro-batch losses (and
gradients); the result is then exactly the loss (and gradient) of the whole mini-batch. Dividing each
micro-batch by its own token count and averaging is the known verl/EasyR1 bug this avoids. Left as
None, the denominators are computed from the batch passed in (one micro-batch == the mini-batch).

Modes:
  token-mean:              sum_{b,t} l*m / num_tokens               (num_tokens: valid tokens)
  seq-mean-token-mean:     sum_b (sum_t l*m / len_b) / num_sequences (num_sequences: non-empty rows)
  seq-mean-token-sum-norm: sum_{b,t} l*m / (num_sequences * norm_constant)   (Dr.GRPO; norm_constant
                           a constant such as the maximum response length)
  micro-token-mean:        sum_g (sum_{b in g,t} l*m / tokens_g) / num_groups, over groups g of `group_rows`
                           consecutive rows (the official Shuffle-R1 / EasyR1 loss: each device micro-batch's
                           token mean, averaged over the micro-batches of all devices)

Rows whose mask is empty (e.g. ABS shortfall slots the trainer masked out) contribute 0 and are not
counted in the default denominators.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm", "micro-token-mean")


def validate_agg_mode(mode: str) -> None:
    """Check that `mode` is one of AGG_MODES.

    Raises:
      ValueError: `mode` is unknown; the message names it and the known modes.
    """
    if mode not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation mode {mode!r}; known modes: {', '.join(AGG_MODES)}")


def count_tokens(mask: jax.Array) -> jax.Array:
    """Number of valid tokens of a `[B, T]` mask, float32 scalar (the token-mean denominator)."""
    return jnp.sum(mask.astype(jnp.float32))


def count_sequences(mask: jax.Array) -> jax.Array:
    """Number of rows of a `[B, T]` mask with at least one valid token, float32 scalar."""
    return jnp.sum(jnp.any(mask.astype(bool), axis=-1).astype(jnp.float32))


def aggregate_loss(
    loss_mat: jax.Array,
    mask: jax.Array,
    mode: str = "token-mean",
    *,
    num_tokens: jax.Array | float | None = None,
    num_sequences: jax.Array | float | None = None,
    norm_constant: float | None = None,
    group_rows: int | None = None,
    num_groups: float | None = None,
) -> jax.Array:
    """Reduce a per-token loss to a float32 scalar.

    Args:
      loss_mat: `float[B, T]` per-token loss.
      mask: `bool[B, T]` (or 0/1 numbers) response mask (tokens that count).
      mode: one of AGG_MODES (see the module docstring).
      num_tokens: global valid-token count for token-mean (default: count_tokens(mask)).
      num_sequences: global non-empty-row count for the seq-mean modes (default: count_sequences(mask)).
      norm_constant: the constant of seq-mean-token-sum-norm (required by that mode, must be > 0).
      group_rows: rows per group of micro-token-mean (static; required by that mode, must divide B).
      num_groups: global group count for micro-token-mean (default: B / group_rows).

    Returns:
      float32 scalar. Denominators are clamped to >= 1, so an all-empty batch gives 0.

    Raises:
      ValueError: `mode` is unknown, seq-mean-token-sum-norm without a positive `norm_constant`, or
        micro-token-mean without a `group_rows` that divides B.
    """
    validate_agg_mode(mode)
    m = mask.astype(jnp.float32)
    masked = loss_mat.astype(jnp.float32) * m
    if mode == "micro-token-mean":
        rows = loss_mat.shape[0]
        if not group_rows or rows % group_rows:
            raise ValueError(
                f"loss aggregation 'micro-token-mean' needs group_rows dividing {rows}, got {group_rows!r}"
            )
        sums = jnp.sum(masked.reshape(rows // group_rows, -1), axis=-1)
        tokens = jnp.sum(m.reshape(rows // group_rows, -1), axis=-1)
        groups = rows // group_rows if num_groups is None else num_groups
        return jnp.sum(sums / jnp.maximum(tokens, 1.0)) / jnp.maximum(jnp.asarray(groups, jnp.float32), 1.0)
    if mode == "token-mean":
        denom = count_tokens(mask) if num_tokens is None else jnp.asarray(num_tokens, jnp.float32)
        return jnp.sum(masked) / jnp.maximum(denom, 1.0)
    nseq = count_sequences(mask) if num_sequences is None else jnp.asarray(num_sequences, jnp.float32)
    nseq = jnp.maximum(nseq, 1.0)
    if mode == "seq-mean-token-mean":
        lengths = jnp.maximum(jnp.sum(m, axis=-1), 1.0)
        return jnp.sum(jnp.sum(masked, axis=-1) / lengths) / nseq
    if norm_constant is None or norm_constant <= 0:
        raise ValueError(f"loss aggregation 'seq-mean-token-sum-norm' needs norm_constant > 0, got {norm_constant!r}")
    return jnp.sum(masked) / (nseq * float(norm_constant))
