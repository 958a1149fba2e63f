"""TrainCheckpointer: bit-exact round trips, sharded restores, retention of the last N plus the best, errors,
that a process SIGKILLed at random moments while saving always leaves a restorable latest step, that a damaged
step is set aside (or refused), that a failed background save stops with one error naming step, path and
cause, and that a critic (PPO's value model) is saved and restored beside the policy."""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from orbax.checkpoint._src.path import atomicity

from shuffle_r1_jax.checkpoint.train_state import (
    CheckpointSaveError,
    DamagedCheckpointError,
    NoCriticError,
    TrainCheckpointer,
)
from shuffle_r1_jax.parallel.sharding import make_mesh
from tests.checkpoint import damage
from tests.train import checkpoint_kill_writer as writer

REPO_ROOT = Path(__file__).resolve().parents[2]


class _Tiny(nnx.Module):
    def __init__(self, width: int, rngs: nnx.Rngs):
        self.layers = nnx.List([nnx.Linear(8, width, rngs=rngs), nnx.Linear(width, 8, rngs=rngs)])

    def __call__(self, x):
        return self.layers[1](jax.nn.relu(self.layers[0](x)))


def _abstract_params(width: int = 16) -> nnx.State:
    return nnx.state(nnx.eval_shape(lambda: _Tiny(width, nnx.Rngs(0))), nnx.Param)


def _masked_adam() -> optax.GradientTransformation:
    kernels_only = lambda tree: jax.tree.map(lambda x: x.ndim == 2, tree)  # noqa: E731
    return optax.chain(optax.clip_by_global_norm(1.0), optax.masked(optax.adam(1e-2), kernels_only))


def _trained(tx: optax.GradientTransformation, steps: int = 2) -> tuple[nnx.State, optax.OptState]:
    """Parameters and optimizer state after a few updates, so every moment is non-trivial."""
    model = _Tiny(16, nnx.Rngs(1))
    graphdef, params = nnx.split(model, nnx.Param)
    opt_state = tx.init(params.to_pure_dict())
    x = jax.random.normal(jax.random.key(2), (4, 8))

    def loss(pure):
        state = jax.tree.map(lambda v: v, params)
        nnx.replace_by_pure_dict(state, pure)
        return jnp.mean(nnx.merge(graphdef, state)(x) ** 2)

    pure = params.to_pure_dict()
    for _ in range(steps):
        updates, opt_state = tx.update(jax.grad(loss)(pure), opt_state, pure)
        pure = optax.apply_updates(pure, updates)
    nnx.replace_by_pure_dict(params, pure)
    return params, opt_state


def _assert_trees_identical(actual, expected) -> None:
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert a.dtype == e.dtype and a.shape == e.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def _save(checkpointer, step, params, opt_state, *, metrics=None, best_score=None):
    return checkpointer.save(
        step, params, opt_state, jax.random.key(step), {"position": step}, best_score, metrics=metrics
    )


@pytest.mark.parametrize("make_tx", [lambda: optax.adamw(1e-2), _masked_adam], ids=["adamw", "masked_adam"])
def test_round_trip_is_bit_identical(tmp_path, make_tx):
    tx = make_tx()
    params, opt_state = _trained(tx)
    key = jax.random.split(jax.random.key(7))[1]
    with TrainCheckpointer(tmp_path) as checkpointer:
        assert checkpointer.save(12, params, opt_state, key, {"epoch": 1, "order": [3, 1, 2]}, 0.625)

    abstract = _abstract_params()
    with TrainCheckpointer(tmp_path) as checkpointer:
        assert checkpointer.latest_step() == 12
        restored = checkpointer.restore(
            abstract_params=abstract, abstract_opt_state=jax.eval_shape(tx.init, abstract.to_pure_dict())
        )
    assert restored.step == 12
    assert isinstance(restored.params, nnx.State)
    _assert_trees_identical(restored.params, params)
    _assert_trees_identical(restored.opt_state, opt_state)
    assert jax.random.key_impl(restored.rng_key) == jax.random.key_impl(key)
    np.testing.assert_array_equal(jax.random.key_data(restored.rng_key), jax.random.key_data(key))
    assert restored.data_state == {"epoch": 1, "order": [3, 1, 2]}
    assert restored.best_score == 0.625


