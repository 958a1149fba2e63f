"""Does Shuffle-R1 beat GRPO here? Trains the paper's comparison over paired seeds and writes its tables and
curves.

Tables (`--tables`, `--ablations`; `shuffle_r1_jax.experiments.comparison` has the details):
- paper (the headline): the paper's protocol, the same update rows per optimizer step: GRPO and DAPO at n = 8
  against Shuffle-R1 at n = 16 keeping alpha = 0.5 (`--run` adds rows);
- equal_rollouts: every `--algorithms` entry at n = 8, the same rollouts generated;
- the ablations of the headline Shuffle-R1 run: pts_variant (PTS against one-sided positive, one-sided negative
  and random sampling), abs_sampling (ABS against an unbiased shuffle and a static reorder), keep_ratio
  (alpha 0.25 / 0.5 / 0.75), abs_rounds (S = 4 / 8 / 16), data_sampling (uniform against prioritized prompt sampling).
Every run of one seed starts from the same policy and sees the same prompts; differences against GRPO are paired
by seed (mean and 95 % interval of final accuracy and of the area under the validation curve).

Default: the demo's task and starting policy (configs/demo.py; built and cached on first use), 150 steps, the
headline table over seeds 0-4 and every ablation over seed 0: under 2 hours on 2 CPU cores (BUILD_NOTES
"Algorithm comparison" has the measured cost). Every run is an ordinary trainer run in
`<out>/runs/<name>/seed<k>`; a finished run is not redone and an interrupted one resumes, so the script can be
stopped and started again, or run in parts (`--tables`, `--ablations`, `--seeds`) into one `--out`.

    python scripts/compare_algorithms.py                                    # the default comparison (CPU)
    python scripts/compare_algorithms.py --tables=paper --ablations=       # the headline table only
    python scripts/compare_algorithms.py --tables=paper,equal_rollouts --ablation_seeds 0,1,2,3,4  # everything
    python scripts/compare_algorithms.py --run "shuffle_r1 n=16 p=2:rl.algorithm=shuffle_r1,rollout.n=16,rl.abs_power=2"
    python scripts/compare_algorithms.py --config configs/shuffle_r1_paper.py:model=3b,dataset=geo3k \\
        --config.model.checkpoint=models/Qwen2.5-VL-3B-Instruct --steps 80     # a real model and dataset

Writes `<out>/results.md` (the command, machine, cost, each run's batch sizes and the tables),
`<out>/results.json` and `<out>/curves.png`; with --readme also the README's comparison section and
docs/compare_algorithms.png.
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from shuffle_r1_jax.experiments.comparison import ABLATIONS, MAIN_ALGORITHMS, parse_run, plan_runs, plan_tables

ROOT = Path(__file__).resolve().parents[1]
_CONFIG = config_flags.DEFINE_config_file(
    "config", str(ROOT / "shuffle_r1_jax" / "demo" / "config.py"), "the runs' config file[:args] (default: the demo)"
)
flags.DEFINE_string("out", "runs/compare", "output directory (runs, results.md/json, curves.png)")
flags.DEFINE_list("tables", "paper", "tables to run: paper (the headline), equal_rollouts")
flags.DEFINE_list("algorithms", ",".join(MAIN_ALGORITHMS), "rl.algorithm names of the equal_rollouts table")
flags.DEFINE_list("seeds", "0,1,2,3,4", "run seeds (data order and sampling; runs of one seed are paired)")
flags.DEFINE_list("ablations", ",".join(ABLATIONS), "ablations of the headline Shuffle-R1 ('' = none)")
flags.DEFINE_list("ablation_seeds", "0", "seeds of the ablation tables (each a subset of the budget)")
flags.DEFINE_multi_string("run", [], 'more headline rows, "NAME:key=value,key=value" (repeatable)')
flags.DEFINE_integer("steps", 150, "rollout batches (training steps) per run")
flags.DEFINE_integer("eval_every", 15, "validation every k steps (and before and at the end)")
flags.DEFINE_bool("readme", False, "also write README.md's comparison section and its plot")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    del argv
    import jax

    from shuffle_r1_jax.experiments.runner import (
        comparison_config,
        comparison_report,
        run_comparison,
        write_readme_block,
    )
    from shuffle_r1_jax.perf.notes import machine_description

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("absl", "orbax", "grain", "jax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    out = Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(out / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    config = comparison_config(_CONFIG.value, steps=FLAGS.steps, eval_every=FLAGS.eval_every)
    tables = plan_tables(FLAGS.tables, FLAGS.algorithms, FLAGS.ablations, dict(parse_run(r) for r in FLAGS.run))
    seeds = {
        table: [int(s) for s in (FLAGS.seeds if table in ("paper", "equal_rollouts") else FLAGS.ablation_seeds)]
        for table in tables
    }
    specs = plan_runs(tables, seeds)
    spent = run_comparison(config, specs, out)
    command = "python scripts/compare_algorithms.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    body = comparison_report(
        config, tables, seeds, specs, out, spent=spent, command=command.strip(), machine=machine_description()
    )
    (out / "results.md").write_text(body)
    print(body)
    if FLAGS.readme:
        write_readme_block(ROOT / "README.md", out / "curves.png", body)


if __name__ == "__main__":
    app.run(main)
