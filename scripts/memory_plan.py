"""Per-device memory of one training step (sampler and train step) for a model, mesh and batch, before renting
hardware: every program is compiled on abstract inputs and XLA's own accounting is read; nothing is run.

The model is built abstractly (`jax.eval_shape`: no weight is allocated), its parameters get the shardings of
`shuffle_r1_jax.parallel.sharding`, and each program `Trainer.train_step` runs is lowered on
`jax.ShapeDtypeStruct` inputs that carry their shardings, compiled, and measured with
`compiled.memory_analysis()` (argument, output, aliased, temporary and generated-code bytes, per device):

  image features   the vision tower once over the rollout batch's images: the sampler's first program (with
                   the frozen vision tower its output also feeds the log-prob and train programs);
  sampler prefill  the decoder over one sampler call's prompts (--sampler_prompts, the trainer's
                   rollout.prompts_per_sampler_call) with the image features placed; allocates the KV cache
                   (prompt + response) and copies each prompt's rows n times;
  sampler decode   the while-loop of one-token steps over the donated KV cache;
  old log-probs    the policy's log-probs of every rollout, micro-batch by micro-batch (whole batch resident);
  train step       one optimizer step over a mini-batch with gradient accumulation over micro-batches;
                   parameters and optimizer state donated, the whole rollout batch resident.

A program's peak is XLA's figure (arguments + outputs - aliased + temporaries when XLA gives none). A phase's
peak puts in place of the program's arguments everything on the device while it runs: jit drops inputs a
program does not read (the train step never reads the sampler's log-probs) but they stay allocated, and the
optimizer state and the rollout batch stay through the whole step. Prompt and rollout rows are sharded over
(data, fsdp), as the sampler and the trainer place them.

    python scripts/memory_plan.py --size 3b --mesh 1,8,1 --remat full
    python scripts/memory_plan.py --size 7b --mesh 1,4,2 --remat full --micro_batch_rows 8 --sampler_prompts 64

With `--devices N` (default 8) the figures are the CPU compiler's for N simulated devices: the same programs
and shardings, but a GPU or TPU compiler fuses and schedules differently (and the CPU backend keeps fp32 copies
of bf16 matmul operands), so treat them as estimates; `--devices 0` uses the machine's own devices (e.g. 8 GPUs).
"""

from __future__ import annotations

import argparse
import os
import sys


def _simulate_devices(argv: list[str]) -> None:
    """Before jax is imported: `--devices N` with N > 0 selects the CPU backend with N simulated devices."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--devices", type=int, default=8)
    devices = pre.parse_known_args(argv)[0].devices
    if devices > 0:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
        os.environ["JAX_PLATFORMS"] = "cpu"


if __name__ == "__main__":
    _simulate_devices(sys.argv[1:])

import dataclasses  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

from shuffle_r1_jax.checkpoint.tiny import PRESETS  # noqa: E402
from shuffle_r1_jax.models.qwen2_5_vl import (  # noqa: E402
    ModelInputs,
    Qwen25VLConfig,
    VisionInputs,
    abstract_model,
    load_config,
    qwen2_5_vl_3b_config,
    qwen2_5_vl_7b_config,
)
from shuffle_r1_jax.models.qwen2_5_vl.kv_cache import LayerKVCache  # noqa: E402
from shuffle_r1_jax.models.qwen2_5_vl.model import image_features_jit  # noqa: E402
from shuffle_r1_jax.parallel.sharding import BATCH_AXES, make_mesh, mirror_shardings, param_shardings  # noqa: E402
from shuffle_r1_jax.sampling import Sampler, SamplingConfig  # noqa: E402
from shuffle_r1_jax.train.algorithms import SelectionConfig, rows_per_prompt  # noqa: E402
from shuffle_r1_jax.train.logprobs import Rollouts  # noqa: E402
from shuffle_r1_jax.train.optimizer import OptimizerConfig, make_optimizer  # noqa: E402
from shuffle_r1_jax.train.settings import largest_divisor  # noqa: E402

# the trainer's own jitted log-prob program, so the figures are of what it runs
from shuffle_r1_jax.train.trainer import old_logprobs_pass  # noqa: E402
from shuffle_r1_jax.train.update import LossConfig, UpdateTargets, update_minibatch  # noqa: E402

GiB = 2**30
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
PROGRAMS = ("image_features", "sampler_prefill", "sampler_decode", "old_logprobs", "train_step")


def tiny_model_config() -> Qwen25VLConfig:
    """The tests' tiny model (checkpoint preset "test") with a 512-token vocabulary."""
    preset = PRESETS["test"]
    return Qwen25VLConfig(
        text=dataclasses.replace(preset.text, vocab_size=512),
        vision=preset.vision,
        tie_word_embeddings=preset.tie_word_embeddings,
        image_token_id=500, video_token_id=501, vision_start_token_id=502, vision_end_token_id=503,
        bos_token_id=504, eos_token_id=505,
    )  # fmt: skip


