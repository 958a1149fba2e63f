"""Stopping on rewards that all fail: consecutive all-failed steps are counted, a step with a scored sample resets
the count, and the error names the failed samples by reason and the reward."""

import re

import pytest

from shuffle_r1_jax.rewards.health import AllFailedSteps, RewardHealthError

ALL_TIMED_OUT = {"timeout": 16, "exception": 0, "invalid_output": 0, "worker_died": 0}


def test_the_run_stops_at_max_steps_consecutive_all_failed_steps():
    steps = AllFailedSteps(max_steps=3, reward_name="math")
    steps.observe(ALL_TIMED_OUT, samples=16)
    steps.observe({"timeout": 10, "exception": 6}, samples=16)
    message = (
        "every reward failed in 3 consecutive steps (timeout 42, exception 6, invalid_output 0, worker_died 0); "
        "check reward.name = 'math' (the run stops at reward.max_failed_steps = 3; 0 = never)"
    )
    with pytest.raises(RewardHealthError, match=re.escape(message)):
        steps.observe(ALL_TIMED_OUT, samples=16)


def test_a_step_with_one_scored_sample_starts_the_count_again():
    steps = AllFailedSteps(max_steps=2, reward_name="math")
    steps.observe(ALL_TIMED_OUT, samples=16)
    steps.observe({"timeout": 15}, samples=16)
    steps.observe(ALL_TIMED_OUT, samples=16)
    assert steps.in_a_row == 1 and steps.failed["timeout"] == 16


def test_max_steps_zero_never_stops():
    steps = AllFailedSteps(max_steps=0, reward_name="math")
    for _ in range(10):
        steps.observe(ALL_TIMED_OUT, samples=16)
    assert steps.in_a_row == 10
