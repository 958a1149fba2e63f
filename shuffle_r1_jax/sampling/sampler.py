"""The jitted rollout sampler: prefill once per prompt, then n samples per prompt share that prompt's KV cache.

Compiled programs per (prompt length, response length, n) bucket:
  * image features: the vision tower over all the batch's images, once per `generate` (the caller's features
    when it passes them, as the trainer does with its own program; else `image_features_jit`);
  * prefill: the decoder over the prompts of a call (image features placed at image tokens), writing each
    prompt's keys and values once: a `[P, Lp, kv_heads, head_dim]` cache per layer, not copied per sample;
  * decode: gives each of the P * n rows its own response cache `[P * n, S, kv_heads, head_dim]` (S = the
    response length rounded up to whole blocks of `decode_block`) and runs one-token steps until every row has
    stopped or the length is reached, attending with `cascade_attention` (the prompt part and the response part
    computed apart and merged exactly).
KV memory of a call: P * Lp + P * n * S positions per layer, against P * n * (Lp + S) if every sample held a
copy of its prompt's cache.

What decode step t costs while the loop runs on s prompt slots of m sample slots (s * m rows): per layer, the
projections and MLP of s * m tokens, the prompt part (s matmuls of m * G query rows, G = heads / kv heads, over Lp
keys: each prompt's keys read once) and the response part (s * m rows over ceil((t + 1) / block) blocks of `block`
keys: proportional to the tokens written, not to S); then the logits and the token choice of s * m rows. Stopped
rows stop costing by compaction in stages (`decode_stages`): stage i runs on (s_i, m_i) slots, halving the
sample slots and the prompt slots in turn, and its loop exits once every prompt with a live row fits s_{i+1}
slots and no prompt has more than m_{i+1} live rows; the live rows of each prompt are then gathered to the front
of its slot and the prompts with a live row to the front of the batch (their caches copied once), and the next
stage's loop continues on about half the rows. A stopped row costs as a live one (its token is the pad token,
outside the response) only until the stage changes. Each stage's loop is a separately traced body, so a decode
program holds at most `Sampler.decode_stages` of them (logged at compilation). A call whose rows are sharded over
D row shards compacts each shard on its own device (`shard_map`: a gather by a traced order over the whole batch
would make the SPMD partitioner replicate every device's caches), with D times a shard's stages; when a prompt's
rows would straddle two shards (prompts not divisible by D) the call has one stage and stopped rows keep costing.
Every row's token is drawn with a key of (key, step, batch row), so the samples do not depend on the stages,
the chunks or the mesh.

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

from shuffle_r1_jax.models.qwen2_5_vl.cascade_attention import DEFAULT_BLOCK, SharedPrefixCache, suffix_layout
from shuffle_r1_jax.models.qwen2_5_vl.kv_cache import LayerKVCache
from shuffle_r1_jax.models.qwen2_5_vl.model import ModelInputs, image_features_jit
from shuffle_r1_jax.models.qwen2_5_vl.text import causal_mask
from shuffle_r1_jax.parallel.global_arrays import batch_shard_count
from shuffle_r1_jax.parallel.sharding import BATCH_AXES
from shuffle_r1_jax.sampling.chunks import merge_chunks, take_chunk
from shuffle_r1_jax.sampling.processors import SamplingConfig, choose_tokens

logger = logging.getLogger(__name__)

FINISH_LENGTH = 0
FINISH_EOS = 1
DEFAULT_DECODE_STAGES = 6


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


def decode_stages(prompts: int, n: int, max_stages: int) -> tuple[tuple[int, int], ...]:
    """The (prompt slots, sample slots) of each compaction stage of a decode loop over `prompts` prompts x `n`.

    From (prompts, n), the sample slots and then the prompt slots are halved in turn (rounding up; a dimension
    at 1 is skipped) until both are 1 or there are `max_stages` stages. E.g. (4, 3, 9) -> ((4, 3), (4, 2), (2, 2),
    (2, 1), (1, 1)); any `max_stages` of 1 -> ((prompts, n),), no compaction.

    Raises:
      ValueError: naming the value when `max_stages` is below 1.
    """
    if max_stages < 1:
        raise ValueError(f"decode stages = {max_stages} must be >= 1")
    stages = [(prompts, n)]
    halve_samples = True
    while len(stages) < max_stages and stages[-1] != (1, 1):
        slots, samples = stages[-1]
        if (halve_samples and samples > 1) or slots == 1:
            stages.append((slots, -(-samples // 2)))
        else:
            stages.append((-(-slots // 2), samples))
        halve_samples = not halve_samples
    return tuple(stages)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _Responses:
    """The decode loop's outputs for all P * n rows of a call, written a step at a time at the live rows.

    Attributes:
      tokens: `int32[P*n, max_new]`.
      logprobs: `float32[P*n, max_new]`.
      mask: `bool[P*n, max_new]`.
      done: `bool[P*n]`, the row has sampled a stop token.
    """

    tokens: jax.Array
    logprobs: jax.Array
    mask: jax.Array
    done: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class _LiveRows:
    """The s prompt slots of m sample slots (s * m rows) a decode stage runs on.

    Attributes:
      row: `int32[s*m]` the call's row (prompt * n + sample) of each live row; slot j holds rows j * m onwards.
      caches: one `SharedPrefixCache` per layer (prompt dim s, row dim s * m).
      logits: `float32[s*m, vocab]` logits of each row's next token.
      position: `int32[s*m]` M-RoPE position of each row's first response token.
      done: `bool[s*m]`, the row has stopped.
    """

    row: jax.Array
    caches: list[SharedPrefixCache]
    logits: jax.Array
    position: jax.Array
    done: jax.Array

    def live(self) -> jax.Array:
        """`bool[s, m]`: the row has not stopped, by prompt slot."""
        return ~self.done.reshape(self.caches[0].prefix_valid.shape[0], -1)


class Sampler:
    """Generates n samples per prompt with a model split into (graphdef, state).

    Args:
      graphdef: the model's graph definition; the state is an argument of every program.
      config: the sampling settings.
      mesh: when given, the KV caches and the rollout rows are constrained to shard their prompt or row dimension
        over (data, fsdp) (where it divides) and the KV heads over tensor; the parameters keep their sharding.
      decode_block: response keys per block of the decode attention loop (`cascade_attention.suffix_partial`):
        a step reads ceil((t + 1) / block) blocks of its response cache; smaller blocks waste less on the
        last, partly filled block, larger ones make fewer loop iterations.
      decode_stages: the most compaction stages of a decode loop (`decode_stages`; 1 = no compaction): each
        stage about halves the rows still in the loop and adds one traced copy of the decode step to the program.

    Attributes:
      compilations: traces (= compilations) of the sampler's own programs.
      prefill_calls: prefill calls made (one per chunk of each `generate`).

    Raises:
      ValueError: naming the value when `decode_block` or `decode_stages` is below 1.
    """

    def __init__(
        self,
        graphdef: nnx.GraphDef,
        config: SamplingConfig,
        mesh: Mesh | None = None,
        decode_block: int = DEFAULT_BLOCK,
        decode_stages: int = DEFAULT_DECODE_STAGES,
    ):
        if decode_block < 1 or decode_stages < 1:
            raise ValueError(f"decode_block = {decode_block} and decode_stages = {decode_stages} must be >= 1")
        self.graphdef = graphdef
        self.config = config
        self.mesh = mesh
        self.decode_block = decode_block
        self.decode_stages = decode_stages
        self.compilations = 0
        self.prefill_calls = 0
        self._prefill = jax.jit(self._prefill_impl)
        self._decode = jax.jit(self._decode_impl, static_argnames=("n", "max_new"))
        self._chunk = jax.jit(self._chunk_impl, static_argnames=("chunks", "shards"))
        self._merge = jax.jit(self._merge_impl, static_argnames=("shards",))

    @property
    def prefill_program(self):
        """The jitted prefill `generate` runs: `(state, inputs, features)` with `inputs.vision` None and
        `features` the batch's image features (or None) -> (one `LayerKVCache` `[P, Lp, kv_heads, head_dim]` per
        layer, last-position logits `float32[P, vocab]`); for ahead-of-time `.lower()`."""
        return self._prefill

    @property
    def decode_program(self):
        """The jitted decode loop `generate` runs: `(state, prompt_caches, logits, prompt_mask, rope_deltas,
        prompt_ids, key, *, n, max_new)` with the prefill's outputs and `prompt_ids` `int32[P]` the batch index of
        each prompt of the call -> `SampleOutput`; for ahead-of-time `.lower()` (e.g. `perf/memory_plan.py`)."""
        return self._decode

    def _constrain(self, x: jax.Array, spec: PartitionSpec) -> jax.Array:
        if self.mesh is None:
            return x
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))

    def _constrain_rows(self, x: jax.Array) -> jax.Array:
        """`x` with its first dimension over the batch axes (and a 4-d cache's KV heads over tensor where they
        divide) when it divides by the batch shards."""
        if self._batch_shards(x.shape[0]) == 1:
            return x
        return self._constrain(x, self._row_spec(x))

    def _constrain_cache(self, cache: SharedPrefixCache) -> SharedPrefixCache:
        return dataclasses.replace(
            cache,
            prefix_k=self._constrain_rows(cache.prefix_k),
            prefix_v=self._constrain_rows(cache.prefix_v),
            prefix_valid=self._constrain_rows(cache.prefix_valid),
            suffix_k=self._constrain_rows(cache.suffix_k),
            suffix_v=self._constrain_rows(cache.suffix_v),
        )

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

        slots = None if inputs.vision_token_slot is None else cut(inputs.vision_token_slot)
        return ModelInputs(
            cut(inputs.input_ids),
            cut(inputs.attention_mask),
            cut(inputs.position_ids, 1),
            cut(inputs.rope_deltas),
            vision_token_slot=slots,
        )

    def _merge_impl(self, outputs: list[SampleOutput], *, shards: int) -> SampleOutput:
        self.compilations += 1
        return jax.tree.map(lambda *parts: merge_chunks(list(parts), shards=shards), *outputs)

    def _prefill_impl(self, state, inputs: ModelInputs, features):
        self.compilations += 1
        batch, length = inputs.input_ids.shape
        logger.info("compiling sampler prefill: %d prompts x %d tokens", batch, length)
        model = nnx.merge(self.graphdef, state)
        t = model.config.text
        caches = [
            LayerKVCache.empty(batch, length, t.num_key_value_heads, t.head_dim, model.dtype) for _ in model.layers
        ]
        embeds = model.embed(inputs.input_ids, None, inputs.vision_token_slot, features)
        hidden, caches = model.decode(embeds, inputs.position_ids, causal_mask(inputs.attention_mask), caches)
        caches = [LayerKVCache(self._constrain_rows(c.k), self._constrain_rows(c.v), c.end) for c in caches]
        return caches, self._constrain_rows(model.logits(hidden[:, -1]).astype(jnp.float32))

    def _decode_impl(
        self, state, prompt_caches, logits, prompt_mask, rope_deltas, prompt_ids, key, *, n: int, max_new: int
    ):
        self.compilations += 1
        prompts = prompt_mask.shape[0]
        shards = self._batch_shards(prompts * n)
        # each row shard compacts its own prompts (`_compact`): a prompt's rows must not straddle two shards
        limit = self.decode_stages if prompts % shards == 0 else 1
        local_stages = decode_stages(prompts // shards if limit > 1 else prompts, n, limit)
        stages = tuple((slots * shards, samples) for slots, samples in local_stages) if limit > 1 else local_stages
        block, capacity = suffix_layout(max_new, self.decode_block)
        logger.info(
            "compiling sampler decode: %d prompts x n=%d, %d new tokens, response blocks of %d, %d compaction "
            "stages of (prompt, sample) slots %s over %d row shards",
            prompts,
            n,
            max_new,
            block,
            len(stages),
            stages,
            shards,
        )
        cfg = self.config
        rows = prompts * n
        stop_ids = jnp.asarray(cfg.stop_token_ids or (-1,), jnp.int32)
        responses = _Responses(
            tokens=self._constrain_rows(jnp.full((rows, max_new), cfg.pad_token_id, jnp.int32)),
            logprobs=self._constrain_rows(jnp.zeros((rows, max_new), jnp.float32)),
            mask=self._constrain_rows(jnp.zeros((rows, max_new), bool)),
            done=self._constrain_rows(jnp.zeros((rows,), bool)),
        )

        # the batch row of each of the call's rows: a row's draws depend on (key, step, batch row) only, the same
        # whatever the call's chunk, mesh or compaction stage
        batch_rows = (prompt_ids[:, None] * n + jnp.arange(n, dtype=jnp.int32)).reshape(-1)

        def suffix(c: LayerKVCache) -> jax.Array:
            return jnp.zeros((rows, capacity, *c.k.shape[2:]), c.k.dtype)

        live = _LiveRows(
            row=self._constrain_rows(jnp.arange(rows, dtype=jnp.int32)),
            caches=[
                self._constrain_cache(
                    SharedPrefixCache(
                        c.k, c.v, prompt_mask.astype(bool), suffix(c), suffix(c), jnp.zeros((), jnp.int32), block
                    )
                )
                for c in prompt_caches
            ],
            logits=self._constrain_rows(jnp.repeat(logits, n, 0)),
            position=self._constrain_rows(jnp.repeat(prompt_mask.sum(-1) + rope_deltas, n, 0).astype(jnp.int32)),
            done=responses.done,
        )

        def step_rows(carry):
            step, responses, live = carry
            # merged inside the loop body: a model with remat layers cannot be used from an outer trace level
            model = nnx.merge(self.graphdef, state)
            step_key = jax.random.fold_in(key, step)
            row_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(step_key, batch_rows[live.row])
            token, logprob = choose_tokens(live.logits, row_keys, cfg)
            token = jnp.where(live.done, cfg.pad_token_id, token)
            logprob = jnp.where(live.done, 0.0, logprob)
            stopped = jnp.any(token[:, None] == stop_ids[None, :], axis=-1)
            done = live.done if cfg.ignore_stop else live.done | stopped
            at = live.row
            responses = _Responses(
                tokens=responses.tokens.at[at, step].set(token),
                logprobs=responses.logprobs.at[at, step].set(logprob),
                mask=responses.mask.at[at, step].set(~live.done),
                done=responses.done.at[at].set(done),
            )
            # feed the token: its key/value goes to response slot `step`, its position continues the prompt's
            live_rows = token.shape[0]
            positions = jnp.broadcast_to((live.position + step)[None, :, None], (3, live_rows, 1))
            hidden, caches = model.decode(model.embed(token[:, None]), positions, None, live.caches)
            logits = self._constrain_rows(model.logits(hidden[:, 0]).astype(jnp.float32))
            live = dataclasses.replace(
                live, caches=[self._constrain_cache(c) for c in caches], logits=logits, done=done
            )
            return step + 1, responses, live

        carry = (jnp.zeros((), jnp.int32), responses, live)
        for i, slots in enumerate(stages):
            if i:
                carry = (carry[0], carry[1], self._compact(carry[2], slots[0] // shards, slots[1], shards))
            carry = jax.lax.while_loop(self._stage_condition(stages, i, max_new, shards), step_rows, carry)
        responses = carry[1]
        mask = responses.mask.astype(jnp.int32)
        finish = jnp.where(responses.done, FINISH_EOS, FINISH_LENGTH).astype(jnp.int32)
        return SampleOutput(responses.tokens, responses.logprobs, mask, finish, mask.sum(-1))

    @staticmethod
    def _stage_condition(stages: tuple[tuple[int, int], ...], stage: int, max_new: int, shards: int):
        """The while condition of stage `stage`: steps remain, a row is live and, unless it is the last stage,
        the live rows do not fit the next stage's (prompt, sample) slots in every one of the `shards` row
        shards (each compacts its own prompts)."""
        last = stage + 1 == len(stages)

        def condition(carry):
            step, _, live = carry
            per_prompt = jnp.sum(live.live(), axis=1)
            go = (step < max_new) & jnp.any(per_prompt > 0)
            if last:
                return go
            slots, samples = stages[stage + 1]
            live_prompts = jnp.sum(per_prompt.reshape(shards, -1) > 0, axis=1)
            return go & (jnp.any(live_prompts > slots // shards) | (jnp.max(per_prompt) > samples))

        return condition

    def _compact(self, live: _LiveRows, slots: int, samples: int, shards: int) -> _LiveRows:
        """`slots` prompt slots per row shard of `samples` sample slots: in each of the `shards` row shards, each
        prompt's live rows moved to the front of its slot and the prompts with a live row to the front (orders
        kept), then cut. Over several shards this runs in `shard_map`, so each device gathers only its own rows
        (a gather by a traced order over the whole row-sharded batch would make the SPMD partitioner replicate
        every device's caches)."""

        def compact(live: _LiveRows) -> _LiveRows:
            alive = live.live()
            width = alive.shape[1]
            within = jnp.argsort(jnp.where(alive, 0, 1), axis=1, stable=True)[:, :samples]
            order = jnp.argsort(jnp.where(jnp.any(alive, axis=1), 0, 1), stable=True)[:slots]
            rows = (order[:, None] * width + within[order]).reshape(-1)
            caches = [
                dataclasses.replace(
                    c,
                    prefix_k=c.prefix_k[order],
                    prefix_v=c.prefix_v[order],
                    prefix_valid=c.prefix_valid[order],
                    suffix_k=c.suffix_k[rows],
                    suffix_v=c.suffix_v[rows],
                )
                for c in live.caches
            ]
            return _LiveRows(
                row=live.row[rows],
                caches=caches,
                logits=live.logits[rows],
                position=live.position[rows],
                done=live.done[rows],
            )

        if shards > 1:
            specs = jax.tree.map(self._row_spec, live)
            compact = jax.shard_map(compact, mesh=self.mesh, in_specs=(specs,), out_specs=specs, check_vma=False)
        live = compact(live)
        return dataclasses.replace(
            live,
            caches=[self._constrain_cache(c) for c in live.caches],
            logits=self._constrain_rows(live.logits),
        )

    def _row_spec(self, x: jax.Array) -> PartitionSpec:
        """The `PartitionSpec` of a row-sharded decode array: rows over the batch axes, a cache's KV heads over
        tensor where they divide; a scalar is replicated."""
        if x.ndim == 0:
            return PartitionSpec()
        rest = [None] * (x.ndim - 1)
        if x.ndim == 4 and x.shape[2] % self.mesh.shape["tensor"] == 0:
            rest[1] = "tensor"
        return PartitionSpec(BATCH_AXES, *rest)

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
          key: a PRNG key for this call. Row r's token at step t is drawn with `fold_in(fold_in(key, t), r)`, so
            the samples do not depend on `prompts_per_call`, the mesh or the decode stages.
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
        features = image_features
        if features is None and inputs.vision is not None:
            features = image_features_jit(self.graphdef, state, inputs.vision)
        text = dataclasses.replace(inputs, vision=None)
        chunks = prompts // per_call
        if chunks == 1:
            return self._sample(state, text, features, jnp.arange(prompts, dtype=jnp.int32), n, max_new_tokens, key)
        shards = self._batch_shards(per_call)
        outputs = []
        for j in range(chunks):
            prompt_ids = take_chunk(jnp.arange(prompts, dtype=jnp.int32), j, chunks=chunks, shards=shards)
            chunk = self._chunk(text, jnp.int32(j), chunks=chunks, shards=shards)
            outputs.append(self._sample(state, chunk, features, prompt_ids, n, max_new_tokens, key))
        return self._merge(outputs, shards=shards)

    def _sample(self, state, inputs: ModelInputs, features, prompt_ids, n: int, max_new: int, key) -> SampleOutput:
        self.prefill_calls += 1
        prompt_caches, logits = self._prefill(state, inputs, features)
        return self._decode(
            state,
            prompt_caches,
            logits,
            inputs.attention_mask,
            inputs.rope_deltas,
            prompt_ids,
            key,
            n=n,
            max_new=max_new,
        )
