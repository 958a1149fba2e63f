"""Generating and scoring one rollout batch: sample n responses per prompt, decode them, score them on the host.

Host work is limited to what must run there: decoding token ids to text, the reward functions and placing their
span rewards on tokens. With several
processes each decodes and scores its own rows (those of its prompts).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import numpy as np

from shuffle_r1_jax.models.qwen2_5_vl.model import VisionInputs
from shuffle_r1_jax.processing.batch import PromptBatch
from shuffle_r1_jax.rewards.pool import RewardPool
from shuffle_r1_jax.rollout.placement import BatchPlacer
from shuffle_r1_jax.rollout.token_rewards import span_token_rewards
from shuffle_r1_jax.rollout.types import Rollouts, ScoredRollouts
from shuffle_r1_jax.sampling import SampleOutput, Sampler


def decode_responses(tokenizer, tokens: np.ndarray, mask: np.ndarray) -> list[str]:
    """Texts of the masked response tokens (special tokens dropped).

    Args:
      tokenizer: a Hugging Face tokenizer.
      tokens: `int[R, T]` response tokens.
      mask: `int[R, T]` (or bool) response mask.

    Returns:
      R strings.
    """
    rows = [row[m.astype(bool)].tolist() for row, m in zip(tokens, mask)]
    return tokenizer.batch_decode(rows, skip_special_tokens=True)


@dataclasses.dataclass(frozen=True)
class RolloutGenerator:
    """Samples and scores rollout batches with one sampler.

    Attributes:
      sampler: the jitted prefill + decode.
      image_features: the jitted vision program `(params, VisionInputs) -> features` (run once per batch, ahead of
        the sampler calls).
      placer: puts each process's prompts on the mesh and reads its rows back.
      tokenizer: decodes the response tokens (and maps span rewards to them).
      reward_pool: scores the decoded responses.
      n: samples per prompt.
      max_new_tokens: response length.
      reward_timeout_s: the reward pool's time limit per sample.
      prompts_per_call: prompts (over all processes) per sampler call, 0 = the whole batch in one call.
      reward_batch_timeout_s: the reward pool's time limit on this process's samples of a batch; 0 = none.
    """

    sampler: Sampler
    image_features: Callable[[Any, VisionInputs], jax.Array]
    placer: BatchPlacer
    tokenizer: Any
    reward_pool: RewardPool
    n: int
    max_new_tokens: int
    reward_timeout_s: float
    prompts_per_call: int = 0
    reward_batch_timeout_s: float = 0.0

    def __call__(self, params, batch: PromptBatch, key: jax.Array) -> ScoredRollouts:
        """Sample n responses per prompt of every process's `batch`; score this process's rows against their answers.

        Args:
          params: the policy parameters (a pure dict of global arrays).
          batch: this process's prompt batch (host arrays); every process passes one of the same size.
          key: a replicated PRNG key.

        Returns:
          `ScoredRollouts` of P prompts x n rows (over all processes).
        """
        start = time.perf_counter()
        prompts = self.placer.prompts(batch.inputs)
        features = None if prompts.vision is None else self.image_features(params, prompts.vision)
        out: SampleOutput = self.placer.reshard_rows(
            self.sampler.generate(
                params,
                prompts,
                n=self.n,
                max_new_tokens=self.max_new_tokens,
                key=key,
                prompts_per_call=self.prompts_per_call,
                image_features=features,
            )
        )
        tokens, mask = self.placer.local(out.tokens), self.placer.local(out.mask)
        generated = time.perf_counter()
        responses = decode_responses(self.tokenizer, tokens, mask)
        answers = [a for a in batch.answers for _ in range(self.n)]
        contexts = [c for c in batch.reward_contexts for _ in range(self.n)]
        scores = self.reward_pool.score(
            responses,
            answers,
            timeout_s=self.reward_timeout_s,
            batch_timeout_s=self.reward_batch_timeout_s,
            contexts=contexts,
        )
        return ScoredRollouts(
            rollouts=Rollouts(prompts, out.tokens, out.mask, out.logprobs),
            responses=responses,
            parts=scores.parts,
            token_rewards=span_token_rewards(self.tokenizer, tokens, mask, responses, scores.spans),
            reward_failures=scores.failure_counts,
            finish=self.placer.local(out.finish),
            timings={"generate": generated - start, "reward": time.perf_counter() - generated},
            host_prompts=batch.inputs,
            image_features=features,
        )
