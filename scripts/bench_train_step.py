"""Training-step benchmark of the real trainer: seconds, tokens/s and FLOP utilisation per phase, and every XLA
compilation over the run (shuffle_r1_jax/perf/step_benchmark.py says how each figure is made).

    python scripts/bench_train_step.py [--config configs/demo.py] [--config.key=value ...] [--size demo|3b]
        [--warmup_steps 2] [--steps 18] [--layers L] [--vision_layers V] [--peak_tflops X] [--write_notes]

Cases (`--size`):
  demo: the config as given (default: the CPU demo, which builds its tiny model and data on first use).
  3b:   real Qwen2.5-VL-3B dimensions with random weights (text 2048 wide, 36 layers, vocabulary 151936; vision
        tower 32 blocks of 1280), written once under `--cache_dir` with the demo's tokenizer, and synthetic image
        prompts of `--image_size` px; sized for one 80 GB GPU unless the config keys are given (64 prompts x n,
        512 new tokens, bf16, 16-prompt mini-batches, 4-row micro-batches). `--layers` / `--vision_layers` shrink
        it for a CPU smoke test.
Peak FLOP/s: GPUs from a table by device kind (bf16 dense), CPU measured in this process, or `--peak_tflops`.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import sys
import tempfile
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

ROOT = Path(__file__).resolve().parents[1]
_CONFIG = config_flags.DEFINE_config_file(
    "config", str(ROOT / "shuffle_r1_jax" / "demo" / "config.py"), "trainer config file (default: the demo)"
)
flags.DEFINE_enum("size", "demo", ["demo", "3b"], "demo: the config as given; 3b: random Qwen2.5-VL-3B dimensions")
flags.DEFINE_integer("warmup_steps", 2, "steps before measuring (compilation happens here)")
flags.DEFINE_integer("steps", 18, "measured steps")
flags.DEFINE_integer("layers", 36, "3b: text decoder layers (36 = the real model)")
flags.DEFINE_integer("vision_layers", 32, "3b: vision tower blocks (32 = the real model)")
flags.DEFINE_integer("image_size", 448, "3b: synthetic image side in px (448: 1024 patches, 256 tokens)")
flags.DEFINE_integer("prompt_bucket", 512, "3b: the prompt length bucket")
flags.DEFINE_string("cache_dir", "~/.cache/shuffle_r1_jax/bench", "3b: where the random checkpoint is kept")
flags.DEFINE_float("peak_tflops", None, "peak FLOP/s for MFU, in TFLOP/s (default: table or measured)")
flags.DEFINE_string("workdir", None, "trainer workdir (default: a temporary directory)")
flags.DEFINE_bool("write_notes", False, "write the figures to BUILD_NOTES.md")
FLAGS = flags.FLAGS

# the 3b case's settings for one 80 GB GPU, where the command line leaves the key at the config's value
SIZE_3B = {
    "data.rollout_batch_prompts": 64,
    "rollout.max_new_tokens": 512,
    "model.dtype": "bfloat16",
    "train.minibatch_prompts": 16,
    "train.micro_batch_rows": 4,
}


def random_3b_config(config):
    """`config` pointed at the random 3B checkpoint and its synthetic data (built on first use)."""
    from shuffle_r1_jax.perf.random_checkpoint import random_3b_assets

    given = {arg.split("=")[0].removeprefix("--config.") for arg in sys.argv if arg.startswith("--config.")}
    dtype = config.model.dtype if "model.dtype" in given else SIZE_3B["model.dtype"]
    paths = random_3b_assets(
        FLAGS.cache_dir,
        layers=FLAGS.layers,
        vision_layers=FLAGS.vision_layers,
        dtype=dtype,
        image_size=FLAGS.image_size,
    )
    with config.unlocked():
        config.setup = ""
        config.model.checkpoint, config.data.train, config.data.val = paths["checkpoint"], paths["train"], ""
        config.data.prompt_format = "none"
        config.data.min_pixels = config.data.max_pixels = FLAGS.image_size**2
        config.data.max_prompt_length = FLAGS.prompt_bucket
        config.data.prompt_buckets = (FLAGS.prompt_bucket,)
        config.reward.name = "shuffle_r1_jax.demo.reward:synthetic_reward"
        for key, value in SIZE_3B.items():
            if key not in given:
                section, field = key.split(".")
                config[section][field] = value
    return config


def main(argv: list[str]) -> None:
    del argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)
    from shuffle_r1_jax.perf.notes import load_average, machine_description, write_section
    from shuffle_r1_jax.perf.peak import peak_flops
    from shuffle_r1_jax.perf.step_benchmark import (
        describe_settings,
        format_recompile_logs,
        format_report,
        run_benchmark,
    )
    from shuffle_r1_jax.train.settings import prepare

    load_before = load_average()
    config = random_3b_config(_CONFIG.value) if FLAGS.size == "3b" else _CONFIG.value
    _, settings = prepare(config)
    peak = peak_flops(FLAGS.peak_tflops)
    with contextlib.ExitStack() as stack:
        workdir = FLAGS.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_train_step_"))
        result = run_benchmark(settings, workdir, warmup_steps=FLAGS.warmup_steps, steps=FLAGS.steps, peak=peak)
    load_after = load_average()
    busy = float(load_before.split(",")[0]) > 0.5
    header = (
        f"Command: `python scripts/bench_train_step.py {' '.join(sys.argv[1:])}`; {machine_description()}; "
        f"{datetime.date.today()}. Load average (1, 5, 15 min) before the run: {load_before}; after: {load_after}"
        + (" (other jobs were running on this machine: timings are noisy).\n" if busy else ".\n")
        + describe_settings(settings)
        + "\n\n"
    )
    body = header + format_report(result) + "\n"
    print(body)
    if result.recompiles:
        print(format_recompile_logs(result))
    if FLAGS.write_notes:
        write_section(ROOT / "BUILD_NOTES.md", f"Training step benchmark ({FLAGS.size})", body)


if __name__ == "__main__":
    app.run(main)
