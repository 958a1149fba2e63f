"""`python -m shuffle_r1_jax.train`: train a policy; with no flags, the demo (configs/demo.py).

    python -m shuffle_r1_jax.train [--config configs/<name>.py[:args]] [--config.key=value ...] [--workdir DIR]

Every config key is documented in shuffle_r1_jax/train/defaults.py. A workdir with a checkpoint resumes.
Several hosts: run the same command on every host (see BUILD_NOTES.md, "Launching on a multi-GPU host and a TPU
pod slice"); `jax.distributed` starts from the `distributed` config section or the launcher's environment.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

# The default config is the demo's file, named by path: the train room imports nothing of the demo room.
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "demo" / "config.py"

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    str(DEMO_CONFIG),
    "experiment config file, optionally with :arguments (default: the demo)",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "run directory: checkpoints, metrics, samples, summary")


def main(argv: list[str]) -> int:
    """Resolves the config and trains; process 0 then writes `<workdir>/summary.json` and prints the validation
    accuracies (when the run validated).

    Returns:
      The exit status: 0 after training, 2 when the config, the model config or the checkpoint is invalid, an
      input file is missing or a checkpoint save failed (the error is printed to stderr, one line).
    """
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and grain log every operation at INFO
    from shuffle_r1_jax.checkpoint.safetensors_io import CheckpointError
    from shuffle_r1_jax.checkpoint.train_state import orbax_traceback_filter

    # a failed checkpoint save is reported once, as one line, by the trainer
    logging.getLogger("absl").addFilter(orbax_traceback_filter)
    from shuffle_r1_jax.models.qwen2_5_vl import ConfigError as ModelConfigError
    from shuffle_r1_jax.parallel.distributed import is_main_process
    from shuffle_r1_jax.train import settings
    from shuffle_r1_jax.train.trainer import Trainer, write_summary

    try:
        settings.start_distributed(_CONFIG.value)
        if not is_main_process():
            logging.getLogger().setLevel(logging.WARNING)  # process 0 logs the run; the others only problems
        _, run = settings.prepare(_CONFIG.value)
        trainer = Trainer(run, _WORKDIR.value)
    except (settings.ConfigError, ModelConfigError, CheckpointError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        summary = trainer.fit()
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        trainer.close()
    if not is_main_process():
        return 0
    write_summary(_WORKDIR.value, summary)
    if summary.start_accuracy is not None:
        print(
            f"validation accuracy: {summary.start_accuracy:.3f} at the start -> {summary.end_accuracy:.3f} at step "
            f"{summary.steps} (best {summary.best_accuracy:.3f}); workdir {_WORKDIR.value}"
        )
    return 0


if __name__ == "__main__":
    app.run(main)
