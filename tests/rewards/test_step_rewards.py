"""Hand-computed cases for R1-VL's StepGRPO rewards: soft key-step matching, StepRAR, StepRVR, the combination."""

import json
import math

import pytest

from shuffle_r1_jax.rewards import registry
from shuffle_r1_jax.rewards.step_rewards import parse_key_steps, step_grpo_reward, step_rar, step_rvr

GOOD = """### Image Description:
A right triangle with legs 3 and 4.
### Rationales:
Use the Pythagorean theorem.
### Let's think step by step.
### Step 1:
c^2 = 3^2 + 4^2 = 25
### Step 2:
So c = 5.0 and half of it is x = \\frac{1}{2} \\cdot 5
### The final answer is: \\boxed{5}
"""
PARTS = {"overall", "accuracy", "format", "step_rar", "step_rvr", "malformed"}


def test_step_rar_counts_the_fraction_of_key_steps_found():
    assert step_rar(GOOD, ["c^2=25", "c=5", "x=2.5"]) == 1.0
    assert step_rar(GOOD, ["c^2=25", "c=5", "c=6"]) == pytest.approx(2 / 3)
    assert step_rar(GOOD, ["c=7", "c=6"]) == 0.0
    # key steps are searched in the step sections only: "legs 3 and 4" is in the description
    assert step_rar(GOOD, ["legs 3 and 4", "c=5"]) == 0.5
    # alternatives: a group is found when one form is
    assert step_rar(GOOD, [["c=6", "c = 5"], "c=7"]) == 0.5


def test_key_steps_from_a_json_string_and_odd_inputs():
    assert step_rar(GOOD, json.dumps(["c^2=25", "c=6"])) == 0.5
    assert parse_key_steps('["x=0.5", ["c=5", "c = 5.0"], 2.5, null, true, ""]') == [
        ["x=0.5"],
        ["c=5", "c = 5.0"],
        ["2.5"],
    ]
    for nothing in (None, [], "", "[]", "c=5", "{not json", '{"a": 1}', ["", "  ", [""]], 3):
        assert parse_key_steps(nothing) == []
        assert step_rar(GOOD, nothing) == 0.0
    # empty items do not count in the denominator
    assert step_rar(GOOD, ["", "c=5", "  "]) == 1.0


def test_step_rar_without_step_sections_is_zero():
    assert step_rar("c = 5, so the answer is 5", ["c=5"]) == 0.0


def test_step_rvr_accepts_the_complete_ordered_structure():
    assert step_rvr(GOOD) == 1.0
    # rationales before the description, case and '#' count are free, no "Let's think" header
    swapped = "## rationales\nTheorem.\n#### IMAGE DESCRIPTION:\nA triangle.\n### Step 1: c=5\n### Final answer: 5"
    assert step_rvr(swapped) == 1.0


@pytest.mark.parametrize(
    "response",
    [
        # the answer before the reasoning
        "### The final answer is: 5\n### Image Description: t\n### Rationales: r\n### Step 1: c=5",
        # a step after the answer
        "### Image Description: t\n### Rationales: r\n### Step 1: c=5\n### The final answer is: 5\n### Step 2: x",
        # a step before the background
        "### Step 1: c=5\n### Image Description: t\n### Rationales: r\n### The final answer is: 5",
        # steps not numbered 1..K
        "### Image Description: t\n### Rationales: r\n### Step 1: a\n### Step 3: c=5\n### The final answer is: 5",
        "### Image Description: t\n### Rationales: r\n### Step 2: a\n### Step 1: c=5\n### The final answer is: 5",
        # missing parts
        "### Rationales: r\n### Step 1: c=5\n### The final answer is: 5",
        "### Image Description: t\n### Step 1: c=5\n### The final answer is: 5",
        "### Image Description: t\n### Rationales: r\n### The final answer is: 5",
        "### Image Description: t\n### Rationales: r\n### Step 1: c=5",
        # an empty section, two answers, a repeated description
        "### Image Description:\n### Rationales: r\n### Step 1: c=5\n### The final answer is: 5",
        "### Image Description: t\n### Rationales: r\n### Step 1: c=5\n### The final answer is: 5\n### Final answer: 5",
        "### Image Description: t\n### Rationales: r\n### Image Description: u\n### Step 1: c\n### Final answer: 5",
        # headers not at the start of a line
        "Image Description: t. Rationales: r. Step 1: c=5. The final answer is: 5",
    ],
)
def test_step_rvr_rejects_incomplete_or_disordered_reasoning(response):
    assert step_rvr(response) == 0.0


