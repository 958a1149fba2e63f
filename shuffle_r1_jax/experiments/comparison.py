"""Algorithm comparisons: which runs to make, what each run's metrics file says, and the summary table.

A comparison trains several algorithms (and Shuffle-R1 ablations) with the same model, data, rollout batch and
number of optimizer steps, over several seeds. Each run is an ordinary trainer run in its own workdir; this
module only plans them and reads their `metrics.jsonl` back:

- final / best validation accuracy: mean and standard deviation over seeds;
- steps to reach the reference algorithm's (GRPO's) final accuracy, on the seed-mean validation curve;
- fraction of rollouts with zero advantage, in the generated batch and in the update batch;
- token utilization: update-batch response tokens with a non-zero advantage / generated response tokens;
- rollouts generated per step (DAPO regenerates) and wall time per step (the first, compiling step left out).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

MAIN_ALGORITHMS = ("grpo", "dapo", "dr_grpo", "pts_only", "abs_only", "shuffle_r1")
ABLATIONS = {"keep_ratio": (0.25, 0.5, 0.75), "abs_rounds": (4, 8, 16)}
ABLATION_KEYS = {"keep_ratio": "rl.keep_ratio", "abs_rounds": "rl.abs_rounds"}
ABLATION_DEFAULTS = {"keep_ratio": 0.5, "abs_rounds": 8}  # the main Shuffle-R1 run's values
REFERENCE = "grpo"


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run of a comparison.

    Attributes:
      name: the table row ("grpo", "shuffle_r1 keep_ratio=0.25").
      group: the table ("algorithms" or an ablation name).
      seed: the run's `seed`.
      overrides: (dotted config key, value) pairs set on top of the shared config.
    """

    name: str
    group: str
    seed: int
    overrides: tuple[tuple[str, object], ...]

    @property
    def dirname(self) -> str:
        """The run's directory under `<out>/runs`: `<name>/seed<k>`, spaces as "_" and "=" as "-"."""
        return f"{self.name.replace(' ', '_').replace('=', '-')}/seed{self.seed}"


def plan_runs(algorithms: Sequence[str], seeds: Sequence[int], ablations: Sequence[str]) -> list[RunSpec]:
    """The runs of a comparison: every algorithm and seed, then every ablation value of Shuffle-R1 and seed.

    An ablation value equal to the default Shuffle-R1 setting (keep_ratio 0.5, abs_rounds 8) reuses the main
    Shuffle-R1 run when that is planned.

    Args:
      algorithms: `rl.algorithm` names.
      seeds: the seeds of every run.
      ablations: some of `ABLATIONS`.

    Returns:
      The `RunSpec`s, in that order.

    Raises:
      ValueError: an ablation is unknown.
    """
    unknown = sorted(set(ablations) - set(ABLATIONS))
    if unknown:
        raise ValueError(f"unknown ablation(s) {unknown}; expected some of {sorted(ABLATIONS)}")
    runs = [RunSpec(a, "algorithms", s, (("rl.algorithm", a),)) for a in algorithms for s in seeds]
    for ablation in ablations:
        for value in ABLATIONS[ablation]:
            if value == ABLATION_DEFAULTS[ablation] and "shuffle_r1" in algorithms:
                continue
            name = f"shuffle_r1 {ablation}={value}"
            overrides = (("rl.algorithm", "shuffle_r1"), (ABLATION_KEYS[ablation], value))
            runs += [RunSpec(name, ablation, s, overrides) for s in seeds]
    return runs


@dataclasses.dataclass(frozen=True)
class RunHistory:
    """What one run's metrics.jsonl says; NaN where a step did not log a metric.

    Attributes:
      eval_steps: int64 `[E]`, the validated steps (0 = before training).
      accuracy: float64 `[E]`, the validation accuracy at `eval_steps`.
      steps: int64 `[T]`, the training steps.
      collapse_generated: float64 `[T]`, the fraction of zero-advantage rollouts in the generated batch.
      collapse_update: float64 `[T]`, the fraction of zero-advantage rows in the update batch.
      token_utilization: float64 `[T]`, update-batch response tokens with a non-zero advantage / generated
        response tokens.
      rollouts: float64 `[T]`, the rollouts generated.
      step_seconds: float64 `[T]`, the wall time of each step.
    """

    eval_steps: np.ndarray
    accuracy: np.ndarray
    steps: np.ndarray
    collapse_generated: np.ndarray
    collapse_update: np.ndarray
    token_utilization: np.ndarray
    rollouts: np.ndarray
    step_seconds: np.ndarray


