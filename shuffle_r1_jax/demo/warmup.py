"""The demo's warm-up of its starting policy: supervised fine-tuning on (prompt, response text) pairs,
cross-entropy on the response tokens, with the RL update's sequence layout and chunked log-probs.

The targets are well-formatted responses whose answer is the right one with probability `correct_fraction` and
otherwise drawn at random from the task's answer set: the starting policy knows the format and is partly right
(as an Instruct model would be), and RL has to sharpen it.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from shuffle_r1_jax.demo.synthetic import TASK_ANSWERS, response_text, task_of_problem
from shuffle_r1_jax.learner.logprobs import response_logprobs
from shuffle_r1_jax.processing.batch import PromptBatch
from shuffle_r1_jax.rollout.types import Rollouts


def tokenize_responses(tokenizer, texts: list[str], eos_id: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded response ids ending with `eos_id`, truncated to `length`: (`int32[B, length]`, mask)."""
    tokens = np.zeros((len(texts), length), np.int32)
    mask = np.zeros((len(texts), length), np.int32)
    for i, text in enumerate(texts):
        ids = (tokenizer(text, add_special_tokens=False)["input_ids"] + [eos_id])[:length]
        tokens[i, : len(ids)], mask[i, : len(ids)] = ids, 1
    return tokens, mask


@functools.partial(jax.jit, static_argnames=("graphdef", "optimizer", "chunk"))
def _sft_step(graphdef, params, opt_state, optimizer, rollouts: Rollouts, *, chunk: int):
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
    """Trains `params` (a pure dict) for `steps` batches with Adam; `responses(batch)` gives each prompt's
    target text. Returns the new params. `log(step, loss)` is called every step."""
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


def warmup_responses(rng: np.random.Generator, correct_fraction: float) -> Callable[[PromptBatch], list[str]]:
    """The warm-up's target texts of a batch of synthetic prompts: the right answer with probability
    `correct_fraction`, else a random answer of the task, in the task's response format."""

    def responses(batch: PromptBatch) -> list[str]:
        texts = []
        for problem, answer in zip(batch.problems, batch.answers):
            task = task_of_problem(problem)
            if rng.random() >= correct_fraction:
                answer = str(rng.choice(TASK_ANSWERS[task]))
            texts.append(response_text(task, answer))
        return texts

    return responses
