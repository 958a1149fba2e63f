"""The trainer's config checked and resolved into typed settings, with errors that name the key and value."""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from shuffle_r1_jax.parallel.distributed import DistributedConfigError, DistributedSpec, initialize_distributed
from shuffle_r1_jax.parallel.mesh_config import MeshConfigError, MeshSpec, mesh_devices, mesh_shape
from shuffle_r1_jax.rl.advantages import available_advantage_estimators
from shuffle_r1_jax.train.algorithms import SelectionConfig, get_algorithm, rows_per_prompt
from shuffle_r1_jax.train.optimizer import OptimizerConfig
from shuffle_r1_jax.train.update import LossConfig

logger = logging.getLogger(__name__)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class ConfigError(ValueError):
    """A config value is invalid or inconsistent with another; the message names the keys and values."""


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Everything the trainer derives from the config (static: hashable where jitted functions take it)."""

    checkpoint: str
    train_data: str
    val_data: str
    dtype: object
    param_dtype: object
    prompts_per_process: int
    prompts_per_sampler_call: int
    estimator: str
    selection: SelectionConfig
    dynamic_sampling: bool
    optimizer: OptimizerConfig
    loss: LossConfig
    num_minibatches: int
    micro_batches: int
    old_logprob_micro: int
    mesh: MeshSpec
    mesh_shape: tuple[int, int, int]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def start_distributed(c: ConfigDict) -> bool:
    """Starts `jax.distributed` as the `distributed` section says (before any device is touched); returns
    whether this is a multi-process run's process."""
    try:
        return initialize_distributed(DistributedSpec.from_config(c.distributed), c.mesh.preset)
    except DistributedConfigError as err:
        raise ConfigError(str(err)) from err


def resolve_mesh(c: ConfigDict) -> tuple[MeshSpec, tuple[int, int, int]]:
    """The `mesh` section checked against this run's devices: (spec, (data, fsdp, tensor))."""
    spec = MeshSpec.from_config(c.mesh)
    try:
        return spec, mesh_shape(spec, len(mesh_devices(spec)))
    except MeshConfigError as err:
        raise ConfigError(str(err)) from err


