"""DAPO dynamic sampling: keep only prompt groups whose rewards differ (`rl.dapo.dynamic_sampling_keep_mask`),
generating more prompt batches until the rollout batch is full again (a bounded number of tries).

The chosen groups of the generated batches are merged into one static-shape batch by `rollout.merge.merge_groups`.
"""

from __future__ import annotations

import numpy as np

from shuffle_r1_jax.parallel.global_arrays import gather_over_processes, min_over_processes
from shuffle_r1_jax.rl.dapo import dynamic_sampling_keep_mask
from shuffle_r1_jax.rollout.merge import merge_groups
from shuffle_r1_jax.rollout.placement import BatchPlacer

FALLBACKS = ("fill", "error")


class DynamicSamplingError(RuntimeError):
    """Too few informative groups after the configured number of tries (with fallback "error")."""


def informative_groups(scores: np.ndarray, n: int) -> np.ndarray:
    """The groups DAPO keeps: those whose n scores are not all equal.

    Args:
      scores: `float32[P * n]` per-rollout scores, grouped by prompt.
      n: rollouts per prompt.

    Returns:
      `bool[P]`, True for the kept groups.
    """
    return np.asarray(dynamic_sampling_keep_mask(np.asarray(scores, np.float32).reshape(-1, n)))


def fill_informative(
    sample, groups: int, n: int, *, max_tries: int, fallback: str, pad_id: int, placer: BatchPlacer | None = None
):
    """Call `sample()` until `groups` informative groups are found, and merge them into one batch.

    The search stops when every process has found `groups` (the calls are collective, so the processes agree on
    the fewest found) or after `max_tries` calls.

    Args:
      sample: a callable returning a `ScoredRollouts` of `groups` prompts on this process.
      groups: prompt groups per batch on this process.
      n: rollouts per prompt.
      max_tries: the most `sample()` calls.
      fallback: what to do when too few informative groups were found after `max_tries` calls: "fill" completes
        the batch with uninformative groups (zero advantage: they change nothing), "error" raises.
      pad_id: the prompt padding token.
      placer: places the merged batch on the mesh, or None (one process's device arrays).

    Returns:
      (merged `ScoredRollouts` of `groups` groups on this process, stats): float stats `dapo/tries` (number of
      `sample()` calls) and `dapo/filled_groups` (uninformative groups used, summed over processes).

    Raises:
      ValueError: `fallback` is not one of FALLBACKS.
      DynamicSamplingError: fallback "error" and some process found fewer than `groups` informative groups.
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"rl.dynamic_sampling_fallback = {fallback!r}; expected one of {FALLBACKS}")
    batches, chosen, spare, found, tries = [], [], [], 0, 0
    while min_over_processes(found) < groups and tries < max_tries:
        scored = sample()
        tries += 1
        keep = informative_groups(scored.parts["overall"], n)
        batches.append(scored)
        chosen.append(np.flatnonzero(keep)[: groups - found])
        spare.append(np.flatnonzero(~keep))
        found += len(chosen[-1])
    missing = groups - found
    fewest = min_over_processes(found)
    if fewest < groups and fallback == "error":
        raise DynamicSamplingError(
            f"dynamic sampling found {fewest} of {groups} prompt groups with differing rewards in {tries} tries "
            "(on the process that found the fewest; raise rl.dynamic_sampling_max_tries, or set "
            "rl.dynamic_sampling_fallback='fill')"
        )
    for i, ids in enumerate(spare):
        take = ids[: max(missing, 0)]
        chosen[i] = np.concatenate([chosen[i], take])
        missing -= len(take)
    parts = [(scored, ids) for scored, ids in zip(batches, chosen) if len(ids)]
    merged = merge_groups(parts, n, pad_id, placer)
    filled = float(gather_over_processes(np.asarray([groups - found])).sum())
    return merged, {"dapo/tries": float(tries), "dapo/filled_groups": filled}
