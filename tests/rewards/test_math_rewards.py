"""Hand-written cases for response parsing, the math-equivalence grader and the math / r1v rewards."""

import pytest

from shuffle_r1_jax.rewards.extract import last_answer_tag_content, last_boxed_content, normalize_tags
from shuffle_r1_jax.rewards.grader import math_equal
from shuffle_r1_jax.rewards.math_reward import math_reward
from shuffle_r1_jax.rewards.r1v_reward import r1v_reward


@pytest.mark.parametrize(
    "text,expected",
    [
        (r"so \boxed{3}", "3"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\{1, \{2\}\}}", r"\{1, \{2\}\}"),
        (r"\boxed{a_{i}^{2}} then \boxed{x^{y^{z}}}.", "x^{y^{z}}"),  # several boxes: the last wins
        (r"\boxed{4} and a truncated \boxed{\frac{1", "4"),  # an unclosed last box is skipped
        ("no box here", None),
        (r"\boxed 3", None),
    ],
)
def test_last_boxed_content(text, expected):
    assert last_boxed_content(text) == expected


def test_normalize_tags_and_answer_tag():
    assert normalize_tags("< think > a / b </ think >") == "<think>a/b</think>"
    assert last_answer_tag_content("<answer>1</answer> <answer>\n2\n</answer>") == "\n2\n"
    assert last_answer_tag_content("<answer>open") is None


@pytest.mark.parametrize(
    "given,truth",
    [
        (r"\frac{1}{2}", "0.5"),
        ("1/2", r"\frac{1}{2}"),
        (r"\dfrac{1}{2}", "0.5"),
        (r"\tfrac12", "1/2"),
        ("0.50", "0.5"),
        ("3.0", "3"),
        ("1,000", "1000"),
        (r"2\sqrt{2}", r"\sqrt{8}"),
        ("(x+1)^2", "x^2+2x+1"),
        ("5 cm", "5"),
        (r"5\,\text{cm}", "5"),
        (r"30^\circ", "30"),
        (r"10\%", "0.1"),
        ("x=3", "3"),
        (r"\{2,1\}", r"\{1,2\}"),
        ("B", "B"),
        ("(B)", "B"),
    ],
)
def test_equivalent_forms(given, truth):
    assert math_equal(given, truth)


@pytest.mark.parametrize(
    "given,truth",
    [("3", "4"), ("-3", "3"), ("0.333", "1/3"), ("(2,1)", "(1,2)"), ("A", "B"), ("", "3"), ("3", " ")],
)
def test_not_equivalent(given, truth):
    assert not math_equal(given, truth)


def test_documented_grader_limits():
    """What math-verify really does with words, units and precision (see grader.py docstring)."""
    assert math_equal("silent", "listen")  # words become products of one-letter symbols
    assert math_equal("5 m", "5 cm")  # units are dropped, not compared
    assert math_equal("0.1234567", "0.1234568")  # numbers compared after rounding to 6 decimals


def test_math_reward_correct_and_formatted():
    scores = math_reward("<think>half of one</think> The answer is \\boxed{\\dfrac{1}{2}}.", "0.5")
    assert scores == {"overall": 1.0, "format": 1.0, "accuracy": 1.0}


def test_math_reward_spaces_around_tags_are_normalized():
    scores = math_reward("< think >\n2+2\n</ think >\n\\boxed{4}", "4")
    assert scores["format"] == 1.0 and scores["accuracy"] == 1.0


@pytest.mark.parametrize(
    "response,answer,expected",
    [
        ("\\boxed{4}", "4", {"overall": 0.9, "format": 0.0, "accuracy": 1.0}),  # missing think tags
        ("<think>x</think> 4", "4", {"overall": 0.0, "format": 0.0, "accuracy": 0.0}),  # no box
        ("<think>x</think> \\boxed{5}", "4", {"overall": 0.1, "format": 1.0, "accuracy": 0.0}),
        ("<think>x \\boxed{4}</think> \\boxed{5}", "4", {"overall": 0.1, "format": 1.0, "accuracy": 0.0}),
        ("<think>x</think> \\boxed{5} no, \\boxed{4}", "4", {"overall": 1.0, "format": 1.0, "accuracy": 1.0}),
        (
            "<think>x</think> \\boxed{\\frac{\\sqrt{3}}{2}}",
            "\\frac{1}{2}\\sqrt{3}",
            {"overall": 1.0, "format": 1.0, "accuracy": 1.0},
        ),
        ("<think>x", "4", {"overall": 0.0, "format": 0.0, "accuracy": 0.0}),
    ],
)
def test_math_reward_cases(response, answer, expected):
    assert math_reward(response, answer) == pytest.approx(expected)


@pytest.mark.parametrize(
    "response,answer,expected",
    [
        ("<think>a</think>\n<answer>1/2</answer>", "0.5", {"overall": 1.0, "format": 1.0, "accuracy": 1.0}),
        ("<think>a</think><answer>3</answer>", "4", {"overall": 0.5, "format": 1.0, "accuracy": 0.0}),
        ("<answer>4</answer>", "4", {"overall": 0.5, "format": 0.0, "accuracy": 1.0}),
        ("<think>a</think> 4", "4", {"overall": 0.0, "format": 0.0, "accuracy": 0.0}),
        ("<think>a</think><answer>4</answer> trailing", "4", {"overall": 0.5, "format": 0.0, "accuracy": 1.0}),
    ],
)
def test_r1v_reward_cases(response, answer, expected):
    assert r1v_reward(response, answer) == pytest.approx(expected)


@pytest.mark.parametrize(
    "response, answer, expected",
    [
        # mathruler's equivalences, as math-verify's
        ("<think>half</think> \\boxed{\\frac{1}{2}}", "0.5", {"overall": 1.0, "format": 1.0, "accuracy": 1.0}),
        ("<think>x</think> \\boxed{\\dfrac{3}{4}}", "0.75", {"overall": 1.0, "format": 1.0, "accuracy": 1.0}),
        ("\\boxed{2}", "2", {"overall": 0.9, "format": 0.0, "accuracy": 1.0}),
        # the official grader takes the last box only, and an unclosed last box gives nothing ...
        ("<think>x</think> \\boxed{3} or \\boxed{4", "3", {"overall": 0.1, "format": 1.0, "accuracy": 0.0}),
        # ... and normalises no tag: spaced tags fail the format
        ("< think >x</ think > \\boxed{2}", "2", {"overall": 0.9, "format": 0.0, "accuracy": 1.0}),
        ("<think>x</think> no box", "2", {"overall": 0.0, "format": 0.0, "accuracy": 0.0}),
    ],
)
def test_official_math_reward(response, answer, expected):
    from shuffle_r1_jax.rewards import registry

    official = registry.get_reward_fn("math_official")
    assert official(response, answer) == pytest.approx(expected)


def test_the_official_and_default_math_rewards_differ_where_documented():
    from shuffle_r1_jax.rewards.official_math_reward import official_math_reward

    unclosed = "<think>x</think> \\boxed{3} or \\boxed{4"
    spaced = "< think >x</ think > \\boxed{2}"
    assert math_reward(unclosed, "3")["accuracy"] == 1.0 and official_math_reward(unclosed, "3")["accuracy"] == 0.0
    assert math_reward(spaced, "2")["format"] == 1.0 and official_math_reward(spaced, "2")["format"] == 0.0
