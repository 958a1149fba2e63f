"""Find and read the final answer of a response for the perception rewards, in time linear in its length.

A response may be long, truncated, or adversarial (a megabyte of brackets, deeply nested JSON, NaN): every
function here returns None or an empty result instead of raising, and nothing is parsed past
`MAX_ANSWER_CHARS` characters.
"""

from __future__ import annotations

import json
import math
import numbers
from typing import Any

from shuffle_r1_jax.rewards.extract import last_boxed_content

MAX_ANSWER_CHARS = 16384
"""An answer region longer than this is not parsed (the sample counts as malformed)."""
BOXED_TAIL_CHARS = 4096
"""\\boxed{...} is looked for in this many last characters of a response (the search is quadratic in it)."""

_OPEN, _CLOSE = "<answer>", "</answer>"
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_FENCE = "```"


def answer_tag_content(response: str) -> str | None:
    """The text between the last "</answer>" and the last "<answer>" before it, else None."""
    close = response.rfind(_CLOSE)
    if close < 0:
        return None
    start = response.rfind(_OPEN, 0, close)
    if start < 0:
        return None
    return response[start + len(_OPEN) : close]


def think_answer_form(response: str) -> bool:
    """True if the stripped response is "<think>...</think>", optional whitespace, "<answer>...</answer>".

    The think block ends at the first "</think>"; the answer block runs to the end.
    """
    text = response.strip()
    if not text.startswith(_THINK_OPEN) or not text.endswith(_CLOSE):
        return False
    think_end = text.find(_THINK_CLOSE)
    if think_end < 0:
        return False
    rest = text[think_end + len(_THINK_CLOSE) :].lstrip()
    return rest.startswith(_OPEN) and len(rest) >= len(_OPEN) + len(_CLOSE)


def final_answer(response: str, *, boxed: bool) -> tuple[str, bool]:
    """The response's final answer and whether it was marked explicitly.

    Args:
      response: the model's response.
      boxed: also take the last \\boxed{...} in the last `BOXED_TAIL_CHARS` characters as a marked answer (after
        <answer> tags, before the whole response).

    Returns:
      (text, marked): the last <answer> content (marked), else the last \\boxed{} content when `boxed` (marked),
      else the whole response (not marked).
    """
    content = answer_tag_content(response)
    if content is not None:
        return content, True
    if boxed:
        content = last_boxed_content(response[-BOXED_TAIL_CHARS:])
        if content is not None:
            return content, True
    return response, False


def strip_code_fence(text: str) -> str:
    """The content of the last closed ``` fence (a leading "json" language tag dropped), else `text`."""
    parts = text.split(_FENCE)
    if len(parts) < 3:
        return text
    last_closed = len(parts) - 2 if len(parts) % 2 == 1 else len(parts) - 3
    content = parts[last_closed].lstrip(" \t")
    if content[:4].lower() == "json":
        content = content[4:]
    return content


def load_json(text: str, *, embedded: bool = True) -> Any | None:
    """`text` as JSON (the last code fence's content when there is one), else None.

    Args:
      text: the answer part of a response.
      embedded: when the whole text is not JSON, try its span from the first '[' or '{' to the last ']' or '}'
        (JSON inside prose).

    Returns:
      The parsed value, or None: not JSON, longer than `MAX_ANSWER_CHARS`, or nested deeper than Python's parser
      allows.
    """
    text = strip_code_fence(text).strip()
    if not text or len(text) > MAX_ANSWER_CHARS:
        return None
    candidates = [text]
    starts = [i for i in (text.find("["), text.find("{")) if i >= 0]
    end = max(text.rfind("]"), text.rfind("}"))
    if embedded and starts and end > min(starts):
        candidates.append(text[min(starts) : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except (ValueError, RecursionError):
            continue
    return None


def as_finite_number(value: Any) -> float | None:
    """`value` as a float if it is a finite real number (not a bool, not a string), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError):
        return None
    return number if math.isfinite(number) else None
