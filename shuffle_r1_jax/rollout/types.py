"""The rollout batch as it flows from the sampler to the update: `Rollouts` on device, `ScoredRollouts` with the
host's rewards."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from shuffle_r1_jax.models.qwen2_5_vl.model import ModelInputs


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Rollouts:
    """A rollout batch on device: P prompts, R = P * n responses (row r answers prompt r // n).

    Attributes:
      prompts: the left-padded prompt batch (`ModelInputs`, P rows, prompt length Lp).
      tokens: `int32[R, Lr]` response tokens.
      mask: `int32[R, Lr]` response mask.
      sampler_logprobs: `float32[R, Lr]` log-probs of the response tokens reported by the sampler.
    """

    prompts: ModelInputs
    tokens: jax.Array
    mask: jax.Array
    sampler_logprobs: jax.Array

    @property
    def samples_per_prompt(self) -> int:
        """n, the responses per prompt (R // P)."""
        return self.tokens.shape[0] // self.prompts.input_ids.shape[0]


@dataclasses.dataclass
class ScoredRollouts:
    """One rollout batch after rewards: P prompts x n samples, R = P * n rows (over all processes).

    `responses`, `parts`, `token_rewards`, `reward_failures` and `finish` hold this process's rows only
    (r = R / process_count, in the order of its rows in the global arrays).

    Attributes:
      rollouts: global device arrays (prompts, tokens, mask, sampler log-probs; rows sharded over the batch axes).
      responses: decoded texts `[r]`.
      parts: reward part name -> `float32[r]` (always "overall").
      token_rewards: `float32[r, Lr]` the rewards' span rewards at the response positions that complete the spans
        (`rollout.token_rewards`); all 0 without spans.
      reward_failures: reason -> count.
      finish: `int32[r]` finish reasons (`sampling.FINISH_EOS` or `sampling.FINISH_LENGTH`).
      timings: seconds spent generating (`generate`) and scoring (`reward`).
      host_prompts: this process's prompt batch (numpy `ModelInputs`, image slots into its own image rows), or
        None when `rollouts.prompts` is that batch.
      image_features: the merged-token features of `rollouts.prompts.vision` under the sampling parameters (a
        global array), or None (no images, or a batch merged from several).
    """

    rollouts: Rollouts
    responses: list[str]
    parts: dict[str, np.ndarray]
    token_rewards: np.ndarray
    reward_failures: dict[str, int]
    finish: np.ndarray
    timings: dict[str, float]
    host_prompts: ModelInputs | None = None
    image_features: jax.Array | None = None
