"""Rollout metrics by hand: pass rates per prompt and the share of groups without a reward difference."""

import numpy as np

from shuffle_r1_jax.rollout.metrics import group_pass_rates


def test_pass_rates_read_accuracy_when_there_is_one():
    parts = {
        "overall": np.asarray([0.1, 1.0, 1.0, 0.1, 0.1, 0.1], np.float32),
        "accuracy": np.asarray([0.0, 1.0, 1.0, 0.0, 0.0, 0.0], np.float32),
    }
    np.testing.assert_allclose(group_pass_rates(parts, 3), [2 / 3, 0.0])


def test_pass_rates_fall_back_to_overall_clipped():
    parts = {"overall": np.asarray([1.5, 0.5, -1.0, 0.25], np.float32)}
    np.testing.assert_allclose(group_pass_rates(parts, 2), [0.75, 0.125])
