"""The demo's warm-up of its starting policy: supervised fine-tuning on (prompt, response text) pairs,
cross-entropy on the response tokens, with the RL update's sequence layout and chunked log-probs.

The targets are well-formatted responses whose answer is the right one with probability `correct_fraction` and
otherwise drawn at random from the task's answer set (a grounding target: a box of the right size at a random
place): the starting policy knows the format and is partly right (as an Instruct model would be), and RL has to
sharpen it. Grounding boxes are written in the resized image's pixels, the frame the model sees and the
`grounding_iou` reward reads responses in (the prompt's `image_sizes`).
"""

from __future__ import annotations

import functools
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from shuffle_r1_jax.demo.synthetic import (
    TASK_ANSWERS,
    grounding_response_text,
    grounding_target,
    response_text,
    task_of_problem,
)
from shuffle_r1_jax.learner.logprobs import response_logprobs
from shuffle_r1_jax.processing.batch import PromptBatch
from shuffle_r1_jax.rewards.boxes import read_true_boxes, resize_scale, scale_box
from shuffle_r1_jax.rollout.types import Rollouts


def tokenize_responses(tokenizer, texts: list[str], eos_id: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded response ids: each text's ids then `eos_id`, cut to `length` (a cut response loses its eos).

    Args:
      tokenizer: a Hugging Face tokenizer; texts are encoded without special tokens.
      texts: B response texts.
      eos_id: the id appended to each text.
      length: the padded length.

    Returns:
      (tokens, mask): int32 `[B, length]` ids (0 in padding) and int32 `[B, length]` 1 on response tokens.
    """
    tokens = np.zeros((len(texts), length), np.int32)
    mask = np.zeros((len(texts), length), np.int32)
    for i, text in enumerate(texts):
        ids = (tokenizer(text, add_special_tokens=False)["input_ids"] + [eos_id])[:length]
        tokens[i, : len(ids)], mask[i, : len(ids)] = ids, 1
    return tokens, mask


@functools.partial(jax.jit, static_argnames=("graphdef", "optimizer", "chunk"))
def _sft_step(graphdef, params, opt_state, optimizer, rollouts: Rollouts, *, chunk: int):
    """One optimizer step on the mean negative log-likelihood of the response tokens: (params, opt_state, loss)."""
    rows = jnp.arange(rollouts.tokens.shape[0])

    def loss_fn(p):
        logp, _ = response_logprobs(nnx.merge(graphdef, p), rollouts, rows, temperature=1.0, chunk=chunk)
        mask = rollouts.mask.astype(jnp.float32)
        return -jnp.sum(logp * mask) / jnp.maximum(jnp.sum(mask), 1.0)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def supervised_finetune(
    graphdef: nnx.GraphDef,
    params,
    batches: Iterator[PromptBatch],
    responses: Callable[[PromptBatch], list[str]],
    *,
    tokenizer,
    eos_id: int,
    steps: int,
    learning_rate: float,
    max_response_tokens: int,
    log: Callable[[int, float], None] = lambda step, loss: None,
):
    """Trains `params` with Adam for `steps` batches on the mean cross-entropy of the target response tokens.

    Args:
      graphdef: the model's `nnx.GraphDef`.
      params: the model's parameters as a pure dict (`nnx.to_pure_dict` of its `nnx.Param` state).
      batches: prompt batches; one is drawn per step.
      responses: `responses(batch)` gives each prompt's target text, in batch order.
      tokenizer: a Hugging Face tokenizer that encodes the target texts.
      eos_id: the id appended to each target.
      steps: number of optimizer steps.
      learning_rate: Adam's learning rate.
      max_response_tokens: target length in tokens (longer targets are cut), also the log-prob chunk.
      log: called as `log(step, loss)` after every step, with the 0-based step and the float loss.

    Returns:
      The trained params, a pure dict like `params`.
    """
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(params)
    for step in range(steps):
        batch = next(batches)
        tokens, mask = tokenize_responses(tokenizer, responses(batch), eos_id, max_response_tokens)
        rollouts = Rollouts(
            jax.tree.map(jnp.asarray, batch.inputs), jnp.asarray(tokens), jnp.asarray(mask), jnp.zeros(tokens.shape)
        )
        params, opt_state, loss = _sft_step(graphdef, params, opt_state, optimizer, rollouts, chunk=max_response_tokens)
        log(step, float(loss))
    return params


def grounding_warmup_box(
    rng: np.random.Generator, answer: str, image_sizes, correct: bool
) -> tuple[int, int, int, int]:
    """A grounding warm-up target's box in the resized image's pixels, rounded to integers.

    Args:
      rng: draws the place of a wrong box.
      answer: the true box in original-image pixels (JSON, `grounding_iou`'s answer).
      image_sizes: the prompt's (original width, original height, resized width, resized height) per image.
      correct: the true box scaled into the resized frame; else a box of its size at a uniformly random place
        inside the resized image.
    """
    (true,) = read_true_boxes(answer)
    x1, y1, x2, y2 = (int(round(v)) for v in scale_box(true, resize_scale(image_sizes)))
    if correct:
        return x1, y1, x2, y2
    width, height = x2 - x1, y2 - y1
    _, _, resized_width, resized_height = image_sizes[0]
    x1, y1 = int(rng.integers(0, resized_width - width + 1)), int(rng.integers(0, resized_height - height + 1))
    return x1, y1, x1 + width, y1 + height


def warmup_responses(rng: np.random.Generator, correct_fraction: float) -> Callable[[PromptBatch], list[str]]:
    """The warm-up's target texts of a batch of synthetic prompts.

    Args:
      rng: draws which targets are right and the random answers; consumed across calls.
      correct_fraction: the probability that a target gives the right answer; otherwise it gives an answer drawn
        uniformly from the task's answer set (which may be the right one), or for grounding a randomly placed box
        (`grounding_warmup_box`).

    Returns:
      A function of a `PromptBatch` that returns one target per prompt, in the task's response format
      (`response_text`, `grounding_response_text` with the box in the resized image's pixels).
    """

    def responses(batch: PromptBatch) -> list[str]:
        texts = []
        for problem, answer, context in zip(batch.problems, batch.answers, batch.reward_contexts):
            task = task_of_problem(problem)
            correct = rng.random() < correct_fraction
            if task == "grounding":
                box = grounding_warmup_box(rng, answer, context["image_sizes"], correct)
                texts.append(grounding_response_text(grounding_target(problem), box))
                continue
            if not correct:
                answer = str(rng.choice(TASK_ANSWERS[task]))
            texts.append(response_text(task, answer))
        return texts

    return responses