def test_restore_onto_a_2x2x2_mesh(tmp_path):
    tx = optax.adamw(1e-2)
    params, opt_state = _trained(tx)
    with TrainCheckpointer(tmp_path) as checkpointer:
        _save(checkpointer, 3, params, opt_state)

    mesh = make_mesh(2, 2, 2)

    def sharded(leaf):
        spec = PartitionSpec("fsdp", "tensor") if leaf.ndim == 2 else PartitionSpec()
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=NamedSharding(mesh, spec))

    abstract = jax.tree.map(sharded, _abstract_params())
    abstract_opt = jax.tree.map(sharded, jax.eval_shape(tx.init, _abstract_params().to_pure_dict()))
    with TrainCheckpointer(tmp_path) as checkpointer:
        restored = checkpointer.restore(abstract_params=abstract, abstract_opt_state=abstract_opt)
    for got, target in zip(jax.tree.leaves(restored.params), jax.tree.leaves(abstract)):
        assert got.sharding == target.sharding
    for got, target in zip(jax.tree.leaves(restored.opt_state), jax.tree.leaves(abstract_opt)):
        assert got.sharding == target.sharding
    assert restored.params["layers"][0]["kernel"][...].sharding.spec == PartitionSpec("fsdp", "tensor")
    _assert_trees_identical(restored.params, params)
    _assert_trees_identical(restored.opt_state, opt_state)

    # Targets without shardings get the ones the arrays were saved with.
    with TrainCheckpointer(tmp_path) as checkpointer:
        _save(checkpointer, 4, restored.params, restored.opt_state)
        again = checkpointer.restore(abstract_params=_abstract_params(), abstract_opt_state=None)
    for got, target in zip(jax.tree.leaves(again.params), jax.tree.leaves(abstract)):
        assert got.sharding == target.sharding

    explicit = jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Explicit,))
    array = jax.device_put(jnp.zeros((8, 16)), NamedSharding(explicit, PartitionSpec("x")))
    abstract_mesh_target = jax.tree.map(lambda x: x, _abstract_params())
    abstract_mesh_target["layers"][0]["kernel"] = nnx.Param(jax.eval_shape(lambda: array))
    with TrainCheckpointer(tmp_path) as checkpointer:
        with pytest.raises(ValueError, match="parameter 'layers/0/kernel': its sharding .* is over an abstract mesh"):
            checkpointer.restore(abstract_params=abstract_mesh_target, abstract_opt_state=None)


def test_restore_without_optimizer_state(tmp_path):
    params, opt_state = _trained(optax.adamw(1e-2))
    with TrainCheckpointer(tmp_path) as checkpointer:
        _save(checkpointer, 1, params, opt_state)
        restored = checkpointer.restore(abstract_params=_abstract_params(), abstract_opt_state=None)
    assert restored.opt_state is None
    _assert_trees_identical(restored.params, params)


def test_optimizer_state_without_arrays_round_trips(tmp_path):
    tx = optax.sgd(1e-2)  # state: (EmptyState(), EmptyState())
    params, opt_state = _trained(tx, steps=1)
    with TrainCheckpointer(tmp_path) as checkpointer:
        _save(checkpointer, 1, params, opt_state)
        restored = checkpointer.restore(
            abstract_params=_abstract_params(), abstract_opt_state=jax.eval_shape(tx.init, params.to_pure_dict())
        )
    assert jax.tree.structure(restored.opt_state) == jax.tree.structure(opt_state)


