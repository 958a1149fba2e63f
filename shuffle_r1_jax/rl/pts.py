"""Pairwise Trajectory Sampling (PTS), Shuffle-R1's first stage.

Each prompt group of n = 2N rollouts (advantages computed over the FULL group) is sorted by advantage,
descending, with a stable sort (ties keep their original order, like Python's `sort(reverse=True)` and
`np.argsort(-a, kind="stable")`). The i-th best rollout is paired with the i-th worst, giving N pairs
ordered from the outermost (largest contrast) inwards, and the first M = int(N * keep_ratio) pairs are
kept. Advantages are not recomputed on the kept subset.

The result is an `int32[G, 2M]` array of indices into each group's rollouts laid out pair by pair:
(first_1, second_1, first_2, second_2, ...). Pair m of group g is columns 2m and 2m + 1; flattening
groups gives pair id g * M + m, the id ABS draws (see `batch_shuffle`).

Everything is jittable; `keep_ratio`, `variant` and `rerank_by_magnitude` are static.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

PTS_VARIANTS = ("pairs", "max_side", "min_side", "random")


def num_kept_pairs(group_size: int, keep_ratio: float) -> int:
    """Number of pairs PTS keeps per group, M = int(n / 2 * keep_ratio), validated.

    Args:
      group_size: n, rollouts per group (even, >= 2).
      keep_ratio: alpha in (0, 1].

    Returns:
      M >= 1.

    Raises:
      ValueError: n odd or < 2, keep_ratio outside (0, 1], or M < 1; the message names the value.
    """
    if group_size < 2 or group_size % 2:
        raise ValueError(f"PTS needs an even number of rollouts per prompt (n = 2N >= 2), got n={group_size}")
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"PTS keep_ratio must be in (0, 1], got keep_ratio={keep_ratio!r}")
    kept = int(group_size // 2 * keep_ratio)
    if kept < 1:
        raise ValueError(
            f"PTS keeps M = int(n/2 * keep_ratio) = int({group_size // 2} * {keep_ratio!r}) = {kept} "
            f"pairs per group; it must keep at least 1 (raise keep_ratio or n)"
        )
    return kept


def pairwise_trajectory_sampling(
    advantages: jax.Array,
    keep_ratio: float,
    *,
    rerank_by_magnitude: bool = False,
    variant: str = "pairs",
    key: jax.Array | None = None,
) -> jax.Array:
    """Select M pairs of rollouts per prompt group.

    Args:
      advantages: `float[G, n]` per-rollout advantages, n even.
      keep_ratio: static float in (0, 1], alpha = 1 - pruning ratio. M = int(n/2 * keep_ratio) >= 1.
      rerank_by_magnitude: only for variant "pairs": after pairing, order the N pairs by
        |A_first| + |A_second| descending (stable: equal sums keep the pairing order) before keeping
        the first M. Off by default, as in the official code.
      variant: with s = the stable descending order of the group's advantages (s_0 best, s_{n-1} worst):
        "pairs"    (default, the official pairing) [s_0, s_{n-1}, s_1, s_{n-2}, ..., s_{M-1}, s_{n-M}]:
                   pair i = (i-th best, i-th worst).
        "max_side" ablation: the 2M best rollouts, [s_0, s_1, ..., s_{2M-1}], paired as consecutive
                   ranks (s_0, s_1), (s_2, s_3), ...
        "min_side" ablation: the 2M worst rollouts, worst first, [s_{n-1}, s_{n-2}, ..., s_{n-2M}],
                   paired as consecutive ranks (s_{n-1}, s_{n-2}), ...
        "random"   ablation: a uniformly random permutation pi of each group (independent per group,
                   drawn from `key`), [pi_0, pi_1, ..., pi_{2M-1}]: M random disjoint pairs.
      key: a PRNG key, required by (and only used by) variant "random".

    Returns:
      `int32[G, 2M]` rollout indices within each group, pair by pair.

    Raises:
      ValueError: advantages not 2-D, n odd or < 2, keep_ratio outside (0, 1], M < 1, an unknown variant, a
        missing key for "random", or rerank_by_magnitude with a variant other than "pairs".
    """
    if advantages.ndim != 2:
        raise ValueError(f"PTS expects advantages of shape [groups, n], got shape {advantages.shape}")
    if variant not in PTS_VARIANTS:
        raise ValueError(f"unknown PTS variant {variant!r}; known variants: {', '.join(PTS_VARIANTS)}")
    if rerank_by_magnitude and variant != "pairs":
        raise ValueError(f"PTS rerank_by_magnitude applies to variant 'pairs' only, got variant={variant!r}")
    n = advantages.shape[-1]
    kept = num_kept_pairs(n, keep_ratio)
    adv = advantages.astype(jnp.float32)

    if variant == "random":
        if key is None:
            raise ValueError("PTS variant 'random' needs a PRNG key (key=...)")
        order = jnp.argsort(jax.random.uniform(key, adv.shape), axis=-1)
        return order[:, : 2 * kept].astype(jnp.int32)

    order = jnp.argsort(-adv, axis=-1, stable=True)
    if variant == "max_side":
        return order[:, : 2 * kept].astype(jnp.int32)
    if variant == "min_side":
        return order[:, ::-1][:, : 2 * kept].astype(jnp.int32)

    half = n // 2
    pairs = jnp.stack([order[:, :half], order[:, ::-1][:, :half]], axis=-1)  # [G, N, 2]
    if rerank_by_magnitude:
        paired_adv = jnp.take_along_axis(adv, pairs.reshape(adv.shape[0], n), axis=-1).reshape(pairs.shape)
        magnitude = jnp.sum(jnp.abs(paired_adv), axis=-1)
        rank = jnp.argsort(-magnitude, axis=-1, stable=True)
        pairs = jnp.take_along_axis(pairs, rank[:, :, None], axis=1)
    return pairs[:, :kept].reshape(adv.shape[0], 2 * kept).astype(jnp.int32)


def pair_advantages(advantages: jax.Array, pts_indices: jax.Array) -> jax.Array:
    """Advantages of the selected pairs, in the pair-id order ABS uses.

    Args:
      advantages: `float[G, n]` per-rollout advantages.
      pts_indices: `int[G, 2M]` from `pairwise_trajectory_sampling`.

    Returns:
      `float32[G * M, 2]`; row g * M + m holds (A_first, A_second) of pair m of group g.
    """
    picked = jnp.take_along_axis(advantages.astype(jnp.float32), pts_indices, axis=-1)
    return picked.reshape(-1, 2)
