"""Algorithm comparisons: which runs to make, what each run's metrics file says, and the summary tables.

A comparison trains runs from one shared config (model, data, starting policy, prompts per step, optimizer steps
per rollout batch, number of steps), each with its own overrides, over several seeds; a seed fixes the data
order and the sampling, so two runs of one seed start from the same policy and see the same prompts. Tables:

- "paper", the headline: the paper's protocol, "at the same update rollout size": GRPO and DAPO at n = 8 against
  Shuffle-R1 at n = 16 keeping half (alpha 0.5), so every optimizer step trains on as many rows (`PAPER_RUNS`);
- "equal_rollouts": every algorithm at n = 8, the same rollouts generated (Shuffle-R1 then updates on half; PPO
  and VC-PPO train a critic beside the policy);
- the ablations of the headline Shuffle-R1 run (`ABLATIONS`): PTS against one-sided and random sampling, ABS
  against an unbiased shuffle and a static reorder, the keep ratio alpha, the shuffle rounds S and the prompt
  sampling (uniform against prioritized by pass rate).

Each run is an ordinary trainer run in its own workdir; this module plans them and reads their `metrics.jsonl`
back:

- final / best validation accuracy: mean and standard deviation over seeds;
- the area under the validation curve (the mean accuracy over the run, trapezoids over the validated steps);
- paired by seed against the reference (GRPO n=8): the mean difference in final accuracy and in area with its
  95 % t-interval (`paired_difference`);
- steps to reach the reference's final accuracy, on the seed-mean validation curve;
- fraction of rollouts with zero advantage, in the generated batch and in the update batch, and of prompt groups
  whose rewards are all equal (mean ± std over seeds; each seed's value in results.json);
- token utilization: update-batch response tokens with a non-zero advantage / generated response tokens;
- rollouts generated and rows updated per step (from each run's own settings; DAPO regenerates) and wall time
  per step (the first, compiling step left out).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import stats

Overrides = tuple[tuple[str, object], ...]

MAIN_ALGORITHMS = ("grpo", "dapo", "dr_grpo", "pts_only", "abs_only", "shuffle_r1", "ppo", "vc_ppo")
TABLES = ("paper", "equal_rollouts")
REFERENCE = "grpo n=8"
HEADLINE = "shuffle_r1 n=16"
PAPER_RUNS: dict[str, Overrides] = {
    "grpo n=8": (("rl.algorithm", "grpo"), ("rollout.n", 8)),
    "dapo n=8": (("rl.algorithm", "dapo"), ("rollout.n", 8)),
    HEADLINE: (("rl.algorithm", "shuffle_r1"), ("rollout.n", 16), ("rl.keep_ratio", 0.5)),
}
# ablation -> (config key, values, the headline run's value); every ablation run is the headline run plus its key
ABLATIONS: dict[str, tuple[str, tuple, object]] = {
    "pts_variant": ("rl.pts_variant", ("pairs", "max_side", "min_side", "random"), "pairs"),
    "abs_sampling": ("rl.abs_sampling", ("weighted", "uniform", "static"), "weighted"),
    "keep_ratio": ("rl.keep_ratio", (0.25, 0.5, 0.75), 0.5),
    "abs_rounds": ("rl.abs_rounds", (4, 8, 16), 8),
    "data_sampling": ("data.sampling", ("uniform", "prioritized"), "uniform"),
}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run of a comparison.

    Attributes:
      name: the run's row in the tables ("grpo n=8", "shuffle_r1 n=16 keep_ratio=0.25").
      seed: the run's `seed`.
      overrides: (dotted config key, value) pairs set on top of the shared config.
    """

    name: str
    seed: int
    overrides: Overrides

    @property
    def dirname(self) -> str:
        """The run's directory under `<out>/runs`: `<name>/seed<k>`, spaces as "_" and "=" as "-"."""
        return f"{self.name.replace(' ', '_').replace('=', '-')}/seed{self.seed}"


def parse_run(text: str) -> tuple[str, Overrides]:
    """A run given on the command line, "NAME:key=value,key=value" (values as Python literals, else strings).

    Raises:
      ValueError: naming the text when it has no name or an override without "=".
    """
    name, _, body = text.partition(":")
    pairs = [item for item in body.split(",") if item.strip()]
    if not name.strip() or not pairs or any("=" not in item for item in pairs):
        raise ValueError(f"run {text!r}: expected NAME:key=value[,key=value...]")
    overrides = []
    for item in pairs:
        key, _, value = item.partition("=")
        try:
            parsed = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            parsed = value.strip()
        overrides.append((key.strip(), parsed))
    return name.strip(), tuple(overrides)