@pytest.mark.parametrize("best_mode", ["max", "min"])
def test_retention_keeps_last_n_and_the_best(tmp_path, best_mode):
    params, opt_state = _trained(optax.adamw(1e-2), steps=1)
    sign = 1.0 if best_mode == "max" else -1.0
    scores = {1: 0.1, 2: 0.9, 3: 0.3, 4: 0.4, 5: None, 6: 0.6}  # step 5 was not validated
    with TrainCheckpointer(tmp_path, keep_last=3, best_mode=best_mode) as checkpointer:
        for step, score in scores.items():
            metrics = {"train/loss": 1.0} if score is None else {"val/accuracy": sign * score}
            assert _save(checkpointer, step, params, opt_state, metrics=metrics)
        checkpointer.wait_until_finished()
        assert checkpointer.all_steps() == [2, 4, 5, 6]
        assert checkpointer.best_step() == 2

    with TrainCheckpointer(tmp_path, keep_last=3, best_mode=best_mode) as checkpointer:
        assert checkpointer.all_steps() == [2, 4, 5, 6]
        assert checkpointer.best_step() == 2
        assert checkpointer.metrics(2) == {"val/accuracy": sign * 0.9}
        _save(checkpointer, 7, params, opt_state, metrics={"val/accuracy": sign * 0.95})
        checkpointer.wait_until_finished()
        assert checkpointer.all_steps() == [5, 6, 7]
        assert checkpointer.best_step() == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["5", "6", "7"]


def test_keep_best_off_keeps_only_the_last_n(tmp_path):
    params, opt_state = _trained(optax.adamw(1e-2), steps=1)
    with TrainCheckpointer(tmp_path, keep_last=2, keep_best=False) as checkpointer:
        for step in range(1, 5):
            _save(checkpointer, step, params, opt_state, metrics={"val/accuracy": 1.0 if step == 1 else 0.0})
        checkpointer.wait_until_finished()
        assert checkpointer.all_steps() == [3, 4]
        assert checkpointer.best_step() is None


def test_saved_arrays_may_be_donated_once_save_returns(tmp_path):
    params = {"w": jnp.arange(1 << 20, dtype=jnp.float32)}
    opt_state = {"m": jnp.full((1 << 20,), 3.0)}
    with TrainCheckpointer(tmp_path) as checkpointer:
        _save(checkpointer, 1, params, opt_state)
        params["w"].delete()
        opt_state["m"].delete()
        abstract = {"w": jax.ShapeDtypeStruct((1 << 20,), jnp.float32)}
        restored = checkpointer.restore(abstract_params=abstract, abstract_opt_state={"m": abstract["w"]})
    np.testing.assert_array_equal(restored.params["w"], np.arange(1 << 20, dtype=np.float32))
    np.testing.assert_array_equal(restored.opt_state["m"], np.full((1 << 20,), 3.0, np.float32))


def test_restore_casts_to_the_target_dtype(tmp_path):
    params, opt_state = _trained(optax.adamw(1e-2), steps=1)
    with TrainCheckpointer(tmp_path) as checkpointer:
        _save(checkpointer, 1, params, opt_state)
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.bfloat16), _abstract_params())
        restored = checkpointer.restore(abstract_params=abstract, abstract_opt_state=None)
    for got, saved in zip(jax.tree.leaves(restored.params), jax.tree.leaves(params)):
        assert got.dtype == jnp.bfloat16
        np.testing.assert_array_equal(got, saved.astype(jnp.bfloat16))


def test_steps_at_or_below_the_latest_are_not_saved(tmp_path):
    params, opt_state = _trained(optax.adamw(1e-2), steps=1)
    with TrainCheckpointer(tmp_path) as checkpointer:
        assert _save(checkpointer, 5, params, opt_state)
        assert not _save(checkpointer, 5, params, opt_state)
        assert not _save(checkpointer, 4, params, opt_state)
        assert checkpointer.all_steps() == [5]


def test_incomplete_saves_and_deletions_are_ignored_and_removed(tmp_path):
    params, opt_state = _trained(optax.adamw(1e-2), steps=1)
    with TrainCheckpointer(tmp_path) as checkpointer:
        _save(checkpointer, 1, params, opt_state)
        _save(checkpointer, 2, params, opt_state)
    # What a kill leaves: a step still being written, and a step renamed away for deletion but not yet removed.
    partial = tmp_path / "3.orbax-checkpoint-tmp-1234567"
    (partial / "params").mkdir(parents=True)
    (partial / "params" / "half_written").write_bytes(b"\0" * 10)
    (tmp_path / "_deleted" / "0").mkdir(parents=True)

    with TrainCheckpointer(tmp_path) as checkpointer:
        assert checkpointer.all_steps() == [1, 2]
        restored = checkpointer.restore(abstract_params=_abstract_params(), abstract_opt_state=None)
    assert restored.step == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


