"""The official Shuffle-R1 math reward (EasyR1's `math_compute_score`), for paper fidelity: mathruler's
`grade_answer` on the content of the last `\\boxed{` (an unclosed last box gives nothing), the same think-then-box
format regex, no tag normalisation. `math` (math-verify, tag normalisation, the last closed box) is the default
elsewhere: BUILD_NOTES.md "Rewards" says why.

mathruler does not declare its dependencies: `pip install -e ".[paper]"` installs it with sympy and pylatexenc.
"""

from __future__ import annotations

from mathruler.grader import extract_boxed_content, grade_answer

from shuffle_r1_jax.rewards.extract import math_format

FORMAT_WEIGHT = 0.1


def official_math_reward(response: str, answer: str) -> dict[str, float]:
    """Scores one response as the official code does: overall = 0.9 * accuracy + 0.1 * format.

    Args:
      response: the model's response text.
      answer: the ground-truth answer.

    Returns:
      {"overall", "format", "accuracy"}: floats, format and accuracy each 0.0 or 1.0.
    """
    format_score = math_format(response)
    accuracy = 1.0 if grade_answer(extract_boxed_content(response), answer) else 0.0
    return {
        "overall": (1 - FORMAT_WEIGHT) * accuracy + FORMAT_WEIGHT * format_score,
        "format": format_score,
        "accuracy": accuracy,
    }
