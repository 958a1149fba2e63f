"""A tiny end-to-end trainer config (the "test" preset model, a small synthetic dataset, a 2-step warm-up), a
trainer built from a config as the entrypoint builds it, one step of that config trained once for the session,
and a training command killed in the middle."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from shuffle_r1_jax.demo.config import demo_config
from shuffle_r1_jax.train.settings import prepare
from shuffle_r1_jax.train.trainer import Trainer


def tiny_trainer_config(cache_dir: str):
    c = demo_config()
    c.demo.cache_dir = cache_dir
    c.demo.preset = "test"
    c.demo.num_train = 64
    c.demo.num_val = 8
    # the "shapes" family's mixed answers (colours, words, digits): DAPO tests need groups a toy reward scores all equal
    c.demo.task_family = "shapes"
    c.demo.difficulty_weights = (0.6, 0.2, 0.2)
    c.demo.warmup_steps = 2
    c.demo.warmup_batch = 8
    c.data.rollout_batch_prompts = 4
    c.rollout.n = 4
    c.rollout.max_new_tokens = 8
    c.rl.abs_rounds = 2
    c.train.total_steps = 2
    c.train.minibatch_prompts = 2
    c.train.micro_batch_rows = 4
    c.reward.num_workers = 1
    c.eval.every = 0
    c.eval.before_training = False
    c.eval.n = 2
    c.optim.freeze_vision = True  # the paper's setting (the demo trains its random vision tower)
    c.checkpoint.every = 1
    return c


def make_trainer(config, workdir, **kwargs) -> Trainer:
    """`Trainer` of `config` in `workdir`, after the config's setup (the demo's assets) and resolution."""
    _, settings = prepare(config)
    return Trainer(settings, str(workdir), **kwargs)


@pytest.fixture(scope="session")
def default_step(demo_cache, tmp_path_factory):
    """(parameters, summary, trainer, workdir) of one step of `tiny_trainer_config` as it is (Shuffle-R1, packed
    passes, no remat), exported at its end to the directory "exported_at_end" beside the workdir; trained once for
    the session: the trainer tests' Shuffle-R1 step, remat and packing reference and export, and the LoRA tests' run
    without adapters (the export changes nothing the others check)."""
    workdir = tmp_path_factory.mktemp("default_step") / "run"
    c = tiny_trainer_config(demo_cache)
    c.train.total_steps = 1
    c.checkpoint.export_hf = str(workdir.parent / "exported_at_end")
    trainer = make_trainer(c, workdir)
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    return trainer.params, summary, trainer, workdir


def kill_after_step_2(config_file: Path, workdir: Path, max_delay: float) -> None:
    """Runs `python -m shuffle_r1_jax.train --config config_file --workdir workdir` and SIGKILLs it at a random
    moment up to `max_delay` seconds after its step-2 checkpoint appears (in a later step or a save).

    Raises:
      AssertionError: the run finished before it could be killed.
    """
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    process = subprocess.Popen(
        [sys.executable, "-m", "shuffle_r1_jax.train", "--config", str(config_file), "--workdir", str(workdir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not list((workdir / "checkpoints").glob("2*")) and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(float(np.random.default_rng().uniform(0.0, max_delay)))
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
