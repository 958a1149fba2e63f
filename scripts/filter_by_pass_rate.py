"""The offline pass-rate filter: n samples per training prompt from the starting policy, scored by the run's
reward; the records always solved or never solved are dropped and the rest written in the dataset's own layout
(shuffle_r1_jax/experiments/pass_rate_filter.py).

    python scripts/filter_by_pass_rate.py --out_dir runs/filtered           # the demo's data and starting policy
    python scripts/filter_by_pass_rate.py --config configs/shuffle_r1_paper.py:model=7b,dataset=geo3k \\
        --config.model.checkpoint=models/Qwen2.5-VL-7B-Instruct --out_dir data/geo3k_filtered --samples_per_prompt 16
    python -m shuffle_r1_jax.train --config configs/demo.py --config.data.train=runs/filtered/data   # train on it

--config takes the training config (default: the demo's) with `--config.<key>=<value>` overrides: the policy is
`model.checkpoint`, the records `data.train` (one pass, in order), the reward `reward.name`, the sampling the
rollout's (`rollout.temperature`, `top_p`, `top_k`, `max_new_tokens`, `data.rollout_batch_prompts` prompts per
sampler call, `seed`), with --samples_per_prompt samples per prompt in place of `rollout.n`. --out_dir (required,
created, must be empty) receives data/ (the kept records, one file per input file, same format, all original
columns plus `pass_rate`), pass_rates.parquet (every record's pass rate and verdict) and pass_rate_stats.json.
--min_pass_rate / --max_pass_rate: the kept band, inclusive (default: every pass rate strictly between 0 and 1).

One process only: with several (`jax.distributed`) it stops with an error. An error (config, inputs, data, output
directory) prints one line (--verbose: the traceback) and exits with status 2.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

ROOT = Path(__file__).resolve().parents[1]

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(ROOT / "shuffle_r1_jax" / "demo" / "config.py"), "the training config file[:args] (default: the demo)"
)
flags.DEFINE_string("out_dir", None, "output directory (created; must be empty)", required=True)
flags.DEFINE_integer("samples_per_prompt", 8, "responses sampled per prompt")
flags.DEFINE_float("min_pass_rate", None, "keep pass rates >= this (default: every rate above 0)")
flags.DEFINE_float("max_pass_rate", None, "keep pass rates <= this (default: every rate below 1)")
flags.DEFINE_bool("verbose", False, "print the traceback of an error")
FLAGS = flags.FLAGS


def _summary(stats: dict) -> str:
    records, dropped = stats["records"], stats["dropped"]
    drops = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in dropped.items() if v) or "none"
    unusable = ", ".join(f"{k} {v}" for k, v in records["unusable_by_reason"].items())
    mean = stats["mean_pass_rate"]
    return "\n".join(
        [
            f"pass rates of {records['usable']} usable records of {records['total']} at n = {stats['settings']['n']}: "
            f"mean {mean:.3f}"
            if mean is not None
            else f"no usable record of {records['total']}",
            f"kept {stats['kept']} ({stats['band']['kept']}); dropped: {drops}"
            + (f"; unusable: {unusable}" if unusable else ""),
            f"right out of n: {stats['right_of_n']}",
            f"wrote {stats['output']['data_dir']}, {stats['output']['pass_rates']}, {stats['output']['stats']} "
            f"({stats['seconds']:.0f} s); train on the kept records with "
            f"--config.data.train={stats['output']['data_dir']}",
        ]
    )


def main(argv: list[str]) -> int:
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    absl_logging.set_verbosity(absl_logging.WARNING)
    from shuffle_r1_jax.checkpoint.safetensors_io import CheckpointError
    from shuffle_r1_jax.data.pipeline import BadRecordError
    from shuffle_r1_jax.data.sources import DataSpecError
    from shuffle_r1_jax.experiments.pass_rate_filter import (
        PassRateBand,
        PassRateFilterError,
        check_output_dir,
        filter_by_pass_rate,
    )
    from shuffle_r1_jax.models.qwen2_5_vl import ConfigError as ModelConfigError
    from shuffle_r1_jax.train.settings import ConfigError, prepare

    config = _CONFIG.value
    errors = (
        ConfigError,
        ModelConfigError,
        CheckpointError,
        DataSpecError,
        BadRecordError,
        PassRateFilterError,
        ValueError,
        OSError,
    )
    try:
        band = PassRateBand(FLAGS.min_pass_rate, FLAGS.max_pass_rate)
        check_output_dir(Path(FLAGS.out_dir))
        _, settings = prepare(config)
        stats = filter_by_pass_rate(settings, FLAGS.out_dir, n=FLAGS.samples_per_prompt, band=band)
    except errors as err:
        if FLAGS.verbose:
            traceback.print_exc()
        print(f"error: {' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
        return 2
    print(_summary(stats))
    return 0


if __name__ == "__main__":
    app.run(main)
