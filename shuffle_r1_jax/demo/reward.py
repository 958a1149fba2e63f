"""Reward for the synthetic image tasks (`shuffle_r1_jax.demo.synthetic`): exact match of a short answer.

It is not a registered reward name: the demo config names it by path, "shuffle_r1_jax.demo.reward:synthetic_reward".
"""

from __future__ import annotations

import re

from shuffle_r1_jax.rewards.extract import last_boxed_content, normalize_tags

FORMAT_WEIGHT = 0.1
_STRICT_FORMAT = re.compile(r"<think>[^<>{}]*</think>\s*\\boxed\{[^{}]*\}\s*")
_ANSWER_AFTER_COLON = re.compile(r"answer\s*:\s*([A-Za-z0-9]+)", re.IGNORECASE)


def extract_short_answer(response: str) -> str | None:
    """The answer a response commits to, lower-cased, or None when it commits to none.

    The answer is the content of the last balanced \\boxed{...} (stripped), else the word (ASCII letters and
    digits) of the last "answer: <word>" (any case).
    """
    boxed = last_boxed_content(response)
    if boxed is not None:
        return boxed.strip().lower()
    matches = _ANSWER_AFTER_COLON.findall(response)
    return matches[-1].lower() if matches else None


def synthetic_reward(response: str, answer: str) -> dict[str, float]:
    """Scores one response: overall = 0.9 * accuracy + 0.1 * format (the math reward's weights).

    Accuracy is 1 when the response commits to one answer (at most one \\boxed{}) and it equals `answer`
    exactly, ignoring case and surrounding whitespace ("3" and "red" are answers; "3.0" or "three" are not).
    Format is strict: one <think>...</think> block (no tags or braces inside) then one \\boxed{...} that ends
    the response, after the math reward's tag normalization; several boxes (hedging) score 0 on both.

    Args:
      response: the model's response text.
      answer: the sample's ground-truth answer.

    Returns:
      {"overall", "format", "accuracy"}: floats, format and accuracy each 0.0 or 1.0.
    """
    response = normalize_tags(response)
    given = extract_short_answer(response) if response.count("\\boxed{") <= 1 else None
    accuracy = 1.0 if given is not None and given == answer.strip().lower() else 0.0
    format_score = 1.0 if _STRICT_FORMAT.fullmatch(response) else 0.0
    return {
        "overall": (1 - FORMAT_WEIGHT) * accuracy + FORMAT_WEIGHT * format_score,
        "format": format_score,
        "accuracy": accuracy,
    }