SIZES: dict[str, tuple[str, Callable[[], Qwen25VLConfig]]] = {
    "3b": ("Qwen2.5-VL-3B", qwen2_5_vl_3b_config),
    "7b": ("Qwen2.5-VL-7B", qwen2_5_vl_7b_config),
    "tiny": ("tiny (tests' preset)", tiny_model_config),
}


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    """What to plan for; the defaults are the Shuffle-R1 paper's settings (spec: shuffle_r1.md).

    size / hf_config: the model ("3b", "7b", "tiny", or a config.json path, which wins when given).
    mesh: (data, fsdp, tensor). dtype: compute dtype; param_dtype: storage dtype of parameters and AdamW
    moments (None = dtype, as the trainer stores them today). remat / attention: the model's options.
    prompts_per_step: rollout batch in prompts; n: samples per prompt; sampler_prompts: prompts per sampler
    call (the trainer's rollout.prompts_per_sampler_call; None = the whole rollout batch); keep_ratio: PTS alpha (update rows per
    prompt = n * alpha); minibatch_prompts: prompts' worth of rows per optimizer step; micro_batch_rows: rows per
    gradient-accumulation micro-batch (and per old-log-prob pass); image_tokens / images_per_prompt: merged
    image tokens per image and images per prompt (0 = text only); logprob_chunk: response positions per
    vocabulary chunk; programs: which programs to compile.
    """

    size: str = "3b"
    hf_config: str | None = None
    mesh: tuple[int, int, int] = (1, 8, 1)
    dtype: str = "bfloat16"
    param_dtype: str | None = None
    remat: str = "full"
    attention: str = "xla"
    prompts_per_step: int = 512
    n: int = 16
    sampler_prompts: int | None = None
    max_prompt_length: int = 2048
    max_new_tokens: int = 2048
    keep_ratio: float = 0.5
    minibatch_prompts: int = 128
    micro_batch_rows: int = 64
    image_tokens: int = 1024
    images_per_prompt: int = 1
    freeze_vision: bool = True
    logprob_chunk: int = 256
    device_memory_gib: float = 80.0
    programs: tuple[str, ...] = PROGRAMS


@dataclasses.dataclass
class ProgramMemory:
    """One compiled program: XLA's per-device byte counts (or the reason it did not compile), and `resident`, the
    bytes on the device while it runs: its inputs (those it reads are its arguments; jit drops the others) and
    what the step keeps there meanwhile (the optimizer state, the rollout batch)."""

    name: str
    shape: str
    resident: int
    stats: Any = None
    error: str | None = None
    compile_s: float = 0.0

    @property
    def peak(self) -> int | None:
        """Per-device peak of the program alone (XLA's figure, else arguments + outputs - aliased + temp)."""
        if self.stats is None:
            return None
        s = self.stats
        estimate = s.argument_size_in_bytes + s.output_size_in_bytes - s.alias_size_in_bytes + s.temp_size_in_bytes
        return max(getattr(s, "peak_memory_in_bytes", 0) or 0, estimate)

    @property
    def phase_peak(self) -> int | None:
        """Per-device peak of the phase: the program's peak with its arguments replaced by all resident bytes."""
        return None if self.peak is None else self.peak - self.stats.argument_size_in_bytes + self.resident


