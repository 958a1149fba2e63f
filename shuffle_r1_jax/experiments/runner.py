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
    ABLATION_DEFAULTS,
    ABLATIONS,
    RunSpec,
    markdown_table,
    read_history,
    reference_accuracy,
    summarize,
)
from shuffle_r1_jax.experiments.plots import plot_comparison
from shuffle_r1_jax.train.settings import prepare, resolve, set_key
from shuffle_r1_jax.train.trainer import Trainer, write_summary

logger = logging.getLogger(__name__)

README_START, README_END = "<!-- compare_algorithms:start -->", "<!-- compare_algorithms:end -->"


def comparison_config(config: ConfigDict, *, steps: int, eval_every: int) -> ConfigDict:
    """`config` for a comparison's runs: `steps` rollout batches each, validation before training and every
    `eval_every` steps, two sample generations per validation, one checkpoint kept (at the end).

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
    c.checkpoint.every = steps
    c.checkpoint.keep_last = 1
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
    c = config.copy_and_resolve_references()
    c.seed = spec.seed
    for key, value in spec.overrides:
        set_key(c, key, value)
    start = time.perf_counter()
    _, settings = prepare(c)
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


def comparison_report(
    config: ConfigDict, specs: list[RunSpec], out: Path, *, spent: float, command: str, machine: str
) -> str:
    """Reads every run back and writes `<out>/results.json` and `<out>/curves.png`.

    Args:
      config: the shared config (batch, steps and validation, for the report).
      specs: the runs.
      out: the comparison's directory (runs under `<out>/runs`).
      spent: the seconds of the runs made by this invocation.
      command: the command line, for the report.
      machine: the machine, in words.

    Returns:
      The Markdown report: the command, date, machine, cost and one table per group.
    """
    settings = resolve(config, check_inputs=False)
    per_batch = settings.data.rollout_batch_prompts * settings.rollout.n
    histories: dict[str, dict[str, list]] = {}
    for spec in specs:
        history = read_history(out / "runs" / spec.dirname, per_batch)
        histories.setdefault(spec.group, {}).setdefault(spec.name, []).append(history)
    main = histories.get("algorithms", {})
    target = reference_accuracy(main)
    tables, panels = {}, []
    if main:
        tables["algorithms"] = summarize(main, target)
        panels.append(("algorithms", main))
    for ablation in ABLATIONS:
        if ablation not in histories:
            continue
        group = dict(histories[ablation])
        if "shuffle_r1" in main:
            group[f"shuffle_r1 {ablation}={ABLATION_DEFAULTS[ablation]}"] = main["shuffle_r1"]
        group = dict(sorted(group.items(), key=lambda kv: float(kv[0].rsplit("=", 1)[1])))
        tables[ablation] = summarize(group, target)
        panels.append((f"Shuffle-R1 {ablation}", group))
    plot_comparison(panels, out / "curves.png")
    (out / "results.json").write_text(json.dumps(tables, indent=2) + "\n")
    seeds = sorted({s.seed for s in specs})
    data, evaluation = settings.data, settings.eval
    lines = [
        f"Command: `{command}` ({datetime.date.today().isoformat()}; {machine}).",
        f"{len(specs)} runs of {settings.train.total_steps} steps, seeds {seeds}; each step = "
        f"{data.rollout_batch_prompts} prompts x {settings.rollout.n} rollouts, {settings.train.num_minibatches} "
        f"optimizer steps; validation on {evaluation.max_prompts or 'all'} prompts x {evaluation.n} samples at "
        f"T={evaluation.temperature} every {evaluation.every} steps. Wall time of the runs made by this invocation: "
        f"{spent / 60:.1f} min.",
    ]
    for name, rows in tables.items():
        title = "Algorithms" if name == "algorithms" else f"Ablation: Shuffle-R1 {name}"
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
