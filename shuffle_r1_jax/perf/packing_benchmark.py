"""Packed vs padded log-prob and update passes on a length-skewed rollout batch, side by side.

The batch: P prompts of one image each and text of varied length (left-padded to the prompt bucket), n responses
per prompt whose lengths follow a long-tailed (log-normal) law with a mean of about a quarter of the maximum, as
RL rollouts do. Two measurements of the same passes the trainer runs (`learner.logprobs.rollout_logprobs`, the
old-log-prob pass; `learner.update.update_minibatch`, one optimizer step):
  * wall time of both phases, padded then packed, interleaved over several runs (`time_phases`);
  * XLA's cost-analysis FLOPs of both programs lowered on abstract parameters (nothing allocated), with every
    loop at one trip (one micro-batch, one vocabulary chunk: XLA counts a loop body once), so the counts are
    of the whole batch (`phase_flops`).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from shuffle_r1_jax.learner.logprobs import rollout_logprobs
from shuffle_r1_jax.learner.packing import PackingPlan, packed_rows_bucket, plan_micro_batches
from shuffle_r1_jax.learner.update import LossConfig, UpdateTargets, update_minibatch
from shuffle_r1_jax.models.qwen2_5_vl.config import Qwen25VLConfig
from shuffle_r1_jax.models.qwen2_5_vl.model import Qwen25VL, prepare_inputs
from shuffle_r1_jax.rollout.types import Rollouts


@dataclasses.dataclass(frozen=True)
class SkewedBatch:
    """The shape of a length-skewed rollout batch.

    Attributes:
      prompts: P.
      n: responses per prompt.
      prompt_bucket: Lp, the padded prompt length.
      image_side: each prompt's image side in patches (side^2 / 4 image tokens).
      response_length: Lr, the most tokens of a response.
      mean_fraction: the responses' mean length as a fraction of Lr.
      seed: seeds lengths, tokens and patches.
    """

    prompts: int
    n: int
    prompt_bucket: int
    image_side: int
    response_length: int
    mean_fraction: float = 0.25
    seed: int = 0


def response_lengths(rows: int, maximum: int, mean_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """`int64[rows]` log-normal lengths (sigma 1: a long tail) in [1, maximum], rescaled so that the batch's own
    mean is `mean_fraction * maximum` (to within rounding, unless clipping at the bounds prevents it)."""
    lengths = rng.lognormal(0.0, 1.0, size=rows)
    target = mean_fraction * maximum
    for _ in range(8):
        lengths = np.clip(lengths * target / lengths.mean(), 1, maximum)
    return np.round(lengths).astype(np.int64)


def skewed_rollouts(config: Qwen25VLConfig, batch: SkewedBatch) -> Rollouts:
    """A rollout batch of `batch`'s shape with random tokens, as device arrays.

    Prompts: text of a uniform length in [Lp / 2, Lp - image tokens - 2] split around one image.

    Raises:
      ValueError: the image does not fit the prompt bucket.
    """
    rng = np.random.default_rng(batch.seed)
    image_tokens = batch.image_side**2 // 4
    longest_text = batch.prompt_bucket - image_tokens - 2
    if longest_text < 2:
        raise ValueError(f"{image_tokens} image tokens do not fit prompt_bucket = {batch.prompt_bucket}")
    vocab = min(config.vision_start_token_id, config.text.vocab_size)
    image = [config.vision_start_token_id] + [config.image_token_id] * image_tokens + [config.vision_end_token_id]
    ids = np.zeros((batch.prompts, batch.prompt_bucket), np.int64)
    mask = np.zeros_like(ids)
    for p in range(batch.prompts):
        text = rng.integers(0, vocab, int(rng.integers(min(batch.prompt_bucket // 2, longest_text), longest_text + 1)))
        row = [*text[: len(text) // 2], *image, *text[len(text) // 2 :]]
        ids[p, -len(row) :], mask[p, -len(row) :] = row, 1
    grids = np.asarray([(1, batch.image_side, batch.image_side)] * batch.prompts)
    pixels = rng.standard_normal((int(grids.prod(-1).sum()), config.vision.patch_dim)).astype(np.float32)
    prompts = jax.tree.map(jnp.asarray, prepare_inputs(config, ids, mask, pixels, grids))
    rows = batch.prompts * batch.n
    lengths = response_lengths(rows, batch.response_length, batch.mean_fraction, rng)
    response_mask = (np.arange(batch.response_length)[None, :] < lengths[:, None]).astype(np.int32)
    tokens = rng.integers(0, vocab, size=(rows, batch.response_length)).astype(np.int32)
    logprobs = (-rng.uniform(0.1, 3.0, size=(rows, batch.response_length)) * response_mask).astype(np.float32)
    return Rollouts(prompts, jnp.asarray(tokens), jnp.asarray(response_mask), jnp.asarray(logprobs))


def plans(rollouts: Rollouts, rows: jax.Array, micro_rows: int) -> PackingPlan:
    """The packing plan of passes over `rows` in micro-batches of `micro_rows`, at the trainer's bucket."""
    bins, offsets, needed = jax.jit(plan_micro_batches)(rollouts, rows.reshape(-1, micro_rows))
    return PackingPlan(bins, offsets, packed_rows_bucket(int(needed), micro_rows))


@dataclasses.dataclass(frozen=True)
class PhasePrograms:
    """The two phases of a layout as jitted functions of (params, opt_state, rollouts, targets, features).

    Attributes:
      logprobs: the old-log-prob pass over every row, `micro_rows` rows per pass.
      update: one optimizer step over every row, `micro_rows` rows per micro-batch.
    """

    logprobs: object
    update: object