def plan_tables(
    tables: Sequence[str],
    algorithms: Sequence[str],
    ablations: Sequence[str],
    extra_runs: Mapping[str, Overrides] = {},
) -> dict[str, dict[str, Overrides]]:
    """The tables of a comparison and their runs: {table: {run name: overrides}}.

    Args:
      tables: some of `TABLES`.
      algorithms: the `rl.algorithm` names of the "equal_rollouts" table (each at n = 8).
      ablations: some of `ABLATIONS`; each is a table of the headline run and its variants.
      extra_runs: more rows of the "paper" table (run name -> overrides), e.g. from `parse_run`.

    Returns:
      The tables in order: "paper", "equal_rollouts", then the ablations. A run of one name has one set of
      overrides wherever it appears (the ablations' default row is the headline run itself).

    Raises:
      ValueError: an unknown table or ablation.
    """
    unknown = sorted(set(tables) - set(TABLES)) + sorted(set(ablations) - set(ABLATIONS))
    if unknown:
        raise ValueError(f"unknown table(s) or ablation(s) {unknown}; expected some of {TABLES + tuple(ABLATIONS)}")
    planned: dict[str, dict[str, Overrides]] = {}
    if "paper" in tables:
        planned["paper"] = {**PAPER_RUNS, **extra_runs}
    if "equal_rollouts" in tables:
        planned["equal_rollouts"] = {f"{a} n=8": (("rl.algorithm", a), ("rollout.n", 8)) for a in algorithms}
    for ablation in ablations:
        key, values, default = ABLATIONS[ablation]
        planned[ablation] = {
            HEADLINE if value == default else f"{HEADLINE} {ablation}={value}": (
                PAPER_RUNS[HEADLINE] + (() if value == default else ((key, value),))
            )
            for value in values
        }
    return planned


def plan_runs(tables: Mapping[str, Mapping[str, Overrides]], seeds: Mapping[str, Sequence[int]]) -> list[RunSpec]:
    """Every distinct run of the tables, once per seed of the tables it is in: seed by seed (so a comparison
    stopped early has whole paired seeds), runs in first-appearance order within a seed.

    Args:
      tables: {table: {run name: overrides}} (`plan_tables`).
      seeds: {table: its seeds}; a run in several tables runs every seed of any of them.

    Raises:
      ValueError: one run name with two different sets of overrides, or a table without seeds.
    """
    runs: dict[str, Overrides] = {}
    run_seeds: dict[str, set[int]] = {}
    for table, planned in tables.items():
        if not seeds.get(table):
            raise ValueError(f"table {table!r} has no seeds")
        for name, overrides in planned.items():
            if runs.setdefault(name, overrides) != overrides:
                raise ValueError(f"run {name!r} is planned with two sets of overrides: {runs[name]} and {overrides}")
            run_seeds.setdefault(name, set()).update(seeds[table])
    every_seed = sorted(set().union(*run_seeds.values())) if run_seeds else []
    return [
        RunSpec(name, seed, overrides)
        for seed in every_seed
        for name, overrides in runs.items()
        if seed in run_seeds[name]
    ]


@dataclasses.dataclass(frozen=True)
class RunHistory:
    """What one run's metrics.jsonl says; NaN where a step did not log a metric.

    Attributes:
      seed: the run's seed (runs of one seed are paired).
      update_rows: rows of the update batch per step, from the run's settings.
      eval_steps: int64 `[E]`, the validated steps (0 = before training).
      accuracy: float64 `[E]`, the validation accuracy at `eval_steps`.
      steps: int64 `[T]`, the training steps.
      collapse_generated: float64 `[T]`, the fraction of zero-advantage rollouts in the generated batch.
      collapse_update: float64 `[T]`, the fraction of zero-advantage rows in the update batch.
      zero_advantage_groups: float64 `[T]`, the fraction of prompt groups whose rewards are all equal.
      token_utilization: float64 `[T]`, update-batch response tokens with a non-zero advantage / generated
        response tokens.
      rollouts: float64 `[T]`, the rollouts generated.
      step_seconds: float64 `[T]`, the wall time of each step.
      wall_seconds: seconds from the first to the last metrics record (a resumed run's downtime included).
    """

    seed: int
    update_rows: int
    eval_steps: np.ndarray
    accuracy: np.ndarray
    steps: np.ndarray
    collapse_generated: np.ndarray
    collapse_update: np.ndarray
    zero_advantage_groups: np.ndarray
    token_utilization: np.ndarray
    rollouts: np.ndarray
    step_seconds: np.ndarray
    wall_seconds: float


