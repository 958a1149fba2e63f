"""Training-step benchmark: seconds, tokens/s and FLOP utilisation per phase of the real `Trainer`, and every
XLA compilation over the run.

`run_benchmark` trains `warmup_steps + steps` steps with `Trainer.fit` (validation off) and reports over the
measured steps, per phase (the step's `timing/*` metrics): mean seconds, share of the step, tokens/s (response
tokens, and response + prompt tokens, of the rollout batch), and for the policy update and the log-prob pass the
FLOPs and utilisation:
  * MFU uses the analytic model FLOPs (`models.qwen2_5_vl.flops`): 2 x (decoder matmul parameters) per position,
    attention 4 x S^2 x heads x head_dim per row and layer (the full S^2 the XLA attention computes), the
    vocabulary projection over the (chunk-padded) response positions (every position of a packed row), the
    vision tower over its padded patch slots; x3 for the update's forward + backward (the log-prob pass is a
    forward only); no rematerialisation counted.
  * The XLA column is `compiled.cost_analysis()["flops"]` of the same programs built with their loops at one trip
    (one micro-batch, one log-prob chunk: `build_step_programs` over settings changed only there): XLA's cost
    analysis counts a while-loop body once. It counts what runs, rematerialised forwards and elementwise work
    included, so it reads higher than the analytic count (for remat "full" by about 4/3). With attention_impl
    "chunked" the attention is looped too and only its first chunk is counted. The analysis is of the
    per-device program; it is multiplied by the program's device count, so work replicated over devices shows
    as a ratio above 1.
The trainer's programs are wrapped (`Trainer(instrument=...)`) to record each call's abstract arguments.

Compilations: `perf.compiles.CompileMonitor`, labelled with the step they happen in; a compilation after the
first step of its prompt bucket is a recompilation, reported with jax's own log of it.
"""

from __future__ import annotations

import collections
import dataclasses
import math

import jax
import numpy as np

from shuffle_r1_jax.learner.packing import PackingPlan
from shuffle_r1_jax.models.qwen2_5_vl.config import Qwen25VLConfig
from shuffle_r1_jax.models.qwen2_5_vl.flops import decoder_forward_flops, vision_forward_flops
from shuffle_r1_jax.perf.compiles import CompileEvent, CompileMonitor
from shuffle_r1_jax.perf.peak import Peak
from shuffle_r1_jax.rollout.types import Rollouts
from shuffle_r1_jax.train.programs import SpecialTokens, StepPrograms, build_step_programs
from shuffle_r1_jax.train.settings import RunSettings
from shuffle_r1_jax.train.trainer import Trainer

# the step's programs whose FLOPs are counted, and the phase (`timing/*` key) each runs in
COUNTED_PROGRAMS = {"logprobs": "old_logprobs", "update": "update"}

PHASE_LABELS = {
    "data": "data (next prompt batch)",
    "generate": "generate (sampler)",
    "reward": "reward (decode + score)",
    "advantage": "advantages + PTS + ABS",
    "old_logprobs": "log-probs (+ frozen vision)",
    "update": "policy update",
}


def _abstract(tree):
    """The arrays of a pytree as sharded ShapeDtypeStructs (for `.lower()`); anything else unchanged."""
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding) if isinstance(a, jax.Array) else a, tree
    )


class ProgramRecorder:
    """Stands in for one of the step's programs: calls it and records its calls.

    Args:
      program: the program it stands in for.

    Attributes:
      program: the wrapped program.
      step: the step label of the calls (set by the benchmark after each step).
      signatures: each distinct call signature (shapes and dtypes) -> its abstract arguments, to lower again
        later.
      calls: (step, signature) of every call.
      rollouts: the last `Rollouts` argument (None before one).
    """

    def __init__(self, program):
        self.program = program
        self.step = 0
        self.signatures: dict[str, tuple] = {}
        self.calls: list[tuple[int, str]] = []
        self.rollouts: Rollouts | None = None

    def __call__(self, *args):
        key = repr([(tuple(a.shape), str(a.dtype)) for a in jax.tree.leaves(args) if isinstance(a, jax.Array)])
        if key not in self.signatures:
            self.signatures[key] = _abstract(args)
        self.calls.append((self.step, key))
        self.rollouts = next((a for a in args if isinstance(a, Rollouts)), self.rollouts)
        return self.program(*args)

    def keys_at(self, step: int) -> list[str]:
        """The signatures of the calls made at `step`, in call order."""
        return [key for s, key in self.calls if s == step]


def _padded_response(settings: RunSettings) -> int:
    """Response positions the log-prob passes compute: max_new_tokens rounded up to whole vocabulary chunks."""
    length, chunk = settings.rollout.max_new_tokens, settings.loss.logprob_chunk
    return math.ceil(length / chunk) * chunk


