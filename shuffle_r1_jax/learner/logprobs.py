"""Policy log-probs of rollouts: prompt + response sequences through the model, log-probs in chunks.

The vocabulary projection runs over `chunk` response positions at a time under `jax.checkpoint`, so neither the
forward nor the backward ever holds a full `[rows, response_length, vocab]` fp32 tensor. Traced under
`jax.set_mesh(mesh)`, the rows' activations are sharded over the mesh's batch axes (when they divide).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from shuffle_r1_jax.learner.packing import PackingPlan, pack_sequences, sequence_lengths, unpack_responses
from shuffle_r1_jax.models.qwen2_5_vl.model import Qwen25VL
from shuffle_r1_jax.models.qwen2_5_vl.text import causal_mask, segment_causal_mask
from shuffle_r1_jax.parallel.sharding import constrain_rows
from shuffle_r1_jax.rl.metrics import entropy_from_logits
from shuffle_r1_jax.rollout.types import Rollouts


def sequence_inputs(rollouts: Rollouts, rows: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Prompt + response sequences of the given rollout rows.

    Args:
      rollouts: the rollout batch (prompt length Lp, response length Lr).
      rows: `int32[B]` rollout row ids.

    Returns:
      (input_ids `int32[B, Lp + Lr]`, attention_mask `int32[B, Lp + Lr]`, position_ids `int32[3, B, Lp + Lr]`
      (responses continue each prompt's M-RoPE positions), vision_token_slot `int32[B, Lp + Lr]` (-1 on the
      response positions) or None when the prompts have no images).
    """
    prompts = rollouts.prompts
    prompt_rows = rows // rollouts.samples_per_prompt
    response_len = rollouts.tokens.shape[1]
    ids = jnp.concatenate([prompts.input_ids[prompt_rows], rollouts.tokens[rows]], axis=1)
    prompt_mask = prompts.attention_mask[prompt_rows]
    mask = jnp.concatenate([prompt_mask, rollouts.mask[rows]], axis=1)
    start = prompt_mask.sum(-1) + prompts.rope_deltas[prompt_rows]
    response_pos = jnp.broadcast_to((start[:, None] + jnp.arange(response_len))[None], (3, len(rows), response_len))
    positions = jnp.concatenate([prompts.position_ids[:, prompt_rows], response_pos.astype(jnp.int32)], axis=2)
    if prompts.vision_token_slot is None:
        slots = None
    else:
        slots = jnp.concatenate(
            [prompts.vision_token_slot[prompt_rows], jnp.full((len(rows), response_len), -1, jnp.int32)], axis=1
        )
    return ids, mask, positions, slots


def token_logprobs(
    model: Qwen25VL, hidden: jax.Array, targets: jax.Array, *, temperature: float, chunk: int, with_entropy: bool
) -> tuple[jax.Array, jax.Array | None]:
    """log_softmax(logits / temperature) at `targets`, `chunk` positions at a time under `jax.checkpoint`.

    Args:
      model: the policy (its output projection).
      hidden: `[B, L, H]` final hidden states.
      targets: `int32[B, L]` the token each position predicts.
      temperature: the sampling temperature the logits are divided by.
      chunk: positions per vocabulary chunk.
      with_entropy: also return the entropy of softmax(logits / temperature) at each position.

    Returns:
      (log-probs `float32[B, L]`, entropy `float32[B, L]` or None when `with_entropy` is False).
    """
    length = hidden.shape[1]
    n_chunks = -(-length // chunk)
    pad = n_chunks * chunk - length
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))

    @jax.checkpoint
    def one_chunk(args):
        h, t = args
        logits = model.logits(h).astype(jnp.float32) / temperature
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), t[..., None], -1)[..., 0]
        ent = entropy_from_logits(logits) if with_entropy else jnp.zeros_like(logp)
        return logp, ent

    def split(x):
        return jnp.moveaxis(x.reshape(x.shape[0], n_chunks, chunk, *x.shape[2:]), 1, 0)

    logp, ent = jax.lax.map(one_chunk, (split(hidden), split(targets)))

    def merge(x):
        return jnp.moveaxis(x, 0, 1).reshape(x.shape[1], n_chunks * chunk)[:, :length]

    return merge(logp), (merge(ent) if with_entropy else None)


def response_outputs(
    model: Qwen25VL,
    rollouts: Rollouts,
    rows: jax.Array,
    head: Callable[[jax.Array, jax.Array], tuple[jax.Array, ...]],
    *,
    image_features: jax.Array | None = None,
    plan: PackingPlan | None = None,
) -> tuple[jax.Array, ...]:
    """Runs the prompt + response sequences of `rows` through the decoder and applies `head` at the positions that
    predict each response token (position prompt_len - 1 + j predicts response token j).

    Args:
      model: the policy or the value model (anything with `embed` and `decode`).
      rollouts: the rollout batch (response length Lr).
      rows: `int32[B]` rollout row ids.
      head: (final hidden states `[b, L, H]`, the token each position predicts `int32[b, L]`) -> a tuple of
        `float32[b, L]` per-position outputs (log-probs, entropy, values).
      image_features: precomputed merged-token features of `rollouts.prompts.vision` (frozen vision tower); when
        None and the prompts have images, the vision tower runs here (and is differentiated).
      plan: where the rows' sequences sit in packed rows (`bin`/`offset` `int32[B]`); None runs the padded rows.
        Packed, rows the plan leaves out read 0.

    Returns:
      `head`'s outputs at the response positions, each `float32[B, Lr]`.
    """
    ids, mask, positions, slots = sequence_inputs(rollouts, rows)
    vision = rollouts.prompts.vision if image_features is None else None
    prompt_len, response_len = rollouts.prompts.input_ids.shape[1], rollouts.tokens.shape[1]
    if plan is None:
        embeds = constrain_rows(model.embed(ids, vision, slots, image_features))
        hidden, _ = model.decode(embeds, positions, causal_mask(mask))
        predictors = hidden[:, prompt_len - 1 : prompt_len - 1 + response_len]
        return head(predictors, rollouts.tokens[rows])
    prompt_lengths, response_extent = sequence_lengths(rollouts, rows)
    keep = mask.astype(bool).at[:, prompt_len:].set(jnp.arange(response_len)[None, :] < response_extent[:, None])
    packed = pack_sequences(ids, positions, slots, keep, plan.bin, plan.offset, plan.packed_rows)
    embeds = constrain_rows(model.embed(packed.input_ids, vision, packed.vision_token_slot, image_features))
    hidden, _ = model.decode(embeds, packed.position_ids, segment_causal_mask(packed.segment_ids))
    outputs = head(constrain_rows(hidden), packed.next_ids)
    return tuple(
        unpack_responses(x, plan.bin, plan.offset, prompt_lengths, response_extent, response_len) for x in outputs
    )


