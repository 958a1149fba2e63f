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
from shuffle_r1_jax.rollout.merge import concat_prompts
from shuffle_r1_jax.train.trainer import Trainer
from tests.parallel.test_sharded_train_step import ATOL, RTOL, chunked_step_config, step_config
from tests.train.conftest import make_trainer

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_two_processes(cache: str, workdir: Path, out: Path, dapo_workdir: Path, dapo_assets: Path) -> None:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("XLA_FLAGS", None)
    args = [cache, str(workdir), str(out), str(dapo_workdir), str(dapo_assets)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.parallel.two_process_worker", str(port), str(i), *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
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
        data = trainer.settings.data
        self.pad = trainer.encoder.pad_token_id
        self.parts = [
            prompt_batches(
                data.train,
                trainer.encoder,
                trainer.model_config,
                PipelineConfig(
                    batch_size=data.rollout_batch_prompts // 2,
                    seed=data.seed,
                    shuffle=True,
                    num_epochs=None,
                    process_index=i,
                    process_count=2,
                ),
                buckets=data.buckets,
            )
            for i in range(2)
        ]

    def __next__(self) -> PromptBatch:
        a, b = (next(p) for p in self.parts)
        return PromptBatch(
            inputs=concat_prompts([a.inputs, b.inputs], self.pad),
            prompt_lengths=np.concatenate([a.prompt_lengths, b.prompt_lengths]),
            record_indices=np.concatenate([a.record_indices, b.record_indices]),
            **{
                f: getattr(a, f) + getattr(b, f)
                for f in ("problems", "answers", "data_sources", "record_ids", "reward_contexts")
            },
        )

    def observe(self, record_indices, pass_rates) -> None:
        half = len(record_indices) // 2
        for part, rows in zip(self.parts, (slice(0, half), slice(half, None))):
            part.observe(record_indices[rows], pass_rates[rows])

    def counts(self) -> dict:
        return self.parts[0].counts()


def seven_prompt_assets(cache: str, directory: Path) -> dict:
    """The demo's checkpoint and training set with a validation set of its first 7 prompts."""
    import pyarrow.parquet as pq

    from shuffle_r1_jax.demo.assets import build_assets

    built = build_assets(step_config(cache))
    val = directory / "val7.parquet"
    pq.write_table(pq.read_table(built["data.val"]).slice(0, 7), val)
    return {"checkpoint": built["model.checkpoint"], "train": built["data.train"], "val": str(val)}


@pytest.fixture(scope="module")
def two_process_run(demo_cache, tmp_path_factory):
    """(workdir, gathered parameters) of scenario 1 and (workdir, gathered parameters, assets) of scenario 2 (DAPO)
    of `two_process_worker`, run once for the module."""
    workdir = tmp_path_factory.mktemp("two_processes")
    assets = seven_prompt_assets(demo_cache, workdir)
    (workdir / "dapo_assets.json").write_text(json.dumps(assets))
    out, dapo = workdir / "params.npz", workdir / "dapo"
    run_two_processes(demo_cache, workdir / "run", out, dapo, workdir / "dapo_assets.json")
    return (workdir / "run", dict(np.load(out))), (dapo, dict(np.load(dapo / "params.npz")), assets)


def test_two_processes_agree_with_one(two_process_run, demo_cache, tmp_path):
    (_, gathered), _ = two_process_run
    trainer = make_trainer(chunked_step_config(demo_cache), tmp_path)
    try:
        trainer.train_batches = TwoProcessOrder(trainer)
        before = jax.device_get(trainer.params)
        trainer.train_step()
        single = {
            jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(trainer.params)
        }
    finally:
        trainer.close()
    assert gathered.keys() == single.keys()
    for name, value in single.items():
        np.testing.assert_allclose(gathered[name], value, rtol=RTOL, atol=ATOL, err_msg=name)
    start = {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(before)}
    assert sum(np.max(np.abs(single[k] - start[k])) > 10 * ATOL for k in single) > 10, "the step moved nothing"


def test_process_zero_writes_the_run_files(two_process_run):
    (workdir, _), _ = two_process_run
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1]
    assert 0.0 <= lines[0]["val/accuracy"] <= 1.0 and lines[0]["data/batches"] == 2.0  # one batch per process
    assert len((workdir / "eval_samples.jsonl").read_text().splitlines()) == 4  # process 0's 4 validation prompts