def analytic_flops(name: str, args: tuple, settings: RunSettings, config: Qwen25VLConfig) -> int:
    """Model FLOPs of one call of a counted program.

    Args:
      name: the program, "logprobs" or "update".
      args: the call's (abstract) arguments.
      settings: the run's settings.
      config: the model config.

    Returns:
      The analytic FLOPs (forward only for "logprobs", forward + backward for "update").

    Raises:
      ValueError: `name` is not a counted program.
    """
    if name == "logprobs":
        _, rollouts, features, update_rows, plan = args
        rows = sum(r.shape[0] for r in update_rows)
        micro_batches = rows // settings.train.logprob_micro_batch_rows
        backward = 1
    elif name == "update":
        _, _, rollouts, targets, update_rows, _, plan = args
        rows, features = update_rows.shape[0], targets.image_features
        micro_batches, backward = settings.train.micro_batches, 3
    else:
        raise ValueError(f"no analytic FLOP count for program {name!r}")
    seq = rollouts.prompts.input_ids.shape[1] + rollouts.tokens.shape[1]
    if plan is None:
        flops = decoder_forward_flops(config.text, rows, seq, _padded_response(settings))
    else:  # packed rows of the whole sequence, every position through the vocabulary projection
        chunk = settings.loss.logprob_chunk
        flops = decoder_forward_flops(config.text, plan.packed_rows * micro_batches, seq, -(-seq // chunk) * chunk)
    vision = rollouts.prompts.vision
    if features is None and vision is not None:  # the trained tower runs inside every micro-batch
        flops += vision_forward_flops(config.vision, *vision.patches.shape[:2]) * micro_batches
    return backward * flops


def one_trip_programs(trainer: Trainer) -> StepPrograms:
    """The trainer's programs built with their loops at one trip: one micro-batch per pass, one vocabulary chunk."""
    s = trainer.settings
    rows = s.data.rollout_batch_prompts * s.rl.update_rows_per_prompt
    settings = dataclasses.replace(
        s,
        train=dataclasses.replace(s.train, micro_batches=1, logprob_micro_batch_rows=rows),
        loss=dataclasses.replace(s.loss, logprob_chunk=_padded_response(s)),
    )
    return build_step_programs(
        settings,
        trainer.graphdef,
        trainer.mesh,
        trainer.optimizer,
        SpecialTokens.of(trainer.model_config),
        param_shardings=trainer.param_shardings,
        opt_shardings=trainer.opt_shardings,
    )


def one_trip_args(args: tuple) -> tuple:
    """A counted program's recorded arguments for its one-trip build: a packing plan of B micro-batches of M rows
    into K packed rows each becomes one micro-batch of B * M rows into B * K packed rows (the same positions)."""

    def merged(plan):
        passes, rows = plan.bin.shape
        shape = jax.ShapeDtypeStruct((1, passes * rows), plan.bin.dtype)
        return PackingPlan(shape, shape, passes * plan.packed_rows)

    return tuple(merged(a) if isinstance(a, PackingPlan) else a for a in args)


def xla_flops(program, args: tuple) -> float | None:
    """FLOPs of XLA's cost analysis of `program` compiled for `args`.

    Returns:
      The analysis's FLOPs times the devices the program runs on (the analysis is of the per-device
      partitioned program), or None when the analysis has no FLOP count.
    """
    compiled = program.lower(*args).compile()
    cost = compiled.cost_analysis()
    if not cost or "flops" not in cost:
        return None
    devices = max(s.num_devices for s in jax.tree.leaves(compiled.input_shardings))
    return float(cost["flops"]) * devices


@dataclasses.dataclass
class PhaseRow:
    """One phase over the measured steps.

    Attributes:
      name: the phase (a `timing/*` key without its prefix, or "other").
      seconds: mean seconds per step.
      share: fraction of the step's seconds.
      response_tokens_per_s: the rollout batch's response tokens over the phase's seconds.
      total_tokens_per_s: the rollout batch's response + prompt tokens over the phase's seconds.
      flops_xla: XLA's FLOPs per step of the counted programs the phase runs (None: not counted or unavailable).
      flops_analytic: analytic FLOPs per step of those programs (None: not counted).
      mfu: analytic FLOPs / seconds / peak (None without a peak or a count).
      xla_utilisation: XLA's FLOPs / seconds / peak (None without a peak or a count).
    """

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
    """What `run_benchmark` measured; per-step lists cover every step, warm-up included.

    Attributes:
      phases: one row per phase, then "other" (the step's seconds no phase accounts for).
      step_seconds: mean seconds per measured step.
      response_tokens: mean response tokens per measured step.
      prompt_tokens: mean prompt tokens over all rollouts per measured step.
      update_rows: rows per optimizer step (the last step's).
      sequence_length: prompt bucket + response length of the last step.
      program_flops: program -> call signature -> (XLA FLOPs or None, analytic FLOPs) of one call.
      peak: the peak FLOP/s of the devices the programs run on (None: unknown).
      peak_source: where the peak comes from, in words.
      warmup_steps: the warm-up steps.
      steps: the measured steps.
      buckets: the prompt bucket of each step.
      compiles_per_step: XLA backend compilations per step.
      programs_per_step: the programs compiled in each step.
      compile_seconds_per_step: backend compile seconds per step.
      trace_lower_seconds_per_step: tracing + lowering seconds per step.
      recompiles: compilations after the first step of their prompt bucket.
      recompile_logs: step -> jax's compile log records of the steps with a recompilation.
      sampler_programs: the sampler programs compiled over the run (the trainer's `compile/sampler_programs`).
    """

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


def run_benchmark(settings: RunSettings, workdir: str, *, warmup_steps: int, steps: int, peak: Peak) -> BenchResult:
    """Trains `warmup_steps + steps` steps of `settings` (its validation off) in `workdir`, and measures.

    Args:
      settings: the run's settings; total steps, validation and checkpoints are replaced (one checkpoint at
        the end).
      workdir: the run directory.
      warmup_steps: steps run before the measured ones, >= 1.
      steps: measured steps, >= 1.
      peak: the devices' peak FLOP/s.

    Returns:
      The `BenchResult`.

    Raises:
      ValueError: `warmup_steps` or `steps` is < 1.
    """
    if warmup_steps < 1 or steps < 1:
        raise ValueError(f"warmup_steps = {warmup_steps} and steps = {steps} must be >= 1")
    total = warmup_steps + steps
    settings = dataclasses.replace(
        settings,
        train=dataclasses.replace(settings.train, total_steps=total),
        eval=dataclasses.replace(settings.eval, every=0, before_training=False),
        checkpoint=dataclasses.replace(settings.checkpoint, every=total),
    )
    recorders = {}

    def instrument(programs: StepPrograms) -> StepPrograms:
        recorders.update({name: ProgramRecorder(getattr(programs, name)) for name in COUNTED_PROGRAMS})
        return dataclasses.replace(programs, **recorders)

    metrics_per_step, tokens_per_step = [], []
    trainer = Trainer(settings, workdir, instrument=instrument)
    try:
        with CompileMonitor() as monitor:

            def after_step(step: int, metrics: dict) -> None:
                metrics_per_step.append(metrics)
                tokens_per_step.append(_token_counts(recorders["update"].rollouts))
                monitor.step = step
                for recorder in recorders.values():
                    recorder.step = step

            monitor.step = 0
            trainer.fit(after_step)
        one_trip = one_trip_programs(trainer)
        with jax.set_mesh(trainer.mesh):
            program_flops = {
                name: {
                    key: (
                        xla_flops(getattr(one_trip, name), one_trip_args(args)),
                        analytic_flops(name, args, settings, trainer.model_config),
                    )
                    for key, args in recorder.signatures.items()
                }
                for name, recorder in recorders.items()
            }
        devices = trainer.mesh.size
    finally:
        trainer.close()
    measured = range(warmup_steps, total)
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
    update_args = recorders["update"].signatures[recorders["update"].calls[-1][1]]  # the last step's
    buckets = [t[2] for t in tokens_per_step]
    first_of_bucket = {b: buckets.index(b) for b in buckets}
    recompiles = [e for e in monitor.compiles if e.step < total and e.step > first_of_bucket[buckets[e.step]]]
    return BenchResult(
        phases=phases,
        step_seconds=step_s,
        response_tokens=response,
        prompt_tokens=prompt,
        update_rows=update_args[4].shape[0],
        sequence_length=buckets[-1] + update_args[2].tokens.shape[1],
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


def _attach_flops(phases: list[PhaseRow], recorders, program_flops, measured: range, peak: float | None) -> None:
    """FLOPs per step and utilisation of the phases that run the counted programs."""
    for phase in phases:
        names = [name for name, p in COUNTED_PROGRAMS.items() if p == phase.name and recorders[name].calls]
        if not names:
            continue
        xla, analytic = [], []
        for step in measured:
            counts = [program_flops[name][key] for name in names for key in recorders[name].keys_at(step)]
            xla.append(None if any(c[0] is None for c in counts) else sum(c[0] for c in counts))
            analytic.append(sum(c[1] for c in counts))
        phase.flops_analytic = float(np.mean(analytic))
        phase.flops_xla = None if None in xla else float(np.mean(xla))
        if peak:
            phase.mfu = phase.flops_analytic / phase.seconds / peak
            phase.xla_utilisation = None if phase.flops_xla is None else phase.flops_xla / phase.seconds / peak


def _fmt(x: float | None, scale: float = 1.0, spec: str = ".2f") -> str:
    """`x / scale` formatted with `spec`; "-" for None or NaN."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x / scale, spec)


def _percent(x: float | None) -> str:
    """`x` as a percentage with one decimal; "-" for None."""
    return "-" if x is None else f"{100 * x:.1f}%"


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
        "| phase | mean s | share | response tok/s | total tok/s | GFLOP/step analytic | GFLOP/step XLA "
        "| MFU (analytic) | XLA-count util. |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in r.phases:
        lines.append(
            f"| {PHASE_LABELS.get(p.name, p.name)} | {p.seconds:.3f} | {p.share:.1%} "
            f"| {_fmt(p.response_tokens_per_s, 1, '.0f')} | {_fmt(p.total_tokens_per_s, 1, '.0f')} "
            f"| {_fmt(p.flops_analytic, 1e9)} | {_fmt(p.flops_xla, 1e9)} | {_percent(p.mfu)} "
            f"| {_percent(p.xla_utilisation)} |"
        )
    lines.append(
        f"| **step** | {r.step_seconds:.3f} | 100% | {r.response_tokens / r.step_seconds:.0f} "
        f"| {(r.response_tokens + r.prompt_tokens) / r.step_seconds:.0f} | | | | |"
    )
    lines += [
        "",
        LEGEND,
        "",
        "FLOPs per program call (XLA: cost analysis of the one-trip program; ratio XLA / analytic):",
    ]
    for name, by_key in r.program_flops.items():
        for xla, analytic in by_key.values():
            ratio = f"{xla / analytic:.2f}" if xla else "-"
            lines.append(
                f"- `{name}`: analytic {analytic / 1e9:.3f} GFLOP, XLA {_fmt(xla, 1e9, '.3f')} GFLOP, ratio {ratio}"
            )
    total = len(r.compiles_per_step)
    lines += [
        "",
        f"Compilations over the {total}-step run (XLA backend compiles; prompt buckets seen: "
        f"{sorted(set(r.buckets))}):",
        f"- step 1: {r.compiles_per_step[0]} compiles, {r.compile_seconds_per_step[0]:.1f} s backend compile + "
        f"{r.trace_lower_seconds_per_step[0]:.1f} s tracing/lowering",
        f"- steps 2-{total}: {sum(r.compiles_per_step[1:])} compiles, {sum(r.compile_seconds_per_step[1:]):.2f} s "
        f"(per step: {r.compiles_per_step[1:]})",
        f"- sampler programs (trainer metric compile/sampler_programs): {r.sampler_programs:.0f}",
    ]
    for bucket in sorted(set(r.buckets[1:]) - {r.buckets[0]}):
        first = r.buckets.index(bucket)
        lines.append(f"- step {first + 1}, the first of bucket {bucket}: compiled {r.programs_per_step[first]}")
    if not r.recompiles:
        lines.append("- nothing recompiled after the first step of its prompt bucket")
        return "\n".join(lines)
    lines.append(f"- RECOMPILED after the first step of their prompt bucket: {len(r.recompiles)} compiles")
    for program, events in _by_program(r.recompiles).items():
        steps = [e.step + 1 for e in events]
        lines.append(f"  - `{program}`: {len(events)} times, {sum(e.seconds for e in events):.2f} s, at steps {steps}")
    logs = r.recompile_logs.values()
    misses = sorted({m.splitlines()[0] for ms in logs for m in ms if m.startswith("TRACING CACHE MISS")})
    lines += [f"  - jax: {m}" for m in misses]
    return "\n".join(lines)


def _by_program(events: list[CompileEvent]) -> dict[str, list[CompileEvent]]:
    """`events` grouped by program name, in order of first appearance."""
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


def describe_settings(settings: RunSettings) -> str:
    """One line of what the benchmarked run is."""
    s = settings
    return (
        f"Config: {s.rl.algorithm}, {s.data.rollout_batch_prompts} prompts x n={s.rollout.n}, max_new_tokens "
        f"{s.rollout.max_new_tokens}, prompt buckets {s.data.buckets.prompt_lengths}, "
        f"{np.dtype(s.model.dtype).name}, remat {s.model.remat}, attention {s.model.attention_impl}, "
        f"{s.train.num_minibatches} optimizer steps per batch, {s.train.micro_batches} micro-batches each, "
        f"old log-probs {s.rl.old_logprobs}."
    )