def read_history(workdir: str | Path, rollouts_per_batch: int, update_rows: int, seed: int) -> RunHistory:
    """Reads `workdir/metrics.jsonl`; the last record of a step wins (as after a resume).

    Args:
      workdir: the run's directory.
      rollouts_per_batch: the run's rollout batch rows (prompts x n, times `rl.fill_batches` with CPPO's fill);
        times DAPO's `dapo/tries` (1 for the others) it is the rollouts generated per step.
      update_rows: the run's update-batch rows per step.
      seed: the run's seed.

    Returns:
      The `RunHistory`.
    """
    records: dict[int, dict] = {}
    times = []
    with open(Path(workdir) / "metrics.jsonl") as f:
        for line in f:
            record = json.loads(line)
            records.setdefault(record["step"], {}).update(record)
            times.append(record["time"])
    evals = sorted(s for s, r in records.items() if "val/accuracy" in r)
    steps = sorted(s for s in records if s > 0)

    def column(key: str, fallback: float = math.nan) -> np.ndarray:
        return np.asarray([records[s].get(key, fallback) for s in steps], np.float64)

    return RunHistory(
        seed=seed,
        update_rows=update_rows,
        eval_steps=np.asarray(evals, np.int64),
        accuracy=np.asarray([records[s]["val/accuracy"] for s in evals], np.float64),
        steps=np.asarray(steps, np.int64),
        collapse_generated=column("advantage/collapse_before"),
        collapse_update=column("advantage/collapse_after"),
        zero_advantage_groups=column("rollout/zero_advantage_groups"),
        token_utilization=column("utilization/tokens_nonzero_advantage"),
        rollouts=column("dapo/tries", fallback=1.0) * rollouts_per_batch,
        step_seconds=column("timing/step"),
        wall_seconds=float(max(times) - min(times)),
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


def area_under_curve(history: RunHistory) -> float:
    """The validation curve's area over its step range (trapezoids), divided by that range: the run's mean
    accuracy over training, in accuracy units."""
    steps, accuracy = history.eval_steps.astype(np.float64), history.accuracy
    if len(steps) < 2:
        return float(accuracy[0])
    area = np.sum((accuracy[1:] + accuracy[:-1]) / 2 * np.diff(steps))
    return float(area / (steps[-1] - steps[0]))


def paired_difference(ours: Mapping[int, float], reference: Mapping[int, float]) -> dict:
    """Mean of the per-seed differences ours - reference over the seeds both have, with its 95 % t-interval.

    Args:
      ours: seed -> value.
      reference: seed -> value.

    Returns:
      {"mean", "low", "high", "seeds"}: floats (low and high NaN with fewer than 2 shared seeds) and the number of
      shared seeds.
    """
    seeds = sorted(set(ours) & set(reference))
    differences = np.asarray([ours[s] - reference[s] for s in seeds], np.float64)
    if len(differences) == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "seeds": 0}
    mean = float(differences.mean())
    if len(differences) < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "seeds": 1}
    half = stats.t.ppf(0.975, len(differences) - 1) * differences.std(ddof=1) / math.sqrt(len(differences))
    return {"mean": mean, "low": mean - float(half), "high": mean + float(half), "seeds": len(differences)}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values))


def reference_accuracy(histories: Mapping[str, Sequence[RunHistory]], reference: str = REFERENCE) -> float | None:
    """The reference run's final validation accuracy, averaged over seeds (None when it was not run)."""
    if reference not in histories:
        return None
    return float(np.mean([h.accuracy[-1] for h in histories[reference]]))


