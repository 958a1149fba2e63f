"""Does Shuffle-R1 beat GRPO here? Trains GRPO, DAPO, Dr.GRPO, PTS only, ABS only and Shuffle-R1 (plus the
paper's keep-ratio and shuffle-round ablations of Shuffle-R1) with the same model, data, rollout batch and number
of optimizer steps over several seeds, then writes a table and a plot of the curves.

Default: the demo's task and starting policy (configs/demo.py; built and cached on first use), a shorter run
per algorithm. Every run is an ordinary trainer run in `<out>/runs/<name>/seed<k>`; a finished run is not
redone and an interrupted one resumes, so the script can be stopped and started again.

    python scripts/compare_algorithms.py                                    # the default comparison (CPU)
    python scripts/compare_algorithms.py --seeds 0,1,2,3,4 --steps 200      # longer, more seeds
    python scripts/compare_algorithms.py --ablations= --algorithms grpo,shuffle_r1
    python scripts/compare_algorithms.py --checkpoint /ckpt/Qwen2.5-VL-3B-Instruct \\
        --train data/geo3k@train --val data/geo3k@test --reward math --set model.dtype=bfloat16 \\
        --set data.rollout_batch_prompts=512 --set rollout.n=16 ...            # a real dataset

Writes `<out>/results.md` (the command, machine, cost and tables), `<out>/results.json` and `<out>/curves.png`;
with --readme also the README's comparison section and docs/compare_algorithms.png.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import logging
import os
import platform
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

import jax

from shuffle_r1_jax.experiments.comparison import (
    ABLATIONS, MAIN_ALGORITHMS, RunSpec, markdown_table, plan_runs, read_history, reference_accuracy, summarize,
)  # fmt: skip
from shuffle_r1_jax.experiments.plots import plot_comparison
from shuffle_r1_jax.train.defaults import demo_config
from shuffle_r1_jax.train.trainer import Trainer, write_summary

ROOT = Path(__file__).resolve().parent.parent
README_START, README_END = "<!-- compare_algorithms:start -->", "<!-- compare_algorithms:end -->"
logger = logging.getLogger("compare_algorithms")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/compare", help="output directory (runs, results.md/json, curves.png)")
    p.add_argument("--algorithms", default=",".join(MAIN_ALGORITHMS), help="comma-separated rl.algorithm names")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated run seeds (sampling and data order)")
    p.add_argument("--ablations", default=",".join(ABLATIONS),
                   help=f"Shuffle-R1 ablations to run, comma-separated from {sorted(ABLATIONS)} ('' = none)")
    p.add_argument("--steps", type=int, default=80, help="rollout batches (training steps) per run")
    p.add_argument("--eval_every", type=int, default=10, help="validation every k steps (and before and at the end)")
    p.add_argument("--checkpoint", default="", help="HF-format Qwen2.5-VL directory (default: the demo's model)")
    p.add_argument("--train", default="", help="training dataset path[@split] (default: the demo's synthetic task)")
    p.add_argument("--val", default="", help="validation dataset path[@split] (needed with --train)")
    p.add_argument("--reward", default="", help="reward name (with --train; e.g. math, r1v, module:function)")
    p.add_argument("--prompt_format", default="", help="data.prompt_format (with --train; e.g. math, r1v)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to every run, e.g. --set rollout.n=16 (repeatable)")  # fmt: skip
    p.add_argument("--readme", action="store_true", help="also write README.md's comparison section and its plot")
    return p.parse_args(argv)


def set_key(config, key: str, value) -> None:
    """Sets a dotted config key, with an error naming it if it does not exist."""
    node = config
    *parents, last = key.split(".")
    for part in parents:
        if part not in node:
            raise SystemExit(f"--set {key}: no config section {part!r}")
        node = node[part]
    if last not in node:
        raise SystemExit(f"--set {key}: no config key {last!r} in {'.'.join(parents) or 'the config'}")
    node[last] = value


def literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def shared_config(args: argparse.Namespace):
    """The config every run starts from: the demo's (or the given dataset's), with the comparison's length."""
    c = demo_config()
    c.train.total_steps = args.steps
    c.eval.every = args.eval_every
    c.eval.before_training = True
    c.eval.num_examples = 2
    c.checkpoint.every = args.steps
    c.checkpoint.keep_last = 1
    if args.train:
        if not (args.checkpoint and args.val):
            raise SystemExit("--train needs --checkpoint and --val")
        c.demo.enabled = False
        c.model.checkpoint, c.data.train, c.data.val = args.checkpoint, args.train, args.val
        c.reward.name = args.reward or c.reward.name
        c.data.prompt_format = args.prompt_format or c.data.prompt_format
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        set_key(c, key, literal(value))
    return c