@dataclasses.dataclass
class MemoryPlan:
    """The per-device figures of one plan (bytes)."""

    config: PlanConfig
    model_name: str
    num_params: int
    devices: str
    params: int
    opt_state: int
    kv_cache: int
    rollouts: int
    programs: list[ProgramMemory]

    def program(self, name: str) -> ProgramMemory:
        return next(p for p in self.programs if p.name == name)


def bytes_per_device(tree) -> int:
    """Bytes one device holds of a tree of sharded `ShapeDtypeStruct`s (the largest shard of each leaf)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += math.prod(shape) * leaf.dtype.itemsize
    return total


def fitting_spec(mesh: Mesh, shape: tuple[int, ...], spec: PartitionSpec) -> PartitionSpec:
    """`spec` with every dimension that does not divide by its mesh axes replicated instead."""
    out = []
    for size, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        ways = math.prod(mesh.shape[a] for a in names)
        out.append(axes if names and size % ways == 0 else None)
    return PartitionSpec(*out)


def abstract(mesh: Mesh, shape: tuple[int, ...], dtype, spec: PartitionSpec = PartitionSpec()) -> jax.ShapeDtypeStruct:
    """An abstract array sharded by `spec` (dimensions that do not divide are replicated)."""
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, fitting_spec(mesh, shape, spec)))


def rows_spec(ndim: int, axis: int = 0) -> PartitionSpec:
    """Rows (dimension `axis`) over (data, fsdp), the rest replicated."""
    return PartitionSpec(*([None] * axis), BATCH_AXES, *([None] * (ndim - axis - 1)))


def _with_sharding(mesh: Mesh, tree, sharding_tree=None):
    """Adds shardings to a tree of shape/dtype leaves: from `sharding_tree`, else replicated."""
    if sharding_tree is None:
        return jax.tree.map(lambda a: abstract(mesh, a.shape, a.dtype), tree)
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, sharding_tree)


def abstract_params(config: Qwen25VLConfig, cfg: PlanConfig, mesh: Mesh):
    """(graphdef, params): the trainer's pure-dict parameters as sharded `ShapeDtypeStruct`s."""
    dtype = DTYPES[cfg.dtype]
    model = abstract_model(
        config, dtype=dtype, param_dtype=DTYPES[cfg.param_dtype or cfg.dtype], attention_impl=cfg.attention,
        remat=cfg.remat,
    )  # fmt: skip
    state = nnx.state(model, nnx.Param)
    shardings = nnx.to_pure_dict(param_shardings(state, mesh))
    return nnx.graphdef(model), _with_sharding(mesh, nnx.to_pure_dict(state), shardings)


def abstract_opt_state(optimizer, params, mesh: Mesh):
    """The optimizer state of `params` as the trainer places it: moments sharded like their parameters (masked,
    frozen parameters have none), counts replicated."""
    state = jax.eval_shape(optimizer.init, params)
    shardings = jax.tree.map(lambda p: p.sharding, params)
    return _with_sharding(mesh, state, mirror_shardings(state, params, shardings, mesh))


def vision_slots(config: Qwen25VLConfig, image_tokens: int) -> tuple[int, int]:
    """(merged tokens, patch slots) of one square image with about `image_tokens` merged tokens, laid out in
    attention windows as `layout.layout_images` does."""
    v = config.vision
    side = math.isqrt(image_tokens - 1) + 1 if image_tokens > 0 else 0
    windows = math.ceil(side / v.window_merged) ** 2
    return side * side, windows * v.window_patches


