import pytest

from shuffle_r1_jax.rewards import registry
from shuffle_r1_jax.rewards.math_reward import math_reward
from shuffle_r1_jax.rewards.r1v_reward import r1v_reward
from tests.rewards.faulty_rewards import flaky_reward


def test_builtin_names():
    assert registry.get_reward_fn("math") is math_reward
    assert registry.get_reward_fn("r1v") is r1v_reward
    assert {"math", "r1v"} <= set(registry.available_rewards())


def test_perception_reward_names():
    from shuffle_r1_jax.rewards.grounding import grounding_iou
    from shuffle_r1_jax.rewards.gui_action import gui_action
    from shuffle_r1_jax.rewards.labels import count_match, label_match

    assert registry.get_reward_fn("grounding_iou") is grounding_iou
    assert registry.get_reward_fn("label_match") is label_match
    assert registry.get_reward_fn("count_match") is count_match
    assert registry.get_reward_fn("gui_action") is gui_action


def test_module_function_path_and_callable():
    assert registry.get_reward_fn("tests.rewards.faulty_rewards:flaky_reward") is flaky_reward
    assert registry.get_reward_fn(flaky_reward) is flaky_reward


def test_register_user_reward(monkeypatch):
    monkeypatch.setattr(registry, "_REWARDS", dict(registry._REWARDS))  # undone after the test
    registry.register_reward("test_flaky", "tests.rewards.faulty_rewards:flaky_reward")
    assert registry.get_reward_fn("test_flaky") is flaky_reward
    with pytest.raises(ValueError, match="already registered"):
        registry.register_reward("test_flaky", flaky_reward)


@pytest.mark.parametrize(
    "spec,message",
    [
        ("nope", "unknown reward 'nope'"),
        ("no_such_module_xyz:fn", "cannot import module 'no_such_module_xyz'"),
        ("tests.rewards.faulty_rewards:missing", "has no callable 'missing'"),
        ("tests.rewards.faulty_rewards:", "not of the form"),
        (
            "tests.rewards.failing_import:reward",
            "cannot import module 'tests.rewards.failing_import' of reward 'tests.rewards.failing_import:reward': "
            "RuntimeError: the grader's tables are missing",
        ),
    ],
)
def test_bad_specs_name_the_problem(spec, message):
    with pytest.raises(ValueError, match=message):
        registry.get_reward_fn(spec)