def test_their_checkpoint_restores_in_one_process(two_process_run, demo_cache):
    (workdir, gathered), _ = two_process_run
    one_device = step_config(demo_cache, data=1, fsdp=1, tensor=1, num_devices=1)
    trainer = make_trainer(one_device, workdir)  # resumes from the two processes' step-1 checkpoint
    try:
        assert trainer.step == 1
        assert all(len(x.sharding.device_set) == 1 for x in jax.tree.leaves(trainer.params))
        for path, x in jax.tree_util.tree_leaves_with_path(trainer.params):
            np.testing.assert_array_equal(np.asarray(x), gathered[jax.tree_util.keystr(path)])
        opt_leaves = jax.tree.leaves(trainer.opt_state)
        assert opt_leaves and all(np.all(np.isfinite(np.asarray(x))) for x in opt_leaves)
    finally:
        trainer.close()


def _metrics(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_dapo_refills_groups_across_processes(two_process_run):
    _, (workdir, gathered, _) = two_process_run
    (step,) = [m for m in _metrics(workdir) if m["step"] == 1]
    # each process drew prompt batches until both had 2 groups with differing rewards (or 4 tries): the
    # processes agree on the number of tries, so together they read 2 batches per try
    assert step["dapo/tries"] >= 2, "the reward should leave groups to refill"
    assert step["data/batches"] == 2 * step["dapo/tries"]
    assert step["dapo/filled_groups"] == 0 or step["dapo/tries"] == 4
    assert all(np.all(np.isfinite(x)) for x in gathered.values())


def test_validation_with_a_short_batch_counts_each_prompt_once(two_process_run, demo_cache):
    """The 7-prompt validation (process 1: a batch of 2 and a short one of 1, padded by repeating its prompt)
    against greedy decoding of each prompt alone with the run's final parameters."""
    from shuffle_r1_jax.data.pipeline import PipelineConfig, prompt_batches
    from shuffle_r1_jax.rollout.generate import decode_responses
    from tests.train.toy_rewards import distinct_characters_of_color_answers

    _, (workdir, gathered, assets) = two_process_run
    (step,) = [m for m in _metrics(workdir) if m["step"] == 1]
    c = step_config(demo_cache, data=1, fsdp=1, tensor=1, num_devices=1)
    c.setup = ""
    c.model.checkpoint, c.data.train, c.data.val = assets["checkpoint"], assets["train"], assets["val"]
    c.rl.algorithm = "dapo"
    trainer = make_trainer(c, workdir)  # resumes the DAPO run's step-1 checkpoint
    try:
        for path, x in jax.tree_util.tree_leaves_with_path(trainer.params):
            np.testing.assert_array_equal(np.asarray(x), gathered[jax.tree_util.keystr(path)])
        prompts = prompt_batches(
            assets["val"],
            trainer.encoder,
            trainer.model_config,
            PipelineConfig(batch_size=1, seed=0, shuffle=False, num_epochs=1, drop_remainder=False),
            buckets=trainer.settings.data.buckets,
        )
        scores = []
        for batch in prompts:
            out = trainer.evaluator.greedy.sampler.generate(
                trainer.params,
                trainer.placer.prompts(batch.inputs),
                n=1,
                max_new_tokens=c.rollout.max_new_tokens,
                key=jax.random.key(0),
            )
            (response,) = decode_responses(trainer.encoder.tokenizer, np.asarray(out.tokens), np.asarray(out.mask))
            scores.append(distinct_characters_of_color_answers(response, batch.answers[0])["accuracy"])
    finally:
        trainer.close()
    assert len(scores) == 7 and len(set(scores)) > 1
    np.testing.assert_allclose(step["val/greedy_accuracy"], np.mean(scores), rtol=0, atol=1e-6)