def abstract_prompts(config: Qwen25VLConfig, cfg: PlanConfig, mesh: Mesh, prompts: int) -> ModelInputs:
    """A left-padded prompt batch as the data pipeline feeds it, prompt rows over (data, fsdp)."""
    length = cfg.max_prompt_length
    vision, slots = None, None
    if cfg.images_per_prompt > 0:
        _, patch_slots = vision_slots(config, cfg.image_tokens)
        images = prompts * cfg.images_per_prompt
        vision = VisionInputs(
            patches=abstract(mesh, (images, patch_slots, config.vision.patch_dim), jnp.float32, rows_spec(3)),
            patch_pos=abstract(mesh, (images, patch_slots, 2), jnp.int32, rows_spec(3)),
            patch_valid=abstract(mesh, (images, patch_slots), jnp.bool_, rows_spec(2)),
        )
        slots = abstract(mesh, (prompts, length), jnp.int32, rows_spec(2))
    return ModelInputs(
        input_ids=abstract(mesh, (prompts, length), jnp.int32, rows_spec(2)),
        attention_mask=abstract(mesh, (prompts, length), jnp.int32, rows_spec(2)),
        position_ids=abstract(mesh, (3, prompts, length), jnp.int32, rows_spec(3, axis=1)),
        rope_deltas=abstract(mesh, (prompts,), jnp.int32, rows_spec(1)),
        vision=vision,
        image_token_slot=slots,
    )


def validate(cfg: PlanConfig, config: Qwen25VLConfig) -> None:
    """Raises ValueError naming the flag when the batch settings are inconsistent."""
    if cfg.remat not in ("none", "full", "dots"):
        raise ValueError(f"--remat = {cfg.remat!r}; expected none, full or dots")
    if cfg.dtype not in DTYPES or (cfg.param_dtype or cfg.dtype) not in DTYPES:
        raise ValueError(f"--dtype / --param_dtype must be one of {sorted(DTYPES)}")
    if cfg.prompts_per_step % cfg.minibatch_prompts:
        raise ValueError(
            f"--minibatch_prompts = {cfg.minibatch_prompts} must divide --prompts_per_step = {cfg.prompts_per_step}"
        )
    if cfg.n % 2:
        raise ValueError(f"--n = {cfg.n} must be even (PTS pairs rollouts)")
    sampler_prompts = cfg.sampler_prompts or cfg.prompts_per_step
    if cfg.prompts_per_step % sampler_prompts:
        raise ValueError(
            f"--sampler_prompts = {sampler_prompts} must divide --prompts_per_step = {cfg.prompts_per_step}"
        )
    shards = cfg.mesh[0] * cfg.mesh[1]
    if cfg.sampler_prompts and sampler_prompts % shards:
        raise ValueError(
            f"--sampler_prompts = {sampler_prompts} must be a multiple of the {shards} batch shards (mesh data x fsdp)"
        )
    tokens = vision_slots(config, cfg.image_tokens)[0] * cfg.images_per_prompt
    if tokens >= cfg.max_prompt_length:
        raise ValueError(
            f"{cfg.images_per_prompt} image(s) of {tokens // max(cfg.images_per_prompt, 1)} tokens do not fit in "
            f"--max_prompt_length = {cfg.max_prompt_length}"
        )
    unknown = set(cfg.programs) - set(PROGRAMS)
    if unknown:
        raise ValueError(f"--programs: unknown {sorted(unknown)}; expected some of {PROGRAMS}")


