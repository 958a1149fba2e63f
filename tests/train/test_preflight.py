"""The work-directory checks that run before the model loads: creatable, writable, room for a checkpoint."""

import collections
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from shuffle_r1_jax.demo.assets import build_assets
from shuffle_r1_jax.train import preflight, settings
from tests.train.conftest import tiny_trainer_config


@pytest.fixture
def run_settings(demo_cache):
    c = tiny_trainer_config(demo_cache)
    c.setup = ""
    assets = build_assets(tiny_trainer_config(demo_cache))
    c.model.checkpoint, c.data.train, c.data.val = assets["model.checkpoint"], assets["data.train"], ""
    return settings.resolve(c, check_inputs=False)


def test_the_estimate_is_three_fp32_copies_of_the_saved_weights(run_settings):
    """Independent count: the values in the checkpoint's safetensors files (its embedding is tied, so the output
    layer is stored once), at 4 bytes, three times (parameters, two AdamW moments)."""
    files = sorted(Path(run_settings.model.checkpoint).glob("*.safetensors"))
    values = sum(int(np.prod(t.shape)) for f in files for t in load_file(f).values())
    assert preflight.checkpoint_bytes_estimate(run_settings) == 3 * values * 4


def test_a_workdir_that_cannot_be_created_is_named(run_settings, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(settings.ConfigError, match=f"workdir '{blocker / 'run'}' cannot be created or written"):
        preflight.check_workdir(blocker / "run", run_settings)


def test_too_little_free_space_for_a_checkpoint_is_named(run_settings, tmp_path, monkeypatch):
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 1000, 1000))
    needed = preflight.checkpoint_bytes_estimate(run_settings) / 2**30
    with pytest.raises(
        settings.ConfigError, match=rf"0.00 GiB free on its disk, one checkpoint needs about {needed:.2f}"
    ):
        preflight.check_workdir(tmp_path / "run", run_settings)
    monkeypatch.undo()
    preflight.check_workdir(tmp_path / "run", run_settings)
    assert (tmp_path / "run").is_dir() and not list((tmp_path / "run").iterdir())
