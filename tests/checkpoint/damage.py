"""Damage a saved checkpoint step the ways a crash or a careless hand does (shared by the checkpointer's and the
trainer's tests)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def truncate_the_array_files(step_dir: Path, item: str = "params") -> None:
    """Cuts every data file of the step's `item` (by default `params`) in half (what a crash of the file system
    leaves; the item's OCDBT database may read either its merged or its per-process copy of an array)."""
    files = [path for path in (step_dir / item).rglob("*") if path.is_file() and path.parent.name == "d"]
    assert files, f"no data files under {step_dir / item}"
    for path in files:
        os.truncate(path, path.stat().st_size // 2)


def delete_the_optimizer_state(step_dir: Path, item: str = "opt_state") -> None:
    """Removes the step's `item`, by default its `opt_state`."""
    shutil.rmtree(step_dir / item)


def garble_the_meta(step_dir: Path) -> None:
    """Cuts the step's `meta` JSON mid-way."""
    (step_dir / "meta" / "metadata").write_text('{"step": 3, "rng_k')