def resolve(c: ConfigDict) -> RunSettings:
    """Validates `c` and returns the resolved settings (the demo's assets are built here when enabled).

    Call `start_distributed` first in a multi-process run: the batch checks use the process and device counts."""
    algorithm = get_algorithm_checked(c.rl.algorithm)
    _require(c.model.dtype in DTYPES, f"model.dtype = {c.model.dtype!r}; expected one of {sorted(DTYPES)}")
    _require(c.model.param_dtype in DTYPES,
             f"model.param_dtype = {c.model.param_dtype!r}; expected one of {sorted(DTYPES)}")  # fmt: skip
    n = c.rollout.n
    _require(n >= 2, f"rollout.n = {n}: group advantages need at least 2 samples per prompt")
    if algorithm.selection in ("pts", "pts_abs"):
        _require(n % 2 == 0, f"rollout.n = {n} is odd, but rl.algorithm = {c.rl.algorithm!r} pairs rollouts (PTS needs an even n)")
    _require(c.rollout.temperature > 0, f"rollout.temperature = {c.rollout.temperature} must be > 0 for training")
    prompts = c.data.rollout_batch_prompts
    processes = jax.process_count()
    _require(prompts % processes == 0,
             f"data.rollout_batch_prompts = {prompts} does not divide over {processes} processes")  # fmt: skip
    try:
        DistributedSpec.from_config(c.distributed).validate()
    except DistributedConfigError as err:
        raise ConfigError(str(err)) from err
    mesh, (data, fsdp, tensor) = resolve_mesh(c)
    shards = data * fsdp
    where = f"the {shards} batch shards of the mesh (mesh data x fsdp = {data} x {fsdp})"
    _require((prompts * n) % shards == 0,
             f"the rollout batch (data.rollout_batch_prompts x rollout.n = {prompts} x {n} = {prompts * n} rows) "
             f"does not divide over {where}")  # fmt: skip
    _require(processes == 1 or prompts % shards == 0,
             f"data.rollout_batch_prompts = {prompts} does not divide over {where}: with {processes} processes "
             "every batch shard holds whole prompts of one process")  # fmt: skip
    per_call = c.rollout.prompts_per_sampler_call
    _require(per_call == 0 or (per_call >= 1 and prompts % per_call == 0),
             f"rollout.prompts_per_sampler_call = {per_call} must be 0 (the whole batch) or divide "
             f"data.rollout_batch_prompts = {prompts}")  # fmt: skip
    _require(per_call == 0 or per_call % shards == 0,
             f"rollout.prompts_per_sampler_call = {per_call} must be a multiple of {where}, so that every device "
             "samples the same number of prompts in each call")  # fmt: skip
    mini = c.train.minibatch_prompts
    _require(mini >= 1 and prompts % mini == 0,
             f"train.minibatch_prompts = {mini} must divide data.rollout_batch_prompts = {prompts}")  # fmt: skip
    keep_ratio = 1.0 if c.rl.algorithm == "abs_only" else c.rl.keep_ratio
    selection = SelectionConfig(
        selection=algorithm.selection, group_size=n, keep_ratio=keep_ratio, pts_variant=c.rl.pts_variant,
        rerank=c.rl.pts_rerank, rounds=c.rl.abs_rounds, weight=c.rl.abs_weight, power=c.rl.abs_power,
        cppo_prune=c.rl.cppo_prune,
    )  # fmt: skip
    try:
        per_prompt = rows_per_prompt(selection)
    except ValueError as err:
        raise ConfigError(f"rl: {err}") from err
    if algorithm.selection == "pts_abs":
        pairs = prompts * per_prompt // 2
        _require(pairs % c.rl.abs_rounds == 0,
                 f"rl.abs_rounds = {c.rl.abs_rounds} must divide the {pairs} pairs PTS keeps per rollout batch")  # fmt: skip
    rows_per_mini = mini * per_prompt
    micro = min(c.train.micro_batch_rows, rows_per_mini)
    _require(rows_per_mini % micro == 0,
             f"train.micro_batch_rows = {c.train.micro_batch_rows} must divide the {rows_per_mini} rows of a mini-batch "
             f"(train.minibatch_prompts = {mini} x {per_prompt} rows per prompt)")  # fmt: skip
    if micro % shards and rows_per_mini % shards == 0:
        logger.warning(
            "train.micro_batch_rows = %d (%d rows per micro-batch) is not a multiple of %s: micro-batches are not "
            "split over the devices, every device computes all their rows (fine for tiny models; at 7B this is "
            "5x the memory, BUILD_NOTES 'Memory plan')", c.train.micro_batch_rows, micro, where,
        )  # fmt: skip
    _require(c.rl.dynamic_sampling_max_tries >= 1,
             f"rl.dynamic_sampling_max_tries = {c.rl.dynamic_sampling_max_tries} must be >= 1")  # fmt: skip
    _require(c.rl.dynamic_sampling_fallback in ("fill", "error"),
             f"rl.dynamic_sampling_fallback = {c.rl.dynamic_sampling_fallback!r}; expected 'fill' or 'error'")  # fmt: skip
    _require(c.rl.old_logprobs in ("recompute", "sampler"),
             f"rl.old_logprobs = {c.rl.old_logprobs!r}; expected 'recompute' or 'sampler'")  # fmt: skip
    loss_defaults = dict(algorithm.loss)
    loss_kwargs = dict(
        clip_low=c.loss.clip_low, clip_high=loss_defaults.get("clip_high", c.loss.clip_high),
        dual_clip=c.loss.dual_clip or None, ratio_level=c.loss.ratio_level,
        agg_mode=loss_defaults.get("agg_mode", c.loss.agg_mode),
        norm_constant=float(c.rollout.max_new_tokens), kl_coef=c.loss.kl_coef, kl_kind=c.loss.kl_kind,
        temperature=c.rollout.temperature, logprob_chunk=min(c.loss.logprob_chunk, c.rollout.max_new_tokens),
    )  # fmt: skip
    try:
        loss = LossConfig(**loss_kwargs)
        steps_total = c.train.total_steps * (prompts // mini)
        optimizer = OptimizerConfig(
            learning_rate=c.optim.learning_rate, warmup_steps=c.optim.warmup_steps, schedule=c.optim.schedule,
            total_steps=max(steps_total, 1), b1=c.optim.b1, b2=c.optim.b2, weight_decay=c.optim.weight_decay,
            max_grad_norm=c.optim.max_grad_norm, freeze_vision=c.optim.freeze_vision,
        )  # fmt: skip
    except ValueError as err:
        raise ConfigError(str(err)) from err
    checkpoint, train_data, val_data = c.model.checkpoint, c.data.train, c.data.val
    if c.demo.enabled:
        from shuffle_r1_jax.train.demo import prepare_demo

        assets = prepare_demo(c)
        checkpoint, train_data, val_data = assets["checkpoint"], assets["train"], assets["val"]
    _require(bool(checkpoint), "model.checkpoint is empty: give an HF-format Qwen2.5-VL directory (or use configs/demo.py)")
    _require(bool(train_data), "data.train is empty: give a dataset path[@split]")
    return RunSettings(
        checkpoint=checkpoint, train_data=train_data, val_data=val_data, dtype=DTYPES[c.model.dtype],
        param_dtype=DTYPES[c.model.param_dtype],
        prompts_per_process=prompts // processes, prompts_per_sampler_call=per_call, estimator=algorithm.estimator, selection=selection,
        dynamic_sampling=algorithm.dynamic_sampling, optimizer=optimizer, loss=loss,
        num_minibatches=prompts // mini, micro_batches=rows_per_mini // micro,
        old_logprob_micro=largest_divisor(prompts * n, c.train.micro_batch_rows),
        mesh=mesh, mesh_shape=(data, fsdp, tensor),
    )  # fmt: skip


def get_algorithm_checked(name: str):
    try:
        algorithm = get_algorithm(name)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if algorithm.estimator not in available_advantage_estimators():
        raise ConfigError(f"rl.algorithm = {name!r} needs advantage estimator {algorithm.estimator!r}, which is not registered")
    return algorithm


def largest_divisor(total: int, limit: int) -> int:
    """The largest divisor of `total` that is <= `limit` (micro-batch size for the old log-prob pass)."""
    return max(d for d in range(1, min(total, limit) + 1) if total % d == 0)
