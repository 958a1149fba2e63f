"""The Shuffle-R1 / EasyR1 math reward: think-then-box format plus a math-equivalence accuracy."""

from __future__ import annotations

from shuffle_r1_jax.rewards.extract import last_boxed_content, math_format, normalize_tags
from shuffle_r1_jax.rewards.grader import math_equal

FORMAT_WEIGHT = 0.1


def math_reward(response: str, answer: str) -> dict[str, float]:
    """Scores one response: overall = 0.9 * accuracy + 0.1 * format.

    Spaces around '<', '>' and '/' are removed first. Accuracy grades the content of the last balanced
    \\boxed{...} against `answer` with `math_equal`; no box means accuracy 0. Format is 1 when the whole
    response is <think>...</think> ... \\boxed{...} (`math_format`).

    Args:
      response: the model's response text.
      answer: the ground-truth answer.

    Returns:
      {"overall", "format", "accuracy"}: floats, format and accuracy each 0.0 or 1.0.
    """
    response = normalize_tags(response)
    format_score = math_format(response)
    boxed = last_boxed_content(response)
    accuracy = 1.0 if boxed is not None and math_equal(boxed, answer) else 0.0
    return {
        "overall": (1 - FORMAT_WEIGHT) * accuracy + FORMAT_WEIGHT * format_score,
        "format": format_score,
        "accuracy": accuracy,
    }
