"""PTS and ABS run sharded on a device mesh (8 simulated CPU devices in tests) and agree with one device."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from shuffle_r1_jax.rl import advantages, batch_shuffle, pts

GROUPS, N, T = 64, 16, 8
KEEP, ROUNDS = 0.5, 8


def mesh():
    return Mesh(np.array(jax.devices()), ("data",))


def test_mesh_has_several_devices():
    assert len(jax.devices()) == 8  # tests/conftest.py: --xla_force_host_platform_device_count=8


def rollout_scores(seed):
    scores = jax.random.bernoulli(jax.random.key(seed), 0.4, (GROUPS, N)).astype(jnp.float32)
    return scores.at[:8].set(1.0)  # some all-correct groups: zero-weight pairs


def test_pts_sharded_matches_single_device():
    adv = advantages.grpo_outcome_advantages(rollout_scores(0))
    fn = functools.partial(pts.pairwise_trajectory_sampling, keep_ratio=KEEP)
    single = jax.jit(fn)(jax.device_put(adv, jax.devices()[0]))
    rows = NamedSharding(mesh(), P("data", None))
    sharded_fn = jax.jit(fn, in_shardings=rows, out_shardings=rows)
    sharded = sharded_fn(jax.device_put(adv, rows))
    assert sharded.sharding.is_equivalent_to(rows, 2)
    np.testing.assert_array_equal(sharded, single)


def test_abs_sharded_matches_single_device():
    weights = jax.random.uniform(jax.random.key(1), (GROUPS * 4,)).at[::3].set(0.0)
    per_round = GROUPS * 4 // ROUNDS

    def fn(w, key):
        return batch_shuffle.advantage_batch_shuffle(w, ROUNDS, per_round, key)

    key = jax.random.key(2)
    single = jax.jit(fn)(jax.device_put(weights, jax.devices()[0]), key)
    m = mesh()
    flat = NamedSharding(m, P("data"))
    out = batch_shuffle.ShuffleDraws(flat, flat, NamedSharding(m, P()))
    sharded = jax.jit(fn, in_shardings=(flat, NamedSharding(m, P())), out_shardings=out)(
        jax.device_put(weights, flat), key
    )
    assert sharded.pair_indices.sharding.is_equivalent_to(flat, 1)
    for a, b in zip(sharded, single):
        np.testing.assert_array_equal(a, b)


def rl_selection(token_rewards, mask, key):
    """The whole selection stage inside one jitted step: advantages -> PTS -> ABS -> update batch."""
    adv = advantages.get_advantage_estimator("grpo")(token_rewards, mask)
    idx = pts.pairwise_trajectory_sampling(adv.rollout, KEEP)
    weights = batch_shuffle.pair_weights(pts.pair_advantages(adv.rollout, idx))
    num_pairs = weights.shape[0]
    per_round = batch_shuffle.pairs_per_round(num_pairs, ROUNDS)
    draws = batch_shuffle.advantage_batch_shuffle(weights, ROUNDS, per_round, key)
    batch = batch_shuffle.update_batch_indices(idx, draws, N)
    return batch, batch_shuffle.draw_statistics(draws, num_pairs)


def test_full_selection_step_sharded_matches_single_device():
    lengths = jax.random.randint(jax.random.key(3), (GROUPS, N), 0, T + 1)
    mask = jnp.arange(T)[None, None, :] < lengths[..., None]
    token_rewards = advantages.outcome_token_rewards(rollout_scores(4), mask)
    key = jax.random.key(5)
    single_batch, single_stats = jax.jit(rl_selection)(token_rewards, mask, key)

    m = mesh()
    groups = NamedSharding(m, P("data", None, None))
    flat = NamedSharding(m, P("data"))
    replicated = NamedSharding(m, P())
    step = jax.jit(
        rl_selection,
        in_shardings=(groups, groups, replicated),
        out_shardings=(batch_shuffle.UpdateBatch(flat, flat), replicated),
    )
    batch, stats = step(jax.device_put(token_rewards, groups), jax.device_put(mask, groups), key)
    np.testing.assert_array_equal(batch.rollout_indices, single_batch.rollout_indices)
    np.testing.assert_array_equal(batch.valid, single_batch.valid)
    for name in stats:
        np.testing.assert_array_equal(stats[name], single_stats[name])
    assert batch.rollout_indices.shape == (GROUPS * N // 2,)
