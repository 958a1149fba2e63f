"""Supervised fine-tuning on (prompt, response text) pairs: cross-entropy on the response tokens.

The demo uses it for its short warm-up (the starting policy); it shares the RL trainer's sequence layout and
chunked log-probs.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from shuffle_r1_jax.processing.batch import PromptBatch
from shuffle_r1_jax.train.logprobs import Rollouts, response_logprobs


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
        rollouts = Rollouts(jax.tree.map(jnp.asarray, batch.inputs), jnp.asarray(tokens), jnp.asarray(mask), jnp.zeros(tokens.shape))
        params, opt_state, loss = _sft_step(graphdef, params, opt_state, optimizer, rollouts, chunk=max_response_tokens)
        log(step, float(loss))
    return params
