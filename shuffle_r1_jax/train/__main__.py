"""`python -m shuffle_r1_jax.train`: train a policy; with no flags, the demo (configs/demo.py).

    python -m shuffle_r1_jax.train [--config configs/<name>.py[:args]] [--config.key=value ...] [--workdir DIR]

Every config key is documented in shuffle_r1_jax/train/defaults.py. A workdir with a checkpoint resumes. The
whole log goes to `<workdir>/run.log` as well; a user error (config, inputs, data, I/O, reward plug-in) prints
one line (`--verbose`: with its traceback) and exits with status 2.
Several hosts: run the same command on every host (see BUILD_NOTES.md, "Launching on a multi-GPU host and a TPU
pod slice"); `jax.distributed` starts from the `distributed` config section or the launcher's environment.
"""

from __future__ import annotations

import logging

from absl import app, flags
from absl import logging as absl_logging

from shuffle_r1_jax.train import cli

_CONFIG = cli.CONFIG
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "run directory: checkpoints, metrics, samples, summary")
_VERBOSE = cli.VERBOSE


def main(argv: list[str]) -> int:
    """Resolves the config and trains; process 0 then writes `<workdir>/summary.json` and prints the validation
    accuracies (when the run validated) and the skipped training records.

    Returns:
      The exit status: 0 after training, 2 after a user error (config, model config or checkpoint invalid, an
      input missing, unusable data, a damaged checkpoint or a failed checkpoint save, an I/O failure such as a
      full disk, every reward failing in `reward.max_failed_steps` steps in a row, DAPO finding no informative
      group), printed as one line on stderr with its traceback in `<workdir>/run.log`.
    """
    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax and grain log every operation at INFO
    from shuffle_r1_jax.checkpoint.train_state import orbax_traceback_filter

    # a failed checkpoint save is reported once, as one line, by the trainer
    logging.getLogger("absl").addFilter(orbax_traceback_filter)
    from shuffle_r1_jax.parallel.distributed import is_main_process
    from shuffle_r1_jax.train import settings
    from shuffle_r1_jax.train.trainer import Trainer

    user_errors = cli.user_errors()
    run_log = None
    try:
        settings.start_distributed(_CONFIG.value)
        if is_main_process():
            run_log = cli.open_run_log(_WORKDIR.value)
        else:
            logging.getLogger().setLevel(logging.WARNING)  # process 0 logs the run; the others only problems
        _, run = settings.prepare(_CONFIG.value)
        trainer = Trainer(run, _WORKDIR.value)
        try:
            summary = trainer.fit()
        finally:
            trainer.close()
    except user_errors as err:
        cli.report(err, run_log, _VERBOSE.value)
        return 2
    finally:
        cli.close_run_log(run_log)
    if not is_main_process():
        return 0
    _print_summary(summary)
    return 0


def _print_summary(summary) -> None:
    """Writes `<workdir>/summary.json` and prints the validation accuracies and the skipped training records."""
    from shuffle_r1_jax.train.trainer import write_summary

    write_summary(_WORKDIR.value, summary)
    if summary.start_accuracy is not None:
        print(
            f"validation accuracy: {summary.start_accuracy:.3f} at the start -> {summary.end_accuracy:.3f} at step "
            f"{summary.steps} (best {summary.best_accuracy:.3f}); workdir {_WORKDIR.value}"
        )
    if summary.skipped_records:
        reasons = ", ".join(f"{reason} {n}" for reason, n in summary.skipped_records.items())
        print(f"training records: {summary.records_read} read, skipped as unusable: {reasons}")


if __name__ == "__main__":
    app.run(main)
