"""Two processes on localhost (`jax.distributed`, CPU gloo collectives, 4 simulated devices each) run one trainer
step on a (2, 2, 2) mesh that spans both; it agrees with the same step in one process on 8 devices, and the
checkpoint the two processes wrote restores in one process on another mesh."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from shuffle_r1_jax.data.pipeline import PipelineConfig, prompt_batches
from shuffle_r1_jax.processing.batch import PromptBatch
from shuffle_r1_jax.train.dynamic_sampling import concat_prompts
from shuffle_r1_jax.train.trainer import Trainer
from tests.parallel.test_sharded_train_step import ATOL, RTOL, step_config

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_two_processes(cache: str, workdir: Path, out: Path) -> None:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.parallel.two_process_worker", str(port), str(i), cache, str(workdir), str(out)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    results = []
    try:
        for proc in procs:
            _, stderr = proc.communicate(timeout=TIMEOUT_S)
            results.append((proc.returncode, stderr))
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        details = [proc.communicate()[1][-4000:] for proc in procs]
        pytest.fail(f"the two processes did not finish in {TIMEOUT_S} s; stderr:\n" + "\n----\n".join(details))
    for i, (code, stderr) in enumerate(results):
        assert code == 0, f"process {i} exited with {code}; its stderr:\n{stderr[-6000:]}"


class TwoProcessOrder:
    """The global batches the two-process run trains on, in one process: process 0's prompts (stream elements
    0, 2, 4, ...) then process 1's (1, 3, 5, ...) of each step, as the trainer places them."""

    def __init__(self, trainer: Trainer):
        c = trainer.config
        self.pad = trainer.encoder.pad_token_id
        self.parts = [
            prompt_batches(
                trainer.run.train_data, trainer.encoder, trainer.model_config,
                PipelineConfig(batch_size=c.data.rollout_batch_prompts // 2, seed=c.seed, shuffle=True, num_epochs=None,
                               process_index=i, process_count=2),
                buckets=trainer.buckets,
            )  # fmt: skip
            for i in range(2)
        ]

    def __next__(self) -> PromptBatch:
        a, b = (next(p) for p in self.parts)
        return PromptBatch(
            inputs=concat_prompts([a.inputs, b.inputs], self.pad),
            prompt_lengths=np.concatenate([a.prompt_lengths, b.prompt_lengths]),
            **{f: getattr(a, f) + getattr(b, f) for f in ("problems", "answers", "data_sources", "record_ids")},
        )  # fmt: skip

    def counts(self) -> dict:
        return self.parts[0].counts()


@pytest.fixture(scope="module")
def two_process_run(demo_cache, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("two_processes")
    Trainer(step_config(demo_cache), str(tmp_path_factory.mktemp("assets"))).close()  # builds the demo assets once
    out = workdir / "params.npz"
    run_two_processes(demo_cache, workdir / "run", out)
    return workdir / "run", dict(np.load(out))


def test_two_processes_agree_with_one(two_process_run, demo_cache, tmp_path):
    _, gathered = two_process_run
    trainer = Trainer(step_config(demo_cache, data=2, fsdp=2, tensor=2), str(tmp_path))
    try:
        trainer.train_batches = TwoProcessOrder(trainer)
        before = jax.device_get(trainer.params)
        trainer.train_step()
        single = {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(trainer.params)}
    finally:
        trainer.close()
    assert gathered.keys() == single.keys()
    for name, value in single.items():
        np.testing.assert_allclose(gathered[name], value, rtol=RTOL, atol=ATOL, err_msg=name)
    start = {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(before)}
    assert sum(np.max(np.abs(single[k] - start[k])) > 10 * ATOL for k in single) > 10, "the step moved nothing"


def test_process_zero_writes_the_run_files(two_process_run):
    workdir, _ = two_process_run
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1]
    assert 0.0 <= lines[0]["val/accuracy"] <= 1.0 and lines[0]["data/batches"] == 2.0  # one batch per process
    assert len((workdir / "eval_samples.jsonl").read_text().splitlines()) == 4  # process 0's 4 validation prompts


def test_their_checkpoint_restores_in_one_process(two_process_run, demo_cache):
    workdir, gathered = two_process_run
    one_device = step_config(demo_cache, data=1, fsdp=1, tensor=1, num_devices=1)
    trainer = Trainer(one_device, str(workdir))  # resumes from the two processes' step-1 checkpoint
    try:
        assert trainer.step == 1
        assert all(len(x.sharding.device_set) == 1 for x in jax.tree.leaves(trainer.params))
        for path, x in jax.tree_util.tree_leaves_with_path(trainer.params):
            np.testing.assert_array_equal(np.asarray(x), gathered[jax.tree_util.keystr(path)])
        opt_leaves = jax.tree.leaves(trainer.opt_state)
        assert opt_leaves and all(np.all(np.isfinite(np.asarray(x))) for x in opt_leaves)
    finally:
        trainer.close()
