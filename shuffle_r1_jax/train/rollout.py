"""The rollout phase of a step: generate, decode, score on the host, and compute advantages.

Host work is limited to what must run there: decoding token ids to text and the reward functions.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from shuffle_r1_jax.processing.batch import PromptBatch
from shuffle_r1_jax.rewards.pool import RewardPool
from shuffle_r1_jax.rl import advantages as adv_lib
from shuffle_r1_jax.sampling import FINISH_LENGTH, SampleOutput, Sampler
from shuffle_r1_jax.train.logprobs import Rollouts


@dataclasses.dataclass
class ScoredRollouts:
    """One rollout batch after rewards: P prompts x n samples, R = P * n rows.

    rollouts: device arrays (prompts, tokens, mask, sampler log-probs); responses: decoded texts `[R]`;
    parts: reward part name -> `float32[R]` (always "overall"); reward_failures: reason -> count;
    finish: `int32[R]` finish reasons; timings: seconds spent generating and scoring.
    """

    rollouts: Rollouts
    responses: list[str]
    parts: dict[str, np.ndarray]
    reward_failures: dict[str, int]
    finish: np.ndarray
    timings: dict[str, float]


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
) -> ScoredRollouts:
    """Samples n responses per prompt of `batch` and scores each against its prompt's answer."""
    start = time.perf_counter()
    prompts = jax.tree.map(jnp.asarray, batch.inputs)
    out: SampleOutput = sampler.generate(params, prompts, n=n, max_new_tokens=max_new_tokens, key=key)
    tokens, mask = np.asarray(out.tokens), np.asarray(out.mask)
    generated = time.perf_counter()
    responses = decode_responses(tokenizer, tokens, mask)
    answers = [a for a in batch.answers for _ in range(n)]
    scores = reward_pool.score(responses, answers, timeout_s=reward_timeout_s)
    return ScoredRollouts(
        rollouts=Rollouts(prompts, out.tokens, out.mask, out.logprobs),
        responses=responses,
        parts=scores.parts,
        reward_failures=scores.failure_counts,
        finish=np.asarray(out.finish),
        timings={"generate": generated - start, "reward": time.perf_counter() - generated},
    )


def compute_advantages(estimator: str, scores: np.ndarray, mask: jax.Array, n: int) -> adv_lib.Advantages:
    """Advantages of the configured estimator from per-rollout scores `[R]` and the response mask `[R, T]`.

    Returns `Advantages` with token `[P, n, T]` and rollout `[P, n]` arrays.
    """
    length = mask.shape[1]
    group_mask = jnp.asarray(mask).reshape(-1, n, length)
    token_rewards = adv_lib.outcome_token_rewards(jnp.asarray(scores, jnp.float32).reshape(-1, n), group_mask)
    return adv_lib.get_advantage_estimator(estimator)(token_rewards, group_mask)


def rollout_metrics(scored: ScoredRollouts) -> dict[str, float]:
    """Reward parts, response lengths and the truncation (clip) ratio of a rollout batch."""
    lengths = np.asarray(scored.rollouts.mask).sum(1)
    metrics = {f"reward/{name}": float(np.mean(v)) for name, v in scored.parts.items()}
    if "accuracy" in scored.parts:
        metrics["accuracy"] = float(np.mean(scored.parts["accuracy"]))
    metrics.update(
        {
            "response_length/mean": float(lengths.mean()),
            "response_length/max": float(lengths.max()),
            "response_length/min": float(lengths.min()),
            "response_length/clip_ratio": float(np.mean(scored.finish == FINISH_LENGTH)),
        }
    )
    metrics.update({f"reward_failures/{k}": float(v) for k, v in scored.reward_failures.items()})
    return metrics