def summarize(
    histories: Mapping[str, Sequence[RunHistory]], target: float | None, reference: str = REFERENCE
) -> list[dict]:
    """The summary table's rows: see the module docstring for the columns.

    Args:
      histories: run name -> its seeds' histories.
      target: the accuracy "steps to reach" refers to (None: not reported).
      reference: the run the paired differences are taken against (none when it is not in `histories`).

    Returns:
      One dict per run name, in the mapping's order; "final_vs_reference" and "auc_vs_reference" are
      `paired_difference` dicts, or None for the reference itself and when it is absent.
    """
    base = histories.get(reference)
    rows = []
    for name, runs in histories.items():
        final = {h.seed: float(h.accuracy[-1]) for h in runs}
        auc = {h.seed: area_under_curve(h) for h in runs}
        zero_groups = {h.seed: float(np.nanmean(h.zero_advantage_groups)) for h in runs}
        paired = base is not None and name != reference
        rows.append(
            {
                "name": name,
                "seeds": len(runs),
                "start": float(np.mean([h.accuracy[0] for h in runs])),
                "final": _mean_std(list(final.values())),
                "best": _mean_std([h.accuracy.max() for h in runs]),
                "auc": _mean_std(list(auc.values())),
                "final_vs_reference": (
                    paired_difference(final, {h.seed: float(h.accuracy[-1]) for h in base}) if paired else None
                ),
                "auc_vs_reference": (
                    paired_difference(auc, {h.seed: area_under_curve(h) for h in base}) if paired else None
                ),
                "steps_to_reference": None if target is None else steps_to_reach(runs, target),
                "zero_adv_generated": float(np.nanmean(np.concatenate([h.collapse_generated for h in runs]))),
                "zero_adv_update": float(np.nanmean(np.concatenate([h.collapse_update for h in runs]))),
                "zero_adv_groups": _mean_std(list(zero_groups.values())),
                "zero_adv_groups_by_seed": zero_groups,
                "token_utilization": float(np.nanmean(np.concatenate([h.token_utilization for h in runs]))),
                "rollouts_per_step": float(np.nanmean(np.concatenate([h.rollouts for h in runs]))),
                "update_rows_per_step": float(np.mean([h.update_rows for h in runs])),
                "seconds_per_step": float(np.nanmean(np.concatenate([h.step_seconds[1:] for h in runs]))),
                "steps": int(max(h.steps[-1] for h in runs)),
            }
        )
    return rows


def _interval(difference: dict | None) -> str:
    """ "+0.012 [-0.010, +0.034]" (mean and 95 % interval), "—" for no difference."""
    if difference is None:
        return "—"
    if math.isnan(difference["low"]):
        return f"{difference['mean']:+.3f}"
    return f"{difference['mean']:+.3f} [{difference['low']:+.3f}, {difference['high']:+.3f}]"


def markdown_table(rows: Sequence[dict], reference: str = REFERENCE) -> str:
    """The summary rows as a Markdown table (accuracy as mean ± std over seeds; paired differences against the
    reference as mean [95 % interval])."""
    header = (
        f"| run | seeds | val acc start | val acc final | final - {reference} | val acc AUC | AUC - {reference} | "
        f"val acc best | steps to {reference}'s final | rollouts / step | update rows / step | "
        "zero-adv rollouts generated | zero-adv rows in update | zero-adv groups | token utilization | s / step |"
    )
    lines = [header, "|" + "---|" * 16]
    for r in rows:
        reach = r["steps_to_reference"]
        lines.append(
            f"| {r['name']} | {r['seeds']} | {r['start']:.3f} | {r['final'][0]:.3f} ± {r['final'][1]:.3f} | "
            f"{_interval(r['final_vs_reference'])} | {r['auc'][0]:.3f} ± {r['auc'][1]:.3f} | "
            f"{_interval(r['auc_vs_reference'])} | {r['best'][0]:.3f} ± {r['best'][1]:.3f} | "
            f"{'not reached' if reach is None else reach} | {r['rollouts_per_step']:.0f} | "
            f"{r['update_rows_per_step']:.0f} | {r['zero_adv_generated']:.2f} | {r['zero_adv_update']:.2f} | "
            f"{r['zero_adv_groups'][0]:.3f} ± {r['zero_adv_groups'][1]:.3f} | {r['token_utilization']:.2f} | "
            f"{r['seconds_per_step']:.2f} |"
        )
    return "\n".join(lines)
