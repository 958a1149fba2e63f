"""The trainer end to end on a tiny model: one step per algorithm, the spec's update arithmetic, config errors,
and resume after SIGKILL equal to an uninterrupted run."""

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from shuffle_r1_jax.rewards.health import RewardHealthError
from shuffle_r1_jax.rl.algorithms import ALGORITHMS
from shuffle_r1_jax.rollout.metrics import rollout_metrics
from shuffle_r1_jax.train import settings
from shuffle_r1_jax.train.defaults import base_config
from shuffle_r1_jax.train.export import export_trainer_checkpoint
from tests.checkpoint import damage
from tests.train.conftest import kill_after_step_2, make_trainer, tiny_trainer_config


def _run(config, workdir, **kwargs):
    trainer = make_trainer(config, workdir, **kwargs)
    try:
        summary = trainer.fit()
        return trainer.params, summary, trainer
    finally:
        trainer.close()


@pytest.mark.slow
# they train in the tests below
@pytest.mark.parametrize("algorithm", sorted(set(ALGORITHMS) - {"ppo", "vc_ppo", "cppo"}))
def test_one_step_of_every_algorithm(algorithm, demo_cache, tmp_path, request):
    if algorithm == tiny_trainer_config(demo_cache).rl.algorithm:
        params, summary, trainer, workdir = request.getfixturevalue("default_step")
    else:
        c = tiny_trainer_config(demo_cache)
        c.rl.algorithm = algorithm
        c.train.total_steps = 1
        (params, summary, trainer), workdir = _run(c, tmp_path), tmp_path
    assert summary.steps == 1
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"pg_loss"' in lines[0] and '"advantage/collapse_before"' in lines[0]
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(params))
    assert trainer.checkpointer.latest_step() == 1


@pytest.mark.slow
def test_a_cppo_step_fills_its_update_batch_from_two_prompt_batches(demo_cache, tmp_path):
    """n = 4, prune 0.5: k = 2, so the step generates two prompt batches of 4 prompts, merges them into one rollout
    batch of 8 groups, and the update trains on 2 of each: 16 rows, GRPO's 4 x 4, in 2 mini-batches of 8."""
    import dataclasses

    seen = {}

    def instrument(programs):
        def select(rollout_advantages, key):
            rows, valid, stats = programs.select(rollout_advantages, key)
            seen["groups"], seen["rows"] = rollout_advantages.shape, [r.shape[0] for r in rows]
            return rows, valid, stats

        return dataclasses.replace(programs, select=select)

    c = tiny_trainer_config(demo_cache)
    c.rl.algorithm = "cppo"
    c.train.total_steps = 1
    params, summary, _ = _run(c, tmp_path, instrument=instrument)
    assert summary.steps == 1
    assert seen == {"groups": (8, 4), "rows": [8, 8]}
    (metrics,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert metrics["cppo/prompt_batches"] == 2.0 and "pg_loss" in metrics and "advantage/collapse_before" in metrics
    assert metrics["data/records_read"] - metrics["data/bad_records/total"] == 8  # two batches of 4 prompts
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(params))


def test_a_frozen_vision_tower_runs_once_per_step(demo_cache, tmp_path, monkeypatch):
    """The sampler's image features are the update's (same parameters): one vision pass per step, not two."""
    import dataclasses

    from shuffle_r1_jax.sampling import sampler as sampler_module

    calls = []

    def counted(original):
        def run(*args):
            calls.append(args[-1].patches.shape)
            return original(*args)

        return run

    monkeypatch.setattr(sampler_module, "image_features_jit", counted(sampler_module.image_features_jit))

    def instrument(programs):
        return dataclasses.replace(programs, image_features=counted(programs.image_features))

    c = tiny_trainer_config(demo_cache)
    assert c.optim.freeze_vision
    c.train.total_steps = 2
    _, summary, _ = _run(c, tmp_path, instrument=instrument)
    assert summary.steps == 2 and len(calls) == 2


