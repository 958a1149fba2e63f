"""Advantage-based Batch Shuffle (ABS), Shuffle-R1's second stage, and the update-batch layout.

Input: the P = G * M pairs PTS kept (pair id g * M + m, see `pts`), each with a non-negative weight
(`pair_weights`, optionally reshaped by `power_normalize` / `softmax_normalize`). ABS draws `rounds`
independent rounds; each round draws `per_round` DISTINCT pairs without replacement with probability
proportional to weight (successive sampling, i.e. Plackett-Luce), via Gumbel-top-k:
top_k(log w + Gumbel noise). A pair may appear in several rounds. Weights that are 0 (or negative, or
NaN) are never drawn. The paper's setting is rounds * per_round = P (`pairs_per_round`).

Shortfall rule (the official code crashes here): when only K < per_round pairs have positive weight,
every round takes all K of them (in its random order) and its remaining per_round - K slots are
INVALID: `ShuffleDraws.valid` is False there, and their index repeats the round's first draw (a
positive-weight pair whenever K >= 1; pair 0 if no pair has positive weight), so every gather stays in
range. The trainer drops invalid slots from the loss (AND its response mask with the validity); the
update batch keeps its static shape, `num_valid` counts the slots that remain, and `draw_statistics`
reports the shortfall.

Everything is a pure jittable function of arrays and a PRNG key (deterministic for a given key); ABS
runs inside a jitted step on a device mesh, with its inputs and outputs sharded, without a host
round-trip.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PAIR_WEIGHT_KINDS = ("sum", "max", "mean", "positive")
ABS_SAMPLINGS = ("weighted", "uniform", "static")  # the paper's ABS and its two ablations (`draw_pairs`)


def pair_weights(pair_advantages: jax.Array, kind: str = "sum") -> jax.Array:
    """Weight of each pair from its two advantages.

    Args:
      pair_advantages: `float[..., 2]` (e.g. `pts.pair_advantages` output `[P, 2]`).
      kind: "sum" |A1| + |A2| (the paper's), "max" max(|A1|, |A2|), "mean" (|A1| + |A2|) / 2,
        "positive" |max(A1, A2)| (magnitude of the pair's better side).

    Returns:
      `float32[...]`, non-negative.

    Raises:
      ValueError: `kind` is not one of PAIR_WEIGHT_KINDS.
    """
    a = pair_advantages.astype(jnp.float32)
    first, second = a[..., 0], a[..., 1]
    if kind == "sum":
        return jnp.abs(first) + jnp.abs(second)
    if kind == "max":
        return jnp.maximum(jnp.abs(first), jnp.abs(second))
    if kind == "mean":
        return 0.5 * (jnp.abs(first) + jnp.abs(second))
    if kind == "positive":
        return jnp.abs(jnp.maximum(first, second))
    raise ValueError(f"unknown ABS pair weight kind {kind!r}; known kinds: {', '.join(PAIR_WEIGHT_KINDS)}")


def power_normalize(weights: jax.Array, p: float = 1.0) -> jax.Array:
    """Probabilities w^p / sum w^p over the positive weights; non-positive weights stay 0.

    Args:
      weights: `float[P]` pair weights.
      p: the exponent; p = 1 is the paper's choice, p < 0 favours small weights (p = -1 is the "inverse"
        variant).

    Returns:
      `float32[P]`; all zeros when no weight is positive.
    """
    w = weights.astype(jnp.float32)
    positive = w > 0
    powered = jnp.where(positive, jnp.power(jnp.where(positive, w, 1.0), p), 0.0)
    return powered / jnp.maximum(jnp.sum(powered), jnp.finfo(jnp.float32).tiny)


def softmax_normalize(weights: jax.Array, temperature: float | jax.Array = 1.0) -> jax.Array:
    """Probabilities softmax(w / temperature) over the positive weights; non-positive weights stay 0.

    Unlike a plain softmax, a zero-weight pair (no gradient) keeps probability 0, so it is still never
    drawn.

    Args:
      weights: `float[P]` pair weights.
      temperature: softmax temperature (a Python number or a traced scalar, e.g. from `softmax_temperature`).

    Returns:
      `float32[P]`; all zeros when no weight is positive.
    """
    w = weights.astype(jnp.float32)
    positive = w > 0
    logits = jnp.where(positive, w / temperature, -jnp.inf)
    top = jnp.max(logits)
    shifted = jnp.where(positive, jnp.exp(logits - jnp.where(jnp.isfinite(top), top, 0.0)), 0.0)
    return shifted / jnp.maximum(jnp.sum(shifted), jnp.finfo(jnp.float32).tiny)


def softmax_temperature(step, total_steps: int, t_max: float = 2.0, t_min: float = 1.0):
    """Cosine temperature schedule for `softmax_normalize`: t_max at step 0 down to t_min at total_steps.

    T(step) = (t_max - t_min) * cos(pi/2 * step / total_steps) + t_min.

    Args:
      step: the training step, a Python number or a traced scalar.
      total_steps: the step at which the temperature reaches t_min.
      t_max: temperature at step 0.
      t_min: temperature at `total_steps`.

    Returns:
      The temperature, a float32 scalar array.

    Raises:
      ValueError: t_max < t_min.
    """
    if t_max < t_min:
        raise ValueError(f"softmax temperature schedule needs t_max >= t_min, got t_max={t_max!r}, t_min={t_min!r}")
    return (t_max - t_min) * jnp.cos(0.5 * jnp.pi * step / total_steps) + t_min


def pairs_per_round(num_pairs: int, rounds: int) -> int:
    """The per_round T with rounds * T == num_pairs (the update batch as large as what PTS kept).

    Raises:
      ValueError: `rounds` < 1 or does not divide `num_pairs`.
    """
    if rounds < 1 or num_pairs % rounds:
        raise ValueError(f"ABS rounds={rounds!r} must be >= 1 and divide the number of kept pairs {num_pairs}")
    return num_pairs // rounds


class ShuffleDraws(NamedTuple):
    """ABS output.

    Attributes:
      pair_indices: `int32[rounds * per_round]`, pair ids round by round (round r is slots
        r * per_round ... (r + 1) * per_round - 1); within a round, distinct among the valid slots.
      valid: `bool[rounds * per_round]`, False for shortfall slots (see the module docstring).
      num_valid: int32 scalar, number of valid slots = rounds * min(per_round, #positive weights).
    """

    pair_indices: jax.Array
    valid: jax.Array
    num_valid: jax.Array


def advantage_batch_shuffle(pair_weights: jax.Array, rounds: int, per_round: int, key: jax.Array) -> ShuffleDraws:
    """Draw `rounds` independent rounds of `per_round` distinct pairs, P(pair) proportional to its weight.

    Args:
      pair_weights: `float[P]` non-negative weights (need not sum to 1); <= 0 or NaN is never drawn.
      rounds: static int >= 1 (S, replay_times; the paper's best is 8).
      per_round: static int, 1 <= per_round <= P (T).
      key: PRNG key; the same key gives the same draws, on one device or sharded.

    Returns:
      ShuffleDraws (see its docstring and the module's shortfall rule).

    Raises:
      ValueError: `pair_weights` is not 1-D, rounds < 1, or per_round outside [1, P].
    """
    if pair_weights.ndim != 1:
        raise ValueError(f"ABS expects pair weights of shape [P], got shape {pair_weights.shape}")
    num_pairs = pair_weights.shape[0]
    if rounds < 1:
        raise ValueError(f"ABS rounds must be >= 1, got rounds={rounds!r}")
    if not 1 <= per_round <= num_pairs:
        raise ValueError(
            f"ABS per_round must be in [1, P={num_pairs}] (distinct pairs per round), got per_round={per_round!r}"
        )
    w = pair_weights.astype(jnp.float32)
    positive = w > 0
    log_w = jnp.where(positive, jnp.log(jnp.where(positive, w, 1.0)), -jnp.inf)
    perturbed = log_w[None, :] + jax.random.gumbel(key, (rounds, num_pairs), jnp.float32)
    _, drawn = jax.lax.top_k(perturbed, per_round)  # [rounds, per_round], best key first
    valid = jnp.take(positive, drawn)
    drawn = jnp.where(valid, drawn, drawn[:, :1])
    valid = valid.reshape(-1)
    return ShuffleDraws(
        pair_indices=drawn.reshape(-1).astype(jnp.int32),
        valid=valid,
        num_valid=jnp.sum(valid, dtype=jnp.int32),
    )


def static_reorder(pair_weights: jax.Array, rounds: int, per_round: int) -> ShuffleDraws:
    """ABS's "static reorder" ablation: the same pairs every time, no random draw and no reweighting.

    The pairs with a positive weight, in descending weight order (ties: lower pair id first), are laid out in
    turn and repeated from the start until the `rounds * per_round` slots are full, so every such pair appears
    equally often (give or take one). Unlike `advantage_batch_shuffle`, a round may hold a pair twice when fewer
    than `per_round` pairs have a positive weight; no slot is invalid unless none has.

    Args:
      pair_weights: `float[P]` weights; only their order and sign are used.
      rounds: static int >= 1.
      per_round: static int, 1 <= per_round <= P.

    Returns:
      ShuffleDraws; `valid` is all True, or all False (pair 0 everywhere) when no weight is positive.
    """
    w = pair_weights.astype(jnp.float32)
    positive = w > 0
    order = jnp.argsort(jnp.where(positive, -w, jnp.inf), stable=True).astype(jnp.int32)
    num_positive = jnp.sum(positive, dtype=jnp.int32)
    slots = jnp.arange(rounds * per_round, dtype=jnp.int32)
    pair_indices = jnp.take(order, slots % jnp.maximum(num_positive, 1))
    valid = jnp.broadcast_to(num_positive > 0, slots.shape)
    return ShuffleDraws(
        pair_indices=jnp.where(valid, pair_indices, 0), valid=valid, num_valid=jnp.sum(valid, dtype=jnp.int32)
    )


def draw_pairs(pair_weights: jax.Array, rounds: int, per_round: int, key: jax.Array, sampling: str) -> ShuffleDraws:
    """The update batch's pair draws by one of `ABS_SAMPLINGS`.

    "weighted" is ABS (`advantage_batch_shuffle` with the weights); "uniform" is the unbiased shuffle ablation
    (the same draws with every positive weight replaced by 1: zero-weight pairs are still never drawn); "static"
    is `static_reorder`.

    Args:
      pair_weights: `float[P]` pair weights (normalised or not).
      rounds: static int >= 1.
      per_round: static int, 1 <= per_round <= P.
      key: PRNG key (unused by "static").
      sampling: one of `ABS_SAMPLINGS` (static).

    Returns:
      ShuffleDraws.

    Raises:
      ValueError: `sampling` is not one of `ABS_SAMPLINGS`.
    """
    if sampling == "weighted":
        return advantage_batch_shuffle(pair_weights, rounds, per_round, key)
    if sampling == "uniform":
        return advantage_batch_shuffle((pair_weights > 0).astype(jnp.float32), rounds, per_round, key)
    if sampling == "static":
        return static_reorder(pair_weights, rounds, per_round)
    raise ValueError(f"unknown ABS sampling {sampling!r}; expected one of {ABS_SAMPLINGS}")


def draw_statistics(draws: ShuffleDraws, num_pairs: int) -> dict:
    """ABS draw statistics over the valid slots, as scalars.

    Args:
      draws: the output of `advantage_batch_shuffle`.
      num_pairs: P, the number of pairs drawn from.

    Returns:
      dict with int32 `abs/unique_pairs` (distinct pairs drawn at least once), int32 `abs/max_repeats`
      (most times one pair was drawn), int32 `abs/num_valid`, float32 `abs/shortfall_fraction`
      (fraction of slots invalid) and float32 `abs/coverage` (unique pairs / num_pairs).
    """
    counts = jnp.zeros((num_pairs,), jnp.int32).at[draws.pair_indices].add(draws.valid.astype(jnp.int32))
    unique = jnp.sum(counts > 0, dtype=jnp.int32)
    return {
        "abs/unique_pairs": unique,
        "abs/max_repeats": jnp.max(counts),
        "abs/num_valid": draws.num_valid,
        "abs/shortfall_fraction": (draws.valid.shape[0] - draws.num_valid).astype(jnp.float32) / draws.valid.shape[0],
        "abs/coverage": unique.astype(jnp.float32) / num_pairs,
    }


class UpdateBatch(NamedTuple):
    """Rollouts of the update batch, in training order.

    Attributes:
      rollout_indices: `int32[2 * rounds * per_round]`, indices into the flat rollout batch
        `[G * n]` (row g * n + i is rollout i of prompt g). Slot 2k and 2k + 1 are the two trajectories
        of the k-th drawn pair (PTS order: first, second), so any split into contiguous chunks of even
        size keeps each pair in one mini-batch.
      valid: `bool[2 * rounds * per_round]`, the draw validity repeated for both trajectories.
    """

    rollout_indices: jax.Array
    valid: jax.Array


def update_batch_indices(pts_indices: jax.Array, draws: ShuffleDraws, group_size: int) -> UpdateBatch:
    """Turn PTS pairs and ABS draws into flat rollout indices of the update batch.

    Args:
      pts_indices: `int[G, 2M]` from `pts.pairwise_trajectory_sampling`.
      draws: ABS draws over the P = G * M pair ids.
      group_size: static n, rollouts per prompt.

    Returns:
      UpdateBatch; gather every per-rollout array (tokens, masks, old log-probs, advantages) with
      `rollout_indices`, and AND the response mask with `valid[:, None]`.
    """
    groups = pts_indices.shape[0]
    offsets = (jnp.arange(groups, dtype=jnp.int32) * group_size)[:, None]
    flat_pairs = (pts_indices.astype(jnp.int32) + offsets).reshape(-1, 2)
    return UpdateBatch(
        rollout_indices=jnp.take(flat_pairs, draws.pair_indices, axis=0).reshape(-1),
        valid=jnp.repeat(draws.valid, 2),
    )


def chunked_step_order(rows: int, chunks: int, minibatches: int) -> np.ndarray:
    """The official code's order of the update rows over optimizer steps, as a permutation.

    The official trainer cuts the update batch into `chunks` contiguous device chunks (its data-parallel world
    size; with S = 8 rounds on 8 GPUs, device d holds round d) and each device splits its chunk into
    `minibatches` contiguous pieces; optimizer step k trains on piece k of every chunk. Draws keep their order
    inside a round (higher weights tend to come first), so early steps see more of the high-weight pairs.

    Args:
      rows: U, update-batch rows (static); `chunks * minibatches` must divide U.
      chunks: device chunks (static).
      minibatches: optimizer steps per rollout batch (static).

    Returns:
      `int32[U]`: position i of the reordered batch holds row `order[i]` of the update batch; cut into
      `minibatches` equal consecutive parts, part k is optimizer step k.

    Raises:
      ValueError: `chunks * minibatches` does not divide `rows`.
    """
    if chunks < 1 or minibatches < 1 or rows % (chunks * minibatches):
        raise ValueError(f"{chunks} chunks x {minibatches} mini-batches do not divide the {rows} update rows")
    pieces = np.arange(rows, dtype=np.int32).reshape(chunks, minibatches, rows // (chunks * minibatches))
    return pieces.transpose(1, 0, 2).reshape(-1)


def split_minibatches(x: jax.Array, num_minibatches: int) -> jax.Array:
    """Split an update-batch-ordered array into equal mini-batches that keep every pair together.

    Args:
      x: `[2D, ...]`, rows in update-batch order (pairs in rows 2k, 2k + 1).
      num_minibatches: the number of chunks.

    Returns:
      `[num_minibatches, 2D / num_minibatches, ...]`, a reshape of `x`.

    Raises:
      ValueError: the chunks would not be equal and of even size (a pair would be split).
    """
    total = x.shape[0]
    if num_minibatches < 1 or total % num_minibatches or (total // num_minibatches) % 2:
        raise ValueError(
            f"cannot split an update batch of {total} trajectories into num_minibatches="
            f"{num_minibatches!r} equal chunks of even size (pairs must stay together)"
        )
    return x.reshape(num_minibatches, total // num_minibatches, *x.shape[1:])
