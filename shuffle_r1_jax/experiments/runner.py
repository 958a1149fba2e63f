"""Running a comparison: every planned run trained (resumably) from one shared config, then the report (tables,
`results.json`, the curves) and the README block it fills.

Every run is an ordinary trainer run in `<out>/runs/<run>/seed<k>`; a finished run (its `summary.json` exists)
is not redone and an interrupted one resumes from its checkpoint, so a comparison can be stopped and started
again.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import shutil
import time
from pathlib import Path

from ml_collections import ConfigDict

from shuffle_r1_jax.experiments.comparison import (
    REFERENCE,
    Overrides,
    RunSpec,
    markdown_table,
    read_history,
    reference_accuracy,
    summarize,
)
from shuffle_r1_jax.experiments.plots import plot_comparison
from shuffle_r1_jax.train.settings import RunSettings, prepare, resolve, set_key
from shuffle_r1_jax.train.trainer import Trainer, write_summary

logger = logging.getLogger(__name__)

README_START, README_END = "<!-- compare_algorithms:start -->", "<!-- compare_algorithms:end -->"


def comparison_config(config: ConfigDict, *, steps: int, eval_every: int) -> ConfigDict:
    """`config` for a comparison's runs: `steps` rollout batches each, validation before training and every
    `eval_every` steps, two sample generations per validation, a checkpoint at every validation (the last one
    kept), so an interrupted run resumes from there.

    Args:
      config: the shared config (not modified).
      steps: rollout batches per run.
      eval_every: steps between validations.

    Returns:
      A resolved copy of `config` with those keys set.
    """
    c = config.copy_and_resolve_references()
    c.train.total_steps = steps
    c.eval.every = eval_every
    c.eval.before_training = True
    c.eval.num_examples = 2
    c.checkpoint.every = eval_every
    c.checkpoint.keep_last = 1
    return c


def run_config(config: ConfigDict, spec: RunSpec) -> ConfigDict:
    """A copy of the shared `config` with the run's seed and overrides set."""
    c = config.copy_and_resolve_references()
    c.seed = spec.seed
    for key, value in spec.overrides:
        set_key(c, key, value)
    return c


def run_one(config: ConfigDict, spec: RunSpec, workdir: Path) -> float:
    """Trains one run to the end unless it already finished (its `summary.json` exists).

    Args:
      config: the shared config; the run's seed and overrides are set on a copy.
      spec: the run.
      workdir: the run's directory; a checkpoint there resumes.

    Returns:
      The seconds this call spent (0 for a finished run).
    """
    if (workdir / "summary.json").exists():
        return 0.0
    start = time.perf_counter()
    _, settings = prepare(run_config(config, spec))
    trainer = Trainer(settings, str(workdir))
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    write_summary(str(workdir), summary)
    return time.perf_counter() - start


def run_comparison(config: ConfigDict, specs: list[RunSpec], out: Path) -> float:
    """Trains every run of `specs` under `<out>/runs`; returns the seconds this call spent."""
    spent = 0.0
    for index, spec in enumerate(specs):
        logger.info("run %d/%d: %s, seed %d", index + 1, len(specs), spec.name, spec.seed)
        spent += run_one(config, spec, out / "runs" / spec.dirname)
    return spent


def _batch_sizes(settings: RunSettings) -> tuple[int, int]:
    """(rollouts generated per rollout batch before DAPO's refills, CPPO's fill included; update-batch rows) of a
    run's settings."""
    prompts = settings.data.rollout_batch_prompts
    return prompts * settings.rl.fill_batches * settings.rollout.n, prompts * settings.rl.update_rows_per_prompt


def _run_line(name: str, settings: RunSettings) -> str:
    """One run's per-step figures for the report: n, rollouts and update rows per step, optimizer steps."""
    rollouts, rows = _batch_sizes(settings)
    return (
        f"{name}: n = {settings.rollout.n}, {rollouts} rollouts generated and {rows} update rows per step, "
        f"{settings.train.num_minibatches} optimizer steps per rollout batch"
    )


PANEL_TITLES = {"paper": "headline (paper protocol)", "equal_rollouts": "equal rollouts"}
TABLE_TITLES = {
    "paper": "Headline, the paper's protocol: the same update rows per optimizer step (GRPO and DAPO at n = 8, "
    "Shuffle-R1 at n = 16 keeping alpha = 0.5)",
    "equal_rollouts": "Equal generated rollouts: every algorithm at n = 8",
}


