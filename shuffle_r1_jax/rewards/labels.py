"""Label rewards: a class label matched with synonyms, and an exact object count."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence

from shuffle_r1_jax.rewards.answer_parsing import MAX_ANSWER_CHARS, final_answer, load_json, think_answer_form

FORMAT_WEIGHT = 0.1
_ARTICLES = ("a", "an", "the")
_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty"
).split()
_COUNT_TOKEN = re.compile(
    r"(?<![\w.])(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)(?!\w)|\b(" + "|".join(_NUMBER_WORDS) + r")\b",
    re.IGNORECASE,
)


def normalize_label(text: str) -> str:
    """Unicode NFKC, case-folded, punctuation and symbols turned into spaces, whitespace collapsed, and a leading
    "a", "an" or "the" dropped: "The  Cat." -> "cat"."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    words = text.split()
    if len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    return " ".join(words)


def _read_label_answer(answer: str) -> tuple[str, list[str]]:
    """(label, synonyms) of a label answer: a plain label, or JSON {"label": str, "synonyms": [str, ...]}."""
    stripped = answer.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except ValueError as err:
            raise ValueError(f"label answer {answer[:200]!r} starts with '{{' but is not JSON: {err}") from err
        label, synonyms = value.get("label"), value.get("synonyms", [])
        if (
            not isinstance(label, str)
            or not isinstance(synonyms, list)
            or not all(isinstance(s, str) for s in synonyms)
        ):
            raise ValueError(f"label answer {answer[:200]!r} needs a string 'label' and a list of string 'synonyms'")
        return label, synonyms
    return stripped, []


def _accepted_labels(label: str, synonyms: Sequence[str], groups: Mapping[str, Sequence[str]] | None) -> set[str]:
    accepted = {normalize_label(s) for s in (label, *synonyms)}
    for key, values in (groups or {}).items():
        group = {normalize_label(s) for s in (key, *values)}
        if accepted & group:
            accepted |= group
    accepted.discard("")
    if not accepted:
        raise ValueError(f"label answer {label!r} is empty after normalization")
    return accepted


def _response_label(text: str) -> str:
    """The label a response's answer text gives: the "label" of a JSON object, else the text."""
    value = load_json(text) if text.lstrip().startswith(("{", "```")) else None
    if isinstance(value, dict) and isinstance(value.get("label"), str):
        return value["label"]
    return text


def label_match(
    response: str,
    answer: str,
    *,
    image_sizes: Sequence[Sequence[float]] | None = None,
    synonyms: Mapping[str, Sequence[str]] | None = None,
    format_weight: float = FORMAT_WEIGHT,
    require_tags: bool = False,
) -> dict[str, float]:
    """Scores one classification response: overall = (1 - format_weight) * accuracy + format_weight * format.

    The response's label is the last <answer>...</answer> content, else the last \\boxed{...} content, else the
    whole response; a JSON object there gives its "label". Accuracy is 1 when it equals, after
    `normalize_label`, the answer's label or one of its synonyms (exact match, no partial credit).

    Args:
      response: the model's response text.
      answer: the label ("golden retriever"), or JSON {"label": "sofa", "synonyms": ["couch"]}.
      image_sizes: unused (every reward may receive it).
      synonyms: groups of equivalent labels, {"sofa": ["couch", "settee"]}: when the answer's label or one of
        its synonyms is in a group (the key or a value), every member of the group is accepted.
      format_weight: weight of the format part in `overall`.
      require_tags: format also requires the whole response to be <think>...</think> <answer>...</answer>.

    Returns:
      {"overall", "format", "accuracy", "malformed"}: format is 1 when the label was marked by <answer> tags or
      \\boxed{} (and the tags are there when required); malformed is 1 when the label is empty or longer than
      16384 characters, and then every other part is 0.

    Raises:
      ValueError: the answer is malformed.
    """
    del image_sizes
    label, answer_synonyms = _read_label_answer(answer)
    accepted = _accepted_labels(label, answer_synonyms, synonyms)
    text, marked = final_answer(response, boxed=True)
    given = normalize_label(_response_label(text)) if len(text) <= MAX_ANSWER_CHARS else ""
    if not given:
        return {"overall": 0.0, "format": 0.0, "accuracy": 0.0, "malformed": 1.0}
    format_score = 1.0 if marked and (not require_tags or think_answer_form(response)) else 0.0
    accuracy = 1.0 if given in accepted else 0.0
    return {
        "overall": (1 - format_weight) * accuracy + format_weight * format_score,
        "format": format_score,
        "accuracy": accuracy,
        "malformed": 0.0,
    }


def _token_value(match: re.Match) -> float:
    digits, word = match.groups()
    if word is not None:
        return float(_NUMBER_WORDS.index(word.lower()))
    return float(digits.replace(",", ""))


def _read_count_answer(answer: str) -> int:
    try:
        value = float(answer.strip())
    except ValueError as err:
        raise ValueError(f"count answer {answer[:200]!r} is not a number") from err
    if not value.is_integer():
        raise ValueError(f"count answer {answer[:200]!r} is not an integer")
    return int(value)


def count_match(
    response: str,
    answer: str,
    *,
    image_sizes: Sequence[Sequence[float]] | None = None,
    format_weight: float = FORMAT_WEIGHT,
    require_tags: bool = False,
) -> dict[str, float]:
    """Scores one counting response: overall = (1 - format_weight) * accuracy + format_weight * format.

    The response's count is the last number in its final answer (the last <answer>...</answer> content, else
    the last \\boxed{...} content, else the last 16384 characters of the response): digits ("12", "1,000",
    "3.0") or a word from "zero" to "twenty", case-insensitive. Accuracy is 1 when it equals the answer.

    Args:
      response: the model's response text.
      answer: the true count, an integer ("3"; "3.0" is read as 3).
      image_sizes: unused (every reward may receive it).
      format_weight: weight of the format part in `overall`.
      require_tags: format also requires the whole response to be <think>...</think> <answer>...</answer>.

    Returns:
      {"overall", "format", "accuracy", "malformed"}: format is 1 when the count was marked by <answer> tags or
      \\boxed{} (and the tags are there when required); malformed is 1 when no number was found, and then every
      other part is 0.

    Raises:
      ValueError: the answer is not an integer.
    """
    del image_sizes
    expected = _read_count_answer(answer)
    text, marked = final_answer(response, boxed=True)
    tokens = list(_COUNT_TOKEN.finditer(text[-MAX_ANSWER_CHARS:]))
    if not tokens:
        return {"overall": 0.0, "format": 0.0, "accuracy": 0.0, "malformed": 1.0}
    format_score = 1.0 if marked and (not require_tags or think_answer_form(response)) else 0.0
    accuracy = 1.0 if _token_value(tokens[-1]) == expected else 0.0
    return {
        "overall": (1 - format_weight) * accuracy + format_weight * format_score,
        "format": format_score,
        "accuracy": accuracy,
        "malformed": 0.0,
    }