def test_restore_errors(tmp_path):
    with TrainCheckpointer(tmp_path / "empty") as checkpointer:
        with pytest.raises(FileNotFoundError, match="no complete checkpoint in"):
            checkpointer.restore(abstract_params=_abstract_params(), abstract_opt_state=None)

    tx = optax.adamw(1e-2)
    params, opt_state = _trained(tx, steps=1)
    with TrainCheckpointer(tmp_path / "run") as checkpointer:
        _save(checkpointer, 4, params, opt_state)
        with pytest.raises(FileNotFoundError, match=r"step 9 .* complete steps: \[4\]"):
            checkpointer.restore(9, abstract_params=_abstract_params(), abstract_opt_state=None)
        wide = _abstract_params(width=32)
        shapes = r"parameter 'layers/0/bias': checkpoint step 4 has shape \(16,\), the target expects \(32,\)"
        with pytest.raises(ValueError, match=shapes):
            checkpointer.restore(abstract_params=wide, abstract_opt_state=None)
        abstract = _abstract_params()
        other_optimizer = jax.eval_shape(_masked_adam().init, abstract.to_pure_dict())
        paths = r"optimizer state leaf paths of checkpoint step 4 do not match.*missing from the checkpoint: '1/inner"
        with pytest.raises(ValueError, match=paths):
            checkpointer.restore(abstract_params=abstract, abstract_opt_state=other_optimizer)


def test_save_errors(tmp_path):
    params, opt_state = _trained(optax.adamw(1e-2), steps=1)
    with TrainCheckpointer(tmp_path) as checkpointer:
        with pytest.raises(TypeError, match="new-style jax.random.key"):
            checkpointer.save(1, params, opt_state, jax.random.PRNGKey(0), {}, None)
        with pytest.raises(TypeError, match=r"data_state\['files'\] is not JSON-serialisable"):
            checkpointer.save(1, params, opt_state, jax.random.key(0), {"files": {1, 2}}, None)
        with pytest.raises(ValueError, match=r"metrics\['hist'\] must be a scalar"):
            checkpointer.save(1, params, opt_state, jax.random.key(0), {}, None, metrics={"hist": np.ones(3)})
        assert checkpointer.all_steps() == []
    with pytest.raises(ValueError, match="keep_last must be an integer >= 1, got 0"):
        TrainCheckpointer(tmp_path, keep_last=0)
    with pytest.raises(ValueError, match="best_mode must be 'max' or 'min', got 'best'"):
        TrainCheckpointer(tmp_path, best_mode="best")


def _assert_step_holds(checkpointer: TrainCheckpointer, step: int) -> None:
    abstract_params, abstract_opt = writer.abstract_targets()
    restored = checkpointer.restore(step, abstract_params=abstract_params, abstract_opt_state=abstract_opt)
    expected = writer.step_state(step)
    assert restored.step == step
    _assert_trees_identical(restored.params, jax.tree.map(jnp.asarray, expected["params"]))
    _assert_trees_identical(restored.opt_state, jax.tree.map(jnp.asarray, expected["opt_state"]))
    np.testing.assert_array_equal(jax.random.key_data(restored.rng_key), jax.random.key_data(expected["rng_key"]))
    assert restored.data_state == expected["data_state"]
    assert restored.best_score == expected["best_score"]


def test_sigkill_during_saves_leaves_a_restorable_latest_step(tmp_path):
    rounds = random.Random(0)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    latest = 0
    for _ in range(4):
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.train.checkpoint_kill_writer", str(tmp_path)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert process.stdout.readline().strip() == "ready"
            try:
                process.wait(timeout=rounds.uniform(0.05, 1.2))
            except subprocess.TimeoutExpired:
                pass
            assert process.poll() is None, "the writer stopped before it was killed"
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()

        with TrainCheckpointer(tmp_path, keep_last=writer.KEEP_LAST) as checkpointer:
            steps = checkpointer.all_steps()
            assert steps and steps[-1] > latest
            latest = steps[-1]
            for step in steps:
                _assert_step_holds(checkpointer, step)


