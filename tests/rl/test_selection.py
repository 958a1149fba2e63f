"""Update-batch selection per algorithm: sizes match the spec's arithmetic, rows point at the right rollouts."""

import jax
import numpy as np
import pytest

from shuffle_r1_jax.rl.algorithms import ALGORITHMS, get_algorithm
from shuffle_r1_jax.rl.selection import SelectionConfig, register_selector, rows_per_prompt, select_update_rows


def _advantages(groups=4, n=16, seed=0):
    return np.random.default_rng(seed).standard_normal((groups, n)).astype(np.float32)


@pytest.mark.parametrize("selection, per_prompt", [("all", 16), ("cppo", 8), ("pts", 8), ("pts_abs", 8)])
def test_update_batch_sizes(selection, per_prompt):
    cfg = SelectionConfig(selection=selection, group_size=16, keep_ratio=0.5, rounds=8, cppo_prune=0.5)
    rows, valid, _ = select_update_rows(_advantages(), cfg, jax.random.key(0))
    assert rows_per_prompt(cfg) == per_prompt and rows.shape == valid.shape == (4 * per_prompt,)
    assert np.all((np.asarray(rows) >= 0) & (np.asarray(rows) < 64))


def test_pts_rows_pair_best_with_worst_of_the_same_prompt():
    adv = _advantages()
    cfg = SelectionConfig(selection="pts", group_size=16, keep_ratio=0.5)
    rows = np.asarray(select_update_rows(adv, cfg, jax.random.key(0))[0]).reshape(4, 4, 2)
    for g in range(4):
        order = np.argsort(-adv[g], kind="stable")
        expected = np.stack([order[:4], order[::-1][:4]], 1) + 16 * g
        np.testing.assert_array_equal(rows[g], expected)


def test_shuffle_rows_are_kept_pairs_drawn_by_weight():
    adv = _advantages(groups=8)
    adv[3] = 0.0  # an all-equal group: weight 0, never drawn
    cfg = SelectionConfig(selection="pts_abs", group_size=16, keep_ratio=0.5, rounds=8)
    rows, valid, stats = select_update_rows(adv, cfg, jax.random.key(1))
    rows = np.asarray(rows)
    kept = {
        tuple(p)
        for p in np.asarray(select_update_rows(adv, SelectionConfig("pts", 16, 0.5), jax.random.key(1))[0]).reshape(
            -1, 2
        )
    }
    assert all(tuple(p) in kept for p in rows.reshape(-1, 2))  # every drawn pair is a PTS pair, kept adjacent
    assert not np.any((rows >= 48) & (rows < 64))
    assert np.all(np.asarray(valid)) and int(stats["abs/num_valid"]) == 8 * 4


def test_unknown_algorithm_is_named():
    with pytest.raises(ValueError, match="'a2c'.*shuffle_r1"):
        get_algorithm("a2c")
    assert set(ALGORITHMS) >= {
        "grpo",
        "dr_grpo",
        "dapo",
        "rloo",
        "reinforce_pp",
        "cppo",
        "shuffle_r1",
        "pts_only",
        "abs_only",
        "ppo",
        "vc_ppo",
        "orz_ppo",
        "opmd",
    }


def test_a_new_selector_is_one_registered_function():
    from shuffle_r1_jax.rl import selection

    @register_selector("test_first_of_each_group", rows_per_prompt=lambda cfg: 1)
    def first_of_each_group(rollout_advantages, cfg, key):
        groups, n = rollout_advantages.shape
        rows = np.arange(groups, dtype=np.int32) * n
        return rows, np.ones_like(rows, bool), {}

    try:
        cfg = SelectionConfig(selection="test_first_of_each_group", group_size=16)
        rows, valid, _ = select_update_rows(_advantages(), cfg, jax.random.key(0))
        assert rows_per_prompt(cfg) == 1 and list(rows) == [0, 16, 32, 48] and valid.all()
        assert "test_first_of_each_group" in selection.available_selectors()
        with pytest.raises(ValueError, match="already registered"):
            register_selector("test_first_of_each_group", rows_per_prompt=lambda cfg: 1)(first_of_each_group)
    finally:
        selection._SELECTORS.remove("test_first_of_each_group")
    with pytest.raises(ValueError, match="unknown update-batch selector 'test_first_of_each_group'; known: all, cppo"):
        rows_per_prompt(cfg)


def test_one_round_with_all_pairs_is_every_kept_pair_in_pts_order():
    """The official S = 1: every kept pair, zero-weight pairs too, in PTS order (no draw)."""
    adv = _advantages(groups=4)
    adv[1] = 0.0  # an all-equal group: weight 0, masked out by a weighted draw
    pts = select_update_rows(adv, SelectionConfig("pts", 16, 0.5), jax.random.key(3))[0]
    official = SelectionConfig("pts_abs", 16, 0.5, rounds=1, single_round="all_pairs")
    rows, valid, _ = select_update_rows(adv, official, jax.random.key(3))
    np.testing.assert_array_equal(rows, pts)
    assert np.asarray(valid).all()
    drawn = SelectionConfig("pts_abs", 16, 0.5, rounds=1)
    rows, valid, _ = select_update_rows(adv, drawn, jax.random.key(3))
    assert not np.asarray(valid).all() and sorted(np.asarray(rows)[np.asarray(valid)]) == sorted(
        r for r in np.asarray(pts) if not 16 <= r < 32
    )
