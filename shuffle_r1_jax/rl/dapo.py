"""DAPO pieces: the dynamic-sampling group filter and overlong reward shaping.

Both are jittable. The "keep generating until the batch is full" loop of dynamic sampling runs on the host
(`rollout.dynamic_sampling.fill_informative`): it uses `dynamic_sampling_keep_mask` on each generated batch and
concatenates kept groups until it has enough, within a bounded number of tries.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dynamic_sampling_keep_mask(scores: jax.Array) -> jax.Array:
    """The groups DAPO keeps: those whose scores are not all equal (std > 0).

    "std 0" is tested as exact equality of all n scores, which is what std == 0 means without the
    rounding noise of a float std. A group of n = 1 is never kept.

    Args:
      scores: `float[G, n]` per-rollout scores (or accuracies) grouped by prompt.

    Returns:
      `bool[G]`, True for the kept groups.
    """
    return jnp.any(scores != scores[..., :1], axis=-1)


def overlong_reward_penalty(
    response_lengths: jax.Array,
    *,
    max_length: int,
    cache_length: int,
    factor: float = 1.0,
) -> jax.Array:
    """DAPO soft overlong punishment, added to the reward.

    With L_max = max_length and L_cache = cache_length:
      0                                          if L <= L_max - L_cache
      factor * (L_max - L_cache - L) / L_cache   if L_max - L_cache < L <= L_max
      -factor                                    if L > L_max

    Args:
      response_lengths: `int[...]` or `float[...]` response lengths in tokens.
      max_length: static int L_max, the maximum response length.
      cache_length: static int L_cache, 0 < cache_length <= max_length: the length of the soft-penalty zone.
      factor: penalty scale (1.0 in DAPO).

    Returns:
      `float32[...]`, in [-factor, 0].

    Raises:
      ValueError: `cache_length` is not in (0, max_length]; the message names both values.
    """
    if not 0 < cache_length <= max_length:
        raise ValueError(
            f"overlong shaping needs 0 < cache_length <= max_length, got cache_length={cache_length!r}, "
            f"max_length={max_length!r}"
        )
    length = response_lengths.astype(jnp.float32)
    threshold = float(max_length - cache_length)
    inside = (threshold - length) / cache_length
    penalty = jnp.where(length <= threshold, 0.0, jnp.where(length <= max_length, inside, -1.0))
    return factor * penalty
