"""Checks of a run's work directory before anything large is loaded: it can be created and written, and its disk
has room for one checkpoint by estimate (parameters and AdamW moments at the parameter dtype)."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import numpy as np

from shuffle_r1_jax.models.qwen2_5_vl import load_config
from shuffle_r1_jax.models.qwen2_5_vl.loading import abstract_model, count_parameters
from shuffle_r1_jax.train.settings import ConfigError, RunSettings

# a checkpoint holds the parameters and the two AdamW moments, each at the parameter dtype
CHECKPOINT_COPIES = 3


def checkpoint_bytes_estimate(settings: RunSettings) -> int:
    """Bytes of one checkpoint of the run: `CHECKPOINT_COPIES` x parameters x the parameter dtype's item size
    (the model is built abstractly from `model.checkpoint`'s config.json; nothing is allocated)."""
    config = load_config(settings.model.checkpoint)
    parameters = count_parameters(abstract_model(config, param_dtype=settings.model.param_dtype))
    return CHECKPOINT_COPIES * parameters * np.dtype(settings.model.param_dtype).itemsize


def check_workdir(workdir: Path, settings: RunSettings) -> None:
    """Creates `workdir`, checks that a file can be written there and, on process 0, that its disk has room for
    one checkpoint (`checkpoint_bytes_estimate`).

    Raises:
      ConfigError: naming the work directory and the cause (not creatable, not writable, too little free space
        with the free and the needed bytes).
    """
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write-check-{jax.process_index()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"workdir {str(workdir)!r} cannot be created or written: {err}") from err
    if jax.process_index() != 0:
        return
    needed, free = checkpoint_bytes_estimate(settings), shutil.disk_usage(workdir).free
    if free < needed:
        raise ConfigError(
            f"workdir {str(workdir)!r}: {free / 2**30:.2f} GiB free on its disk, one checkpoint needs about "
            f"{needed / 2**30:.2f} GiB (parameters and AdamW moments at model.param_dtype); free space or choose "
            "another --workdir"
        )