def _compiler_options() -> dict[str, str]:
    """On CPU, XLA's memory-optimized scheduler: the default (concurrency-optimized) one schedules each layer's
    recomputation next to its forward pass, so remat saves nothing in the CPU analysis although it does on
    GPU/TPU (BUILD_NOTES, "Memory plan"). The programs are only compiled here, never run."""
    if jax.default_backend() != "cpu":
        return {}
    return {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def _compile(
    name: str, shape: str, lower: Callable[[], Any], resident, mesh: Mesh, log: Callable[[str], None]
) -> ProgramMemory:
    """Lowers (under `mesh`, as the trainer traces its step) and compiles one program; a failure is recorded (its
    first line), not raised. resident: the abstract arrays on the device while it runs."""
    log(f"compiling {name} ({shape}) ...")
    resident = bytes_per_device(resident)
    start = time.perf_counter()
    try:
        with jax.set_mesh(mesh):
            lowered = lower()
        stats = lowered.compile(compiler_options=_compiler_options()).memory_analysis()
    except Exception as err:  # noqa: BLE001 - any lowering/compile failure is a finding to report
        message = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        log(f"  {name} did not compile: {type(err).__name__}: {message}")
        return ProgramMemory(name, shape, resident, error=f"{type(err).__name__}: {message}",
                             compile_s=time.perf_counter() - start)  # fmt: skip
    result = ProgramMemory(name, shape, resident, stats=stats, compile_s=time.perf_counter() - start)
    log(f"  {name}: phase peak {_gib(result.phase_peak)} GiB per device (compile {result.compile_s:.0f} s)")
    return result


def plan_memory(cfg: PlanConfig, log: Callable[[str], None] = print) -> MemoryPlan:
    """Compiles the step's programs for `cfg` on abstract inputs and returns the per-device figures."""
    if cfg.hf_config:
        model_name, config = cfg.hf_config, load_config(cfg.hf_config)
    else:
        if cfg.size not in SIZES:
            raise ValueError(f"--size = {cfg.size!r}; expected one of {sorted(SIZES)}")
        model_name, make = SIZES[cfg.size]
        config = make()
    validate(cfg, config)
    mesh = make_mesh(*cfg.mesh, devices=jax.devices()[: math.prod(cfg.mesh)])
    dtype = DTYPES[cfg.dtype]
    graphdef, params = abstract_params(config, cfg, mesh)
    num_params = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
    optimizer = make_optimizer(OptimizerConfig(freeze_vision=cfg.freeze_vision), params)
    opt_state = abstract_opt_state(optimizer, params, mesh)
    opt_bytes = bytes_per_device(opt_state)
    log(f"{model_name}: {_count(num_params)} parameters; mesh data={cfg.mesh[0]} fsdp={cfg.mesh[1]} "
        f"tensor={cfg.mesh[2]} on {mesh.devices.size} {jax.devices()[0].platform} devices")  # fmt: skip

    t = config.text
    rows_total = cfg.prompts_per_step * cfg.n
    sampler_prompts = cfg.sampler_prompts or cfg.prompts_per_step
    sampler_rows = sampler_prompts * cfg.n
    capacity = cfg.max_prompt_length + cfg.max_new_tokens
    cache_spec = PartitionSpec(BATCH_AXES, None, "tensor", None)
    caches = [
        LayerKVCache(
            k=abstract(mesh, (sampler_rows, capacity, t.num_key_value_heads, t.head_dim), dtype, cache_spec),
            v=abstract(mesh, (sampler_rows, capacity, t.num_key_value_heads, t.head_dim), dtype, cache_spec),
            end=abstract(mesh, (), jnp.int32),
        )
        for _ in range(t.num_hidden_layers)
    ]
    programs: list[ProgramMemory] = []

    prompts = abstract_prompts(config, cfg, mesh, cfg.prompts_per_step)
    response = (rows_total, cfg.max_new_tokens)
    rollouts = Rollouts(
        prompts=prompts,
        tokens=abstract(mesh, response, jnp.int32, rows_spec(2)),
        mask=abstract(mesh, response, jnp.int32, rows_spec(2)),
        sampler_logprobs=abstract(mesh, response, jnp.float32, rows_spec(2)),
    )
    sampler = Sampler(graphdef, SamplingConfig(temperature=1.0, top_p=0.99), mesh=mesh)
    features = None
    if prompts.vision is not None:
        # the merger's output: one feature row per merged-token slot of the laid-out images
        images, slots = prompts.vision.patch_valid.shape
        features = abstract(mesh, (images * slots // config.vision.merge_unit, t.hidden_size), dtype, rows_spec(2))
        if "image_features" in cfg.programs:
            programs.append(_compile("image_features", f"{cfg.prompts_per_step * cfg.images_per_prompt} images",
                lambda: image_features_jit.lower(graphdef, params, prompts.vision), (params, opt_state, prompts),
                mesh, log))  # fmt: skip
    # one sampler call's prompts: text fields of its rows; the image features are the whole batch's
    sampler_inputs = dataclasses.replace(abstract_prompts(config, cfg, mesh, sampler_prompts), vision=None)
    sampler_shape = f"{sampler_prompts} prompts x n={cfg.n}, cache {capacity} positions"
    sampler_resident = (params, opt_state, prompts, features)
    if "sampler_prefill" in cfg.programs:
        programs.append(_compile("sampler_prefill", sampler_shape, lambda: sampler.prefill_program.lower(
            params, sampler_inputs, features, capacity=capacity, n=cfg.n),
            (sampler_resident, sampler_inputs), mesh, log))  # fmt: skip
    if "sampler_decode" in cfg.programs:
        logits = abstract(mesh, (sampler_rows, t.vocab_size), jnp.float32, rows_spec(2))
        key = jax.eval_shape(lambda: jax.random.key(0))
        key = abstract(mesh, key.shape, key.dtype)
        programs.append(_compile("sampler_decode", f"{sampler_shape}, {cfg.max_new_tokens} new tokens",
            lambda: sampler.decode_program.lower(params, caches, logits, sampler_inputs.attention_mask,
                sampler_inputs.rope_deltas, key, n=cfg.n, max_new=cfg.max_new_tokens),
            (sampler_resident, caches, logits, key), mesh, log))  # fmt: skip
    if not cfg.freeze_vision:
        features = None  # a trained vision tower runs inside the log-prob and train programs
    chunk = min(cfg.logprob_chunk, cfg.max_new_tokens)
    if "old_logprobs" in cfg.programs:
        micro = largest_divisor(rows_total, cfg.micro_batch_rows)
        programs.append(_compile("old_logprobs", f"{rows_total} rows, {micro} per pass",
            lambda: old_logprobs_pass.lower(graphdef, params, rollouts, features, micro=micro, temperature=1.0,
                                        chunk=chunk), (params, opt_state, rollouts, features), mesh, log))  # fmt: skip

    targets = UpdateTargets(
        advantages=abstract(mesh, response, jnp.float32, rows_spec(2)),
        old_logprobs=abstract(mesh, response, jnp.float32, rows_spec(2)),
        image_features=features,
    )
    per_prompt = rows_per_prompt(SelectionConfig("pts_abs", cfg.n, cfg.keep_ratio))
    mini_rows = cfg.minibatch_prompts * per_prompt
    micro_rows = min(cfg.micro_batch_rows, mini_rows)
    if mini_rows % micro_rows:
        raise ValueError(
            f"--micro_batch_rows = {cfg.micro_batch_rows} must divide the {mini_rows} rows of a mini-batch"
        )
    if "train_step" in cfg.programs:
        loss_cfg = LossConfig(norm_constant=float(cfg.max_new_tokens), logprob_chunk=chunk)
        update = jax.jit(  # as the trainer jits it
            update_minibatch, static_argnames=("graphdef", "optimizer", "micro_batches", "cfg"),
            donate_argnames=("params", "opt_state"),
            out_shardings=(jax.tree.map(lambda p: p.sharding, params), jax.tree.map(lambda s: s.sharding, opt_state),
                           NamedSharding(mesh, PartitionSpec())),
        )  # fmt: skip
        rows = abstract(mesh, (mini_rows,), jnp.int32)
        valid = abstract(mesh, (mini_rows,), jnp.bool_)
        shape = f"{mini_rows} rows in {mini_rows // micro_rows} micro-batches of {micro_rows}"
        programs.append(_compile("train_step", shape,
            lambda: update.lower(graphdef, params, opt_state, optimizer, rollouts, targets, rows, valid,
                                  micro_batches=mini_rows // micro_rows, cfg=loss_cfg),
            (params, opt_state, rollouts, targets, rows, valid), mesh, log))  # fmt: skip
    return MemoryPlan(
        config=cfg, model_name=model_name, num_params=num_params,
        devices=f"{mesh.devices.size} x {jax.devices()[0].platform}", params=bytes_per_device(params),
        opt_state=opt_bytes, kv_cache=bytes_per_device(caches), rollouts=bytes_per_device((rollouts, targets)),
        programs=programs,
    )  # fmt: skip


def _gib(x: int | None) -> str:
    """Bytes as GiB: two decimals, or two significant digits below 0.01 GiB (the tiny model)."""
    if x is None:
        return "-"
    return f"{x / GiB:.2f}" if x >= 0.01 * GiB or x == 0 else f"{x / GiB:.2g}"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


def format_plan(plan: MemoryPlan) -> str:
    """The plan as markdown: the resident figures, then one row per program, then the fits line."""
    c = plan.config
    budget = c.device_memory_gib * GiB
    lines = [
        f"{plan.model_name}, {_count(plan.num_params)} parameters; mesh (data, fsdp, tensor) = {c.mesh} on "
        f"{plan.devices}; compute {c.dtype}, parameters {c.param_dtype or c.dtype}, remat {c.remat}, attention "
        f"{c.attention}, vision {'frozen' if c.freeze_vision else 'trained'}.",
        f"Batch: {c.prompts_per_step} prompts x n={c.n}, prompt {c.max_prompt_length} + response "
        f"{c.max_new_tokens} tokens, {c.images_per_prompt} image(s) of {c.image_tokens} tokens per prompt, "
        f"mini-batch {c.minibatch_prompts} prompts, micro-batch {c.micro_batch_rows} rows.",
        "",
        "| per device | GiB |",
        "|---|---|",
        f"| parameters | {_gib(plan.params)} |",
        f"| optimizer state (AdamW moments of trained parameters) | {_gib(plan.opt_state)} |",
        f"| KV cache (sampler) | {_gib(plan.kv_cache)} |",
        f"| rollout batch + targets (log-prob and train programs) | {_gib(plan.rollouts)} |",
        "",
        "| program | shape | arguments | outputs | aliased | temp | code | program peak | resident | phase peak | "
        f"fits {c.device_memory_gib:g} GiB | compile |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in plan.programs:
        if p.stats is None:
            lines.append(
                f"| {p.name} | {p.shape} | did not compile: {p.error} | | | | | | | | no | {p.compile_s:.0f} s |"
            )
            continue
        s = p.stats
        fits = "yes" if p.phase_peak <= budget else "NO"
        lines.append(
            f"| {p.name} | {p.shape} | {_gib(s.argument_size_in_bytes)} | {_gib(s.output_size_in_bytes)} | "
            f"{_gib(s.alias_size_in_bytes)} | {_gib(s.temp_size_in_bytes)} | {_gib(s.generated_code_size_in_bytes)} | "
            f"{_gib(p.peak)} | {_gib(p.resident)} | {_gib(p.phase_peak)} | {fits} | {p.compile_s:.0f} s |"
        )
    peaks = [p.phase_peak for p in plan.programs if p.phase_peak is not None]
    failed = [p.name for p in plan.programs if p.stats is None]
    if peaks:
        verdict = "fits" if max(peaks) <= budget and not failed else "does NOT fit"
        lines += ["", f"Step peak per device: {_gib(max(peaks))} GiB of {c.device_memory_gib:g} GiB: {verdict}"
                  + (f" ({', '.join(failed)} did not compile)" if failed else "") + "."]  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = PlanConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--size", default=d.size, choices=sorted(SIZES),
        help="model dimensions: Qwen2.5-VL-3B, -7B, or the tests' tiny model (default %(default)s)",
    )
    p.add_argument("--hf_config", default=None, help="a Hugging Face config.json (or its directory) instead of --size")
    p.add_argument(
        "--mesh", default=",".join(map(str, d.mesh)),
        help="data,fsdp,tensor mesh sizes; their product is the device count used (default %(default)s)",
    )
    p.add_argument(
        "--devices", type=int, default=8,
        help="simulate this many CPU devices (set before jax starts; figures from the CPU compiler); 0 = use this "
        "machine's devices as they are (default %(default)s)",
    )
    p.add_argument(
        "--dtype", default=d.dtype, choices=sorted(DTYPES),
        help="compute dtype, also of the KV cache (default %(default)s)",
    )
    p.add_argument(
        "--param_dtype", default="float32", choices=sorted(DTYPES),
        help="storage dtype of parameters and AdamW moments (default %(default)s: the trainer's fp32 master "
        "weights, model.param_dtype)",
    )
    p.add_argument(
        "--remat", default=d.remat, choices=("none", "full", "dots"),
        help="per-decoder-layer rematerialisation in the backward pass (default %(default)s)",
    )
    p.add_argument(
        "--attention", default=d.attention, choices=("xla", "chunked", "cudnn"),
        help="attention implementation (cudnn compiles only on NVIDIA GPUs) (default %(default)s)",
    )
    p.add_argument(
        "--prompts_per_step", type=int, default=d.prompts_per_step,
        help="rollout batch in prompts (default %(default)s, the paper's)",
    )
    p.add_argument("--n", type=int, default=d.n, help="samples per prompt (default %(default)s)")
    p.add_argument(
        "--sampler_prompts", type=int, default=None,
        help="prompts per sampler call (default: the whole rollout batch, as the trainer samples today; smaller "
        "shows what sampling in chunks would need)",
    )
    p.add_argument(
        "--max_prompt_length", type=int, default=d.max_prompt_length,
        help="prompt bucket in tokens, image tokens included (default %(default)s)",
    )
    p.add_argument("--max_new_tokens", type=int, default=d.max_new_tokens, help="response length (default %(default)s)")
    p.add_argument(
        "--keep_ratio", type=float, default=d.keep_ratio,
        help="PTS alpha: update rows per prompt = n * alpha (default %(default)s)",
    )
    p.add_argument(
        "--minibatch_prompts", type=int, default=d.minibatch_prompts,
        help="prompts' worth of rows per optimizer step (default %(default)s)",
    )
    p.add_argument(
        "--micro_batch_rows", type=int, default=d.micro_batch_rows,
        help="rows per gradient-accumulation micro-batch and per old-log-prob pass (default %(default)s, the "
        "trainer's)",
    )
    p.add_argument(
        "--image_tokens", type=int, default=d.image_tokens,
        help="merged image tokens per image (a square grid; 4 patches each) (default %(default)s)",
    )
    p.add_argument(
        "--images_per_prompt", type=int, default=d.images_per_prompt,
        help="images per prompt, 0 = text only (default %(default)s)",
    )
    p.add_argument(
        "--train_vision", action="store_true",
        help="train the vision tower (default: frozen, the paper's; its features are then computed once per step)",
    )
    p.add_argument(
        "--logprob_chunk", type=int, default=d.logprob_chunk,
        help="response positions per vocabulary chunk of the log-prob computation (default %(default)s)",
    )
    p.add_argument(
        "--device_memory_gib", type=float, default=d.device_memory_gib,
        help="memory of one device for the fits line (default %(default)s)",
    )
    p.add_argument("--programs", default=",".join(PROGRAMS), help="comma-separated programs to compile (default: all)")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> PlanConfig:
    mesh = tuple(int(x) for x in args.mesh.split(","))
    if len(mesh) != 3:
        raise SystemExit(f"--mesh = {args.mesh!r}: expected three sizes data,fsdp,tensor")
    return PlanConfig(
        size=args.size, hf_config=args.hf_config, mesh=mesh, dtype=args.dtype, param_dtype=args.param_dtype,
        remat=args.remat, attention=args.attention, prompts_per_step=args.prompts_per_step, n=args.n,
        sampler_prompts=args.sampler_prompts, max_prompt_length=args.max_prompt_length,
        max_new_tokens=args.max_new_tokens, keep_ratio=args.keep_ratio, minibatch_prompts=args.minibatch_prompts,
        micro_batch_rows=args.micro_batch_rows, image_tokens=args.image_tokens,
        images_per_prompt=args.images_per_prompt, freeze_vision=not args.train_vision,
        logprob_chunk=args.logprob_chunk, device_memory_gib=args.device_memory_gib,
        programs=tuple(s for s in args.programs.split(",") if s),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cfg = config_from_args(args)
    if math.prod(cfg.mesh) > len(jax.devices()):
        raise SystemExit(
            f"--mesh {args.mesh} needs {math.prod(cfg.mesh)} devices; {len(jax.devices())} available (see --devices)"
        )
    plan = plan_memory(cfg, log=lambda line: print(line, flush=True))
    print()
    print(format_plan(plan))


if __name__ == "__main__":
    main()