def phase_programs(
    graphdef, optimizer, rows: jax.Array, plan: PackingPlan | None, *, micro_rows: int, chunk: int
) -> PhasePrograms:
    """The phases over `rows` in micro-batches of `micro_rows`, packed by `plan` (None: padded rows)."""
    cfg = LossConfig(logprob_chunk=chunk)
    micro_batches = rows.shape[0] // micro_rows
    valid = jnp.ones(rows.shape, bool)

    @jax.jit
    def logprobs(params, rollouts, features):
        return rollout_logprobs(
            graphdef,
            params,
            rollouts,
            features,
            rows,
            micro_batch_rows=micro_rows,
            temperature=1.0,
            chunk=chunk,
            plan=plan,
        )

    @jax.jit
    def update(params, opt_state, rollouts, targets):
        return update_minibatch(
            graphdef,
            params,
            opt_state,
            optimizer,
            rollouts,
            targets,
            rows,
            valid,
            plan,
            micro_batches=micro_batches,
            cfg=cfg,
        )

    return PhasePrograms(logprobs, update)


def time_phases(model: Qwen25VL, rollouts: Rollouts, *, micro_rows: int, chunk: int, runs: int) -> dict:
    """Median seconds of the old-log-prob pass and the update over every row of `rollouts`, padded and packed,
    the layouts interleaved run by run after one compiling call each.

    Returns:
      {"padded": {"logprobs": s, "update": s}, "packed": {...}, "packed_rows": K per micro-batch}.
    """
    graphdef, params = nnx.graphdef(model), nnx.to_pure_dict(nnx.state(model, nnx.Param))
    optimizer = optax.adamw(1e-6)
    opt_state = optimizer.init(params)
    rows = jnp.arange(rollouts.tokens.shape[0], dtype=jnp.int32)
    features = jax.jit(lambda p, v: nnx.merge(graphdef, p).image_features(v))(params, rollouts.prompts.vision)
    plan = plans(rollouts, rows, micro_rows)
    layouts = {
        "padded": phase_programs(graphdef, optimizer, rows, None, micro_rows=micro_rows, chunk=chunk),
        "packed": phase_programs(graphdef, optimizer, rows, plan, micro_rows=micro_rows, chunk=chunk),
    }
    targets = UpdateTargets(
        advantages=jnp.where(rollouts.mask > 0, 0.5, 0.0),
        old_logprobs=rollouts.sampler_logprobs,
        image_features=features,
    )
    seconds = {name: {"logprobs": [], "update": []} for name in layouts}
    for run in range(runs + 1):
        for name, programs in layouts.items():
            t = time.perf_counter()
            jax.block_until_ready(programs.logprobs(params, rollouts, features))
            middle = time.perf_counter()
            jax.block_until_ready(programs.update(params, opt_state, rollouts, targets))
            end = time.perf_counter()
            if run:
                seconds[name]["logprobs"].append(middle - t)
                seconds[name]["update"].append(end - middle)
    result = {name: {k: float(np.median(v)) for k, v in phases.items()} for name, phases in seconds.items()}
    return {**result, "packed_rows": plan.packed_rows}


def _abstract(tree):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def phase_flops(config: Qwen25VLConfig, rollouts: Rollouts, *, dtype=jnp.bfloat16) -> dict:
    """XLA cost-analysis FLOPs of both phases over every row of `rollouts` as ONE micro-batch (loops at one
    trip), padded and packed, lowered on abstract parameters of `config` (nothing allocated, nothing compiled).

    The frozen vision tower's features are an input (not counted); attention is the "xla" implementation.

    Returns:
      {"padded": {"logprobs": flops, "update": flops}, "packed": {...}, "packed_rows": K}.
    """
    model = nnx.eval_shape(lambda: Qwen25VL(config, dtype=dtype, param_dtype=jnp.float32, rngs=nnx.Rngs(0)))
    graphdef, params = nnx.graphdef(model), nnx.to_pure_dict(nnx.state(model, nnx.Param))
    optimizer = optax.adamw(1e-6)
    opt_state = jax.eval_shape(optimizer.init, params)
    rows = jnp.arange(rollouts.tokens.shape[0], dtype=jnp.int32)
    micro_rows = rows.shape[0]
    plan = plans(rollouts, rows, micro_rows)
    vision = rollouts.prompts.vision
    merged = vision.patches.shape[0] * vision.patches.shape[1] // config.vision.merge_unit
    features = jax.ShapeDtypeStruct((merged, config.text.hidden_size), dtype)
    targets = UpdateTargets(
        advantages=jax.ShapeDtypeStruct(rollouts.tokens.shape, jnp.float32),
        old_logprobs=jax.ShapeDtypeStruct(rollouts.tokens.shape, jnp.float32),
        image_features=features,
    )
    response = rollouts.tokens.shape[1]
    full = rollouts.prompts.input_ids.shape[1] + response
    result = {}
    for name, layout_plan, chunk in (("padded", None, response), ("packed", plan, full)):
        programs = phase_programs(graphdef, optimizer, rows, layout_plan, micro_rows=micro_rows, chunk=chunk)
        args = (_abstract(params), _abstract(rollouts))
        result[name] = {
            "logprobs": _flops(programs.logprobs.lower(*args, features)),
            "update": _flops(programs.update.lower(args[0], opt_state, args[1], targets)),
        }
    return {**result, "packed_rows": plan.packed_rows}


def _flops(lowered) -> float:
    cost = lowered.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost["flops"])