@pytest.mark.slow
@pytest.mark.parametrize("remat", ["full", "dots"])
def test_a_step_with_remat_equals_one_without(remat, demo_cache, default_step, tmp_path):
    """Every pass of the step (sampling, old log-probs, update) runs with rematerialised layers, to the same result
    (the shared default step has no remat)."""
    c = tiny_trainer_config(demo_cache)
    assert c.model.remat == "none"
    c.model.remat = remat
    c.train.total_steps = 1
    params = {"none": default_step[0]}
    params[remat], _, _ = _run(c, tmp_path / remat)
    for a, b in zip(jax.tree.leaves(params["none"]), jax.tree.leaves(params[remat])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


@pytest.mark.slow
def test_a_packed_step_equals_a_padded_one(demo_cache, default_step, tmp_path):
    """The trainer's packing plans reach the right passes: old log-probs and updates packed (fewer rows than
    sequences; the shared default step packs) give the parameters of padded passes."""
    c = tiny_trainer_config(demo_cache)
    assert c.train.pack_sequences
    c.train.pack_sequences = False
    c.train.total_steps = 1
    params = {True: default_step[0]}
    params[False], _, _ = _run(c, tmp_path)
    metrics = {
        packed: [json.loads(line) for line in (workdir / "metrics.jsonl").open()]
        for packed, workdir in ((True, default_step[3]), (False, tmp_path))
    }
    packing = [m["packing/update_rows"] for m in metrics[True] if "packing/update_rows" in m]
    assert packing and packing[0] < 1.0
    for a, b in zip(jax.tree.leaves(params[False]), jax.tree.leaves(params[True])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


@pytest.mark.slow
def test_rerunning_a_finished_workdir_reports_the_same_summary(demo_cache, tmp_path):
    c = tiny_trainer_config(demo_cache)
    c.train.total_steps = 1
    c.eval.before_training, c.eval.every, c.eval.max_prompts = True, 1, 4
    _, first, _ = _run(c, tmp_path)
    assert first.start_accuracy is not None and first.end_accuracy is not None
    _, again, _ = _run(c, tmp_path)  # resumes at the last step: nothing left to train or validate
    assert again == first


@pytest.mark.slow
def test_bf16_compute_keeps_fp32_master_parameters_and_optimizer_state(demo_cache, tmp_path):
    """DESIGN decision 6: with model.dtype bfloat16 the trained parameters and AdamW moments stay float32 (an
    update of lr 1e-6 would round away in bf16 weights)."""
    c = tiny_trainer_config(demo_cache)
    c.model.dtype = "bfloat16"
    c.train.total_steps = 1
    params, summary, trainer = _run(c, tmp_path)
    assert summary.steps == 1
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    moments = [x for x in jax.tree.leaves(trainer.opt_state) if getattr(x, "ndim", 0) > 0]
    assert moments and {x.dtype for x in moments} == {jnp.dtype(jnp.float32)}
    c.model.param_dtype = "float16"
    with pytest.raises(settings.ConfigError, match="model.param_dtype = 'float16'"):
        make_trainer(c, tmp_path / "bad")


def test_update_arithmetic_matches_the_paper():
    """512 prompts x 16 rollouts, alpha 0.5, S = 8, mini-batches of 128 prompts: 4 optimizer steps per rollout
    batch; Shuffle-R1 trains on 512 x 8 = 4096 rows (1024 per step), GRPO on 8192 (2048 per step), CPPO with its fill
    on the 8 kept of 16 of two prompt batches (2048 per step), without it on 1024."""
    c = base_config()
    for algorithm, fill, rows_per_step in (
        ("shuffle_r1", 1, 1024),
        ("grpo", 1, 2048),
        ("pts_only", 1, 1024),
        ("cppo", 2, 2048),
        ("cppo_no_fill", 1, 1024),
    ):
        c.rl.algorithm = algorithm.removesuffix("_no_fill")
        c.rl.cppo_fill = not algorithm.endswith("_no_fill")
        run = settings.resolve(c, check_inputs=False)
        assert run.train.num_minibatches == 4 and run.rl.fill_batches == fill
        assert 128 * run.rl.update_rows_per_prompt == rows_per_step
        assert run.train.micro_batches == rows_per_step // c.train.micro_batch_rows
        assert run.train.logprob_micro_batch_rows == c.train.micro_batch_rows
    assert 512 * 8 // 2 // c.rl.abs_rounds == 256  # pairs per ABS round; 8 rounds x 256 pairs = 4096 rows


@pytest.mark.parametrize(
    "edit, message",
    [
        (dict(algorithm="shuffle_r1", n=5), "rollout.n = 5 is odd"),
        (dict(algorithm="a2c"), "rl.algorithm = 'a2c' is unknown"),
        (dict(prompts=3, n=2, mini=1), r"3 x 2 = 6 rows\) does not divide over the 8 batch shards"),
        (dict(mini=3), "train.minibatch_prompts = 3 must divide"),
        (
            dict(per_call=48),
            r"rollout.prompts_per_sampler_call = 48 must be 0 \(the whole batch\) or divide "
            "data.rollout_batch_prompts = 512",
        ),
        (dict(per_call=4), r"rollout.prompts_per_sampler_call = 4 must be a multiple of the 8 batch shards"),
        (dict(decode_block=0), "rollout.decode_block = 0 must be >= 1"),
        (dict(decode_stages=0), "rollout.decode_stages = 0 must be >= 1"),
    ],
)
def test_config_errors_name_the_key(edit, message):
    c = base_config()
    c.rl.algorithm = edit.get("algorithm", "grpo")
    c.rollout.n = edit.get("n", 16)
    c.data.rollout_batch_prompts = edit.get("prompts", 512)
    c.train.minibatch_prompts = edit.get("mini", 128)
    c.rollout.prompts_per_sampler_call = edit.get("per_call", 0)
    c.rollout.decode_block = edit.get("decode_block", 64)
    c.rollout.decode_stages = edit.get("decode_stages", 6)
    with pytest.raises(settings.ConfigError, match=message):
        settings.resolve(c, check_inputs=False)


def test_a_reward_module_that_fails_to_import_is_named_before_the_model_loads(demo_cache):
    c = tiny_trainer_config(demo_cache)
    c.reward.name = "tests.rewards.failing_import:reward"
    message = (
        "reward.name = 'tests.rewards.failing_import:reward': cannot import module 'tests.rewards.failing_import' "
        "of reward 'tests.rewards.failing_import:reward': RuntimeError: the grader's tables are missing"
    )
    with pytest.raises(settings.ConfigError, match=re.escape(message)):
        settings.prepare(c)


def test_reward_options_and_columns_the_reward_does_not_take_are_named_before_the_model_loads(demo_cache):
    c = tiny_trainer_config(demo_cache)
    c.reward.name = "tests.rewards.faulty_rewards:context_reward"
    c.reward.options = {"scale": 2.0}
    c.data.reward_columns = ("difficulty",)
    with pytest.raises(settings.ConfigError, match=r"data.reward_columns \['difficulty'\] are not arguments of"):
        settings.prepare(c)
    c.data.reward_columns = ()
    c.reward.options = {"scale": 2.0, "shift": 1.0}
    with pytest.raises(settings.ConfigError, match=r"reward.options \['shift'\] are not arguments of the reward"):
        settings.prepare(c)
    c.reward.options = {"scale": 2.0}
    assert settings.prepare(c)[1].reward.options == (("scale", 2.0),)


def test_micro_batches_that_do_not_split_over_the_devices_are_warned_about(caplog):
    c = base_config()
    c.train.micro_batch_rows = 4
    settings.resolve(c, check_inputs=False)
    assert "train.micro_batch_rows = 4 (4 rows per micro-batch) is not a multiple of the 8 batch shards" in caplog.text
    caplog.clear()
    c.train.micro_batch_rows = 8
    settings.resolve(c, check_inputs=False)
    assert "micro_batch_rows" not in caplog.text


CONFIG_FILE = """
from tests.train.conftest import tiny_trainer_config

def get_config():
    c = tiny_trainer_config({cache!r})
    c.train.total_steps = {steps}
    c.rl.algorithm = {algorithm!r}
    c.rl.selector = {selector!r}
    return c
"""


def _ppo_config(cache, steps):
    c = _config(cache, steps)
    c.rl.algorithm, c.rl.selector = "ppo", "pts_abs"
    return c


@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_run(demo_cache, tmp_path):
    """PPO with Shuffle-R1's selection: the whole state (the policy, the critic, both optimizer states, the ABS
    draws' key and the data position) resumes exactly; shuffle_r1's path is this one with GRPO's (stateless)
    advantages."""
    steps = 5
    _, _, uninterrupted = _run(_ppo_config(demo_cache, steps), tmp_path / "uninterrupted")

    config_file = tmp_path / "tiny_config.py"
    config_file.write_text(CONFIG_FILE.format(cache=demo_cache, steps=steps, algorithm="ppo", selector="pts_abs"))
    workdir = tmp_path / "killed"
    kill_after_step_2(config_file, workdir, max_delay=1.5)  # somewhere in step 3, 4 or a save

    _, summary, resumed = _run(_ppo_config(demo_cache, steps), workdir)
    assert summary.steps == steps
    for state in ("params", "opt_state", "critic_params", "critic_opt_state"):
        for a, b in zip(jax.tree.leaves(getattr(resumed, state)), jax.tree.leaves(getattr(uninterrupted, state))):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6, err_msg=state)


@pytest.mark.slow
def test_value_pretraining_trains_the_critic_only_and_lowers_its_error_on_the_first_batch(demo_cache, tmp_path):
    from shuffle_r1_jax.experiments.value_pretraining import measure_value_pretraining

    c = tiny_trainer_config(demo_cache)
    c.reward.name = "tests.train.toy_rewards:letter_a_fraction"  # graded rewards: returns that are not all equal
    c.rl.algorithm = "vc_ppo"
    c.critic.pretrain_steps = 3
    c.critic.learning_rate = 3e-3
    c.train.total_steps = 4
    trainer = make_trainer(c, tmp_path)
    try:
        effect = measure_value_pretraining(trainer)
        assert not effect.policy_moved and effect.steps == 3
        assert effect.error_after < 0.5 * effect.error_before, effect
        before = jax.device_get(trainer.params)
        last = trainer.train_step()
        assert last["critic/pretraining"] == 0.0 and "pg_loss" in last
        moved = [np.any(np.asarray(a) != b) for a, b in zip(jax.tree.leaves(trainer.params), jax.tree.leaves(before))]
        assert any(moved)
    finally:
        trainer.close()


@pytest.mark.slow
def test_resume_sets_a_damaged_latest_step_aside_and_continues_from_the_intact_one(demo_cache, tmp_path, caplog):
    steps = 3
    reference, _, _ = _run(_config(demo_cache, steps), tmp_path)
    checkpoints = tmp_path / "checkpoints"
    for make_damage in (damage.truncate_the_array_files, damage.delete_the_optimizer_state):
        make_damage(checkpoints / "3")
        caplog.clear()
        with caplog.at_level(logging.INFO):
            resumed, summary, _ = _run(_config(demo_cache, steps), tmp_path)
        assert summary.steps == steps
        assert f"resumed from step 2 ({checkpoints})" in caplog.text
        (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "damaged" in r.message]
        assert warning.startswith(f"checkpoint step 3 at {checkpoints / '3'} is damaged: ")
        for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(reference)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    moved = sorted((checkpoints / "_damaged").iterdir())
    assert [path.name[:2] for path in moved] == ["3-", "3-"]
    assert all((path / "params").is_dir() for path in moved)


DISK_FULL_CONFIG_FILE = """
import errno

from orbax.checkpoint._src.path import atomicity

from tests.train.conftest import tiny_trainer_config

_finalize = atomicity.AtomicRenameTemporaryPath.finalize


async def _disk_full_at_step_2(self):
    # orbax writes the step's commit_success.txt in the background once every item is written
    if self._final_path.name == "2":
        raise OSError(errno.ENOSPC, "No space left on device", str(self.get() / "commit_success.txt"))
    return await _finalize(self)


atomicity.AtomicRenameTemporaryPath.finalize = _disk_full_at_step_2


def get_config():
    c = tiny_trainer_config({cache!r})
    c.train.total_steps = 4
    return c
"""


@pytest.mark.slow
def test_a_failed_checkpoint_save_stops_the_run_with_one_line(demo_cache, tmp_path):
    """The disk fills while step 2's checkpoint is written in the background: the run stops before training on
    past the next step, with one line naming the step, the path and ENOSPC, and no traceback."""
    config_file = tmp_path / "disk_full_config.py"
    config_file.write_text(DISK_FULL_CONFIG_FILE.format(cache=demo_cache))
    workdir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    done = subprocess.run(
        [sys.executable, "-m", "shuffle_r1_jax.train", "--config", str(config_file), "--workdir", str(workdir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    checkpoints = workdir / "checkpoints"
    partial = checkpoints / "2.orbax-checkpoint-tmp" / "commit_success.txt"
    assert done.returncode == 2, done.stderr[-3000:]
    trained = len((workdir / "metrics.jsonl").read_text().splitlines())
    assert trained <= 3
    assert done.stderr.splitlines()[-1] == (
        f"error: checkpoint save of step 2 to {checkpoints} failed: [Errno 28] No space left on device: '{partial}' "
        f"(the run stopped after training step {trained}; the latest saved step is 1) "
        f"(traceback in {workdir / 'run.log'})"
    )
    assert "Traceback" not in done.stderr
    assert sorted(path.name for path in checkpoints.iterdir() if path.name.isdigit()) == ["1"]


def _config(cache, steps):
    c = tiny_trainer_config(cache)
    c.train.total_steps = steps
    return c


def _config_file(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "configs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "arg, checkpoint, n, steps",
    [
        (None, "Qwen/Qwen2.5-VL-3B-Instruct", 16, 80),
        ("algorithm=cppo", "Qwen/Qwen2.5-VL-3B-Instruct", 8, 80),  # fills two prompt batches, keeps 4 of 8 each
        ("model=7b,dataset=geo3k", "Qwen/Qwen2.5-VL-7B-Instruct", 16, 80),
        ("model=7b,dataset=mmrl30k,algorithm=grpo", "Qwen/Qwen2.5-VL-7B-Instruct", 8, 1160),
    ],
)
def test_the_paper_config_takes_arguments(arg, checkpoint, n, steps):
    c = _config_file("shuffle_r1_paper").get_config(arg)
    assert set(c.keys()) == set(base_config().keys())
    run = settings.resolve(c, check_inputs=False)
    assert run.model.checkpoint == checkpoint and run.rollout.n == n and run.train.total_steps == steps
    assert run.train.num_minibatches == 4 and run.rollout.prompts_per_sampler_call == 32
    assert 128 * run.rl.update_rows_per_prompt == 1024  # the paper's update rows per optimizer step, any algorithm
    # the official code's choices: mathruler grader, no dual clip, validation top-p of the rollouts
    assert (run.reward.name, run.loss.dual_clip, run.eval.top_p) == ("math_official", None, 0.99)
    assert (run.loss.agg_mode, run.loss.agg_group_rows, run.rl.selection.update_chunks) == ("micro-token-mean", 4, 8)
    assert run.rl.selection.single_round == "all_pairs" and run.data.prompt_format == "math_official"
    with pytest.raises(
        settings.ConfigError, match="model.checkpoint = 'Qwen/Qwen2.5-VL-3B-Instruct' has no config.json"
    ):
        settings.resolve(_config_file("shuffle_r1_paper").get_config())


@pytest.mark.parametrize(
    "arg, message",
    [("model=13b", "model='13b'; expected one of"), ("epochs=3", "key one of"), ("model", "expected key=value")],
)
def test_bad_paper_config_arguments_are_named(arg, message):
    with pytest.raises(ValueError, match=message):
        _config_file("shuffle_r1_paper").get_config(arg)


def test_the_setup_hook_sets_the_keys_it_returns_and_names_a_bad_one():
    c = base_config()
    c.setup = "tests.train.toy_setups:points_at_elsewhere"
    after = settings.run_setup(c)
    assert (after.model.checkpoint, after.data.train) == ("/elsewhere/checkpoint", "/elsewhere/train.parquet")
    assert c.model.checkpoint == ""  # the given config is left as it was
    c.setup = "tests.train.toy_setups:sets_a_missing_key"
    with pytest.raises(settings.ConfigError, match="no config key 'no_such_key' in model"):
        settings.run_setup(c)
    c.setup = "tests.train.toy_setups:not_there"
    with pytest.raises(settings.ConfigError, match="setup 'tests.train.toy_setups:not_there'"):
        settings.resolve(c, check_inputs=False)


@pytest.mark.parametrize(
    "algorithm, fixed",
    [
        ("dapo", dict(clip_high=0.28, agg_mode="token-mean")),
        ("dr_grpo", dict(clip_high=0.2, agg_mode="seq-mean-token-sum-norm")),
        ("abs_only", dict(clip_high=0.2, agg_mode="token-mean")),
    ],
)
def test_an_algorithm_fixes_its_loss_and_selection_values(algorithm, fixed):
    c = base_config()
    c.rl.algorithm = algorithm
    c.loss.agg_mode = "seq-mean-token-mean"  # the algorithm's own value wins where it fixes one
    run = settings.resolve(c, check_inputs=False)
    for key, value in fixed.items():
        expected = "seq-mean-token-mean" if key == "agg_mode" and algorithm == "abs_only" else value
        assert getattr(run.loss, key) == expected
    assert run.rl.selection.keep_ratio == (1.0 if algorithm == "abs_only" else 0.5)


def test_opmd_resolves_its_loss_kind_with_the_configured_tau():
    c = base_config()
    c.rl.algorithm = "opmd"
    c.loss.opmd_tau = 0.25
    run = settings.resolve(c, check_inputs=False)
    assert (run.loss.loss_kind, run.loss.opmd_tau, run.rl.estimator) == ("opmd", 0.25, "dr_grpo")
    c.rl.algorithm = "dr_grpo"
    assert settings.resolve(c, check_inputs=False).loss.loss_kind == "ppo"


@pytest.mark.parametrize(
    "algorithm, keys, gae, pretrain",
    [
        ("ppo", {}, (1.0, 1.0, 1.0), 0),
        ("ppo", {"rl.gae_lambda": 0.9}, (1.0, 0.9, 0.9), 0),
        ("ppo", {"rl.critic_lambda": 0.8, "rl.gamma": 0.99}, (0.99, 1.0, 0.8), 0),
        ("vc_ppo", {}, (1.0, 0.95, 1.0), 10),
        ("vc_ppo", {"rl.gae_lambda": 0.9, "rl.critic_lambda": 0.5, "critic.pretrain_steps": 3}, (1.0, 0.9, 1.0), 3),
        ("orz_ppo", {"rl.gamma": 0.9, "rl.gae_lambda": 0.5, "loss.kl_coef": 0.1}, (1.0, 1.0, 1.0), 0),
    ],
)
def test_value_based_algorithms_resolve_their_gae_and_critic(algorithm, keys, gae, pretrain):
    c = base_config()
    c.rl.algorithm = algorithm
    for key, value in keys.items():
        settings.set_key(c, key, value)
    run = settings.resolve(c, check_inputs=False)
    assert (run.rl.gae.gamma, run.rl.gae.actor_lam, run.rl.gae.critic_lam) == gae
    assert run.critic.pretrain_steps == pretrain and run.rl.estimator == "gae"
    assert run.critic.optimizer.learning_rate == c.critic.learning_rate and run.critic.loss.value_clip == 0.5
    assert run.loss.kl_coef == (0.0 if algorithm == "orz_ppo" else c.loss.kl_coef)
    c.rl.algorithm = "grpo"
    assert settings.resolve(c, check_inputs=False).critic is None


@pytest.mark.parametrize(
    "algorithm, keys, buffer",
    [
        ("dapo", {}, 2048 // 5),
        ("dapo", {"rollout.max_new_tokens": 20480}, 4096),  # the paper's
        ("dapo", {"reward.overlong_buffer": 0}, 0),
        ("grpo", {}, 0),
        ("ppo", {}, 0),
        ("grpo", {"reward.overlong_buffer": 512, "reward.overlong_factor": 0.5}, 512),
    ],
)
def test_the_overlong_buffer_is_the_algorithms_unless_given(algorithm, keys, buffer):
    c = base_config()
    c.rl.algorithm = algorithm
    for key, value in keys.items():
        settings.set_key(c, key, value)
    run = settings.resolve(c, check_inputs=False)
    assert run.reward.overlong_buffer == buffer
    assert run.reward.overlong_factor == keys.get("reward.overlong_factor", 1.0)
    assert run.rl.mask_truncated is False


@pytest.mark.slow
def test_overlong_shaping_is_logged_and_truncated_rows_leave_the_loss(demo_cache, tmp_path):
    """A buffer over the whole response range punishes every response (-length / max_new_tokens); with
    rl.mask_truncated the policy loss counts exactly the responses that stopped on their own."""
    from shuffle_r1_jax.sampling import FINISH_LENGTH
    from shuffle_r1_jax.train.trainer import StepKeys

    c = tiny_trainer_config(demo_cache)
    c.rl.algorithm = "grpo"
    c.reward.overlong_buffer = c.rollout.max_new_tokens
    c.rl.mask_truncated = True
    trainer = make_trainer(c, tmp_path)
    try:
        keys = StepKeys.at(trainer.base_key, 0)
        scored, _ = trainer.collect_rollouts(next(trainer.train_batches), keys)
        timings = {}
        with jax.set_mesh(trainer.mesh):
            update_batch = trainer.targets(scored, keys.select, timings)
            updates = trainer.optimize(scored, update_batch, timings)
        metrics = trainer.log_metrics(scored, update_batch, updates, timings, time.perf_counter())
    finally:
        trainer.close()
    lengths = trainer.placer.local(scored.rollouts.mask).sum(1)
    assert metrics["reward/overlong_penalty"] < 0
    np.testing.assert_allclose(
        metrics["reward/overlong_penalty"], np.mean(-lengths / c.rollout.max_new_tokens), atol=1e-6
    )
    assert metrics["reward/overlong_band_ratio"] == 1.0
    truncated = np.asarray(scored.finish) == FINISH_LENGTH
    np.testing.assert_array_equal(trainer.placer.local(update_batch.targets.loss_rows), ~truncated)
    # the tiny model never stops within 8 tokens: every row is truncated, so the policy loss counts no token
    assert truncated.all() and metrics["response_length/clip_ratio"] == 1.0
    assert metrics["pg_loss"] == 0.0 and metrics["grad_norm"] == 0.0


def test_a_critic_checkpoint_of_another_size_is_refused_before_anything_loads(demo_cache, tmp_path):
    from shuffle_r1_jax.demo.tiny_checkpoint import make_tiny_checkpoint

    c = tiny_trainer_config(demo_cache)
    c.rl.algorithm = "ppo"
    c.critic.checkpoint = str(tmp_path / "missing")
    with pytest.raises(settings.ConfigError, match="critic.checkpoint = .*missing' has no config.json"):
        settings.prepare(c)
    make_tiny_checkpoint(tmp_path / "demo_size", "demo")  # the tests' model is the "test" preset
    c.critic.checkpoint = str(tmp_path / "demo_size")
    with pytest.raises(settings.ConfigError, match="cannot read the policy's image features"):
        settings.prepare(c)
    c.critic.share_image_features = False
    settings.prepare(c)


def test_ppo_takes_shuffle_r1s_selection_by_rl_selector():
    c = base_config()
    c.rl.algorithm = "ppo"
    c.rl.selector = "pts_abs"
    run = settings.resolve(c, check_inputs=False)
    assert run.rl.selection.selection == "pts_abs" and run.rl.gae is not None
    c.rollout.n = 5
    with pytest.raises(settings.ConfigError, match="rollout.n = 5 is odd.*selector 'pts_abs'"):
        settings.resolve(c, check_inputs=False)


def test_cppo_fill_follows_the_cppo_selector_and_is_refused_beside_dapos_refill():
    """The fill merges ceil(n / k) prompt batches wherever the "cppo" selector prunes (rl.selector too), none for
    the other selectors; DAPO's own refill and the fill together are named."""
    c = base_config()
    c.rollout.n, c.rl.cppo_prune = 8, 0.3  # k = int(8 x 0.7) = 5: m = 2 batches, 10 rows per prompt (not trimmed)
    for algorithm, selector, fill, per_prompt in (("cppo", "", 2, 10), ("grpo", "cppo", 2, 10), ("grpo", "", 1, 8)):
        c.rl.algorithm, c.rl.selector = algorithm, selector
        run = settings.resolve(c, check_inputs=False)
        assert (run.rl.fill_batches, run.rl.update_rows_per_prompt) == (fill, per_prompt)
    c.rl.algorithm, c.rl.cppo_prune = "cppo", 0.0  # nothing pruned, nothing to fill
    assert settings.resolve(c, check_inputs=False).rl.fill_batches == 1
    c.rl.algorithm, c.rl.selector = "dapo", "cppo"
    with pytest.raises(settings.ConfigError, match="rl.cppo_fill = True with rl.algorithm = 'dapo'"):
        settings.resolve(c, check_inputs=False)
    c.rl.cppo_fill = False
    assert settings.resolve(c, check_inputs=False).rl.fill_batches == 1


def test_the_demo_config_file_resolves_without_building_anything(tmp_path):
    c = _config_file("demo").get_config()
    c.demo.cache_dir = str(tmp_path / "cache")
    run = settings.resolve(c, check_inputs=False)
    assert run.rl.selection.selection == "pts_abs" and run.data.rollout_batch_prompts == 16
    assert not (tmp_path / "cache").exists()
    with pytest.raises(settings.ConfigError, match="model.checkpoint is empty"):
        settings.resolve(c)


@pytest.mark.slow
def test_training_raises_a_learnable_reward(demo_cache, tmp_path):
    """End to end, the trainer must improve the policy: a reward for emitting the letter "a" rises."""
    c = tiny_trainer_config(demo_cache)
    c.reward.name = "tests.train.toy_rewards:letter_a_fraction"
    c.rl.algorithm = "grpo"
    c.rollout.n = 8
    c.train.total_steps = 25
    c.optim.learning_rate = 1e-2
    c.checkpoint.every = 100
    _run(c, tmp_path)
    import json

    rewards = [json.loads(line)["reward/overall"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(rewards[-5:]) > 2 * np.mean(rewards[:5]), rewards


@pytest.mark.slow
def test_a_run_whose_rewards_all_time_out_stops_at_reward_max_failed_steps(demo_cache, tmp_path):
    """A reward hanging on every sample: each step's scoring ends at the batch limit with every sample timed out,
    and the second such step in a row stops the run, naming the counts and the reward."""
    c = tiny_trainer_config(demo_cache)
    c.reward.name = "tests.train.toy_rewards:hangs"
    c.reward.timeout_s = 600.0
    c.reward.batch_timeout_s = 0.5
    c.reward.max_failed_steps = 2
    c.train.total_steps = 3
    c.checkpoint.every = 3
    message = (
        "every reward failed in 2 consecutive steps (timeout 32, exception 0, invalid_output 0, worker_died 0); "
        "check reward.name = 'tests.train.toy_rewards:hangs' (the run stops at reward.max_failed_steps = 2; 0 = never)"
    )
    trainer = make_trainer(c, tmp_path)
    try:
        with pytest.raises(RewardHealthError, match=re.escape(message)):
            trainer.fit()
    finally:
        trainer.close()
    assert trainer.step == 2
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["reward_failures/timeout"] for r in records] == [16, 16]
    assert all(r["timing/reward"] < 10 for r in records)


@pytest.mark.slow
def test_a_trainer_checkpoint_exports_and_loads_in_transformers(default_step, tmp_path):
    """The shared default step (checkpoint.export_hf set: exported at the end of its run) exported again from its
    checkpoint."""
    import torch
    from flax import nnx
    from transformers import Qwen2_5_VLForConditionalGeneration

    from shuffle_r1_jax.models.qwen2_5_vl import forward_logits, load_pretrained

    params, _, _, workdir = default_step
    out = tmp_path / "exported"
    assert export_trainer_checkpoint(workdir / "checkpoints", out) == 1
    exported_at_end = safetensors_bytes(workdir.parent / "exported_at_end")
    assert exported_at_end == safetensors_bytes(out) and "model.embed_tokens.weight" in exported_at_end
    with pytest.raises(FileNotFoundError, match="trained no critic"):
        export_trainer_checkpoint(workdir / "checkpoints", tmp_path / "no_critic", critic=True)

    ours, config = load_pretrained(out)
    for a, b in zip(jax.tree.leaves(nnx.to_pure_dict(nnx.state(ours, nnx.Param))), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    reference = Qwen2_5_VLForConditionalGeneration.from_pretrained(out, attn_implementation="eager").float().eval()
    rng = np.random.default_rng(0)
    grid = (1, 4, 4)
    ids = np.asarray(
        [[40, config.vision_start_token_id] + [config.image_token_id] * 4 + [config.vision_end_token_id, 41, 42]]
    )
    pixels = rng.standard_normal((16, 1176)).astype(np.float32)
    with torch.no_grad():
        expected = reference(
            input_ids=torch.as_tensor(ids),
            attention_mask=torch.ones_like(torch.as_tensor(ids)),
            pixel_values=torch.as_tensor(pixels),
            image_grid_thw=torch.as_tensor([grid]),
            mm_token_type_ids=torch.as_tensor((ids == config.image_token_id).astype(np.int64)),
        ).logits.numpy()
    got = np.asarray(forward_logits(ours, ids, np.ones_like(ids), pixels, np.asarray([grid])))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert (out / "tokenizer.json").exists() and (out / "preprocessor_config.json").exists()


def safetensors_bytes(directory):
    from safetensors.numpy import load_file

    return {name: tensor.tobytes() for name, tensor in load_file(Path(directory) / "model.safetensors").items()}


@pytest.mark.slow
def test_a_critic_exports_loads_in_transformers_and_starts_another_run(demo_cache, tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    c = tiny_trainer_config(demo_cache)
    c.rl.algorithm = "ppo"
    c.train.total_steps = 1
    _, _, trained = _run(c, tmp_path / "run")
    out = tmp_path / "critic"
    done = subprocess.run(
        [sys.executable, "scripts/export_to_hf.py", "--ckpt", str(tmp_path / "run" / "checkpoints"), "--critic"]
        + ["--out", str(out)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "value_head.safetensors").exists()
    Qwen2_5_VLForConditionalGeneration.from_pretrained(out)  # the layout transformers reads

    c.critic.checkpoint = str(out)
    restarted = make_trainer(c, tmp_path / "restarted")
    try:
        for a, b in zip(jax.tree.leaves(restarted.critic_params), jax.tree.leaves(trained.critic_params)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    finally:
        restarted.close()


@pytest.mark.slow
def test_kl_to_the_reference_policy_runs_over_several_steps(demo_cache, tmp_path):
    """The reference policy must survive the donated parameter updates of later steps."""
    c = tiny_trainer_config(demo_cache)
    c.loss.kl_coef = 0.05
    c.train.total_steps = 3
    c.checkpoint.every = 100
    _run(c, tmp_path)
    import json

    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and all(np.isfinite(line["kl_ref"]) for line in lines)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("rl.abs_rounds", 0, "rl.abs_rounds = 0 must be >= 1"),
        ("rl.abs_weight", "median", "rl.abs_weight = 'median'; expected one of"),
        ("rl.abs_power", -1.0, "rl.abs_power = -1.0 must be > 0"),
        ("rl.pts_variant", "best", "rl.pts_variant = 'best'; expected one of"),
        ("loss.kl_kind", "k9", "unknown KL estimator 'k9'"),
        ("loss.agg_mode", "sum", "loss agg_mode = 'sum'; expected one of"),
        ("loss.clip_low", -0.1, "clip_low must be in \\[0, 1\\), got clip_low=-0.1"),
        ("loss.dual_clip", 0.5, "dual_clip must be > 1"),
        ("loss.opmd_tau", 0.0, "loss opmd_tau = 0.0 must be > 0"),
        ("loss.opmd_tau", -1.0, "loss opmd_tau = -1.0 must be > 0"),
        ("optim.b1", 1.5, "optim.b1 = 1.5 and optim.b2 = 0.999 must be in \\[0, 1\\)"),
        ("optim.max_grad_norm", -1.0, "optim.max_grad_norm = -1.0 must be >= 0"),
        ("seed", -1, "seed = -1 must be an integer in \\[0, 2\\*\\*32\\)"),
        ("rl.abs_single_round", "all", "rl.abs_single_round = 'all'; expected one of"),
        ("rl.abs_sampling", "sorted", "rl.abs_sampling = 'sorted'; expected one of"),
        ("data.overlong_prompts", "left", "data.overlong_prompts = 'left'; expected one of"),
        ("rl.update_chunks", 3, "rl.update_chunks = 3: the 4096 update rows do not cut into 3 chunks x 4"),
        ("loss.agg_group_rows", 0, "loss agg_group_rows = 0 must be >= 1"),
        ("reward.timeout_s", -1.0, "reward.timeout_s = -1.0 must be > 0"),
        ("reward.num_workers", 0, "reward.num_workers = 0 must be >= 1"),
        ("reward.batch_timeout_s", -1.0, "reward.batch_timeout_s = -1.0 must be >= 0 \\(0 = no limit\\)"),
        ("reward.max_failed_steps", -1, "reward.max_failed_steps = -1 must be >= 0 \\(0 = never\\)"),
        ("checkpoint.every", 0, "checkpoint.every = 0 must be >= 1"),
        ("checkpoint.keep_last", 0, "checkpoint.keep_last = 0 must be >= 1"),
        ("checkpoint.on_damaged", "skip", "checkpoint.on_damaged = 'skip'; expected one of \\('fallback', 'refuse'\\)"),
        ("checkpoint.save_retries", -1, "checkpoint.save_retries = -1 must be an integer >= 0"),
        ("rl.selector", "best", "rl.selector = 'best' is unknown; known selectors: all, cppo, pts, pts_abs"),
        ("rl.gamma", 1.5, "rl.gamma = 1.5 must be in \\[0, 1\\]"),
        ("rl.gae_lambda", 2.0, "rl.gae_lambda = 2.0 must be in \\[0, 1\\] \\(-1 = the algorithm's\\)"),
        ("rl.critic_lambda", -0.5, "rl.critic_lambda = -0.5 must be in \\[0, 1\\]"),
        ("critic.learning_rate", 0.0, "critic.learning_rate = 0.0 must be > 0"),
        ("critic.warmup_steps", -1, "critic.warmup_steps = -1 must be >= 0"),
        ("critic.value_clip", -0.1, "critic.value_clip = -0.1 must be >= 0"),
        ("critic.value_coef", 0.0, "critic.value_coef = 0.0 must be > 0"),
        ("critic.pretrain_steps", -2, "critic.pretrain_steps = -2 must be >= 0"),
        ("critic.pretrain_steps", 100, "critic.pretrain_steps = 100 must be below train.total_steps = 100"),
        ("reward.overlong_buffer", -2, "reward.overlong_buffer = -2 must be in \\[0, rollout.max_new_tokens = 2048\\]"),
        (
            "reward.overlong_buffer",
            2049,
            "reward.overlong_buffer = 2049 must be in \\[0, rollout.max_new_tokens = 2048",
        ),
        ("reward.overlong_factor", -0.5, "reward.overlong_factor = -0.5 must be >= 0"),
        ("data.sampling", "hardest", "data.sampling = 'hardest'; expected one of"),
        ("data.priority_floor", 1.5, "data.priority_floor = 1.5 must be in \\(0, 1\\]"),
        ("data.pass_rate_update_weight", 0.0, "data.pass_rate_update_weight = 0.0 must be in \\(0, 1\\]"),
        ("data.curriculum_order", "up", "data.curriculum_order = 'up'; expected one of"),
    ],
)
def test_every_checkable_value_is_checked_before_anything_is_built(key, value, message):
    c = base_config()
    settings.set_key(c, key, value)
    with pytest.raises(settings.ConfigError, match=message):
        settings.resolve(c, check_inputs=False)


@pytest.mark.slow
def test_span_rewards_reach_reinforce_plus_plus_advantages_at_their_tokens(demo_cache, tmp_path):
    """A reward of outcome 0 with a span reward of 1 on the first character: its value lands on the token that
    completes that character, and REINFORCE++'s advantages are the whitened returns-to-go, positive up to that token
    and negative after it (without the span every advantage would be 0); `reward/span_sum` reports it."""
    from shuffle_r1_jax.train.trainer import StepKeys

    c = tiny_trainer_config(demo_cache)
    c.rl.algorithm = "reinforce_pp"
    c.reward.name = "tests.train.toy_rewards:first_character_span"
    trainer = make_trainer(c, tmp_path)
    try:
        keys = StepKeys.at(trainer.base_key, 0)
        scored, _ = trainer.collect_rollouts(next(trainer.train_batches), keys)
        with jax.set_mesh(trainer.mesh):
            update_batch = trainer.targets(scored, keys.select, {})
        metrics = rollout_metrics(scored)
    finally:
        trainer.close()
    tokenizer = trainer.encoder.tokenizer
    mask = trainer.placer.local(scored.rollouts.mask).astype(bool)
    tokens = trainer.placer.local(scored.rollouts.tokens)
    returns = np.zeros(mask.shape)
    for row, text in enumerate(scored.responses):
        if not text:
            assert not scored.token_rewards[row].any()
            continue
        (at,) = np.flatnonzero(scored.token_rewards[row])
        assert scored.token_rewards[row, at] == 1.0
        before, through = (
            tokenizer.decode(tokens[row][:end][mask[row][:end]], skip_special_tokens=True) for end in (at, at + 1)
        )
        assert before == "" and through.startswith(text[0])  # the token completing the first character
        returns[row] = (np.arange(mask.shape[1]) <= at) & mask[row]
    assert returns.any() and not returns[mask].all()  # some tokens before the span's and some after
    valid = returns[mask]
    expected = (returns - valid.mean()) / np.sqrt(valid.var(ddof=1) + 1e-8) * mask
    np.testing.assert_allclose(trainer.placer.local(update_batch.targets.advantages), expected, atol=1e-5)
    assert metrics["reward/overall"] == 0.0
    np.testing.assert_allclose(metrics["reward/span_sum"], np.mean([bool(text) for text in scored.responses]))