DAMAGES = {
    "truncated_array": (damage.truncate_the_array_files, "ValueError: OUT_OF_RANGE"),
    "missing_opt_state": (damage.delete_the_optimizer_state, "the item 'opt_state' is missing"),
    "unreadable_meta": (damage.garble_the_meta, "JSONDecodeError"),
}


def _three_steps(directory: Path, tx: optax.GradientTransformation) -> tuple[nnx.State, optax.OptState]:
    params, opt_state = _trained(tx, steps=1)
    with TrainCheckpointer(directory) as checkpointer:
        for step in (1, 2, 3):
            _save(checkpointer, step, params, opt_state)
    return params, opt_state


def _targets(tx: optax.GradientTransformation) -> dict:
    abstract = _abstract_params()
    return dict(abstract_params=abstract, abstract_opt_state=jax.eval_shape(tx.init, abstract.to_pure_dict()))


@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_a_damaged_latest_step_is_moved_aside_and_the_newest_intact_one_restored(tmp_path, caplog, kind):
    tx = optax.adamw(1e-2)
    params, opt_state = _three_steps(tmp_path, tx)
    make_damage, cause = DAMAGES[kind]
    make_damage(tmp_path / "3")

    with caplog.at_level(logging.WARNING), TrainCheckpointer(tmp_path) as checkpointer:
        restored = checkpointer.restore(**_targets(tx))
        assert restored.step == 2 and restored.data_state == {"position": 2}
        _assert_trees_identical(restored.opt_state, opt_state)
        assert checkpointer.all_steps() == [1, 2]
        assert _save(checkpointer, 3, params, opt_state), "orbax still lists the damaged step"

    (moved,) = (tmp_path / "_damaged").iterdir()
    assert moved.name.startswith("3-") and (moved / "params").is_dir()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "damaged" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0].startswith(f"checkpoint step 3 at {tmp_path / '3'} is damaged: {cause}")
    assert warnings[0].endswith(f"moved it to {moved} and resumed from step 2")
    assert "tensorstore_spec" not in warnings[0]


def test_refuse_mode_names_the_damaged_step_and_moves_nothing(tmp_path):
    tx = optax.adamw(1e-2)
    _three_steps(tmp_path, tx)
    damage.truncate_the_array_files(tmp_path / "3")
    with TrainCheckpointer(tmp_path, on_damaged="refuse") as checkpointer:
        with pytest.raises(DamagedCheckpointError, match=f"^checkpoint step 3 at {tmp_path / '3'} is damaged: Value"):
            checkpointer.restore(**_targets(tx))
        assert checkpointer.all_steps() == [1, 2, 3]
    assert not (tmp_path / "_damaged").exists()
    with pytest.raises(ValueError, match="on_damaged must be one of"):
        TrainCheckpointer(tmp_path, on_damaged="skip")


def test_when_every_step_is_damaged_restore_stops_and_moves_nothing(tmp_path):
    tx = optax.adamw(1e-2)
    _three_steps(tmp_path, tx)
    for step in ("1", "2", "3"):
        damage.delete_the_optimizer_state(tmp_path / step)
    with TrainCheckpointer(tmp_path) as checkpointer:
        with pytest.raises(DamagedCheckpointError, match=f"every checkpoint step in {tmp_path} is damaged .*step 1 at"):
            checkpointer.restore(**_targets(tx))
        assert checkpointer.all_steps() == [1, 2, 3]
    assert not (tmp_path / "_damaged").exists()


def _fail_step_commits(monkeypatch, failures: int) -> list[str]:
    """Makes the next `failures` saves fail with ENOSPC in the background, where orbax writes the step's
    `commit_success.txt` once every item is written; returns the paths of the failed writes."""
    failed: list[str] = []
    original = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize_or_fail(self):
        if self._final_path.name.isdigit() and len(failed) < failures:
            failed.append(str(self.get() / "commit_success.txt"))
            raise OSError(errno.ENOSPC, "No space left on device", failed[-1])
        return await original(self)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", finalize_or_fail)
    return failed


