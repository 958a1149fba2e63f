"""Read model responses: tag normalization, the think-then-box format, the last \\boxed{...}, <answer> tags."""

from __future__ import annotations

import re

_SPACES_AROUND_TAG_CHARS = re.compile(r"\s*(<|>|/)\s*")
_BOXED = "\\boxed{"
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# Trailing ".*" as in EasyR1: text after the box (a full stop, a newline) keeps the format.
MATH_FORMAT = re.compile(r"<think>.*</think>.*\\boxed\{.*\}.*", re.DOTALL)


def normalize_tags(response: str) -> str:
    """Removes whitespace around '<', '>' and '/', so '< think >' and '</ think>' read as tags."""
    return _SPACES_AROUND_TAG_CHARS.sub(r"\1", response)


def math_format(response: str) -> float:
    """1.0 if the whole response is <think>...</think> ... \\boxed{...} (newlines allowed), else 0.0."""
    return 1.0 if MATH_FORMAT.fullmatch(response) else 0.0


def _balanced_content(text: str, start: int) -> str | None:
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None


def last_boxed_content(text: str) -> str | None:
    """The content of the last \\boxed{...} whose braces balance (nested braces kept), else None.

    An unclosed final \\boxed{ (a truncated response) is skipped in favour of the previous closed one.
    """
    position = text.rfind(_BOXED)
    while position >= 0:
        content = _balanced_content(text, position + len(_BOXED))
        if content is not None:
            return content
        position = text.rfind(_BOXED, 0, position)
    return None


def last_answer_tag_content(text: str) -> str | None:
    """The content of the last <answer>...</answer> pair (newlines allowed), else None."""
    matches = _ANSWER_TAG.findall(text)
    return matches[-1] if matches else None