def run_one(config, spec: RunSpec, workdir: Path) -> float:
    """Trains one run to the end unless it already finished; returns the seconds spent now."""
    if (workdir / "summary.json").exists():
        return 0.0
    c = config.copy_and_resolve_references()
    c.seed = spec.seed
    for key, value in spec.overrides:
        set_key(c, key, value)
    start = time.perf_counter()
    trainer = Trainer(c, str(workdir))
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    write_summary(str(workdir), summary)
    return time.perf_counter() - start


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    devices = jax.devices()
    return (f"{os.cpu_count()} CPU cores ({cpu or platform.processor()}), {len(devices)} x {devices[0].device_kind} "
            f"({jax.default_backend()}), jax {jax.__version__}")  # fmt: skip


def report(args, config, specs: list[RunSpec], out: Path, spent: float) -> str:
    """Reads every run back; writes results.json and curves.png; returns the Markdown report."""
    per_batch = config.data.rollout_batch_prompts * config.rollout.n
    histories: dict[str, dict[str, list]] = {}
    for spec in specs:
        histories.setdefault(spec.group, {}).setdefault(spec.name, []).append(
            read_history(out / "runs" / spec.dirname, per_batch)
        )
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
            group[f"shuffle_r1 {ablation}={ {'keep_ratio': 0.5, 'abs_rounds': 8}[ablation]}"] = main["shuffle_r1"]
        group = dict(sorted(group.items(), key=lambda kv: float(kv[0].rsplit("=", 1)[1])))
        tables[ablation] = summarize(group, target)
        panels.append((f"Shuffle-R1 {ablation}", group))
    plot_comparison(panels, out / "curves.png")
    (out / "results.json").write_text(json.dumps(tables, indent=2) + "\n")

    command = "python scripts/compare_algorithms.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    seeds = sorted({s.seed for s in specs})
    lines = [
        f"Command: `{command.strip()}` ({datetime.date.today().isoformat()}; {machine()}).",
        f"{len(specs)} runs of {config.train.total_steps} steps, seeds {seeds}; each step = "
        f"{config.data.rollout_batch_prompts} prompts x {config.rollout.n} rollouts, "
        f"{config.data.rollout_batch_prompts // config.train.minibatch_prompts} optimizer steps; "
        f"validation on {config.eval.max_prompts or 'all'} prompts x {config.eval.n} samples at T={config.eval.temperature} "
        f"every {config.eval.every} steps. Wall time of the runs made by this invocation: {spent / 60:.1f} min.",
    ]  # fmt: skip
    for name, rows in tables.items():
        title = "Algorithms" if name == "algorithms" else f"Ablation: Shuffle-R1 {name}"
        table = markdown_table(rows)
        lines += ["", f"**{title}**", "", table]
    return "\n".join(lines) + "\n"


def write_readme(body: str, plot: Path) -> None:
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    shutil.copyfile(plot, docs / "compare_algorithms.png")
    readme = ROOT / "README.md"
    text = readme.read_text()
    block = f"{README_START}\n{body}\n![comparison curves](docs/compare_algorithms.png)\n{README_END}"
    if README_START not in text:
        raise SystemExit(f"README.md has no {README_START} ... {README_END} block to fill")
    text = re.sub(re.escape(README_START) + ".*?" + re.escape(README_END), lambda _: block, text, flags=re.S)
    readme.write_text(text)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("absl", "orbax", "grain", "jax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(out / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    config = shared_config(args)
    specs = plan_runs(
        [a for a in args.algorithms.split(",") if a],
        [int(s) for s in args.seeds.split(",") if s],
        [a for a in args.ablations.split(",") if a],
    )  # fmt: skip
    spent = 0.0
    for index, spec in enumerate(specs):
        logger.info("run %d/%d: %s, seed %d", index + 1, len(specs), spec.name, spec.seed)
        spent += run_one(config, spec, out / "runs" / spec.dirname)
    body = report(args, config, specs, out, spent)
    (out / "results.md").write_text(body)
    print(body)
    if args.readme:
        write_readme(body, out / "curves.png")


if __name__ == "__main__":
    main()
