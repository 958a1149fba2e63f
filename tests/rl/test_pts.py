"""Pairwise Trajectory Sampling: exact indices against a NumPy re-implementation of the official pairing."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shuffle_r1_jax.rl import pts

SETTINGS = settings(max_examples=40, deadline=None)
SHAPES = [(1, 2), (3, 4), (2, 8), (4, 16)]
KEEP_RATIOS = [0.25, 0.5, 0.75, 1.0]


def np_official_pts(adv, keep_ratio, rerank=False):
    """The official pairing: stable descending sort, i-th best with i-th worst, first M pairs."""
    out = []
    for row in adv:
        n = len(row)
        order = np.argsort(-row, kind="stable")
        # Python's sort(reverse=True), as the official code uses, is the same stable descending order.
        assert list(order) == sorted(range(n), key=lambda i: row[i], reverse=True)
        pairs = [(order[i], order[n - 1 - i]) for i in range(n // 2)]
        if rerank:
            magnitude = np.array([abs(row[a]) + abs(row[b]) for a, b in pairs])
            pairs = [pairs[i] for i in np.argsort(-magnitude, kind="stable")]
        kept = int(n // 2 * keep_ratio)
        out.append([i for pair in pairs[:kept] for i in pair])
    return np.array(out, np.int32)


@st.composite
def advantages(draw):
    g, n = draw(st.sampled_from(SHAPES))
    if draw(st.booleans()):  # heavily tied: few distinct values
        values = draw(st.lists(st.sampled_from([-1.0, 0.0, 0.0, 0.5, 1.0]), min_size=g * n, max_size=g * n))
    else:
        values = draw(st.lists(st.floats(-3, 3, width=32, allow_subnormal=False), min_size=g * n, max_size=g * n))
    return np.array(values, np.float32).reshape(g, n)


@functools.partial(jax.jit, static_argnames=("keep_ratio", "rerank_by_magnitude", "variant"))
def run_pts(adv, keep_ratio, rerank_by_magnitude=False, variant="pairs", key=None):
    return pts.pairwise_trajectory_sampling(
        adv, keep_ratio, rerank_by_magnitude=rerank_by_magnitude, variant=variant, key=key
    )


@SETTINGS
@given(advantages(), st.sampled_from(KEEP_RATIOS), st.booleans())
def test_pairs_match_official(adv, keep_ratio, rerank):
    if int(adv.shape[1] // 2 * keep_ratio) < 1:
        return
    out = np.asarray(run_pts(jnp.asarray(adv), keep_ratio, rerank_by_magnitude=rerank))
    np.testing.assert_array_equal(out, np_official_pts(adv, keep_ratio, rerank))
    assert out.dtype == np.int32


@SETTINGS
@given(advantages(), st.sampled_from(KEEP_RATIOS))
def test_side_variants(adv, keep_ratio):
    kept = int(adv.shape[1] // 2 * keep_ratio)
    if kept < 1:
        return
    order = np.stack([np.argsort(-row, kind="stable") for row in adv])
    np.testing.assert_array_equal(run_pts(jnp.asarray(adv), keep_ratio, variant="max_side"), order[:, : 2 * kept])
    np.testing.assert_array_equal(
        run_pts(jnp.asarray(adv), keep_ratio, variant="min_side"), order[:, ::-1][:, : 2 * kept]
    )


def test_random_variant_is_a_seeded_subset():
    adv = jnp.zeros((64, 8))
    a = np.asarray(run_pts(adv, 0.5, variant="random", key=jax.random.key(0)))
    b = np.asarray(run_pts(adv, 0.5, variant="random", key=jax.random.key(0)))
    c = np.asarray(run_pts(adv, 0.5, variant="random", key=jax.random.key(1)))
    assert a.shape == (64, 8 // 2 // 2 * 2) and a.dtype == np.int32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert all(len(set(row)) == len(row) for row in a) and a.min() >= 0 and a.max() < 8
    assert len({tuple(row) for row in a}) > 32  # groups are permuted independently


def test_example_from_the_paper_layout():
    adv = jnp.array([[0.1, 2.0, -1.0, 0.0, -3.0, 1.0]])
    np.testing.assert_array_equal(run_pts(adv, 1.0), [[1, 4, 5, 2, 0, 3]])
    np.testing.assert_array_equal(run_pts(adv, 0.7), [[1, 4, 5, 2]])  # int(3 * 0.7) = 2
    pa = pts.pair_advantages(adv, run_pts(adv, 1.0))
    np.testing.assert_allclose(pa, [[2.0, -3.0], [1.0, -1.0], [0.1, 0.0]])


def test_all_equal_group_is_kept_in_order():
    np.testing.assert_array_equal(run_pts(jnp.zeros((1, 8)), 0.5), [[0, 7, 1, 6]])


def test_pair_advantages_order_matches_pair_ids():
    adv = jnp.arange(12.0).reshape(2, 6)
    idx = run_pts(adv, 2 / 3)  # M = 2
    pa = np.asarray(pts.pair_advantages(adv, idx))
    assert pa.shape == (4, 2)
    np.testing.assert_allclose(pa, [[5, 0], [4, 1], [11, 6], [10, 7]])


@pytest.mark.parametrize(
    "n, keep_ratio, match",
    [
        (5, 0.5, "n=5"),
        (1, 0.5, "n=1"),
        (8, 0.0, "keep_ratio=0.0"),
        (8, 1.5, "keep_ratio=1.5"),
        (8, -0.2, "keep_ratio=-0.2"),
        (2, 0.5, "at least 1"),
        (8, 0.2, "at least 1"),
    ],
)
def test_config_errors(n, keep_ratio, match):
    with pytest.raises(ValueError, match=match):
        pts.pairwise_trajectory_sampling(jnp.zeros((2, n)), keep_ratio)


def test_option_errors():
    with pytest.raises(ValueError, match="key"):
        pts.pairwise_trajectory_sampling(jnp.zeros((2, 4)), 0.5, variant="random")
    with pytest.raises(ValueError, match="'pairs'"):
        pts.pairwise_trajectory_sampling(jnp.zeros((2, 4)), 0.5, variant="min_side", rerank_by_magnitude=True)
    with pytest.raises(ValueError, match="bogus"):
        pts.pairwise_trajectory_sampling(jnp.zeros((2, 4)), 0.5, variant="bogus")