def comparison_report(
    config: ConfigDict,
    tables: dict[str, dict[str, Overrides]],
    seeds: dict[str, list[int]],
    specs: list[RunSpec],
    out: Path,
    *,
    spent: float,
    command: str,
    machine: str,
) -> str:
    """Reads every run back and writes `<out>/results.json` and `<out>/curves.png`.

    Args:
      config: the shared config (steps and validation, for the report); each run's batch sizes come from its own
        settings (the config with its overrides).
      tables: {table: {run name: overrides}} (`comparison.plan_tables`).
      seeds: {table: its seeds}; a table's rows use those seeds of their runs.
      specs: the runs (`comparison.plan_runs` of `tables` and `seeds`).
      out: the comparison's directory (runs under `<out>/runs`).
      spent: the seconds of the runs made by this invocation.
      command: the command line, for the report.
      machine: the machine, in words.

    Returns:
      The Markdown report: the command, date, machine, cost, each run's batch sizes and one table per table.
    """
    settings = resolve(config, check_inputs=False)
    histories: dict[str, list] = {}
    run_settings: dict[str, RunSettings] = {}
    for spec in specs:
        if spec.name not in run_settings:
            run_settings[spec.name] = resolve(run_config(config, spec), check_inputs=False)
        per_batch, update_rows = _batch_sizes(run_settings[spec.name])
        history = read_history(out / "runs" / spec.dirname, per_batch, update_rows, spec.seed)
        histories.setdefault(spec.name, []).append(history)
    target = reference_accuracy(histories)
    results, panels = {}, []
    for table, runs in tables.items():
        group = {name: [h for h in histories[name] if h.seed in seeds[table]] for name in runs}
        results[table] = summarize(group, target)
        panels.append((PANEL_TITLES.get(table, f"ablation {table}"), group))
    plot_comparison(panels, out / "curves.png")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    evaluation = settings.eval
    wall = sum(h.wall_seconds for runs in histories.values() for h in runs)
    table_seeds = "; ".join(f"{table} {list(values)}" for table, values in seeds.items())
    lines = [
        f"Command: `{command}` ({datetime.date.today().isoformat()}; {machine}).",
        f"{len(specs)} runs of {settings.train.total_steps} steps, seeds: {table_seeds} (paired: a seed fixes the "
        "data order and the sampling; every run starts from the same policy); each step = "
        f"{settings.data.rollout_batch_prompts} prompts; validation on {evaluation.max_prompts or 'all'} prompts x "
        f"{evaluation.n} samples at T={evaluation.temperature} every {evaluation.every} steps. Differences "
        f"against {REFERENCE} are paired by seed: mean [95 % t-interval]. Wall time of the runs (each from its "
        f"first to its last metrics record, summed): {wall / 60:.1f} min; of the runs made by this invocation: "
        f"{spent / 60:.1f} min.",
        "",
        *[f"- {_run_line(name, s)}" for name, s in run_settings.items()],
    ]
    for table, rows in results.items():
        title = TABLE_TITLES.get(table, f"Ablation of {table} (the headline Shuffle-R1 run and its variants)")
        lines += ["", f"**{title}**", "", markdown_table(rows)]
    return "\n".join(lines) + "\n"


def write_readme_block(readme: Path, plot: Path, body: str) -> None:
    """Replaces the README's comparison block (between `README_START` and `README_END`) with `body` and the
    plot, copied to `docs/compare_algorithms.png` next to the README.

    Raises:
      ValueError: the README has no comparison block.
    """
    docs = readme.parent / "docs"
    docs.mkdir(exist_ok=True)
    shutil.copyfile(plot, docs / "compare_algorithms.png")
    text = readme.read_text()
    if README_START not in text:
        raise ValueError(f"{readme} has no {README_START} ... {README_END} block to fill")
    block = f"{README_START}\n{body}\n![comparison curves](docs/compare_algorithms.png)\n{README_END}"
    text = re.sub(re.escape(README_START) + ".*?" + re.escape(README_END), lambda _: block, text, flags=re.S)
    readme.write_text(text)
