"""The policy update step: exact gradient accumulation, frozen vision tower, loss value, masked rows, non-finite
skip."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from shuffle_r1_jax.learner.optimizer import OptimizerConfig, make_optimizer
from shuffle_r1_jax.learner.update import LossConfig, UpdateTargets, update_minibatch
from shuffle_r1_jax.models.qwen2_5_vl import prepare_inputs
from shuffle_r1_jax.rollout.types import Rollouts
from shuffle_r1_jax.sampling import Sampler, SamplingConfig
from tests.models.qwen2_5_vl.hf_reference import TOKENS, build_sample, pad_batch, random_pixels


@pytest.fixture(scope="module")
def setup(untied_pair):
    _, model = untied_pair
    rng = np.random.default_rng(0)
    grids = [(1, 8, 12), (1, 4, 4)]
    ids, mask = pad_batch([build_sample(rng, [3, grids[0], 5]), build_sample(rng, [7, grids[1], 2])], "left")
    prompts = jax.tree.map(
        jnp.asarray, prepare_inputs(model.config, ids, mask, random_pixels(rng, grids), np.asarray(grids))
    )
    graphdef = nnx.graphdef(model)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    config = SamplingConfig(
        temperature=1.0,
        stop_token_ids=(TOKENS["eos_token_id"],),
        forbidden_token_ids=(TOKENS["image_token_id"], TOKENS["video_token_id"]),
    )
    out = Sampler(graphdef, config).generate(params, prompts, n=4, max_new_tokens=6, key=jax.random.key(0))
    rollouts = Rollouts(prompts, out.tokens, out.mask, out.logprobs)
    advantages = jnp.asarray(np.random.default_rng(1).standard_normal((8, 1)) * np.ones((1, 6)), jnp.float32)
    targets = UpdateTargets(advantages=advantages, old_logprobs=out.logprobs)
    return graphdef, params, rollouts, targets


# one jitted step and one object per optimizer for the module: a call with the static arguments and shapes of an
# earlier one reuses its program instead of tracing and compiling it again
_UPDATE = jax.jit(update_minibatch, static_argnames=("graphdef", "optimizer", "micro_batches", "cfg"))
SGD = optax.sgd(1.0)


@pytest.fixture(scope="module")
def adamw(setup):
    """freeze_vision -> the AdamW optimizer (lr 1e-3) of `make_optimizer` with the vision tower frozen or trained."""
    _, params, _, _ = setup
    return {
        freeze: make_optimizer(OptimizerConfig(learning_rate=1e-3, freeze_vision=freeze), params)
        for freeze in (True, False)
    }


@pytest.fixture(scope="module")
def frozen_step(setup, adamw):
    """(params, opt_state, metrics) of one AdamW step (vision tower frozen) over 2 micro-batches of all 8 rows."""
    return _step(setup, 2, adamw[True])


def _step(setup, micro_batches, optimizer, targets=None, rows=None, valid=None, cfg=None):
    graphdef, params, rollouts, default_targets = setup
    rows = jnp.arange(8) if rows is None else rows
    valid = jnp.ones(len(rows), bool) if valid is None else valid
    return _UPDATE(
        graphdef,
        params,
        optimizer.init(params),
        optimizer,
        rollouts,
        targets or default_targets,
        rows,
        valid,
        micro_batches=micro_batches,
        cfg=cfg or LossConfig(),
    )


def test_micro_batches_give_the_full_batch_update(setup):
    """With SGD (lr 1) the parameter change is the gradient: accumulated over 4 micro-batches == one batch."""
    one, _, m1 = _step(setup, 1, SGD)
    four, _, m4 = _step(setup, 4, SGD)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(four)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    np.testing.assert_allclose(float(m1["pg_loss"]), float(m4["pg_loss"]), rtol=1e-5)
    np.testing.assert_allclose(float(m1["grad_norm"]), float(m4["grad_norm"]), rtol=1e-4)


def test_micro_token_mean_accumulates_exactly_and_averages_group_token_means(setup):
    """The official aggregation (the mean over 4-row groups of their token means): the same update over 1 or 2
    micro-batches, and at the first step (ratio 1) minus the mean over groups of each group's token-mean
    advantage, computed here by hand."""
    _, _, rollouts, targets = setup
    cfg = LossConfig(agg_mode="micro-token-mean", agg_group_rows=4)
    one, _, m1 = _step(setup, 1, SGD, cfg=cfg)
    two, _, m2 = _step(setup, 2, SGD, cfg=cfg)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    mask = np.asarray(rollouts.mask, np.float64)
    adv = np.asarray(targets.advantages, np.float64)
    groups = [(adv[g] * mask[g]).sum() / mask[g].sum() for g in (slice(0, 4), slice(4, 8))]
    np.testing.assert_allclose(float(m1["pg_loss"]), -np.mean(groups), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(m2["pg_loss"]), float(m1["pg_loss"]), rtol=1e-5)


def test_first_step_loss_is_minus_the_token_mean_advantage(setup, frozen_step):
    _, params, rollouts, targets = setup
    _, _, metrics = frozen_step
    mask = np.asarray(rollouts.mask, np.float64)
    expected = -(np.asarray(targets.advantages) * mask).sum() / mask.sum()  # ratio 1 at the first step
    np.testing.assert_allclose(float(metrics["pg_loss"]), expected, rtol=1e-4, atol=1e-6)
    assert float(metrics["update_skipped"]) == 0.0


def test_frozen_vision_tower_does_not_move(setup, adamw, frozen_step):
    _, params, _, _ = setup
    frozen, _, _ = frozen_step
    trained, _, _ = _step(setup, 2, adamw[False])
    kernel = lambda p: np.asarray(p["visual"]["blocks"][0]["attn"]["qkv"]["kernel"])  # noqa: E731
    np.testing.assert_array_equal(kernel(frozen), kernel(params))
    assert not np.array_equal(kernel(trained), kernel(params))
    assert not np.array_equal(
        np.asarray(frozen["layers"][0]["mlp"]["up_proj"]["kernel"]),
        np.asarray(params["layers"][0]["mlp"]["up_proj"]["kernel"]),
    )


def test_invalid_rows_are_left_out(setup):
    """Rows marked invalid (ABS shortfall) change nothing: same update as the batch without them."""
    with_invalid, _, _ = _step(
        setup, 2, SGD, rows=jnp.asarray([0, 1, 2, 3, 5, 5, 5, 5]), valid=jnp.asarray([1, 1, 1, 1, 1, 0, 0, 0], bool)
    )
    without, _, _ = _step(setup, 1, SGD, rows=jnp.asarray([0, 1, 2, 3, 5]), valid=jnp.ones(5, bool))
    for a, b in zip(jax.tree.leaves(with_invalid), jax.tree.leaves(without)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_rows_outside_loss_rows_are_left_out_as_invalid_rows_are(setup):
    """`loss_rows` (rl.mask_truncated) masks rows out of the loss: the same update as marking them invalid."""
    _, _, _, targets = setup
    loss_rows = jnp.asarray([1, 1, 0, 1, 1, 0, 1, 1], bool)
    masked = UpdateTargets(advantages=targets.advantages, old_logprobs=targets.old_logprobs, loss_rows=loss_rows)
    with_loss_rows, _, _ = _step(setup, 2, SGD, targets=masked)
    as_invalid, _, _ = _step(setup, 2, SGD, valid=loss_rows)
    unmasked, _, _ = _step(setup, 2, SGD)
    for a, b in zip(jax.tree.leaves(with_loss_rows), jax.tree.leaves(as_invalid)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    assert any(
        not np.allclose(np.asarray(a), np.asarray(b), atol=1e-6)
        for a, b in zip(jax.tree.leaves(with_loss_rows), jax.tree.leaves(unmasked))
    )


def test_non_finite_loss_skips_the_update(setup, adamw):
    _, params, _, targets = setup
    bad = UpdateTargets(advantages=targets.advantages.at[0, 0].set(jnp.nan), old_logprobs=targets.old_logprobs)
    new, _, metrics = _step(setup, 2, adamw[True], targets=bad)
    assert float(metrics["update_skipped"]) == 1.0
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_opmd_accumulates_exactly_and_starts_at_the_mean_squared_centered_reward(setup):
    """The OPMD loss kind: the same update over 1 or 2 micro-batches, and at the first step (log-ratio 0) the mean
    over the non-empty rows of each row's squared centered reward, computed here by hand."""
    _, _, rollouts, targets = setup
    cfg = LossConfig(loss_kind="opmd", opmd_tau=0.5)
    one, _, m1 = _step(setup, 1, SGD, cfg=cfg)
    two, _, m2 = _step(setup, 2, SGD, cfg=cfg)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    rows = np.asarray(rollouts.mask).any(-1)
    expected = np.mean(np.asarray(targets.advantages, np.float64)[rows, 0] ** 2)
    np.testing.assert_allclose(float(m1["pg_loss"]), expected, rtol=1e-4)
    np.testing.assert_allclose(float(m2["pg_loss"]), float(m1["pg_loss"]), rtol=1e-5)
    assert abs(float(m1["opmd/log_ratio_mean"])) < 1e-3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(loss_kind="dpo"), "loss loss_kind = 'dpo'; expected one of \\('ppo', 'opmd'\\)"),
        (dict(opmd_tau=0.0), "loss opmd_tau = 0.0 must be > 0"),
    ],
)
def test_loss_config_names_a_bad_loss_kind_or_tau(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LossConfig(**kwargs)