def read_history(workdir: str | Path, rollouts_per_batch: int) -> RunHistory:
    """Reads `workdir/metrics.jsonl`; the last record of a step wins (as after a resume).

    Args:
      workdir: the run's directory.
      rollouts_per_batch: the rollout batch's rows (prompts x n); times DAPO's `dapo/tries` (1 for the others)
        it is the rollouts generated per step.

    Returns:
      The `RunHistory`.
    """
    records: dict[int, dict] = {}
    with open(Path(workdir) / "metrics.jsonl") as f:
        for line in f:
            record = json.loads(line)
            records.setdefault(record["step"], {}).update(record)
    evals = sorted(s for s, r in records.items() if "val/accuracy" in r)
    steps = sorted(s for s in records if s > 0)

    def column(key: str, fallback: float = math.nan) -> np.ndarray:
        return np.asarray([records[s].get(key, fallback) for s in steps], np.float64)

    return RunHistory(
        eval_steps=np.asarray(evals, np.int64),
        accuracy=np.asarray([records[s]["val/accuracy"] for s in evals], np.float64),
        steps=np.asarray(steps, np.int64),
        collapse_generated=column("advantage/collapse_before"),
        collapse_update=column("advantage/collapse_after"),
        token_utilization=column("utilization/tokens_nonzero_advantage"),
        rollouts=column("dapo/tries", fallback=1.0) * rollouts_per_batch,
        step_seconds=column("timing/step"),
    )


def mean_curve(histories: Sequence[RunHistory]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(eval steps, mean, std over seeds) of the validation accuracy at the eval steps all runs share."""
    common = sorted(set.intersection(*(set(h.eval_steps.tolist()) for h in histories)))
    curves = np.stack([[h.accuracy[list(h.eval_steps).index(s)] for s in common] for h in histories])
    return np.asarray(common), curves.mean(0), curves.std(0)


def steps_to_reach(histories: Sequence[RunHistory], target: float) -> int | None:
    """The first eval step at which the seed-mean validation accuracy is >= target (None if never)."""
    steps, mean, _ = mean_curve(histories)
    reached = np.nonzero(mean >= target - 1e-12)[0]
    return int(steps[reached[0]]) if len(reached) else None


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values))


def reference_accuracy(histories: Mapping[str, Sequence[RunHistory]], reference: str = REFERENCE) -> float | None:
    """The reference run's final validation accuracy, averaged over seeds (None when it was not run)."""
    if reference not in histories:
        return None
    return float(np.mean([h.accuracy[-1] for h in histories[reference]]))


def summarize(histories: Mapping[str, Sequence[RunHistory]], target: float | None) -> list[dict]:
    """The summary table's rows: see the module docstring for the columns.

    Args:
      histories: run name -> its seeds' histories.
      target: the accuracy "steps to reach" refers to (None: not reported).

    Returns:
      One dict per run name, in the mapping's order.
    """
    rows = []
    for name, runs in histories.items():
        final = _mean_std([h.accuracy[-1] for h in runs])
        best = _mean_std([h.accuracy.max() for h in runs])
        rows.append(
            {
                "name": name,
                "seeds": len(runs),
                "start": float(np.mean([h.accuracy[0] for h in runs])),
                "final": final,
                "best": best,
                "steps_to_reference": None if target is None else steps_to_reach(runs, target),
                "zero_adv_generated": float(np.nanmean(np.concatenate([h.collapse_generated for h in runs]))),
                "zero_adv_update": float(np.nanmean(np.concatenate([h.collapse_update for h in runs]))),
                "token_utilization": float(np.nanmean(np.concatenate([h.token_utilization for h in runs]))),
                "rollouts_per_step": float(np.nanmean(np.concatenate([h.rollouts for h in runs]))),
                "seconds_per_step": float(np.nanmean(np.concatenate([h.step_seconds[1:] for h in runs]))),
                "steps": int(max(h.steps[-1] for h in runs)),
            }
        )
    return rows


def markdown_table(rows: Sequence[dict], reference: str = REFERENCE) -> str:
    """The summary rows as a Markdown table (accuracy as mean ± std over seeds)."""
    header = (
        f"| run | seeds | val acc start | val acc final | val acc best | steps to {reference}'s final | "
        "zero-adv rollouts generated | zero-adv rows in update | token utilization | rollouts / step | s / step |"
    )
    lines = [header, "|" + "---|" * 11]
    for r in rows:
        reach = r["steps_to_reference"]
        lines.append(
            f"| {r['name']} | {r['seeds']} | {r['start']:.3f} | {r['final'][0]:.3f} ± {r['final'][1]:.3f} | "
            f"{r['best'][0]:.3f} ± {r['best'][1]:.3f} | {'not reached' if reach is None else reach} | "
            f"{r['zero_adv_generated']:.2f} | {r['zero_adv_update']:.2f} | {r['token_utilization']:.2f} | "
            f"{r['rollouts_per_step']:.0f} | {r['seconds_per_step']:.2f} |"
        )
    return "\n".join(lines)
