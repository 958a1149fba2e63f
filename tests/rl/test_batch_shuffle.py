"""Advantage-based Batch Shuffle: weights, draw statistics against exact probabilities, the shortfall rule,
and the update-batch layout."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shuffle_r1_jax.rl import batch_shuffle as abs_lib
from shuffle_r1_jax.rl import pts

SETTINGS = settings(max_examples=30, deadline=None)
FLOATS = st.floats(-3, 3, width=32, allow_subnormal=False)

# Statistical tests: every frequency f_i over R independent rounds is a binomial proportion with
# std sigma_i = sqrt(p_i (1 - p_i) / R). We require |f_i - p_i| <= 5 sigma_i for every i. With a fixed
# seed the test is deterministic; with any other seed a false failure has probability
# < (number of categories) * 5.7e-7 (two-sided normal tail at 5 sigma), so it is not flaky.
ROUNDS = 20_000
SIGMAS = 5.0


def binomial_bound(p, rounds):
    return SIGMAS * np.sqrt(p * (1 - p) / rounds)


def exact_inclusion_probabilities(w, per_round):
    """P(pair i is among the per_round draws) of successive weighted sampling without replacement,
    by enumerating every ordered draw sequence."""
    w = np.asarray(w, np.float64)
    incl = np.zeros(len(w))
    for seq in itertools.permutations(range(len(w)), per_round):
        prob, left = 1.0, w.sum()
        for i in seq:
            prob *= w[i] / left
            left -= w[i]
        for i in seq:
            incl[i] += prob
    return incl


@functools.partial(jax.jit, static_argnames=("rounds", "per_round"))
def run_abs(w, rounds, per_round, key):
    return abs_lib.advantage_batch_shuffle(w, rounds, per_round, key)


# ---------------------------------------------------------------- weights and normalization
@SETTINGS
@given(st.lists(st.tuples(FLOATS, FLOATS), min_size=8, max_size=8))
def test_pair_weight_kinds(pairs):
    a = np.array(pairs, np.float32)
    expected = {
        "sum": np.abs(a[:, 0]) + np.abs(a[:, 1]),
        "max": np.maximum(np.abs(a[:, 0]), np.abs(a[:, 1])),
        "mean": (np.abs(a[:, 0]) + np.abs(a[:, 1])) / 2,
        "positive": np.abs(np.maximum(a[:, 0], a[:, 1])),
    }
    for kind, ref in expected.items():
        out = jax.jit(abs_lib.pair_weights, static_argnums=1)(jnp.asarray(a), kind)
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-30)  # CPU XLA flushes subnormals
    with pytest.raises(ValueError, match="median"):
        abs_lib.pair_weights(jnp.asarray(a), "median")


@SETTINGS
@given(
    st.lists(st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, 2.0, 3.5]), min_size=8, max_size=8),
    st.sampled_from([1.0, 2.0, 0.5, -1.0]),
    st.sampled_from([0.5, 1.0, 2.0]),
)
def test_normalizations(weights, p, temperature):
    w = np.array(weights, np.float64)
    pos = w > 0
    power = np.where(pos, np.where(pos, w, 1.0) ** p, 0.0)
    softmax = np.where(pos, np.exp(w / temperature), 0.0)
    w32 = jnp.asarray(w, jnp.float32)
    for actual, ref in [
        (jax.jit(abs_lib.power_normalize)(w32, p), power),
        (jax.jit(abs_lib.softmax_normalize)(w32, temperature), softmax),
    ]:
        expected = ref / ref.sum() if ref.sum() > 0 else ref
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-7)
        assert np.all(np.asarray(actual)[~pos] == 0)


def test_softmax_temperature_schedule():
    assert float(abs_lib.softmax_temperature(0, 100, 2.0, 1.0)) == pytest.approx(2.0)
    assert float(abs_lib.softmax_temperature(100, 100, 2.0, 1.0)) == pytest.approx(1.0)
    assert float(abs_lib.softmax_temperature(50, 100, 2.0, 1.0)) == pytest.approx(1 + np.cos(np.pi / 4))
    with pytest.raises(ValueError, match="t_max"):
        abs_lib.softmax_temperature(0, 10, 1.0, 2.0)


# ---------------------------------------------------------------- draw distribution
def test_first_draw_frequencies_match_weights():
    w = np.array([1.0, 2.0, 0.0, 3.0, 0.5, 3.5])
    draws = run_abs(jnp.asarray(w, jnp.float32), ROUNDS, 1, jax.random.key(1234))
    assert bool(np.all(draws.valid))
    freq = np.bincount(np.asarray(draws.pair_indices), minlength=len(w)) / ROUNDS
    p = w / w.sum()
    assert freq[2] == 0.0
    assert np.all(np.abs(freq - p) <= binomial_bound(p, ROUNDS)), (freq, p)


@pytest.mark.parametrize("per_round", [2, 3])
def test_inclusion_frequencies_match_exact_probabilities(per_round):
    w = np.array([0.5, 1.0, 2.0, 3.0, 0.0, 1.5])
    draws = run_abs(jnp.asarray(w, jnp.float32), ROUNDS, per_round, jax.random.key(per_round))
    idx = np.asarray(draws.pair_indices).reshape(ROUNDS, per_round)
    assert bool(np.all(draws.valid))
    incl = np.zeros(len(w))
    for r in range(per_round):
        incl += np.bincount(idx[:, r], minlength=len(w))
    incl /= ROUNDS
    exact = exact_inclusion_probabilities(w, per_round)
    assert incl[4] == 0.0
    assert np.all(np.abs(incl - exact) <= binomial_bound(exact, ROUNDS)), (incl, exact)
    # The first draw of a round is a plain weighted draw.
    first = np.bincount(idx[:, 0], minlength=len(w)) / ROUNDS
    p = w / w.sum()
    assert np.all(np.abs(first - p) <= binomial_bound(p, ROUNDS)), (first, p)


# ---------------------------------------------------------------- structure, shortfall
@st.composite
def weight_vectors(draw):
    size = draw(st.sampled_from([4, 16]))
    values = draw(st.lists(st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0, 2.5]), min_size=size, max_size=size))
    per_round = draw(st.sampled_from([1, 3, size]))
    rounds = 3
    return np.array(values, np.float32), rounds, per_round


@SETTINGS
@given(weight_vectors(), st.integers(0, 2**31 - 1))
def test_rounds_distinct_zero_weight_never_drawn_and_shortfall_rule(case, seed):
    w, rounds, per_round = case
    draws = run_abs(jnp.asarray(w), rounds, per_round, jax.random.key(seed))
    idx = np.asarray(draws.pair_indices).reshape(rounds, per_round)
    valid = np.asarray(draws.valid).reshape(rounds, per_round)
    assert draws.pair_indices.dtype == jnp.int32 and idx.min() >= 0 and idx.max() < len(w)
    positive = np.flatnonzero(w > 0)
    k = min(per_round, len(positive))
    assert int(draws.num_valid) == rounds * k
    for r in range(rounds):
        # Valid slots come first, are distinct and all have positive weight.
        np.testing.assert_array_equal(valid[r], np.arange(per_round) < k)
        chosen = idx[r, :k]
        assert len(set(chosen)) == k
        assert np.all(w[chosen] > 0)
        if len(positive) < per_round:
            # Shortfall: the round takes every positive pair; the rest point at the round's first draw.
            assert set(chosen) == set(positive)
            assert np.all(idx[r, k:] == idx[r, 0])


def test_all_zero_weights():
    draws = run_abs(jnp.zeros((6,)), 2, 3, jax.random.key(0))
    assert int(draws.num_valid) == 0 and not bool(np.any(draws.valid))
    assert np.asarray(draws.pair_indices).max() < 6
    stats = abs_lib.draw_statistics(draws, 6)
    assert int(stats["abs/unique_pairs"]) == 0 and float(stats["abs/shortfall_fraction"]) == 1.0


def test_deterministic_for_a_key():
    w = jnp.linspace(0.1, 2.0, 32)
    a, b = run_abs(w, 4, 8, jax.random.key(7)), run_abs(w, 4, 8, jax.random.key(7))
    c = run_abs(w, 4, 8, jax.random.key(8))
    np.testing.assert_array_equal(a.pair_indices, b.pair_indices)
    assert not np.array_equal(a.pair_indices, c.pair_indices)


@SETTINGS
@given(weight_vectors(), st.integers(0, 2**31 - 1))
def test_draw_statistics_match_numpy(case, seed):
    w, rounds, per_round = case
    draws = run_abs(jnp.asarray(w), rounds, per_round, jax.random.key(seed))
    stats = jax.jit(abs_lib.draw_statistics, static_argnums=1)(draws, len(w))
    idx, valid = np.asarray(draws.pair_indices), np.asarray(draws.valid)
    counts = np.bincount(idx[valid], minlength=len(w))
    assert int(stats["abs/unique_pairs"]) == np.count_nonzero(counts)
    assert int(stats["abs/max_repeats"]) == counts.max()
    assert int(stats["abs/num_valid"]) == valid.sum()
    assert float(stats["abs/shortfall_fraction"]) == pytest.approx(1 - valid.mean())
    assert float(stats["abs/coverage"]) == pytest.approx(np.count_nonzero(counts) / len(w))


def test_argument_errors():
    with pytest.raises(ValueError, match="per_round=5"):
        abs_lib.advantage_batch_shuffle(jnp.ones(4), 2, 5, jax.random.key(0))
    with pytest.raises(ValueError, match="per_round=0"):
        abs_lib.advantage_batch_shuffle(jnp.ones(4), 2, 0, jax.random.key(0))
    with pytest.raises(ValueError, match="rounds=0"):
        abs_lib.advantage_batch_shuffle(jnp.ones(4), 0, 2, jax.random.key(0))
    assert abs_lib.pairs_per_round(2048, 8) == 256
    with pytest.raises(ValueError, match="rounds=3"):
        abs_lib.pairs_per_round(2048, 3)


# ---------------------------------------------------------------- update batch
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def shuffle_pipeline(key, g, n, keep):
    k_adv, k_abs = jax.random.split(key)
    adv = jax.random.normal(k_adv, (g, n)).at[0].set(0.0)  # group 0 all-equal: zero-weight pairs
    idx = pts.pairwise_trajectory_sampling(adv, keep)
    num_pairs = idx.shape[0] * idx.shape[1] // 2
    w = abs_lib.pair_weights(pts.pair_advantages(adv, idx))
    draws = abs_lib.advantage_batch_shuffle(w, 2, num_pairs // 2, k_abs)
    return idx, draws, abs_lib.update_batch_indices(idx, draws, n)


@SETTINGS
@given(st.sampled_from([(2, 4, 0.5), (3, 8, 0.5), (4, 6, 1.0)]), st.integers(0, 2**31 - 1))
def test_update_batch_indices_keep_pairs_adjacent(shape, seed):
    g, n, keep = shape
    idx, draws, batch = shuffle_pipeline(jax.random.key(seed), g, n, keep)

    idx_np, pair_ids = np.asarray(idx), np.asarray(draws.pair_indices)
    m = idx_np.shape[1] // 2
    expected = []
    for p in pair_ids:
        g_, m_ = divmod(int(p), m)
        expected += [g_ * n + idx_np[g_, 2 * m_], g_ * n + idx_np[g_, 2 * m_ + 1]]
    np.testing.assert_array_equal(batch.rollout_indices, expected)
    np.testing.assert_array_equal(batch.valid, np.repeat(np.asarray(draws.valid), 2))
    assert batch.rollout_indices.dtype == jnp.int32
    # Both trajectories of a slot come from the same prompt group; rollouts of group 0 never appear validly.
    ri = np.asarray(batch.rollout_indices).reshape(-1, 2)
    assert np.all(ri[:, 0] // n == ri[:, 1] // n)
    assert not np.any((ri[:, 0] // n == 0) & np.asarray(draws.valid))


def test_split_minibatches():
    x = jnp.arange(16)
    np.testing.assert_array_equal(abs_lib.split_minibatches(x, 4), np.arange(16).reshape(4, 4))
    with pytest.raises(ValueError, match="num_minibatches=3"):
        abs_lib.split_minibatches(x, 3)
    with pytest.raises(ValueError, match="num_minibatches=16"):
        abs_lib.split_minibatches(x, 16)  # chunks of one trajectory would split pairs
    assert abs_lib.split_minibatches(jnp.zeros((16, 3)), 8).shape == (8, 2, 3)


def test_chunked_step_order_is_the_official_device_layout():
    """Written from the official mechanics: 16 update rows on 2 devices, 2 optimizer steps. Device 0 holds rows
    0-7, device 1 rows 8-15; each splits its chunk into 2 mini-batches; step k = piece k of both devices."""
    order = abs_lib.chunked_step_order(16, chunks=2, minibatches=2)
    assert order.tolist() == [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15]
    # the paper's run: 8 rounds of 256 pairs on 8 devices, 4 steps; step 0 = the first 128 rows of every round
    order = abs_lib.chunked_step_order(4096, chunks=8, minibatches=4).reshape(4, 8, 128)
    assert order[0, 3].tolist() == list(range(3 * 512, 3 * 512 + 128))
    assert order[2, 7].tolist() == list(range(7 * 512 + 256, 7 * 512 + 384))
    with pytest.raises(ValueError, match="3 chunks x 2 mini-batches do not divide the 16"):
        abs_lib.chunked_step_order(16, chunks=3, minibatches=2)


# ---------------------------------------------------------------- ablations: uniform and static sampling
def test_uniform_sampling_ignores_weights_but_never_draws_zero_weight_pairs():
    w = np.array([0.1, 4.0, 0.0, 1.0, 0.5, 0.0])
    draws = abs_lib.draw_pairs(jnp.asarray(w, jnp.float32), ROUNDS, 1, jax.random.key(3), "uniform")
    freq = np.bincount(np.asarray(draws.pair_indices), minlength=len(w)) / ROUNDS
    p = (w > 0) / np.sum(w > 0)
    assert freq[2] == 0.0 and freq[5] == 0.0
    assert np.all(np.abs(freq - p) <= binomial_bound(p, ROUNDS)), (freq, p)


def test_weighted_sampling_is_abs():
    w = jnp.linspace(0.0, 2.0, 12)
    key = jax.random.key(11)
    a, b = abs_lib.draw_pairs(w, 3, 4, key, "weighted"), run_abs(w, 3, 4, key)
    np.testing.assert_array_equal(a.pair_indices, b.pair_indices)
    np.testing.assert_array_equal(a.valid, b.valid)


@pytest.mark.parametrize(
    "weights, rounds, per_round, expected",
    [
        # 4 positive pairs in descending weight order 3, 1, 4, 0, then from the start again
        ([0.5, 2.0, 0.0, 3.0, 1.0, 0.0], 2, 3, [3, 1, 4, 0, 3, 1]),
        # pairs 0 and 4 tie at 0.5: the lower id comes first
        ([0.5, 2.0, 0.0, 3.0, 0.5, 0.0], 3, 2, [3, 1, 0, 4, 3, 1]),
        # 2 positive pairs repeated: a round may hold a pair twice
        ([0.0, 1.0, 0.0, 2.0], 1, 4, [3, 1, 3, 1]),
    ],
)
def test_static_reorder_repeats_the_positive_pairs_by_descending_weight(weights, rounds, per_round, expected):
    draws = abs_lib.draw_pairs(jnp.asarray(weights, jnp.float32), rounds, per_round, jax.random.key(0), "static")
    assert np.asarray(draws.pair_indices).tolist() == expected
    assert bool(np.all(draws.valid)) and int(draws.num_valid) == len(expected)


def test_static_reorder_without_positive_weights_is_all_invalid():
    draws = abs_lib.static_reorder(jnp.zeros((4,)), 2, 2)
    assert not bool(np.any(draws.valid)) and int(draws.num_valid) == 0
    assert np.asarray(draws.pair_indices).tolist() == [0, 0, 0, 0]


def test_unknown_sampling():
    with pytest.raises(ValueError, match="unknown ABS sampling 'sorted'"):
        abs_lib.draw_pairs(jnp.ones((4,)), 1, 2, jax.random.key(0), "sorted")
