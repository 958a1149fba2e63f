"""The jitted rollout sampler: prefill once per prompt, then n samples per prompt share that KV cache.

Compiled programs per (prompt length, response length, n) bucket:
  * image features: the vision tower over all the batch's images, once per `generate` (the caller's features
    when it passes them, as the trainer does with its own program; else `image_features_jit`);
  * prefill: the decoder over the prompts of a call (image features placed at image tokens), writing a cache
    with room for the response, then copying each prompt's cache rows n times (prompts * n rows);
  * decode: takes that cache donated (updated in place) and runs a `lax.while_loop` of one-token steps that
    ends when every row has stopped or the length is reached.
With `prompts_per_call`, the batch is sampled in chunks (`sampling.chunks`): prefill and decode run once per
chunk on that chunk's rows, so the KV cache holds one chunk; two small programs cut the prompt inputs and
merge the rollouts. Parameters are arguments of every program. `Sampler.compilations` counts the traces
(= compilations) of the sampler's own programs.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from shuffle_r1_jax.models.qwen2_5_vl.kv_cache import LayerKVCache
from shuffle_r1_jax.models.qwen2_5_vl.model import ModelInputs, image_features_jit
from shuffle_r1_jax.parallel.global_arrays import batch_shard_count
from shuffle_r1_jax.parallel.sharding import BATCH_AXES
from shuffle_r1_jax.sampling.chunks import merge_chunks, take_chunk
from shuffle_r1_jax.sampling.processors import SamplingConfig, choose_tokens

logger = logging.getLogger(__name__)

FINISH_LENGTH = 0
FINISH_EOS = 1


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SampleOutput:
    """Rollouts, row r = prompt r // n, sample r % n.

    Attributes:
      tokens: `int32[P*n, max_new]` (pad after the end).
      logprobs: `float32[P*n, max_new]` (0 after the end).
      mask: `int32[P*n, max_new]`, 1 on response tokens (the stop token included).
      finish: `int32[P*n]`, FINISH_EOS or FINISH_LENGTH.
      lengths: `int32[P*n]` response tokens per row (the sum of `mask`).
    """

    tokens: jax.Array
    logprobs: jax.Array
    mask: jax.Array
    finish: jax.Array
    lengths: jax.Array


class Sampler:
    """Generates n samples per prompt with a model split into (graphdef, state).

    Args:
      graphdef: the model's graph definition; the state is an argument of every program.
      config: the sampling settings.
      mesh: when given, the KV cache and the rollout rows are constrained to shard their batch dimension over
        (data, fsdp) and the KV heads over tensor; the parameters keep whatever sharding they have.

    Attributes:
      compilations: traces (= compilations) of the sampler's own programs.
      prefill_calls: prefill calls made (one per chunk of each `generate`).
    """

    def __init__(self, graphdef: nnx.GraphDef, config: SamplingConfig, mesh: Mesh | None = None):
        self.graphdef = graphdef
        self.config = config
        self.mesh = mesh
        self.compilations = 0
        self.prefill_calls = 0
        self._prefill = jax.jit(self._prefill_impl, static_argnames=("capacity", "n"))
        self._decode = jax.jit(self._decode_impl, static_argnames=("n", "max_new"), donate_argnames=("caches",))
        self._chunk = jax.jit(self._chunk_impl, static_argnames=("chunks", "shards"))
        self._merge = jax.jit(self._merge_impl, static_argnames=("shards",))

    @property
    def prefill_program(self):
        """The jitted prefill `generate` runs: `(state, inputs, features, *, capacity, n)` with `inputs.vision`
        None and `features` the batch's image features (or None); for ahead-of-time `.lower()`."""
        return self._prefill

    @property
    def decode_program(self):
        """The jitted decode loop `generate` runs: `(state, caches, logits, prompt_mask, rope_deltas, key, *, n,
        max_new)`, caches donated; for ahead-of-time `.lower()` (e.g. `perf/memory_plan.py`)."""
        return self._decode

    def _constrain(self, x: jax.Array, spec: PartitionSpec) -> jax.Array:
        if self.mesh is None:
            return x
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))

    def _constrain_cache(self, cache: LayerKVCache) -> LayerKVCache:
        spec = PartitionSpec(BATCH_AXES, None, "tensor", None)
        return LayerKVCache(self._constrain(cache.k, spec), self._constrain(cache.v, spec), cache.end)

    def _batch_shards(self, rows: int) -> int:
        """How many row shards a batch of `rows` rows is cut into on the mesh (1 when they do not divide)."""
        shards = 1 if self.mesh is None else batch_shard_count(self.mesh)
        return shards if rows % shards == 0 else 1

    def _chunk_impl(self, inputs: ModelInputs, index, *, chunks: int, shards: int) -> ModelInputs:
        self.compilations += 1

        def cut(x, axis=0):
            part = take_chunk(x, index, chunks=chunks, shards=shards, axis=axis)
            if self._batch_shards(part.shape[axis]) == 1:
                return part
            spec = [None] * part.ndim
            spec[axis] = BATCH_AXES
            return self._constrain(part, PartitionSpec(*spec))

        slots = None if inputs.image_token_slot is None else cut(inputs.image_token_slot)
        return ModelInputs(
            cut(inputs.input_ids),
            cut(inputs.attention_mask),
            cut(inputs.position_ids, 1),
            cut(inputs.rope_deltas),
            image_token_slot=slots,
        )

    def _merge_impl(self, outputs: list[SampleOutput], *, shards: int) -> SampleOutput:
        self.compilations += 1
        return jax.tree.map(lambda *parts: merge_chunks(list(parts), shards=shards), *outputs)

    def _prefill_impl(self, state, inputs: ModelInputs, features, *, capacity: int, n: int):
        self.compilations += 1
        batch, length = inputs.input_ids.shape
        logger.info("compiling sampler prefill: %d prompts x %d tokens, cache %d, n=%d", batch, length, capacity, n)
        model = nnx.merge(self.graphdef, state)
        t = model.config.text
        caches = [
            self._constrain_cache(LayerKVCache.empty(batch, capacity, t.num_key_value_heads, t.head_dim, model.dtype))
            for _ in model.layers
        ]
        key_valid = jnp.zeros((batch, capacity), bool).at[:, :length].set(inputs.attention_mask.astype(bool))
        mask = jnp.tril(jnp.ones((length, capacity), bool))[None] & key_valid[:, None, :]
        embeds = model.embed(inputs.input_ids, None, inputs.image_token_slot, features)
        hidden, caches = model.decode(embeds, inputs.position_ids, mask, caches)
        last_logits = model.logits(hidden[:, -1]).astype(jnp.float32)
        caches = [
            self._constrain_cache(LayerKVCache(jnp.repeat(c.k, n, 0), jnp.repeat(c.v, n, 0), c.end)) for c in caches
        ]
        return caches, self._constrain(jnp.repeat(last_logits, n, 0), PartitionSpec(BATCH_AXES, None))

    def _decode_impl(self, state, caches, logits, prompt_mask, rope_deltas, key, *, n: int, max_new: int):
        self.compilations += 1
        prompts, length = prompt_mask.shape
        logger.info("compiling sampler decode: %d prompts x n=%d, %d new tokens", prompts, n, max_new)
        cfg = self.config
        rows = prompts * n
        row_spec = PartitionSpec(BATCH_AXES)
        capacity = caches[0].k.shape[1]
        prompt_mask = jnp.repeat(prompt_mask.astype(bool), n, 0)
        next_position = (prompt_mask.sum(-1) + jnp.repeat(rope_deltas, n, 0)).astype(jnp.int32)
        key_valid = jnp.zeros((rows, capacity), bool).at[:, :length].set(prompt_mask)
        stop_ids = jnp.asarray(cfg.stop_token_ids or (-1,), jnp.int32)

        def cond(carry):
            step, done = carry[0], carry[3]
            return (step < max_new) & ~jnp.all(done)

        def body(carry):
            step, tokens, logprobs, done, caches, key_valid, logits, key = carry
            # merged inside the loop body: a model with remat layers cannot be used from an outer trace level
            model = nnx.merge(self.graphdef, state)
            key, sample_key = jax.random.split(key)
            token, logprob = choose_tokens(logits, sample_key, cfg)
            token = jnp.where(done, cfg.pad_token_id, token)
            logprob = jnp.where(done, 0.0, logprob)
            tokens = tokens.at[:, step].set(token)
            logprobs = logprobs.at[:, step].set(logprob)
            stopped = jnp.any(token[:, None] == stop_ids[None, :], axis=-1)
            new_done = done if cfg.ignore_stop else done | stopped
            # feed the token: its key/value goes to slot length + step, its position continues the prompt's
            key_valid = key_valid.at[:, length + step].set(~done)
            positions = jnp.broadcast_to((next_position + step)[None, :, None], (3, rows, 1))
            hidden, caches = model.decode(model.embed(token[:, None]), positions, key_valid[:, None, :], caches)
            caches = [self._constrain_cache(c) for c in caches]
            logits = self._constrain(model.logits(hidden[:, 0]).astype(jnp.float32), PartitionSpec(BATCH_AXES, None))
            return step + 1, tokens, logprobs, new_done, caches, key_valid, logits, key

        init = (
            jnp.zeros((), jnp.int32),
            self._constrain(jnp.full((rows, max_new), cfg.pad_token_id, jnp.int32), PartitionSpec(BATCH_AXES, None)),
            self._constrain(jnp.zeros((rows, max_new), jnp.float32), PartitionSpec(BATCH_AXES, None)),
            self._constrain(jnp.zeros((rows,), bool), row_spec),
            caches,
            key_valid,
            logits,
            key,
        )
        _, tokens, logprobs, done, caches, key_valid, _, _ = jax.lax.while_loop(cond, body, init)
        mask = key_valid[:, length : length + max_new].astype(jnp.int32)
        finish = jnp.where(done, FINISH_EOS, FINISH_LENGTH).astype(jnp.int32)
        return SampleOutput(tokens, logprobs, mask, finish, mask.sum(-1)), caches

    def generate(
        self,
        state: nnx.State,
        inputs: ModelInputs,
        *,
        n: int,
        max_new_tokens: int,
        key: jax.Array,
        prompts_per_call: int = 0,
        image_features: jax.Array | None = None,
    ) -> SampleOutput:
        """Samples n responses of at most `max_new_tokens` for each of the P prompts in `inputs`.

        Args:
          state: the model state (parameters) for `graphdef`.
          inputs: a left-padded prompt batch (`prepare_inputs` output, prompt length already bucketed).
          n: samples per prompt.
          max_new_tokens: the most tokens of a response.
          key: a PRNG key for this call (chunk j of several samples with `fold_in(key, j)`).
          prompts_per_call: prompts per prefill/decode call (0 = all P at once); must divide P.
          image_features: `image_features_jit` of `inputs.vision` under `state`, when the caller has them
            already (computed here otherwise).

        Returns:
          A `SampleOutput` with P*n rows.

        Raises:
          ValueError: n or max_new_tokens is below 1, or prompts_per_call does not divide P.
        """
        prompts = inputs.input_ids.shape[0]
        per_call = prompts_per_call or prompts
        if n < 1 or max_new_tokens < 1:
            raise ValueError(f"n = {n} and max_new_tokens = {max_new_tokens} must be >= 1")
        if per_call < 1 or prompts % per_call:
            raise ValueError(f"prompts_per_call = {prompts_per_call} must divide the batch's {prompts} prompts")
        capacity = inputs.input_ids.shape[1] + max_new_tokens
        features = image_features
        if features is None and inputs.vision is not None:
            features = image_features_jit(self.graphdef, state, inputs.vision)
        text = dataclasses.replace(inputs, vision=None)
        chunks = prompts // per_call
        if chunks == 1:
            return self._sample(state, text, features, n=n, max_new=max_new_tokens, capacity=capacity, key=key)
        shards = self._batch_shards(per_call)
        outputs = [
            self._sample(
                state,
                self._chunk(text, jnp.int32(j), chunks=chunks, shards=shards),
                features,
                n=n,
                max_new=max_new_tokens,
                capacity=capacity,
                key=jax.random.fold_in(key, j),
            )
            for j in range(chunks)
        ]
        return self._merge(outputs, shards=shards)

    def _sample(
        self, state, inputs: ModelInputs, features, *, n: int, max_new: int, capacity: int, key
    ) -> SampleOutput:
        self.prefill_calls += 1
        caches, logits = self._prefill(state, inputs, features, capacity=capacity, n=n)
        output, _ = self._decode(
            state, caches, logits, inputs.attention_mask, inputs.rope_deltas, key, n=n, max_new=max_new
        )
        return output
