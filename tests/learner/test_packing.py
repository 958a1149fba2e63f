"""Packed log-prob passes: the plan against a NumPy first-fit-decreasing, and packed vs padded log-probs, losses
and gradients on a batch with images of different sizes, a text-only prompt and responses of varied lengths."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from shuffle_r1_jax.learner.logprobs import response_logprobs, rollout_logprobs
from shuffle_r1_jax.learner.packing import (
    PackingPlan,
    first_fit_decreasing,
    packed_rows_bucket,
    plan_micro_batches,
)
from shuffle_r1_jax.learner.update import LossConfig, UpdateTargets, update_minibatch
from shuffle_r1_jax.models.qwen2_5_vl import prepare_inputs
from shuffle_r1_jax.rl.aggregation import AGG_MODES
from shuffle_r1_jax.rl.policy_loss import ppo_policy_loss
from shuffle_r1_jax.rollout.types import Rollouts
from tests.models.qwen2_5_vl.hf_reference import TOKENS, build_sample, pad_batch, random_pixels

N = 3
RESPONSE = 9


def _ffd_reference(lengths, capacity):
    """First-fit decreasing written plainly: longest first (stable), each into the first bin with room."""
    fill, bins, offsets = [], [-1] * len(lengths), [0] * len(lengths)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if lengths[i] == 0:
            continue
        b = next((b for b, used in enumerate(fill) if used + lengths[i] <= capacity), len(fill))
        if b == len(fill):
            fill.append(0)
        bins[i], offsets[i] = b, fill[b]
        fill[b] += lengths[i]
    return bins, offsets, len(fill)


@pytest.mark.parametrize("seed", range(4))
def test_first_fit_decreasing_matches_the_plain_algorithm(seed):
    rng = np.random.default_rng(seed)
    capacity = 40
    lengths = rng.integers(0, capacity + 1, size=13)
    lengths[rng.integers(0, 13, size=3)] = 0
    bins, offsets, used = jax.jit(first_fit_decreasing, static_argnums=1)(jnp.asarray(lengths, jnp.int32), capacity)
    want_bins, want_offsets, want_used = _ffd_reference(lengths.tolist(), capacity)
    assert np.asarray(bins).tolist() == want_bins
    assert np.asarray(offsets).tolist() == want_offsets
    assert int(used) == want_used


def test_packed_rows_bucket():
    needs = (0, 1, 2, 3, 9, 13, 16)
    assert [packed_rows_bucket(k, 16) for k in needs] == [1, 1, 2, 3, 9, 13, 16]
    assert [packed_rows_bucket(k, 64) for k in (17, 25, 29, 33, 37, 41, 62)] == [18, 26, 30, 36, 40, 44, 64]
    assert packed_rows_bucket(1, 16, shards=8) == 8 and packed_rows_bucket(9, 16, shards=8) == 16
    assert packed_rows_bucket(1, 6, shards=4) == 1  # rows not split over the shards: no rounding
    with pytest.raises(ValueError, match="17 packed rows needed for a micro-batch of 16 rows"):
        packed_rows_bucket(17, 16)


@pytest.fixture(scope="module")
def batch(untied_pair):
    """4 prompts (images of 3 sizes, one text-only) x n = 3, responses of lengths 0..9 (an empty one)."""
    _, model = untied_pair
    rng = np.random.default_rng(0)
    grids = [(1, 8, 12), (1, 4, 4), (1, 4, 8)]
    samples = [
        build_sample(rng, [3, grids[0], 5]),
        build_sample(rng, [9]),
        build_sample(rng, [7, grids[1], 2]),
        build_sample(rng, [2, grids[2], 4]),
    ]
    ids, mask = pad_batch(samples, "left")
    prompts = jax.tree.map(
        jnp.asarray, prepare_inputs(model.config, ids, mask, random_pixels(rng, grids), np.asarray(grids))
    )
    rows = len(samples) * N
    lengths = np.asarray([9, 1, 4, 0, 7, 2, 9, 5, 3, 6, 1, 8])
    response_mask = (np.arange(RESPONSE)[None, :] < lengths[:, None]).astype(np.int32)
    tokens = rng.integers(0, TOKENS["vision_start_token_id"], size=(rows, RESPONSE)).astype(np.int32)
    logprobs = np.log(rng.uniform(0.05, 0.95, size=(rows, RESPONSE))).astype(np.float32) * response_mask
    rollouts = Rollouts(prompts, jnp.asarray(tokens), jnp.asarray(response_mask), jnp.asarray(logprobs))
    advantages = rng.standard_normal((rows, 1)).astype(np.float32) * np.ones((1, RESPONSE), np.float32)
    targets = UpdateTargets(advantages=jnp.asarray(advantages), old_logprobs=rollouts.sampler_logprobs)
    graphdef = nnx.graphdef(model)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return model, graphdef, params, rollouts, targets


def _plan(rollouts, rows, micro_batches, valid=None):
    micro_rows = rows.reshape(micro_batches, -1)
    micro_valid = None if valid is None else valid.reshape(micro_batches, -1)
    bins, offsets, needed = plan_micro_batches(rollouts, micro_rows, micro_valid)
    return PackingPlan(bins, offsets, int(needed))  # as few rows as the plan needs: the tightest packing


def test_packed_logprobs_equal_the_padded_ones(batch):
    model, graphdef, params, rollouts, _ = batch
    rows = jnp.asarray([5, 0, 3, 11, 2, 7, 9, 1], jnp.int32)
    plan = _plan(rollouts, rows, 1)
    assert plan.packed_rows < rows.shape[0]  # the batch does pack
    with_images = dict(temperature=0.7, chunk=4, with_entropy=True)
    padded, padded_ent = response_logprobs(model, rollouts, rows, **with_images)
    packed, packed_ent = response_logprobs(
        model, rollouts, rows, plan=PackingPlan(plan.bin[0], plan.offset[0], plan.packed_rows), **with_images
    )
    mask = np.asarray(rollouts.mask)[np.asarray(rows)] == 1
    np.testing.assert_allclose(np.asarray(packed)[mask], np.asarray(padded)[mask], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(packed_ent)[mask], np.asarray(padded_ent)[mask], atol=1e-5, rtol=1e-5)
    assert np.all(np.asarray(packed)[~mask] == 0)

    # every aggregation mode reduces the two to the same loss
    old = rollouts.sampler_logprobs[rows]
    advantages = jnp.asarray(np.random.default_rng(2).standard_normal(old.shape), jnp.float32)
    for mode in AGG_MODES:
        kw = dict(agg_mode=mode, group_rows=2, norm_constant=float(RESPONSE))
        want = ppo_policy_loss(padded, old, advantages, rollouts.mask[rows], **kw)[0]
        got = ppo_policy_loss(packed, old, advantages, rollouts.mask[rows], **kw)[0]
        np.testing.assert_allclose(float(got), float(want), rtol=1e-5, atol=1e-6, err_msg=mode)

    # the old-log-prob pass, micro-batched, with a frozen tower's features
    features = model.image_features(rollouts.prompts.vision)
    args = dict(micro_batch_rows=4, temperature=0.7, chunk=4)
    want = rollout_logprobs(graphdef, params, rollouts, features, rows, **args)
    got = rollout_logprobs(graphdef, params, rollouts, features, rows, plan=_plan(rollouts, rows, 2), **args)
    full_mask = np.asarray(rollouts.mask) == 1
    np.testing.assert_allclose(np.asarray(got)[full_mask], np.asarray(want)[full_mask], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("agg_mode", ["token-mean", "micro-token-mean"])
def test_packed_update_equals_the_padded_update(batch, agg_mode):
    """Loss, metrics and gradient (SGD at lr 1: the parameter change) of packed and padded micro-batches agree in
    fp32, with an invalid row and the vision tower trained (it runs inside the pass)."""
    _, graphdef, params, rollouts, targets = batch
    rows = jnp.asarray([5, 0, 3, 11, 2, 7, 9, 1], jnp.int32)
    valid = jnp.asarray([1, 1, 1, 1, 0, 1, 1, 1], bool)
    cfg = LossConfig(agg_mode=agg_mode, agg_group_rows=2, norm_constant=float(RESPONSE), clip_high=0.28)
    optimizer = optax.sgd(1.0)
    step = jax.jit(update_minibatch, static_argnames=("graphdef", "optimizer", "micro_batches", "cfg"))

    def run(plan):
        return step(
            graphdef,
            params,
            optimizer.init(params),
            optimizer,
            rollouts,
            targets,
            rows,
            valid,
            plan,
            micro_batches=2,
            cfg=cfg,
        )

    padded, _, padded_metrics = run(None)
    packed, _, packed_metrics = run(_plan(rollouts, rows, 2, valid))
    for key in ("pg_loss", "entropy", "grad_norm"):
        np.testing.assert_allclose(float(packed_metrics[key]), float(padded_metrics[key]), rtol=1e-5, atol=1e-6)
    for a, b, p in zip(jax.tree.leaves(packed), jax.tree.leaves(padded), jax.tree.leaves(params)):
        np.testing.assert_allclose(np.asarray(a) - np.asarray(p), np.asarray(b) - np.asarray(p), atol=1e-5)
    moved = [
        np.abs(np.asarray(a) - np.asarray(p)).max() for a, p in zip(jax.tree.leaves(padded), jax.tree.leaves(params))
    ]
    assert max(moved) > 1e-3  # the comparison is of a real update
