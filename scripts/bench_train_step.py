"""Training-step benchmark: seconds, tokens/s and FLOP utilisation per phase of the real `Trainer`, and every
XLA compilation over the run.

    python scripts/bench_train_step.py [--config configs/demo.py] [--config.key=value ...] [--size demo|3b]
        [--warmup_steps 2] [--steps 18] [--prompts P] [--n N] [--max_new_tokens T] [--dtype bfloat16]
        [--remat none|full|dots] [--minibatch_prompts M] [--micro_batch_rows R] [--layers L] [--vision_layers V]
        [--peak_tflops X] [--write_notes]

Cases (`--size`):
  demo: the config as given (default: the CPU demo of `defaults.demo_config()`, which builds its tiny model and
        data under `demo.cache_dir` on first use).
  3b:   real Qwen2.5-VL-3B dimensions with random weights (text 2048 wide, 36 layers, vocabulary 151936; vision
        tower 32 blocks of 1280), written once as an HF checkpoint under `--cache_dir` with the tiny tokenizer,
        and synthetic image prompts of `--image_size` px. Sets model.checkpoint, data.*, reward.name and turns
        the demo off; `--layers` / `--vision_layers` shrink it for a CPU smoke test. Meant for a GPU.

Runs `--warmup_steps` + `--steps` calls of `Trainer.train_step()` (20 by default, the compile-count run) and
reports over the measured steps, per phase (`timing/*` of the step metrics): mean seconds, share of the step,
tokens/s (response tokens, and response + prompt tokens, of the rollout batch), and for the policy update and
the log-prob pass (old log-probs + frozen vision features) the FLOPs and utilisation:
  * MFU uses the analytic model FLOPs: 2 x (decoder matmul parameters) per position, attention 4 x S^2 x
    heads x head_dim per row and layer (the full S^2 the XLA attention computes), the vocabulary projection
    over the (chunk-padded) response positions, the vision tower over its padded patch slots; x3 for
    forward + backward; no rematerialisation counted.
  * The XLA column is `compiled.cost_analysis()["flops"]` of the same program with its loops at one trip
    (micro-batches = 1, one log-prob chunk): XLA's cost analysis counts a while-loop body once, so the
    program is lowered with the same arithmetic unlooped. It counts what runs: rematerialised forwards and
    elementwise work included, so it reads higher than the analytic count (for remat "full" by about 4/3).
    With attention_impl "chunked" the attention is looped too and only its first chunk is counted. The
    analysis is of the per-device program; it is multiplied by the program's device count, so on a mesh
    work replicated over devices shows as a ratio above 1.
Peak FLOP/s: GPUs from `GPU_BF16_PEAK` by device kind (bf16 dense, also used for fp32 runs); on CPU a large
fp32 matmul measured in this process (MFU is relative to that achievable peak), or `--peak_tflops`.

Compilations: `jax.monitoring` duration events ('/jax/core/compile/backend_compile_duration' with the
program name, tracing and lowering events alongside) labelled with the step they happen in; a compilation
after the first step of its prompt bucket is a recompilation, printed with jax's own log of it
(`jax_log_compiles`: the argument shapes; `jax_explain_cache_misses`: what changed).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import inspect
import logging
import math
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import ConfigDict, config_flags

from shuffle_r1_jax.models.qwen2_5_vl.config import Qwen25VLConfig, TextConfig, VisionConfig
from shuffle_r1_jax.train import defaults
from shuffle_r1_jax.train import trainer as trainer_module
from shuffle_r1_jax.train.logprobs import Rollouts
from shuffle_r1_jax.train.trainer import Trainer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from build_notes import write_section  # noqa: E402

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"

# bf16 dense peak FLOP/s by device kind substring, most specific first (NVIDIA data sheets).
GPU_BF16_PEAK = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H200", 989e12), ("H100", 989e12))

# the trainer's jitted programs whose FLOPs are counted, and the phase (`timing/*` key) each runs in
PROGRAMS = {"_update": "update", "old_logprobs_pass": "old_logprobs", "image_features_jit": "old_logprobs"}

PHASE_LABELS = {
    "data": "data (next prompt batch)",
    "generate": "generate (sampler)",
    "reward": "reward (decode + score)",
    "advantage": "advantages + PTS + ABS",
    "old_logprobs": "log-probs (+ frozen vision)",
    "update": "policy update",
}


# ----------------------------------------------------------------------------------------------------------
# compilations


@dataclasses.dataclass(frozen=True)
class CompileEvent:
    """One XLA backend compilation: the step label current when it ran, the program name, seconds."""

    step: int
    program: str
    seconds: float


class CompileMonitor:
    """Counts XLA backend compilations and their time via `jax.monitoring`, labelled with `self.step`.

    Also sums tracing + lowering seconds per step, and keeps jax's compile log records (`jax_log_compiles`,
    `jax_explain_cache_misses`, WARNING level on the "jax" loggers) per step instead of printing them.
    Use as a context manager; the listeners and config values are restored on exit.
    """

    def __init__(self):
        self.step = -1
        self.compiles: list[CompileEvent] = []
        self.trace_lower_seconds: dict[int, float] = collections.defaultdict(float)
        self.logs: dict[int, list[str]] = collections.defaultdict(list)
        self._saved: dict[str, Any] = {}
        self._handler = _CallbackHandler(lambda message: self.logs[self.step].append(message))

    def _on_duration(self, event: str, duration_secs: float, **kwargs) -> None:
        if event == BACKEND_COMPILE_EVENT:
            self.compiles.append(CompileEvent(self.step, str(kwargs.get("fun_name", "?")), duration_secs))
        elif event in (TRACE_EVENT, LOWER_EVENT):
            self.trace_lower_seconds[self.step] += duration_secs

    def __enter__(self) -> "CompileMonitor":
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        for name in ("jax_log_compiles", "jax_explain_cache_misses"):
            self._saved[name] = getattr(jax.config, name)
            jax.config.update(name, True)
        jax_logger = logging.getLogger("jax")
        self._saved["propagate"] = jax_logger.propagate
        jax_logger.addHandler(self._handler)
        jax_logger.propagate = False
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._on_duration)
        for name in ("jax_log_compiles", "jax_explain_cache_misses"):
            jax.config.update(name, self._saved[name])
        jax_logger = logging.getLogger("jax")
        jax_logger.removeHandler(self._handler)
        jax_logger.propagate = self._saved["propagate"]

    def at(self, step: int) -> list[CompileEvent]:
        return [e for e in self.compiles if e.step == step]


class _CallbackHandler(logging.Handler):
    def __init__(self, callback: Callable[[str], None]):
        super().__init__(level=logging.WARNING)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        self.callback(record.getMessage())


# ----------------------------------------------------------------------------------------------------------
# recording the trainer's jitted programs


def _abstract(x):
    """Arrays of a pytree as ShapeDtypeStructs (for `.lower()`); anything else unchanged."""
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding) if isinstance(a, jax.Array) else a, x
    )


class ProgramRecorder:
    """Stands in for one of the trainer's jitted programs: calls it, and records each distinct call signature
    (abstract arguments, for lowering later) and which signature every call of each step used."""

    def __init__(self, name: str, jitted):
        self.name = name
        self.jitted = jitted
        self.signature = inspect.signature(jitted.__wrapped__)
        self.step = -1
        self.signatures: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[int, str]] = []
        self.rollouts: Rollouts | None = None

    def __call__(self, *args, **kwargs):
        bound = self.signature.bind(*args, **kwargs).arguments
        leaves = [(tuple(a.shape), str(a.dtype)) for a in jax.tree.leaves(args) if isinstance(a, jax.Array)]
        key = repr((leaves, sorted((k, repr(v)) for k, v in kwargs.items())))
        if key not in self.signatures:
            self.signatures[key] = {k: _abstract(v) for k, v in bound.items()}
        self.calls.append((self.step, key))
        if isinstance(bound.get("rollouts"), Rollouts):
            self.rollouts = bound["rollouts"]
        return self.jitted(*args, **kwargs)

    def keys_at(self, step: int) -> list[str]:
        return [key for s, key in self.calls if s == step]


@contextlib.contextmanager
def recording_programs(trainer: Trainer):
    """Replaces the trainer's jitted programs (`PROGRAMS`: attributes of the trainer instance, or else of the
    trainer module) by recorders for the duration."""
    sites = {}
    for name in PROGRAMS:
        owner = trainer if name in vars(trainer) else trainer_module
        if not hasattr(owner, name):
            raise AttributeError(f"the trainer has no jitted program {name!r} (instance or module); update PROGRAMS")
        sites[name] = (owner, getattr(owner, name))
    recorders = {name: ProgramRecorder(name, jitted) for name, (_, jitted) in sites.items()}
    try:
        for name, recorder in recorders.items():
            setattr(sites[name][0], name, recorder)
        yield recorders
    finally:
        for name, (owner, jitted) in sites.items():
            setattr(owner, name, jitted)


# ----------------------------------------------------------------------------------------------------------
# FLOPs


def decoder_matmul_params(t: TextConfig) -> int:
    """Matmul parameters of the decoder layers (q, k, v, o, gate, up, down), embeddings and norms excluded."""
    attention = t.hidden_size * (t.num_attention_heads + 2 * t.num_key_value_heads) * t.head_dim
    attention += t.num_attention_heads * t.head_dim * t.hidden_size
    return t.num_hidden_layers * (attention + 3 * t.hidden_size * t.intermediate_size)


def decoder_forward_flops(t: TextConfig, rows: int, seq: int, logit_positions: int) -> int:
    """Forward FLOPs of `rows` sequences of `seq` positions, logits at `logit_positions` positions per row."""
    dense = 2 * decoder_matmul_params(t) * rows * seq
    attention = 4 * t.num_hidden_layers * t.num_attention_heads * t.head_dim * seq * seq * rows
    logits = 2 * t.hidden_size * t.vocab_size * rows * logit_positions
    return dense + attention + logits


def vision_forward_flops(v: VisionConfig, images: int, slots: int) -> int:
    """Forward FLOPs of the vision tower over `images` rows of `slots` patch slots (padding included)."""
    h, tokens = v.hidden_size, images * slots
    full_blocks = sum(1 for i in v.fullatt_block_indexes if i < v.depth)
    block_dense = 2 * (4 * h * h + 3 * h * v.intermediate_size) * tokens
    attention = 4 * h * tokens * (full_blocks * slots + (v.depth - full_blocks) * v.window_patches)
    merged_width = v.merge_unit * h
    merger = 2 * (merged_width * merged_width + merged_width * v.out_hidden_size) * (tokens // v.merge_unit)
    return 2 * v.patch_dim * h * tokens + v.depth * block_dense + attention + merger


def _padded_response(rollouts: Rollouts, chunk: int) -> int:
    length = rollouts.tokens.shape[1]
    return math.ceil(length / min(chunk, length)) * min(chunk, length)


def analytic_flops(name: str, args: dict[str, Any], config: Qwen25VLConfig) -> int:
    """Model FLOPs of one call of program `name` with (abstract) arguments `args`."""
    if name == "image_features_jit":
        return vision_forward_flops(config.vision, *args["vision"].patches.shape[:2])
    rollouts: Rollouts = args["rollouts"]
    seq = rollouts.prompts.input_ids.shape[1] + rollouts.tokens.shape[1]
    vision = rollouts.prompts.vision
    if name == "old_logprobs_pass":
        rows = rollouts.tokens.shape[0]
        flops = decoder_forward_flops(config.text, rows, seq, _padded_response(rollouts, args["chunk"]))
        if args["features"] is None and vision is not None:  # the tower runs inside every micro-batch
            flops += vision_forward_flops(config.vision, *vision.patches.shape[:2]) * (rows // args["micro"])
        return flops
    if name == "_update":
        cfg = args["cfg"]
        flops = decoder_forward_flops(config.text, args["rows"].shape[0], seq, _padded_response(rollouts, cfg.logprob_chunk))
        if args["targets"].image_features is None and vision is not None:
            flops += vision_forward_flops(config.vision, *vision.patches.shape[:2]) * args["micro_batches"]
        return 3 * flops
    raise ValueError(f"no analytic FLOP count for program {name!r}")


def one_trip_arguments(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """The same call with every loop at one trip (one micro-batch, one log-prob chunk): XLA's cost analysis
    counts a while-loop body once, and this computes the same arithmetic without the loops."""
    args = dict(args)
    if name == "_update":
        chunk = _padded_response(args["rollouts"], args["cfg"].logprob_chunk)
        args.update(micro_batches=1, cfg=dataclasses.replace(args["cfg"], logprob_chunk=chunk))
    elif name == "old_logprobs_pass":
        args.update(micro=args["rollouts"].tokens.shape[0], chunk=_padded_response(args["rollouts"], args["chunk"]))
    return args


def xla_flops(jitted, args: dict[str, Any]) -> float | None:
    """FLOPs of XLA's cost analysis of `jitted` compiled for `args` (keyword-bound), summed over the devices
    the program runs on (the analysis is of the per-device partitioned program); None if unavailable."""
    positional = [v for k, v in args.items() if k in _positional_names(jitted)]
    keywords = {k: v for k, v in args.items() if k not in _positional_names(jitted)}
    compiled = jitted.lower(*positional, **keywords).compile()
    cost = compiled.cost_analysis()
    if not cost or "flops" not in cost:
        return None
    devices = max(s.num_devices for s in jax.tree.leaves(compiled.input_shardings))
    return float(cost["flops"]) * devices


def _positional_names(jitted) -> set[str]:
    params = inspect.signature(jitted.__wrapped__).parameters.values()
    return {p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)}


def measure_cpu_peak(size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the fastest of `repeats` fp32 [size, size] matmuls (an achievable peak of this process)."""
    a, b = (jax.random.normal(jax.random.key(i), (size, size), jnp.float32) for i in range(2))
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