def test_a_failed_background_save_raises_one_error_and_keeps_the_earlier_steps(tmp_path, monkeypatch):
    params, opt_state = _trained(optax.adamw(1e-2), steps=1)
    with TrainCheckpointer(tmp_path) as checkpointer:
        _save(checkpointer, 1, params, opt_state)
        checkpointer.wait_until_finished()
        _fail_step_commits(monkeypatch, failures=10)
        assert _save(checkpointer, 2, params, opt_state)
        expected = f"^checkpoint save of step 2 to {tmp_path} failed: \\[Errno 28\\] No space left on device: '"
        with pytest.raises(CheckpointSaveError, match=expected):
            for _ in range(600):  # the loop's non-blocking check sees the failure once the write has ended
                checkpointer.raise_if_a_save_failed()
                time.sleep(0.05)
        checkpointer.wait_until_finished()  # raised once
        assert checkpointer.all_steps() == [1]
    monkeypatch.undo()
    with TrainCheckpointer(tmp_path) as checkpointer:
        assert checkpointer.restore(abstract_params=_abstract_params(), abstract_opt_state=None).step == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]


def test_the_next_save_and_close_raise_a_failed_save(tmp_path, monkeypatch):
    params, opt_state = _trained(optax.adamw(1e-2), steps=1)
    checkpointer = TrainCheckpointer(tmp_path)
    _fail_step_commits(monkeypatch, failures=10)
    _save(checkpointer, 1, params, opt_state)
    with pytest.raises(CheckpointSaveError, match="checkpoint save of step 1 .* failed: \\[Errno 28\\]"):
        _save(checkpointer, 2, params, opt_state)  # raised before step 2 started
    assert _save(checkpointer, 2, params, opt_state)
    with pytest.raises(CheckpointSaveError, match="checkpoint save of step 2 .* failed: \\[Errno 28\\]"):
        checkpointer.close()
    assert not list(tmp_path.glob("[0-9]"))