def response_logprobs(
    model: Qwen25VL,
    rollouts: Rollouts,
    rows: jax.Array,
    *,
    temperature: float,
    chunk: int,
    image_features: jax.Array | None = None,
    with_entropy: bool = False,
    plan: PackingPlan | None = None,
) -> tuple[jax.Array, jax.Array | None]:
    """log_softmax(logits / temperature) of each response token of `rows`, and optionally the entropy.

    Args:
      model: the policy.
      rollouts: the rollout batch (response length Lr).
      rows: `int32[B]` rollout row ids.
      temperature: the sampling temperature the logits are divided by.
      chunk: positions per vocabulary chunk.
      image_features: see `response_outputs`.
      with_entropy: also return the entropy of softmax(logits / temperature) at each response position.
      plan: see `response_outputs`.

    Returns:
      (log-probs `float32[B, Lr]`, entropy `float32[B, Lr]` or None when `with_entropy` is False).
    """

    def head(hidden, targets):
        logp, ent = token_logprobs(
            model, hidden, targets, temperature=temperature, chunk=chunk, with_entropy=with_entropy
        )
        return (logp,) if ent is None else (logp, ent)

    outputs = response_outputs(model, rollouts, rows, head, image_features=image_features, plan=plan)
    return outputs[0], (outputs[1] if with_entropy else None)


def rollout_logprobs(
    graphdef: nnx.GraphDef,
    params,
    rollouts: Rollouts,
    image_features: jax.Array | None,
    rows: jax.Array,
    *,
    micro_batch_rows: int,
    temperature: float,
    chunk: int,
    plan: PackingPlan | None = None,
) -> jax.Array:
    """Log-probs of the response tokens of the rollout rows `rows` under `params`, `micro_batch_rows` rows at a
    time, written into a rollout-batch-shaped array (the old and reference log-probs of a step: the update reads
    only its own rows, so only those are computed, as the official code does after resampling).

    Jittable with the keywords and `graphdef` static.

    Args:
      graphdef: the model's graph definition (static).
      params: the model's parameters, a pure dict.
      rollouts: the rollout batch, R rows.
      image_features: the merged-token features of `rollouts.prompts.vision` (frozen vision tower), or None.
      rows: `int32[U]` rollout row ids (repeats allowed); `micro_batch_rows` must divide U.
      micro_batch_rows: rows per pass.
      temperature: the sampling temperature.
      chunk: positions per vocabulary chunk.
      plan: the packing of each pass (`bin`/`offset` `int32[U / micro_batch_rows, micro_batch_rows]`, see
        `learner.packing`), or None for padded passes.

    Returns:
      `float32[R, Lr]`: the log-probs at the rows of `rows`, 0 elsewhere; rows sharded over the batch axes under a
      context mesh.
    """

    def one_pass(r, micro_plan):  # merged inside the mapped body: remat layers cannot cross trace levels
        model = nnx.merge(graphdef, params)
        return response_logprobs(
            model, rollouts, r, temperature=temperature, chunk=chunk, image_features=image_features, plan=micro_plan
        )[0]

    return map_row_passes(one_pass, rollouts, rows, plan, micro_batch_rows=micro_batch_rows)


def map_row_passes(
    one_pass: Callable[[jax.Array, PackingPlan | None], jax.Array],
    rollouts: Rollouts,
    rows: jax.Array,
    plan: PackingPlan | None,
    *,
    micro_batch_rows: int,
) -> jax.Array:
    """Runs `one_pass` over `rows` in passes of `micro_batch_rows` rows (`jax.lax.map`) and writes each row's
    `float32[Lr]` output into a rollout-batch-shaped array.

    Args:
      one_pass: (`int32[micro_batch_rows]` rows, the pass's packing plan or None) -> `float32[micro_batch_rows,
        Lr]`; it merges the model inside (remat layers cannot cross trace levels).
      rollouts: the rollout batch, R rows.
      rows: `int32[U]` rollout row ids (repeats allowed); `micro_batch_rows` must divide U.
      plan: each pass's packing (leading axis U / micro_batch_rows), or None.
      micro_batch_rows: rows per pass.

    Returns:
      `float32[R, Lr]`: the outputs at the rows of `rows`, 0 elsewhere; rows sharded over the batch axes under a
      context mesh.
    """
    outputs = jax.lax.map(lambda args: one_pass(*args), (rows.reshape(-1, micro_batch_rows), plan))
    out = jnp.zeros(rollouts.tokens.shape, jnp.float32).at[rows].set(outputs.reshape(rows.shape[0], -1))
    return constrain_rows(out)
