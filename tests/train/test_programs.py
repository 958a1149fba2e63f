"""The step programs' own logic: the selection program's step order."""

import dataclasses

import jax
import numpy as np

from shuffle_r1_jax.rl.batch_shuffle import chunked_step_order
from shuffle_r1_jax.rl.selection import SelectionConfig, select_update_rows
from shuffle_r1_jax.train.programs import select_minibatches


def test_the_trainers_selection_applies_the_official_step_order():
    adv, key = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32), jax.random.key(5)
    cfg = SelectionConfig("pts_abs", 16, 0.5, rounds=8)
    rows, valid, _ = select_update_rows(adv, cfg, key)
    official, official_valid, _ = select_minibatches(
        adv, key, selection=dataclasses.replace(cfg, update_chunks=4), minibatches=2
    )
    order = chunked_step_order(64, 4, 2)
    np.testing.assert_array_equal(np.concatenate(official), np.asarray(rows)[order])
    np.testing.assert_array_equal(np.concatenate(official_valid), np.asarray(valid)[order])
    plain, _, _ = select_minibatches(adv, key, selection=cfg, minibatches=2)
    np.testing.assert_array_equal(np.concatenate(plain), rows)
