"""Scored rollout batches without a sampler: text-only prompts, chosen scores, each rollout's tokens its row id."""

import jax
import jax.numpy as jnp
import numpy as np

from shuffle_r1_jax.models.qwen2_5_vl import prepare_inputs
from shuffle_r1_jax.models.qwen2_5_vl.config import Qwen25VLConfig
from shuffle_r1_jax.rollout.types import Rollouts, ScoredRollouts


def fake_scored(scores, n=2, length=3, first_row=0, config=None):
    """A `ScoredRollouts` of len(scores) / n text-only prompts with the given "overall" scores.

    Args:
      scores: the rollouts' scores, grouped by prompt (`float[P * n]`).
      n: rollouts per prompt.
      length: response tokens per rollout.
      first_row: rollout r's tokens are all `first_row + r` (`int32[P * n, length]`), to tell rows apart after a
        merge.
      config: the model config of the prompts (default `Qwen25VLConfig()`).

    Returns:
      The scored batch on this process's devices; responses are "r<score>".
    """
    rows = len(scores)
    prompt_ids = np.arange(1, 1 + 2 * rows // n).reshape(rows // n, 2) % 100
    prompts = prepare_inputs(config or Qwen25VLConfig(), prompt_ids)
    tokens = np.broadcast_to(np.arange(first_row, first_row + rows, dtype=np.int32)[:, None], (rows, length))
    return ScoredRollouts(
        rollouts=Rollouts(
            jax.tree.map(jnp.asarray, prompts),
            jnp.asarray(tokens),
            jnp.ones((rows, length), jnp.int32),
            jnp.zeros((rows, length)),
        ),
        responses=[f"r{s}" for s in scores],
        parts={"overall": np.asarray(scores, np.float32)},
        token_rewards=np.zeros((rows, length), np.float32),
        reward_failures={"timeout": 0},
        finish=np.zeros(rows, np.int32),
        timings={"generate": 1.0},
    )
