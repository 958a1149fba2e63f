"""DAPO pieces: the dynamic-sampling group filter and overlong reward shaping.

Both are jittable. The "keep generating until the batch is full" loop of dynamic sampling runs on the host
(`rollout.dynamic_sampling.fill_informative`): it uses `dynamic_sampling_keep_mask` on each generated batch and
concatenates kept groups until it has enough, within a bounded number of tries. The filter sees the raw scores
(the reward's "overall"), not the overlong-shaped ones: the trainer adds the shaping after the batch is full, as
the official DAPO recipe filters on accuracy.
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
    buffer_length: int,
    factor: float = 1.0,
) -> jax.Array:
    """DAPO's soft overlong punishment (arXiv 2503.14476, eq. 13), the reward added to each response's score.

    With L_max = max_length, L_cache = buffer_length and |y| a response's length:
      0                                            if |y| <= L_max - L_cache
      factor * ((L_max - L_cache) - |y|) / L_cache  if L_max - L_cache < |y| <= L_max
      -factor                                      if |y| > L_max
    A response cut at the sampler's limit (|y| = L_max) gets -factor. `buffer_length` 0 turns the shaping off.

    Args:
      response_lengths: `int32[R]` valid tokens of each response (the sum of its response mask).
      max_length: static int L_max, the maximum response length (`rollout.max_new_tokens`).
      buffer_length: static int L_cache in [0, max_length], the length of the soft-penalty band (0 = off).
      factor: the penalty's scale (1.0 in DAPO), >= 0.

    Returns:
      `float32[R]`, in [-factor, 0]; zeros with `buffer_length` 0.

    Raises:
      ValueError: `buffer_length` is not in [0, max_length]; the message names both values.
    """
    if not 0 <= buffer_length <= max_length:
        raise ValueError(
            f"overlong shaping needs 0 <= buffer_length <= max_length, got buffer_length={buffer_length!r}, "
            f"max_length={max_length!r}"
        )
    length = response_lengths.astype(jnp.float32)
    if buffer_length == 0:
        return jnp.zeros_like(length)
    threshold = float(max_length - buffer_length)
    in_band = (threshold - length) / buffer_length
    penalty = jnp.where(length <= threshold, 0.0, jnp.where(length <= max_length, in_band, -1.0))
    return factor * penalty
