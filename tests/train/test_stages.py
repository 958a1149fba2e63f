"""Stages and the response-length schedule: phases by hand, the errors that name a stage, and a staged run
stopped in the middle of a stage that resumes to the parameters of an uninterrupted one."""

import jax
import numpy as np
import pytest

from shuffle_r1_jax.data.pass_rates import PassRateTable
from shuffle_r1_jax.rollout.generate import RolloutGenerator
from shuffle_r1_jax.train import settings
from shuffle_r1_jax.train.defaults import base_config
from shuffle_r1_jax.train.stages import StageError, plan_phases
from tests.train.conftest import make_trainer, tiny_trainer_config

TOY = "tests.train.toy_rewards:letter_a_fraction"


def _phases(plans):
    return [(p.stage, p.name, p.first_step, p.last_step, dict(p.overrides)) for p in plans]


def test_stages_and_a_length_schedule_cut_the_run_into_phases():
    stages = ("name=text; steps=3; data.train=text.parquet; data.images_column=", {"steps": 5, "reward.name": TOY})
    assert _phases(plan_phases(stages, (), 8, 64)) == [
        (0, "text", 0, 3, {"data.train": "text.parquet", "data.images_column": ""}),
        (1, "stage1", 3, 8, {"reward.name": TOY}),
    ]
    # the schedule's steps and the stage boundary together: 0-2 at 16, 2-3 at 32, 3-6 at 32 (stage 1), 6-8 at 64
    assert _phases(plan_phases(stages, ((0, 16), (2, 32), (6, 64)), 8, 64)) == [
        (0, "text", 0, 2, {"data.train": "text.parquet", "data.images_column": "", "rollout.max_new_tokens": 16}),
        (0, "text", 2, 3, {"data.train": "text.parquet", "data.images_column": "", "rollout.max_new_tokens": 32}),
        (1, "stage1", 3, 6, {"reward.name": TOY, "rollout.max_new_tokens": 32}),
        (1, "stage1", 6, 8, {"reward.name": TOY, "rollout.max_new_tokens": 64}),
    ]
    # a schedule alone: before its first step the configured length holds
    assert _phases(plan_phases((), ((4, 32),), 8, 64)) == [
        (0, "", 0, 4, {}),
        (0, "", 4, 8, {"rollout.max_new_tokens": 32}),
    ]
    assert plan_phases((), (), 8, 64) == ()


@pytest.mark.parametrize(
    "stages, schedule, message",
    [
        (("steps=3",), (), r"the stages' steps \[3\] add up to 3; train.total_steps = 8 must equal it"),
        (("steps=8; optim.learning_rate=0.1",), (), r"stages\[0\] \(stage0\) sets \['optim.learning_rate'\]"),
        (("name=a; data.train=x",), (), r"stages\[0\].steps = None must be an integer >= 1"),
        (("steps=8; data.train",), (), r"stages\[0\] = 'steps=8; data.train': expected 'key=value"),
        ((), ((0, 16), (0, 32)), r"rollout.length_schedule\[1\] = \(0, 32\): the first steps must increase"),
        ((), ((0, 128),), r"rollout.length_schedule\[0\] length = 128 must be an integer in \[1, rollout.max_new"),
        (
            ("steps=8; rollout.max_new_tokens=16",),
            ((0, 16),),
            r"stages\[0\] \(stage0\) sets rollout.max_new_tokens and",
        ),
    ],
)
def test_bad_stages_are_named(stages, schedule, message):
    with pytest.raises(StageError, match=message):
        plan_phases(stages, schedule, 8, 64)


def test_each_phase_resolves_with_its_values_and_errors_name_the_stage():
    c = base_config()
    c.train.total_steps = 100
    c.stages = ("name=short; steps=40; rollout.max_new_tokens=512", "steps=60; data.sampling=prioritized")
    resolved = settings.resolve(c, check_inputs=False)
    first, second = resolved.phases
    assert first.settings.rollout.max_new_tokens == 512 and first.settings.loss.logprob_chunk == 256
    assert first.settings.data.sampling.mode == "uniform" and second.settings.data.sampling.mode == "prioritized"
    assert second.settings.rollout.max_new_tokens == 2048 and resolved.rollout.max_new_tokens == 2048
    c.stages = ("steps=40", "steps=60; data.sampling=hardest")
    with pytest.raises(settings.ConfigError, match=r"stage 1 \(stage1\), steps 40-100: data.sampling = 'hardest'"):
        settings.resolve(c, check_inputs=False)


def _staged_config(demo_cache, val_file):
    c = tiny_trainer_config(demo_cache)
    c.train.total_steps = 3
    c.rollout.max_new_tokens = 8
    c.stages = (
        "name=short; steps=1; rollout.max_new_tokens=4",
        f"name=other_data; steps=2; data.train={val_file}; data.sampling=prioritized; reward.name={TOY}",
    )
    return c


def _fit(config, workdir, stop_after=None):
    class Stop(Exception):
        pass

    def after_step(step, metrics):
        if step == stop_after:
            raise Stop  # before the step's checkpoint: the latest saved step is the one before

    trainer = make_trainer(config, workdir)
    logged = {}
    try:
        trainer.fit(after_step=lambda step, m: (logged.update({step: m}), after_step(step, m)))
    except Stop:
        pass
    finally:
        trainer.close()
    return trainer, logged


@pytest.mark.slow
def test_a_staged_run_stopped_mid_stage_resumes_exactly(demo_cache, tmp_path, monkeypatch):
    """Also: every generated batch's pass rates reach the stage's table, which the checkpoint keeps."""
    probe = make_trainer(tiny_trainer_config(demo_cache), tmp_path / "probe")
    val_file = probe.settings.data.val
    probe.close()
    seen = []  # each generated batch's record indices and accuracies
    generate = RolloutGenerator.__call__

    def recorded(self, params, batch, key):
        scored = generate(self, params, batch, key)
        seen.append((batch.record_indices.copy(), np.asarray(scored.parts["accuracy"]).reshape(batch.batch_size, -1)))
        return scored

    monkeypatch.setattr(RolloutGenerator, "__call__", recorded)
    uninterrupted, logged = _fit(_staged_config(demo_cache, val_file), tmp_path / "uninterrupted")
    monkeypatch.undo()
    table = uninterrupted.train_batches.pass_rates
    expected = PassRateTable(len(table.rates), 0.5)
    for indices, accuracy in seen[1:]:  # the second stage's batches
        for index, row in zip(indices, accuracy):
            expected.observe(np.asarray([index]), np.asarray([row.sum() / len(row)]))
    assert len(seen) == 3
    np.testing.assert_allclose(table.rates, expected.rates)
    np.testing.assert_array_equal(table.visits, expected.visits)
    assert [logged[s]["stage"] for s in (1, 2, 3)] == [0, 1, 1]
    assert [logged[s]["rollout/max_new_tokens"] for s in (1, 2, 3)] == [4, 8, 8]
    assert logged[1]["response_length/max"] <= 4
    assert logged[3]["data/pass_rate/tracked"] > 0  # the second stage's prioritized stream

    stopped, _ = _fit(_staged_config(demo_cache, val_file), tmp_path / "stopped", stop_after=3)
    assert stopped.checkpointer.latest_step() == 2  # killed in the second stage, after its first step
    resumed, _ = _fit(_staged_config(demo_cache, val_file), tmp_path / "stopped")
    assert resumed.step == 3 and resumed.phase.name == "other_data"
    np.testing.assert_array_equal(resumed.train_batches.pass_rates.rates, uninterrupted.train_batches.pass_rates.rates)
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(uninterrupted.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
