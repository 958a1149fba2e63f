"""The rollout phase of a step: generate, decode, score on the host, and compute advantages.

Host work is limited to what must run there: decoding token ids to text and the reward functions. With several
processes each decodes and scores its own rows (those of its prompts); metrics are reduced over processes.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from shuffle_r1_jax.models.qwen2_5_vl.model import ModelInputs, image_features_jit
from shuffle_r1_jax.parallel.batch_placement import BatchPlacer
from shuffle_r1_jax.parallel.global_arrays import allgather_json, gather_over_processes, local_rows
from shuffle_r1_jax.processing.batch import PromptBatch
from shuffle_r1_jax.rewards.pool import RewardPool
from shuffle_r1_jax.rl import advantages as adv_lib
from shuffle_r1_jax.sampling import FINISH_LENGTH, SampleOutput, Sampler
from shuffle_r1_jax.train.logprobs import Rollouts


@dataclasses.dataclass
class ScoredRollouts:
    """One rollout batch after rewards: P prompts x n samples, R = P * n rows (over all processes).

    rollouts: global device arrays (prompts, tokens, mask, sampler log-probs; rows sharded over the batch axes).
    This process's rows only (r = R / process_count, in the order of its rows in the global arrays):
    responses: decoded texts `[r]`; parts: reward part name -> `float32[r]` (always "overall");
    reward_failures: reason -> count; finish: `int32[r]` finish reasons.
    timings: seconds spent generating and scoring. host_prompts: this process's prompt batch (numpy
    `ModelInputs`, image slots into its own image rows), or None when `rollouts.prompts` is that batch.
    image_features: the merged-token features of `rollouts.prompts.vision` under the sampling parameters (a
    global array), or None (no images, or a batch merged from several).
    """

    rollouts: Rollouts
    responses: list[str]
    parts: dict[str, np.ndarray]
    reward_failures: dict[str, int]
    finish: np.ndarray
    timings: dict[str, float]
    host_prompts: ModelInputs | None = None
    image_features: jax.Array | None = None


def decode_responses(tokenizer, tokens: np.ndarray, mask: np.ndarray) -> list[str]:
    """Texts of the masked response tokens (special tokens dropped). tokens, mask: `[R, T]`."""
    return tokenizer.batch_decode([row[m.astype(bool)].tolist() for row, m in zip(tokens, mask)], skip_special_tokens=True)


def generate_and_score(
    sampler: Sampler,
    params,
    batch: PromptBatch,
    *,
    n: int,
    max_new_tokens: int,
    key: jax.Array,
    tokenizer,
    reward_pool: RewardPool,
    reward_timeout_s: float,
    placer: BatchPlacer,
    prompts_per_call: int = 0,
) -> ScoredRollouts:
    """Samples n responses per prompt of every process's `batch` and scores this process's rows against their
    prompts' answers (decoding and rewards on this host only).

    prompts_per_call: prompts (over all processes) per sampler call; 0 = all of them in one call."""
    start = time.perf_counter()
    prompts = placer.prompts(batch.inputs)
    features = None if prompts.vision is None else image_features_jit(sampler.graphdef, params, prompts.vision)
    out: SampleOutput = placer.reshard_rows(
        sampler.generate(
            params, prompts, n=n, max_new_tokens=max_new_tokens, key=key, prompts_per_call=prompts_per_call,
            image_features=features,
        )
    )
    tokens, mask = placer.local(out.tokens), placer.local(out.mask)
    generated = time.perf_counter()
    responses = decode_responses(tokenizer, tokens, mask)
    answers = [a for a in batch.answers for _ in range(n)]
    scores = reward_pool.score(responses, answers, timeout_s=reward_timeout_s)
    return ScoredRollouts(
        rollouts=Rollouts(prompts, out.tokens, out.mask, out.logprobs),
        responses=responses,
        parts=scores.parts,
        reward_failures=scores.failure_counts,
        finish=placer.local(out.finish),
        timings={"generate": generated - start, "reward": time.perf_counter() - generated},
        host_prompts=batch.inputs,
        image_features=features,
    )


def compute_advantages(estimator: str, scores: jax.Array, mask: jax.Array, n: int) -> adv_lib.Advantages:
    """Advantages of the configured estimator from per-rollout scores `[R]` and the response mask `[R, T]`
    (jittable with `estimator` and `n` static; on global arrays a prompt's n rows sit on one shard).

    Returns `Advantages` with token `[P, n, T]` and rollout `[P, n]` arrays.
    """
    length = mask.shape[1]
    group_mask = jnp.asarray(mask).reshape(-1, n, length)
    token_rewards = adv_lib.outcome_token_rewards(jnp.asarray(scores, jnp.float32).reshape(-1, n), group_mask)
    return adv_lib.get_advantage_estimator(estimator)(token_rewards, group_mask)


def rollout_metrics(scored: ScoredRollouts) -> dict[str, float]:
    """Reward parts, response lengths and the truncation (clip) ratio of the rollout batch, over all processes."""
    lengths = gather_over_processes(local_rows(scored.rollouts.mask).sum(1))
    # a process whose rewards all failed has only "overall": the names are agreed first, a missing part is 0
    names = sorted({name for names in allgather_json(sorted(scored.parts)) for name in names})
    zeros = np.zeros(len(scored.finish), np.float32)
    parts = {name: gather_over_processes(np.asarray(scored.parts.get(name, zeros), np.float32)) for name in names}
    finish = gather_over_processes(np.asarray(scored.finish))
    metrics = {f"reward/{name}": float(np.mean(v)) for name, v in parts.items()}
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
    failures = gather_over_processes(np.asarray([[scored.reward_failures[k] for k in sorted(scored.reward_failures)]]))
    metrics.update({f"reward_failures/{k}": float(v) for k, v in zip(sorted(scored.reward_failures), failures.sum(0))})
    return metrics
