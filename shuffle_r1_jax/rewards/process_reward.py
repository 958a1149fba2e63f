"""A process reward model plugged in like a reward function: a value model scores each step of a response.

The model is a critic in the layout the trainer exports (`scripts/export_to_hf.py --critic`): a Hugging Face
Qwen2.5-VL directory with `value_head.safetensors` beside it. It reads the problem as the user turn of the
checkpoint's chat template (text only: the images are not shown to it) followed by the response, and its value at
the last token of each step is that step's reward, returned as a span over the step's characters (token-level
rewards: REINFORCE++ and GAE place it at that token, outcome estimators add it to the score). The outcome parts
come from another reward (`outcome`, default "math").

    reward.name = "prm"
    reward.options = {"checkpoint": "runs/critic_export", "outcome": "math", "step_weight": 0.1}

Steps are the response's pieces between `step_separator` (default a blank line), blank pieces left out. Each reward
worker process loads the model once (on its default JAX device) and keeps it; sequences are padded to a multiple
of 64 tokens, so a worker compiles once per length bucket.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from shuffle_r1_jax.models.qwen2_5_vl import load_pretrained
from shuffle_r1_jax.models.qwen2_5_vl.model import prepare_inputs
from shuffle_r1_jax.models.qwen2_5_vl.text import causal_mask
from shuffle_r1_jax.models.qwen2_5_vl.value_model import (
    abstract_value_model,
    read_value_head,
    value_params_from_policy,
)
from shuffle_r1_jax.rewards.registry import get_reward_fn

LENGTH_BUCKET = 64


class ProcessRewardModelError(ValueError):
    """The process reward model cannot be loaded; the message names the checkpoint."""


def step_spans(response: str, separator: str) -> list[tuple[int, int]]:
    """(start, end) character ranges of the response's steps: the pieces between `separator`, stripped of
    surrounding whitespace, blank ones left out."""
    spans, start = [], 0
    for piece in response.split(separator):
        stripped = piece.strip()
        if stripped:
            begin = start + piece.index(stripped)
            spans.append((begin, begin + len(stripped)))
        start += len(piece) + len(separator)
    return spans


@functools.partial(jax.jit, static_argnums=0)
def _values(graphdef, params, input_ids, attention_mask, position_ids):
    model = nnx.merge(graphdef, params)
    hidden, _ = model.decode(model.embed(input_ids), position_ids, causal_mask(attention_mask))
    return model.values(hidden)


class ProcessRewardModel:
    """A value model that scores steps of responses (see the module docstring).

    Args:
      checkpoint: a Hugging Face Qwen2.5-VL directory with `value_head.safetensors`.

    Raises:
      ProcessRewardModelError: the directory has no value head.
    """

    def __init__(self, checkpoint: str):
        from transformers import AutoTokenizer

        policy, config = load_pretrained(checkpoint)
        head = read_value_head(checkpoint, config.text.hidden_size)
        if head is None:
            raise ProcessRewardModelError(
                f"{checkpoint}: no value_head.safetensors (export a critic with scripts/export_to_hf.py --critic)"
            )
        self.config = config
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.graphdef = nnx.graphdef(abstract_value_model(config))
        params = value_params_from_policy(nnx.to_pure_dict(nnx.state(policy, nnx.Param)), head, with_vision=False)
        self.params = jax.tree.map(jnp.asarray, params)

    def step_values(self, problem: str, response: str, ends: list[int]) -> list[float]:
        """The model's value at the token holding each character position `ends[i] - 1` of the response.

        Args:
          problem: the user turn's text.
          response: the assistant's text.
          ends: exclusive character ends of the steps, each in [1, len(response)].

        Returns:
          One float per end.
        """
        prompt = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": problem}], add_generation_prompt=True, tokenize=False
        )
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        encoded = self.tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
        offsets = np.asarray(encoded["offset_mapping"], np.int64).reshape(-1, 2)
        ids = list(prompt_ids) + list(encoded["input_ids"])
        length = -(-len(ids) // LENGTH_BUCKET) * LENGTH_BUCKET
        input_ids = np.full((1, length), self.tokenizer.pad_token_id or 0, np.int32)
        input_ids[0, : len(ids)] = ids
        mask = np.zeros((1, length), np.int32)
        mask[0, : len(ids)] = 1
        inputs = prepare_inputs(self.config, input_ids, mask)
        values = np.asarray(
            _values(self.graphdef, self.params, inputs.input_ids, inputs.attention_mask, inputs.position_ids)
        )[0]
        # the token holding character end - 1: the last token that starts before the end
        tokens = [int(np.searchsorted(offsets[:, 0], end - 1, side="right")) - 1 for end in ends]
        return [float(values[len(prompt_ids) + max(t, 0)]) for t in tokens]


@functools.lru_cache(maxsize=2)
def _model(checkpoint: str) -> ProcessRewardModel:
    return ProcessRewardModel(checkpoint)


def prm_reward(
    response: str,
    answer: str,
    *,
    problem: str = "",
    checkpoint: str,
    outcome: str = "math",
    step_weight: float = 1.0,
    step_separator: str = "\n\n",
) -> dict[str, Any]:
    """The outcome reward's parts plus the process reward model's step rewards as spans.

    Args:
      response: the response text.
      answer: the reference answer (for the outcome reward).
      problem: the prompt's problem text (the reward context gives it).
      checkpoint: the process reward model (`ProcessRewardModel`).
      outcome: the outcome reward's registered name or "module:function".
      step_weight: the factor on each step's value.
      step_separator: what separates the response's steps.

    Returns:
      The outcome parts, "prm/step_mean" (the mean step value, 0 without steps) and "spans": one
      (start, end, step_weight x value) per step.
    """
    parts = dict(get_reward_fn(outcome)(response, answer))
    steps = step_spans(response, step_separator)
    values = _model(checkpoint).step_values(problem, response, [end for _, end in steps]) if steps else []
    parts["prm/step_mean"] = float(np.mean(values)) if values else 0.0
    parts["spans"] = [(start, end, step_weight * value) for (start, end), value in zip(steps, values)]
    return parts
