"""Every perception reward returns finite parts for any response string, however large or strange."""

import math
import time

import pytest

from shuffle_r1_jax.rewards import registry

REWARDS = {
    "grounding_iou": '[{"bbox_2d": [100, 50, 300, 250]}]',
    "label_match": '{"label": "cat", "synonyms": ["kitty"]}',
    "count_match": "3",
    "gui_action": '{"action": "click", "bbox": [100, 50, 300, 250]}',
}
SIZES = [(1000, 500, 504, 252)]
MEGABYTE = 1 << 20

ADVERSARIAL = {
    "empty": "",
    "whitespace": " \n\t ",
    "open brackets": "[" * MEGABYTE,
    "balanced brackets": "[" * (MEGABYTE // 2) + "]" * (MEGABYTE // 2),
    "braces": "{" * MEGABYTE,
    "deep json in answer": "<answer>" + "[" * 5000 + "1, 2, 3, 4" + "]" * 5000 + "</answer>",
    "deep objects": "<answer>" + '{"a": ' * 900 + "1" + "}" * 900 + "</answer>",
    "many answer tags": "<answer>" * (MEGABYTE // 8),
    "many closing tags": "</answer>" * (MEGABYTE // 9),
    "many fences": "```" * (MEGABYTE // 3),
    "many boxes": "<answer>" + "[1, 2, 3, 4], " * 50000 + "</answer>",
    "many corner pairs": "(1, 2), (3, 4) " * 50000,
    "many numbers": "1, " * (MEGABYTE // 3),
    "long digits": "<answer>[" + "9" * 10000 + ", 0, 1, 1]</answer>",
    "unicode": "<answer>猫 🐱 \u202e\u0000 ｃａｔ ٣</answer>",
    "surrogates": "<answer>\ud800\udfff</answer>",
    "nan and inf": '<answer>[{"bbox_2d": [NaN, -Infinity, Infinity, 1e999], "coordinate": [NaN, 1]}]</answer>',
    "nan click": '<answer>{"action": "click", "coordinate": [NaN, Infinity]}</answer>',
    "negative box": '<answer>[{"bbox_2d": [-300, -250, -100, -50]}]</answer>',
    "bool box": "<answer>[true, false, true, 1]</answer>",
    "json null": "<answer>null</answer>",
    "json string": '<answer>"cat"</answer>',
    "think only": "<think>" * 1000,
    "boxed storm": "\\boxed{" * (MEGABYTE // 7),
}


@pytest.mark.parametrize("reward_name", sorted(REWARDS))
@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_any_response_gives_finite_parts(reward_name, case):
    fn = registry.get_reward_fn(reward_name)
    start = time.perf_counter()
    scores = fn(ADVERSARIAL[case], REWARDS[reward_name], image_sizes=SIZES)
    elapsed = time.perf_counter() - start
    assert {"overall", "format", "accuracy", "malformed"} <= set(scores)
    for name, value in scores.items():
        assert type(value) is float and math.isfinite(value), (name, value)
    assert scores["malformed"] in (0.0, 1.0)
    if scores["malformed"]:
        assert scores["overall"] == 0.0
    assert elapsed < 5.0, f"{reward_name} took {elapsed:.1f} s on {case!r}"


@pytest.mark.parametrize("reward_name", sorted(REWARDS))
def test_rewards_run_without_image_sizes(reward_name):
    scores = registry.get_reward_fn(reward_name)("<answer>3</answer>", REWARDS[reward_name])
    assert scores["malformed"] in (0.0, 1.0)
