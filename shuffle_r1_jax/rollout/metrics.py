"""Metrics of one scored rollout batch, reduced over all processes: rewards, response lengths, truncation, groups
without a reward difference; and each prompt's pass rate."""

from __future__ import annotations

import numpy as np

from shuffle_r1_jax.parallel.global_arrays import allgather_json, gather_over_processes, local_rows
from shuffle_r1_jax.rollout.dynamic_sampling import informative_groups
from shuffle_r1_jax.rollout.types import ScoredRollouts
from shuffle_r1_jax.sampling import FINISH_LENGTH


def group_pass_rates(parts: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Each prompt's pass rate: the mean over its n responses of the "accuracy" reward part, or of "overall" when
    the reward has no accuracy part, clipped to [0, 1].

    Args:
      parts: reward part name -> `float32[P * n]` (grouped by prompt; "overall" always present).
      n: responses per prompt.

    Returns:
      `float32[P]`.
    """
    success = np.asarray(parts.get("accuracy", parts["overall"]), np.float32).reshape(-1, n)
    return np.clip(success, 0.0, 1.0).mean(axis=1)


def rollout_metrics(scored: ScoredRollouts) -> dict[str, float]:
    """Reward, response-length and reward-failure metrics of a scored batch, over all processes' rows.

    Collective: every process calls it.

    Args:
      scored: the scored rollout batch.

    Returns:
      Floats: reward parts (`reward/<part>`, and `accuracy` when there is an accuracy part), response lengths
      (`response_length/mean|max|min`), the truncation ratio (`response_length/clip_ratio`, the fraction of
      responses that hit the length limit), the mean over responses of their span rewards' sum
      (`reward/span_sum`, 0 without spans; not part of `reward/overall`), the fraction of prompt groups whose n
      "overall" rewards are all equal (`rollout/zero_advantage_groups`: a group-relative advantage is zero for all
      of them) and reward failure counts by reason (`reward_failures/<reason>`, summed over processes).
    """
    lengths = gather_over_processes(local_rows(scored.rollouts.mask).sum(1))
    # a process whose rewards all failed has only "overall": the names are agreed first, a missing part is 0
    names = sorted({name for names in allgather_json(sorted(scored.parts)) for name in names})
    zeros = np.zeros(len(scored.finish), np.float32)
    parts = {name: gather_over_processes(np.asarray(scored.parts.get(name, zeros), np.float32)) for name in names}
    finish = gather_over_processes(np.asarray(scored.finish))
    metrics = {f"reward/{name}": float(np.mean(v)) for name, v in parts.items()}
    metrics["reward/span_sum"] = float(np.mean(gather_over_processes(np.asarray(scored.token_rewards).sum(1))))
    n = scored.rollouts.samples_per_prompt
    metrics["rollout/zero_advantage_groups"] = float(np.mean(~informative_groups(parts["overall"], n)))
    if "accuracy" in parts:
        metrics["accuracy"] = float(np.mean(parts["accuracy"]))
    metrics.update(
        {
            "response_length/mean": float(lengths.mean()),
            "response_length/max": float(lengths.max()),
            "response_length/min": float(lengths.min()),
            "response_length/clip_ratio": float(np.mean(finish == FINISH_LENGTH)),
        }
    )
    reasons = sorted(scored.reward_failures)
    failures = gather_over_processes(np.asarray([[scored.reward_failures[k] for k in reasons]]))
    metrics.update({f"reward_failures/{k}": float(v) for k, v in zip(reasons, failures.sum(0))})
    return metrics
