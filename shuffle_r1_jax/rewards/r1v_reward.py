"""The R1-V style reward: <think>...</think> <answer>...</answer> format, equal weight on accuracy."""

from __future__ import annotations

import re

from shuffle_r1_jax.rewards.extract import last_answer_tag_content
from shuffle_r1_jax.rewards.grader import math_equal

R1V_FORMAT = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
FORMAT_WEIGHT = 0.5


def r1v_reward(response: str, answer: str) -> dict[str, float]:
    """Scores one response: overall = 0.5 * accuracy + 0.5 * format.

    Format: the whole response is <think>...</think>, optional whitespace, <answer>...</answer>.
    Accuracy: the content of the last <answer>...</answer> is math-equivalent to `answer`
    (`math_equal`); a response without answer tags scores accuracy 0.

    Args:
      response: the model's response text.
      answer: the ground-truth answer.

    Returns:
      {"overall", "format", "accuracy"}: floats, format and accuracy each 0.0 or 1.0.
    """
    format_score = 1.0 if R1V_FORMAT.fullmatch(response) else 0.0
    content = last_answer_tag_content(response)
    accuracy = 1.0 if content is not None and math_equal(content, answer) else 0.0
    return {
        "overall": (1 - FORMAT_WEIGHT) * accuracy + FORMAT_WEIGHT * format_score,
        "format": format_score,
        "accuracy": accuracy,
    }