@dataclasses.dataclass(frozen=True)
class Peak:
    """Peak FLOP/s (None: unknown) and where it comes from. per_device: `flops` is one device's (GPU), so a
    program on k devices has k times it; otherwise it is the whole process's (CPU: simulated CPU devices share
    the same cores)."""

    flops: float | None
    source: str
    per_device: bool

    def total(self, devices: int) -> float | None:
        return None if self.flops is None else self.flops * (devices if self.per_device else 1)


def peak_flops(override_tflops: float | None) -> Peak:
    """The peak of this process's first device kind (table for GPUs, measured on CPU, or the override)."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        if override_tflops:
            return Peak(override_tflops * 1e12, f"{override_tflops:g} TFLOP/s (--peak_tflops)", per_device=False)
        peak = measure_cpu_peak()
        return Peak(peak, f"{peak / 1e9:.1f} GFLOP/s measured (fp32 2048^3 matmul, best of 5, this process)", False)
    if override_tflops:
        return Peak(override_tflops * 1e12, f"{override_tflops:g} TFLOP/s per device (--peak_tflops)", per_device=True)
    for kind, value in GPU_BF16_PEAK:
        if kind in device.device_kind:
            return Peak(value, f"{value / 1e12:.0f} TFLOP/s per device ({kind} bf16 dense peak)", per_device=True)
    return Peak(None, f"unknown for {device.device_kind} (give --peak_tflops)", per_device=True)


# ----------------------------------------------------------------------------------------------------------
# the benchmark


@dataclasses.dataclass
class PhaseRow:
    """One phase over the measured steps. tokens/s: the rollout batch's tokens over the phase's seconds."""

    name: str
    seconds: float
    share: float
    response_tokens_per_s: float
    total_tokens_per_s: float
    flops_xla: float | None = None
    flops_analytic: float | None = None
    mfu: float | None = None
    xla_utilisation: float | None = None


@dataclasses.dataclass
class BenchResult:
    """What `run_benchmark` measured; per-step lists cover every step, warm-up included."""

    phases: list[PhaseRow]
    step_seconds: float
    response_tokens: float
    prompt_tokens: float
    update_rows: int
    sequence_length: int
    program_flops: dict[str, dict[str, tuple[float | None, int]]]
    peak: float | None
    peak_source: str
    warmup_steps: int
    steps: int
    buckets: list[int]
    compiles_per_step: list[int]
    programs_per_step: list[list[str]]
    compile_seconds_per_step: list[float]
    trace_lower_seconds_per_step: list[float]
    recompiles: list[CompileEvent]
    recompile_logs: dict[int, list[str]]
    sampler_programs: float


def _token_counts(rollouts: Rollouts) -> tuple[int, int, int]:
    """(response tokens, prompt tokens over all rows, prompt bucket length) of a rollout batch."""
    n = rollouts.samples_per_prompt
    response = int(np.asarray(rollouts.mask).sum())
    prompt = int(np.asarray(rollouts.prompts.attention_mask).sum()) * n
    return response, prompt, rollouts.prompts.input_ids.shape[1]


def run_benchmark(
    config: ConfigDict, workdir: str, *, warmup_steps: int, steps: int, peak: Peak
) -> BenchResult:
    """Builds a `Trainer` from `config` in `workdir`, runs warmup_steps + steps train steps, and measures."""
    if warmup_steps < 1 or steps < 1:
        raise ValueError(f"warmup_steps = {warmup_steps} and steps = {steps} must be >= 1")
    trainer = Trainer(config, workdir)
    metrics_per_step, tokens_per_step = [], []
    try:
        with recording_programs(trainer) as recorders, CompileMonitor() as monitor:
            for step in range(warmup_steps + steps):
                monitor.step = step
                for recorder in recorders.values():
                    recorder.step = step
                metrics_per_step.append(trainer.train_step())
                trainer.step += 1  # as `Trainer.fit` does: the next step folds a new key
                tokens_per_step.append(_token_counts(recorders["_update"].rollouts))
                for recorder in recorders.values():
                    recorder.rollouts = None
        mesh = getattr(trainer, "mesh", None)
        with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
            program_flops = _program_flops(recorders, trainer.model_config)
        devices = mesh.size if mesh is not None else 1
    finally:
        trainer.close()
    measured = range(warmup_steps, warmup_steps + steps)
    step_s = float(np.mean([metrics_per_step[i]["timing/step"] for i in measured]))
    response = float(np.mean([tokens_per_step[i][0] for i in measured]))
    prompt = float(np.mean([tokens_per_step[i][1] for i in measured]))
    phases = []
    for key in [k for k in metrics_per_step[-1] if k.startswith("timing/") and k != "timing/step"]:
        name = key.removeprefix("timing/")
        seconds = float(np.mean([metrics_per_step[i][key] for i in measured]))
        phases.append(PhaseRow(name, seconds, seconds / step_s, response / seconds, (response + prompt) / seconds))
    other = step_s - sum(p.seconds for p in phases)
    phases.append(PhaseRow("other", other, other / step_s, math.nan, math.nan))
    _attach_flops(phases, recorders, program_flops, measured, peak.total(devices))
    update_signature = recorders["_update"].signatures[recorders["_update"].calls[-1][1]]  # the last step's
    buckets = [t[2] for t in tokens_per_step]
    first_of_bucket = {b: buckets.index(b) for b in buckets}
    recompiles = [e for e in monitor.compiles if e.step > first_of_bucket[buckets[e.step]]]
    total = warmup_steps + steps
    return BenchResult(
        phases=phases,
        step_seconds=step_s,
        response_tokens=response,
        prompt_tokens=prompt,
        update_rows=update_signature["rows"].shape[0],
        sequence_length=buckets[-1] + update_signature["rollouts"].tokens.shape[1],
        program_flops=program_flops,
        peak=peak.total(devices),
        peak_source=peak.source + (f" x {devices} devices" if peak.per_device and devices > 1 else ""),
        warmup_steps=warmup_steps,
        steps=steps,
        buckets=buckets,
        compiles_per_step=[len(monitor.at(s)) for s in range(total)],
        programs_per_step=[[e.program for e in monitor.at(s)] for s in range(total)],
        compile_seconds_per_step=[sum(e.seconds for e in monitor.at(s)) for s in range(total)],
        trace_lower_seconds_per_step=[monitor.trace_lower_seconds[s] for s in range(total)],
        recompiles=recompiles,
        recompile_logs={s: monitor.logs[s] for s in sorted({e.step for e in recompiles})},
        sampler_programs=metrics_per_step[-1]["compile/sampler_programs"],
    )


def _program_flops(recorders: dict[str, ProgramRecorder], config: Qwen25VLConfig) -> dict[str, dict[str, tuple[float | None, int]]]:
    """program -> signature key -> (XLA FLOPs of the one-trip program or None, analytic FLOPs)."""
    out = {}
    for name, recorder in recorders.items():
        out[name] = {
            key: (xla_flops(recorder.jitted, one_trip_arguments(name, args)), analytic_flops(name, args, config))
            for key, args in recorder.signatures.items()
        }
    return out


def _attach_flops(phases: list[PhaseRow], recorders, program_flops, measured: range, peak: float | None) -> None:
    """FLOPs per step and utilisation of the phases that run the counted programs."""
    for phase in phases:
        names = [name for name, p in PROGRAMS.items() if p == phase.name and recorders[name].calls]
        if not names:
            continue
        xla, analytic = [], []
        for step in measured:
            calls = [(name, key) for name in names for key in recorders[name].keys_at(step)]
            counts = [program_flops[name][key] for name, key in calls]
            xla.append(None if any(c[0] is None for c in counts) else sum(c[0] for c in counts))
            analytic.append(sum(c[1] for c in counts))
        phase.flops_analytic = float(np.mean(analytic))
        phase.flops_xla = None if None in xla else float(np.mean(xla))
        if peak:
            phase.mfu = phase.flops_analytic / phase.seconds / peak
            phase.xla_utilisation = None if phase.flops_xla is None else phase.flops_xla / phase.seconds / peak


# ----------------------------------------------------------------------------------------------------------
# the 3B case


def build_random_3b(cache_dir: str, *, layers: int, vision_layers: int, dtype: str, image_size: int, seed: int = 0) -> dict[str, str]:
    """Writes (once) a random-weight Qwen2.5-VL-3B-dimension checkpoint in the HF layout, with the tiny
    tokenizer's special token ids, and a synthetic image dataset; returns {"checkpoint", "train"} paths."""
    from shuffle_r1_jax.checkpoint.hf_export import save_hf_checkpoint
    from shuffle_r1_jax.checkpoint.tiny import random_model
    from shuffle_r1_jax.data.synthetic import write_synthetic_dataset
    from shuffle_r1_jax.models.qwen2_5_vl.config import qwen2_5_vl_3b_config
    from shuffle_r1_jax.processing.image import ImagePreprocessConfig
    from shuffle_r1_jax.processing.tiny_tokenizer import save_tiny_tokenizer
    from shuffle_r1_jax.train.settings import DTYPES

    root = pathlib.Path(os.path.expanduser(cache_dir)) / f"3b-l{layers}-v{vision_layers}-{dtype}-img{image_size}-s{seed}"
    checkpoint, data = root / "checkpoint", root / "data"
    if not (checkpoint / "config.json").exists():
        pixels = image_size * image_size
        token_ids = save_tiny_tokenizer(checkpoint, image_config=ImagePreprocessConfig(min_pixels=pixels, max_pixels=pixels))
        base = qwen2_5_vl_3b_config()
        full = tuple(i for i in base.vision.fullatt_block_indexes if i < vision_layers) or (vision_layers - 1,)
        config = dataclasses.replace(
            base,
            text=dataclasses.replace(base.text, num_hidden_layers=layers),
            vision=dataclasses.replace(base.vision, depth=vision_layers, fullatt_block_indexes=full),
            **{k: token_ids[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                         "vision_end_token_id", "bos_token_id", "eos_token_id")},
        )  # fmt: skip
        save_hf_checkpoint(random_model(config, seed, dtype=DTYPES[dtype]), checkpoint)
    if not (data / "train.parquet").exists():
        write_synthetic_dataset(data, num_train=512, num_val=8, seed=seed, image_size=image_size)
    return {"checkpoint": str(checkpoint), "train": str(data / "train.parquet")}


