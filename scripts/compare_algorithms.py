"""Does Shuffle-R1 beat GRPO here? Trains GRPO, DAPO, Dr.GRPO, PTS only, ABS only and Shuffle-R1 (plus the
paper's keep-ratio and shuffle-round ablations of Shuffle-R1) with the same model, data, rollout batch and number
of optimizer steps over several seeds, then writes a table and a plot of the curves.

Default: the demo's task and starting policy (configs/demo.py; built and cached on first use), a shorter run
per algorithm. Every run is an ordinary trainer run in `<out>/runs/<name>/seed<k>`; a finished run is not
redone and an interrupted one resumes, so the script can be stopped and started again.

    python scripts/compare_algorithms.py                                    # the default comparison (CPU)
    python scripts/compare_algorithms.py --seeds 0,1,2,3,4 --steps 200      # longer, more seeds
    python scripts/compare_algorithms.py --ablations= --algorithms grpo,shuffle_r1
    python scripts/compare_algorithms.py --config configs/shuffle_r1_paper.py:model=3b,dataset=geo3k \\
        --config.model.checkpoint=models/Qwen2.5-VL-3B-Instruct --steps 80     # a real model and dataset

Writes `<out>/results.md` (the command, machine, cost and tables), `<out>/results.json` and `<out>/curves.png`;
with --readme also the README's comparison section and docs/compare_algorithms.png.
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

ROOT = Path(__file__).resolve().parents[1]
_CONFIG = config_flags.DEFINE_config_file(
    "config", str(ROOT / "shuffle_r1_jax" / "demo" / "config.py"), "the runs' config file[:args] (default: the demo)"
)
flags.DEFINE_string("out", "runs/compare", "output directory (runs, results.md/json, curves.png)")
flags.DEFINE_list("algorithms", "grpo,dapo,dr_grpo,pts_only,abs_only,shuffle_r1", "rl.algorithm names to compare")
flags.DEFINE_list("seeds", "0,1,2", "run seeds (sampling and data order)")
flags.DEFINE_list("ablations", "keep_ratio,abs_rounds", "Shuffle-R1 ablations to run ('' = none)")
flags.DEFINE_integer("steps", 80, "rollout batches (training steps) per run")
flags.DEFINE_integer("eval_every", 10, "validation every k steps (and before and at the end)")
flags.DEFINE_bool("readme", False, "also write README.md's comparison section and its plot")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    del argv
    import jax

    from shuffle_r1_jax.experiments.comparison import plan_runs
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
    specs = plan_runs(FLAGS.algorithms, [int(s) for s in FLAGS.seeds], FLAGS.ablations)
    spent = run_comparison(config, specs, out)
    command = "python scripts/compare_algorithms.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    body = comparison_report(config, specs, out, spent=spent, command=command.strip(), machine=machine_description())
    (out / "results.md").write_text(body)
    print(body)
    if FLAGS.readme:
        write_readme_block(ROOT / "README.md", out / "curves.png", body)


if __name__ == "__main__":
    app.run(main)
