"""What the package's command lines share (`python -m shuffle_r1_jax.train`, `python -m shuffle_r1_jax.evaluate`):
the `--config` and `--verbose` flags (defined here, once per process, when this module is imported), the errors a
user can fix, the run log and the one-line error report."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

from absl import flags
from ml_collections import config_flags

# The default config is the demo's file, named by path: the train room imports nothing of the demo room.
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "demo" / "config.py"
RUN_LOG = "run.log"

CONFIG = config_flags.DEFINE_config_file(
    "config",
    str(DEMO_CONFIG),
    "the experiment (training) config file, optionally with :arguments (default: the demo)",
    lock_config=True,
)
VERBOSE = flags.DEFINE_bool(
    "verbose", False, "print the full traceback of a data, I/O, reward or config error (always in the run.log)"
)


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors a user can fix (config, inputs, data, I/O, reward plug-in): one line, not a traceback."""
    from shuffle_r1_jax.checkpoint.safetensors_io import CheckpointError
    from shuffle_r1_jax.data.pipeline import BadRecordError
    from shuffle_r1_jax.data.sources import DataSpecError
    from shuffle_r1_jax.models.qwen2_5_vl import ConfigError as ModelConfigError
    from shuffle_r1_jax.rewards.health import RewardHealthError
    from shuffle_r1_jax.rollout.dynamic_sampling import DynamicSamplingError
    from shuffle_r1_jax.train import settings

    return (
        settings.ConfigError,
        ModelConfigError,
        CheckpointError,
        DataSpecError,
        BadRecordError,
        RewardHealthError,
        DynamicSamplingError,
        OSError,
    )


def open_run_log(directory: str | Path) -> logging.Handler | None:
    """A handler appending the whole log (tracebacks included) to `<directory>/run.log`, or None when the directory
    cannot be written (the error then comes from the run itself)."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(Path(directory) / RUN_LOG)
    except OSError:
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def close_run_log(handler: logging.Handler | None) -> None:
    """Detaches and closes a handler of `open_run_log` (None: nothing to do)."""
    if handler is not None:
        logging.getLogger().removeHandler(handler)
        handler.close()


def report(err: BaseException, run_log: logging.Handler | None, verbose: bool) -> None:
    """Prints `err` in one line on stderr (the traceback too when `verbose`) and writes its traceback to the run
    log."""
    if run_log is not None:
        record = logging.LogRecord(__name__, logging.ERROR, __file__, 0, "run stopped", None, sys.exc_info())
        run_log.handle(record)
    if verbose:
        traceback.print_exc()
    where = f" (traceback in {run_log.baseFilename})" if run_log is not None and not verbose else ""
    message = " ".join(str(err).split()) or type(err).__name__
    print(f"error: {message}{where}", file=sys.stderr)