def apply_3b(config: ConfigDict, paths: dict[str, str], *, image_size: int, prompt_bucket: int) -> None:
    """Points `config` at the random 3B checkpoint and its synthetic data (demo assets off)."""
    config.demo.enabled = False
    config.model.checkpoint = paths["checkpoint"]
    config.data.train, config.data.val = paths["train"], ""
    config.data.prompt_format = "none"
    config.data.min_pixels = config.data.max_pixels = image_size * image_size
    config.data.max_prompt_length = prompt_bucket
    config.data.prompt_buckets = (prompt_bucket,)
    config.reward.name = "synthetic"


# ----------------------------------------------------------------------------------------------------------
# reporting


def machine_description() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    device = jax.devices()[0]
    return (
        f"{os.cpu_count()} CPU cores ({cpu}, {platform.machine()}), backend {device.platform} "
        f"({device.device_kind}), jax {jax.__version__}"
    )


def load_average() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1].strip()


def _fmt(x: float | None, scale: float = 1.0, spec: str = ".2f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x / scale, spec)


LEGEND = (
    "Columns: tokens/s = the rollout batch's response tokens (and response + prompt tokens of all rollouts) over "
    "the phase's seconds. MFU = analytic model FLOPs (decoder matmuls 2N per position, attention 4 S^2 heads x "
    "head_dim per row and layer, vocabulary projection on response positions, vision tower on padded patch "
    "slots; x3 for the update's backward; no recompute) / phase seconds / peak. XLA-count util. uses instead "
    "XLA's cost analysis of the same programs compiled with their loops at one trip (XLA counts a loop body "
    "once), which includes recompute and elementwise work. The advantage phase is not synchronised by the "
    "trainer: its device work finishes inside the log-prob phase's time."
)


def format_report(r: BenchResult) -> str:
    """The phase table, the FLOP cross-check and the compilation summary (markdown)."""
    lines = [
        f"Measured: {r.steps} steps after {r.warmup_steps} warm-up steps; per step {r.response_tokens:.0f} response "
        f"tokens + {r.prompt_tokens:.0f} prompt tokens (all rollouts); update: {r.update_rows} rows per optimizer "
        f"step, sequence {r.sequence_length} (last step). Peak: {r.peak_source}.",
        "",
        "| phase | mean s | share | response tok/s | total tok/s | GFLOP/step analytic | GFLOP/step XLA | MFU (analytic) | XLA-count util. |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in r.phases:
        lines.append(
            f"| {PHASE_LABELS.get(p.name, p.name)} | {p.seconds:.3f} | {p.share:.1%} | {_fmt(p.response_tokens_per_s, 1, '.0f')} "
            f"| {_fmt(p.total_tokens_per_s, 1, '.0f')} | {_fmt(p.flops_analytic, 1e9)} | {_fmt(p.flops_xla, 1e9)} "
            f"| {_fmt(p.mfu, 0.01, '.1f')}{'%' if p.mfu is not None else ''} "
            f"| {_fmt(p.xla_utilisation, 0.01, '.1f')}{'%' if p.xla_utilisation is not None else ''} |"
        )
    lines.append(
        f"| **step** | {r.step_seconds:.3f} | 100% | {r.response_tokens / r.step_seconds:.0f} "
        f"| {(r.response_tokens + r.prompt_tokens) / r.step_seconds:.0f} | | | | |"
    )
    lines += ["", LEGEND]
    lines += ["", "FLOPs per program call (XLA: cost analysis of the one-trip program; ratio XLA / analytic):"]
    for name, by_key in r.program_flops.items():
        for xla, analytic in by_key.values():
            ratio = f"{xla / analytic:.2f}" if xla else "-"
            lines.append(f"- `{name}`: analytic {analytic / 1e9:.3f} GFLOP, XLA {_fmt(xla, 1e9, '.3f')} GFLOP, ratio {ratio}")
    total = len(r.compiles_per_step)
    lines += [
        "",
        f"Compilations over the {total}-step run (XLA backend compiles; prompt buckets seen: {sorted(set(r.buckets))}):",
        f"- step 1: {r.compiles_per_step[0]} compiles, {r.compile_seconds_per_step[0]:.1f} s backend compile + "
        f"{r.trace_lower_seconds_per_step[0]:.1f} s tracing/lowering",
        f"- steps 2-{total}: {sum(r.compiles_per_step[1:])} compiles, {sum(r.compile_seconds_per_step[1:]):.2f} s "
        f"(per step: {r.compiles_per_step[1:]})",
        f"- sampler programs (trainer metric compile/sampler_programs): {r.sampler_programs:.0f}",
    ]
    for bucket in sorted(set(r.buckets[1:]) - {r.buckets[0]}):
        first = r.buckets.index(bucket)
        lines.append(f"- step {first + 1}, the first of bucket {bucket}: compiled {r.programs_per_step[first]}")
    if r.recompiles:
        lines.append(f"- RECOMPILED after the first step of their prompt bucket: {len(r.recompiles)} compiles")
        for program, events in _by_program(r.recompiles).items():
            steps = [e.step + 1 for e in events]
            lines.append(f"  - `{program}`: {len(events)} times, {sum(e.seconds for e in events):.2f} s, at steps {steps}")
        misses = sorted({m.splitlines()[0] for ms in r.recompile_logs.values() for m in ms if m.startswith("TRACING CACHE MISS")})
        lines += [f"  - jax: {m}" for m in misses]
    else:
        lines.append("- nothing recompiled after the first step of its prompt bucket")
    return "\n".join(lines)


def _by_program(events: list[CompileEvent]) -> dict[str, list[CompileEvent]]:
    grouped = collections.defaultdict(list)
    for e in events:
        grouped[e.program].append(e)
    return dict(grouped)


def format_recompile_logs(r: BenchResult, limit: int = 800) -> str:
    """jax's log of the first step each recompiled program recompiled in (argument shapes, and why the tracing
    cache missed); long lines cut at `limit` characters."""
    out = []
    for step in sorted({events[0].step for events in _by_program(r.recompiles).values()}):
        out.append(f"--- jax's compile log of step {step + 1} ---")
        out += [m if len(m) <= limit else m[:limit] + " ..." for m in r.recompile_logs[step]]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------------------
# command line

FLAGS = flags.FLAGS

# flag -> the config key it sets (None: keep the config's value, or the case's default below)
_CONFIG_FLAGS = {
    "prompts": "data.rollout_batch_prompts", "n": "rollout.n", "max_new_tokens": "rollout.max_new_tokens",
    "dtype": "model.dtype", "remat": "model.remat", "minibatch_prompts": "train.minibatch_prompts",
    "micro_batch_rows": "train.micro_batch_rows",
}  # fmt: skip

# the 3b case's defaults of those flags, sized for one 80 GB GPU: remat "none" with 4-row micro-batches, because
# remat "full"/"dots" currently fail in the trainer's old log-prob pass (flax TraceContextError under lax.map)
_SIZE_DEFAULTS = {"3b": dict(prompts=64, max_new_tokens=512, dtype="bfloat16", remat="none", minibatch_prompts=16,
                             micro_batch_rows=4)}  # fmt: skip


def define_flags() -> None:
    """The command line (defined here, not at import, so tests can import this module next to other scripts)."""
    config_flags.DEFINE_config_file(
        "config", os.path.abspath(defaults.__file__), "trainer config file (default: the demo)", lock_config=True
    )
    flags.DEFINE_enum("size", "demo", ["demo", "3b"], "demo: the config as given; 3b: random Qwen2.5-VL-3B dims")
    flags.DEFINE_integer("warmup_steps", 2, "steps before measuring (compilation happens here)")
    flags.DEFINE_integer("steps", 18, "measured steps")
    flags.DEFINE_integer("prompts", None, "data.rollout_batch_prompts (default: the config's; 3b: 64)")
    flags.DEFINE_integer("n", None, "rollout.n (default: the config's)")
    flags.DEFINE_integer("max_new_tokens", None, "rollout.max_new_tokens (default: the config's; 3b: 512)")
    flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "model.dtype (default: the config's; 3b: bfloat16)")
    flags.DEFINE_enum("remat", None, ["none", "full", "dots"], "model.remat (default: the config's; 3b: none)")
    flags.DEFINE_integer("minibatch_prompts", None, "train.minibatch_prompts (default: the config's; 3b: 16)")
    flags.DEFINE_integer("micro_batch_rows", None, "train.micro_batch_rows (default: the config's; 3b: 4)")
    flags.DEFINE_integer("layers", 36, "3b: text decoder layers (36 = the real model)")
    flags.DEFINE_integer("vision_layers", 32, "3b: vision tower blocks (32 = the real model)")
    flags.DEFINE_integer("image_size", 448, "3b: synthetic image side in px (448: 1024 patches, 256 tokens)")
    flags.DEFINE_integer("prompt_bucket", 512, "3b: the prompt length bucket")
    flags.DEFINE_string("cache_dir", "~/.cache/shuffle_r1_jax/bench", "3b: where the random checkpoint is kept")
    flags.DEFINE_float("peak_tflops", None, "peak FLOP/s for MFU, in TFLOP/s (default: table or measured)")
    flags.DEFINE_string("workdir", None, "trainer workdir (default: a temporary directory)")
    flags.DEFINE_bool("write_notes", False, "write the figures to BUILD_NOTES.md")


def resolve_config() -> ConfigDict:
    """The config file + overrides, with the case's settings and the benchmark flags applied."""
    config = FLAGS.config
    size_defaults = _SIZE_DEFAULTS.get(FLAGS.size, {})
    values = {name: FLAGS[name].value if FLAGS[name].value is not None else size_defaults.get(name) for name in _CONFIG_FLAGS}
    with config.unlocked():
        if FLAGS.size == "3b":
            paths = build_random_3b(FLAGS.cache_dir, layers=FLAGS.layers, vision_layers=FLAGS.vision_layers,
                                    dtype=values["dtype"], image_size=FLAGS.image_size)  # fmt: skip
            apply_3b(config, paths, image_size=FLAGS.image_size, prompt_bucket=FLAGS.prompt_bucket)
        for name, key in _CONFIG_FLAGS.items():
            if values[name] is not None:
                section, field = key.split(".")
                config[section][field] = values[name]
        config.eval.every, config.eval.before_training = 0, False
    return config


def main(argv: list[str]) -> None:
    del argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)
    load_before = load_average()
    busy = float(load_before.split(",")[0]) > 0.5
    config = resolve_config()
    peak = peak_flops(FLAGS.peak_tflops)
    with contextlib.ExitStack() as stack:
        workdir = FLAGS.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_train_step_"))
        result = run_benchmark(config, workdir, warmup_steps=FLAGS.warmup_steps, steps=FLAGS.steps, peak=peak)
    load_after = load_average()
    c = config
    header = [
        f"Command: `python scripts/bench_train_step.py {' '.join(sys.argv[1:])}`; {machine_description()}; "
        f"{datetime.date.today()}. Load average (1, 5, 15 min) before the run: {load_before}; after: {load_after}"
        + (" (other jobs were running on this machine: timings are noisy)." if busy else "."),
        f"Config: {c.rl.algorithm}, {c.data.rollout_batch_prompts} prompts x n={c.rollout.n}, max_new_tokens "
        f"{c.rollout.max_new_tokens}, prompt buckets {tuple(c.data.prompt_buckets)}, {c.model.dtype}, remat "
        f"{c.model.remat}, attention {c.model.attention_impl}, mini-batch {c.train.minibatch_prompts} prompts, "
        f"micro-batch {c.train.micro_batch_rows} rows, old log-probs {c.rl.old_logprobs}.",
        "",
    ]
    body = "\n".join(header) + format_report(result) + "\n"
    print(body)
    if result.recompiles:
        print(format_recompile_logs(result))
    if FLAGS.write_notes:
        write_section(f"Training step benchmark ({FLAGS.size})", body)


if __name__ == "__main__":
    define_flags()
    app.run(main)