def test_save_retries_retry_a_failed_save_with_a_warning_each(tmp_path, monkeypatch, caplog):
    params, opt_state = _trained(optax.adamw(1e-2), steps=1)
    failed = _fail_step_commits(monkeypatch, failures=1)
    with caplog.at_level(logging.WARNING), TrainCheckpointer(tmp_path, save_retries=1) as checkpointer:
        assert _save(checkpointer, 1, params, opt_state)
        assert checkpointer.all_steps() == [1]
    assert len(failed) == 1
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"checkpoint save of step 1 to {tmp_path} failed: [Errno 28] No space left on device")
    assert warning.endswith("retrying it (retry 1 of save_retries = 1)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]

    _fail_step_commits(monkeypatch, failures=10)
    with TrainCheckpointer(tmp_path, save_retries=2) as checkpointer:
        with pytest.raises(CheckpointSaveError, match="checkpoint save of step 2 .* failed: \\[Errno 28\\]"):
            _save(checkpointer, 2, params, opt_state)
        assert checkpointer.all_steps() == [1]
    with pytest.raises(ValueError, match="save_retries must be an integer >= 0, got -1"):
        TrainCheckpointer(tmp_path, save_retries=-1)


def _critic(tx: optax.GradientTransformation) -> tuple[dict, optax.OptState]:
    """A small value model's parameters (a plain dict, one bfloat16 leaf) and its optimizer state after two
    updates."""
    keys = jax.random.split(jax.random.key(11), 2)
    params = {
        "torso": {"kernel": jax.random.normal(keys[0], (8, 4))},
        "head": {"kernel": jax.random.normal(keys[1], (4, 1)), "bias": jnp.full((1,), 0.5, jnp.bfloat16)},
    }
    opt_state = tx.init(params)
    for scale in (1.0, -0.5):
        grads = jax.tree.map(lambda leaf: jnp.full_like(leaf, scale) + leaf, params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    return params, opt_state


def _critic_targets(tx: optax.GradientTransformation) -> dict:
    critic_params, _ = jax.eval_shape(lambda: _critic(tx))
    return dict(abstract_critic_params=critic_params, abstract_critic_opt_state=jax.eval_shape(tx.init, critic_params))


def _save_with_critic(checkpointer, step, params, opt_state, critic_params, critic_opt_state):
    return checkpointer.save(
        step,
        params,
        opt_state,
        jax.random.key(step),
        {"position": step},
        None,
        critic_params=critic_params,
        critic_opt_state=critic_opt_state,
    )


@pytest.mark.parametrize("make_critic_tx", [lambda: optax.adam(1e-2), lambda: optax.sgd(1e-2)], ids=["adam", "sgd"])
def test_round_trip_with_a_critic_is_bit_identical(tmp_path, make_critic_tx):
    tx, critic_tx = optax.adamw(1e-2), make_critic_tx()
    params, opt_state = _trained(tx)
    critic_params, critic_opt_state = _critic(critic_tx)
    with TrainCheckpointer(tmp_path) as checkpointer:
        assert _save_with_critic(checkpointer, 5, params, opt_state, critic_params, critic_opt_state)
    has_arrays = bool(jax.tree.leaves(critic_opt_state))  # sgd's state is empty: its item is left out
    assert (tmp_path / "5" / "critic_params").is_dir()
    assert (tmp_path / "5" / "critic_opt_state").is_dir() == has_arrays

    mesh = make_mesh(2, 2, 2)

    def sharded(leaf):
        spec = PartitionSpec("fsdp", "tensor") if leaf.ndim == 2 and leaf.shape[1] > 1 else PartitionSpec()
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=NamedSharding(mesh, spec))

    critic_targets = jax.tree.map(sharded, _critic_targets(critic_tx))
    with TrainCheckpointer(tmp_path) as checkpointer:
        restored = checkpointer.restore(**_targets(tx), **critic_targets)
    assert restored.step == 5 and restored.data_state == {"position": 5}
    _assert_trees_identical(restored.params, params)
    _assert_trees_identical(restored.opt_state, opt_state)
    _assert_trees_identical(restored.critic_params, critic_params)
    _assert_trees_identical(restored.critic_opt_state, critic_opt_state)
    assert restored.critic_params["head"]["bias"].dtype == jnp.bfloat16
    assert restored.critic_params["torso"]["kernel"].sharding.spec == PartitionSpec("fsdp", "tensor")
    restored_leaves = jax.tree.leaves((restored.critic_params, restored.critic_opt_state))
    target_leaves = jax.tree.leaves(
        (critic_targets["abstract_critic_params"], critic_targets["abstract_critic_opt_state"])
    )
    for got, target in zip(restored_leaves, target_leaves, strict=True):
        assert got.sharding == target.sharding


def test_a_step_saved_with_a_critic_restores_without_reading_it(tmp_path):
    tx, critic_tx = optax.adamw(1e-2), optax.adam(1e-2)
    params, opt_state = _trained(tx)
    with TrainCheckpointer(tmp_path) as checkpointer:
        _save_with_critic(checkpointer, 1, params, opt_state, *_critic(critic_tx))
    # The critic items are not read at all (a policy export of a PPO run's checkpoint).
    damage.truncate_the_array_files(tmp_path / "1", item="critic_params")
    damage.delete_the_optimizer_state(tmp_path / "1", item="critic_opt_state")
    with TrainCheckpointer(tmp_path, on_damaged="refuse") as checkpointer:
        restored = checkpointer.restore(**_targets(tx))
    assert restored.step == 1
    assert restored.critic_params is None and restored.critic_opt_state is None
    _assert_trees_identical(restored.params, params)
    _assert_trees_identical(restored.opt_state, opt_state)


@pytest.mark.parametrize("written_before_critics", [False, True], ids=["meta_has_critic_false", "meta_without_keys"])
def test_a_step_saved_without_a_critic_refuses_critic_targets(tmp_path, written_before_critics):
    tx, critic_tx = optax.adamw(1e-2), optax.adam(1e-2)
    params, opt_state = _three_steps(tmp_path, tx)
    meta_file = tmp_path / "3" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    assert meta["has_critic"] is False and meta["has_critic_opt_state"] is False
    if written_before_critics:
        del meta["has_critic"], meta["has_critic_opt_state"]
        meta_file.write_text(json.dumps(meta))

    with TrainCheckpointer(tmp_path) as checkpointer:
        expected = f"^checkpoint step 3 at {tmp_path / '3'} has no critic"
        with pytest.raises(NoCriticError, match=expected) as raised:
            checkpointer.restore(**_targets(tx), **_critic_targets(critic_tx))
        assert isinstance(raised.value, ValueError)
        critic_params_only = _critic_targets(critic_tx)["abstract_critic_params"]
        with pytest.raises(NoCriticError, match=expected):
            checkpointer.restore(3, **_targets(tx), abstract_critic_params=critic_params_only)
        with pytest.raises(ValueError, match="abstract_critic_opt_state was given without abstract_critic_params"):
            checkpointer.restore(
                **_targets(tx), abstract_critic_opt_state=_critic_targets(critic_tx)["abstract_critic_opt_state"]
            )
        assert checkpointer.all_steps() == [1, 2, 3]
        restored = checkpointer.restore(**_targets(tx))  # the policy alone still restores
    assert restored.step == 3 and restored.critic_params is None
    _assert_trees_identical(restored.opt_state, opt_state)
    assert not (tmp_path / "_damaged").exists()


CRITIC_DAMAGES = {
    "truncated_critic_params": (
        lambda step_dir: damage.truncate_the_array_files(step_dir, item="critic_params"),
        "ValueError: OUT_OF_RANGE",
    ),
    "missing_critic_params": (
        lambda step_dir: damage.delete_the_optimizer_state(step_dir, item="critic_params"),
        "the item 'critic_params' is missing",
    ),
    "missing_critic_opt_state": (
        lambda step_dir: damage.delete_the_optimizer_state(step_dir, item="critic_opt_state"),
        "the item 'critic_opt_state' is missing",
    ),
}


@pytest.mark.parametrize("kind", sorted(CRITIC_DAMAGES))
def test_a_damaged_critic_item_makes_the_step_damaged(tmp_path, caplog, kind):
    tx, critic_tx = optax.adamw(1e-2), optax.adam(1e-2)
    params, opt_state = _trained(tx, steps=1)
    critic_params, critic_opt_state = _critic(critic_tx)
    with TrainCheckpointer(tmp_path) as checkpointer:
        for step in (1, 2, 3):
            _save_with_critic(checkpointer, step, params, opt_state, critic_params, critic_opt_state)
    make_damage, cause = CRITIC_DAMAGES[kind]
    make_damage(tmp_path / "3")

    with TrainCheckpointer(tmp_path, on_damaged="refuse") as checkpointer:
        with pytest.raises(DamagedCheckpointError, match=f"^checkpoint step 3 at {tmp_path / '3'} is damaged: {cause}"):
            checkpointer.restore(**_targets(tx), **_critic_targets(critic_tx))
    with caplog.at_level(logging.WARNING), TrainCheckpointer(tmp_path) as checkpointer:
        restored = checkpointer.restore(**_targets(tx), **_critic_targets(critic_tx))
        assert restored.step == 2 and checkpointer.all_steps() == [1, 2]
    _assert_trees_identical(restored.critic_params, critic_params)
    _assert_trees_identical(restored.critic_opt_state, critic_opt_state)
    (moved,) = (tmp_path / "_damaged").iterdir()
    assert moved.name.startswith("3-")
    (warning,) = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "damaged" in r.getMessage()
    ]
    assert warning.startswith(f"checkpoint step 3 at {tmp_path / '3'} is damaged: {cause}")


def test_save_with_only_one_critic_argument_raises(tmp_path):
    params, opt_state = _trained(optax.adamw(1e-2), steps=1)
    critic_params, critic_opt_state = _critic(optax.adam(1e-2))
    with TrainCheckpointer(tmp_path) as checkpointer:
        with pytest.raises(ValueError, match="must be given together .*got only critic_params for step 1$"):
            _save_with_critic(checkpointer, 1, params, opt_state, critic_params, None)
        with pytest.raises(ValueError, match="must be given together .*got only critic_opt_state for step 1$"):
            _save_with_critic(checkpointer, 1, params, opt_state, None, critic_opt_state)
        assert checkpointer.all_steps() == []