def test_combined_reward_with_the_default_weights():
    # R1-VL: accuracy + 0.1 * StepRAR + 1.0 * StepRVR, no format term
    scores = step_grpo_reward(GOOD, "5", key_steps=["c^2=25", "c=5", "c=6"])
    assert scores == {
        "overall": pytest.approx(1.0 + 0.1 * 2 / 3 + 1.0),
        "accuracy": 1.0,
        "format": 1.0,
        "step_rar": pytest.approx(2 / 3),
        "step_rvr": 1.0,
        "malformed": 0.0,
    }
    wrong = step_grpo_reward(GOOD, "6", key_steps=["c^2=25", "c=5", "c=6"])
    assert wrong["accuracy"] == 0.0 and wrong["overall"] == pytest.approx(0.1 * 2 / 3 + 1.0)


def test_combined_reward_with_given_weights():
    answer_first = "### The final answer is: 5\n### Image Description: t\n### Rationales: r\n### Step 1: c = 5"
    scores = step_grpo_reward(
        answer_first, "5", key_steps='["c=5", "d=1"]', accuracy_weight=0.5, format_weight=0.2, rar_weight=0.3
    )
    # the final answer is graded (accuracy 1) but is not last (format 0, StepRVR 0)
    assert (scores["accuracy"], scores["format"], scores["step_rar"], scores["step_rvr"]) == (1.0, 0.0, 0.5, 0.0)
    assert scores["overall"] == pytest.approx(0.5 * 1.0 + 0.2 * 0.0 + 0.3 * 0.5 + 1.0 * 0.0)


@pytest.mark.parametrize(
    "final,answer,accuracy",
    [
        ("### The final answer is: 0.5.", "1/2", 1.0),
        ("### The final answer is:\n\\boxed{\\frac{1}{2}}\nThat is all.", "0.5", 1.0),
        ("### The final answer is: B\nbecause ...", "B", 1.0),
        ("### The final answer is: 6", "5", 0.0),
        ("### The final answer is:", "5", 0.0),
    ],
)
def test_final_answer_extraction(final, answer, accuracy):
    assert step_grpo_reward(f"### Step 1: c = 5\n{final}", answer)["accuracy"] == accuracy


def test_malformed_when_there_is_no_final_answer_section():
    scores = step_grpo_reward("The answer is \\boxed{5}.", "5", key_steps=["c=5"])
    assert scores["malformed"] == 1.0
    assert scores["overall"] == scores["accuracy"] == scores["format"] == scores["step_rvr"] == 0.0


@pytest.mark.parametrize(
    "response",
    [
        "",
        "\x00\ud800 ∑ 𝔁 = ½ — ### Step 1: ∞",
        "### The final answer is: \\boxed{\\boxed{}}",
        "### The final answer is: \\boxed{\\boxed{5}}",
        "### The final answer is: \\boxed{\\boxed{",
        "### Step 99999999999: 1\n### The final answer is: " + "9" * 10_000,
        "x=" + "1=" * 5_000 + "\n### Step 1: x=" + "(" * 3_000,
        "### Step 1: " + "\\frac{" * 2_000 + "1" + "}" * 2_000,
        "### Step 1: " + "0." + "0" * 20_000 + "1 " + "1" * 5_000 + "/" + "7" * 5_000,
    ],
    ids=[
        "empty",
        "unicode",
        "empty-nested-box",
        "nested-box",
        "open-box",
        "long-numbers",
        "parentheses",
        "fracs",
        "digits",
    ],
)
def test_adversarial_responses_score_finite_parts(response):
    scores = step_grpo_reward(response, "5", key_steps=["x=0.5", "5", "", "1/7", ["\\boxed{", "x="]])
    assert set(scores) == PARTS
    assert all(isinstance(v, float) and math.isfinite(v) for v in scores.values())


def test_a_megabyte_response_is_scored():
    step = "### Step {}: we have x = 1/2 and 0.50 of 12 apples, twenty-one pears.\n"
    body = "".join(step.format(i + 1) for i in range(15_000))[: 1 << 20]
    response = "### Image Description: t\n### Rationales: r\n" + body + "\n### The final answer is: 5"
    scores = step_grpo_reward(response, "5", key_steps=["x=0.5", "21", "y=3", "12 apples"])
    assert scores["accuracy"] == 1.0 and scores["step_rar"] == 0.75


def test_registered_as_step_grpo():
    assert registry.get_reward_fn("step_grpo") is step_grpo_reward
    assert registry.get_reward_fn("step_grpo")(GOOD, "5")["step_rar"] == 0.0
