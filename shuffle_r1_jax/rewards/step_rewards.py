"""R1-VL's StepGRPO rewards (arXiv 2503.12937): StepRAR (key steps found), StepRVR (complete, ordered reasoning).

The expected response is R1-VL's structured reasoning, one header per line:

    ### Image Description:
    The figure shows a right triangle with legs 3 and 4.
    ### Rationales:
    The Pythagorean theorem gives the hypotenuse.
    ### Let's think step by step.
    ### Step 1:
    c^2 = 3^2 + 4^2 = 25
    ### Step 2:
    c = 5
    ### The final answer is: 5

A header is a line starting with 1 to 6 '#', then (case-insensitive, optional trailing ':' or '.') one of
"Image Description", "Rationale(s)", "Let's think step by step", "Step N" (N of at most 6 digits),
"The final answer is" or "Final answer". A section is the text from its header to the next header; text before
the first header is ignored. The final answer is the content of the last final-answer section: the content of
its last \\boxed{...} if it has one, else its first non-empty line, without a trailing '.'.

StepRVR (`step_rvr`) is 1.0 when the reasoning is complete and in logical order, else 0.0:
  - complete: a description ("Image Description") and a rationale section (the paper's background analysis), at
    least one step, and a final answer, each with non-empty content;
  - ordered: description and rationales (each exactly once, either order) come before every step, a "Let's
    think step by step" header (its content is not checked) appears only before Step 1, the steps are numbered
    1, 2, ..., K in order with nothing between them, and exactly one final-answer section comes last.
  So an answer before the reasoning, a missing description, "Step 1, Step 3", or a step after the answer scores 0.

StepRAR (`step_rar`) is the fraction of annotated key steps present (`soft_match.key_step_matcher`) in the
text of the step sections ("Step N"); a response without step sections scores 0. Key steps are a list whose
items are a key step (a string; an int or float is read as its decimal string) or a list of alternative
forms of one key step (present when any form is); or a JSON string of such a list. Items that are empty after
normalization, and items of other types, are dropped. No key steps (None, an empty list, a string that is not
a JSON list, only empty items) gives StepRAR 0.0: it is then equal for every response of a prompt and does
not move the advantages.

`step_grpo_reward` combines them (R1-VL: accuracy + 0.1 * StepRAR, plus StepRVR with weight 1, no format
reward; these are the defaults):
    overall = accuracy_weight * accuracy + format_weight * format + rar_weight * step_rar + rvr_weight * step_rvr
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence

from shuffle_r1_jax.rewards.extract import last_boxed_content
from shuffle_r1_jax.rewards.grader import math_equal
from shuffle_r1_jax.rewards.soft_match import key_step_matcher, normalize

ACCURACY_WEIGHT = 1.0
FORMAT_WEIGHT = 0.0
RAR_WEIGHT = 0.1
RVR_WEIGHT = 1.0
MAX_ANSWER_LENGTH = 512  # a longer final answer is graded wrong without calling the grader

_HEADER = re.compile(
    r"^[ \t]*#{1,6}[ \t]*(?:(?P<description>image description)|(?P<rationales>rationales?)"
    r"|(?P<think>let['’]?s think step by step)|step[ \t]*(?P<step>\d{1,6})|(?P<final>(?:the )?final answer is"
    r"|final answer))[ \t]*[:.]?",
    re.IGNORECASE | re.MULTILINE,
)
_KINDS = ("description", "rationales", "think", "step", "final")


@dataclasses.dataclass(frozen=True)
class Section:
    """One header's section: kind in _KINDS, the step number (steps only, else 0), the text up to the next header."""

    kind: str
    number: int
    content: str


def parse_sections(response: str) -> list[Section]:
    """The response's sections in order (see the module docstring). Never raises."""
    headers = list(_HEADER.finditer(response))
    sections = []
    for i, header in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(response)
        kind = next(name for name in _KINDS if header[name] is not None)
        number = int(header["step"]) if kind == "step" else 0
        sections.append(Section(kind, number, response[header.end() : end]))
    return sections


def final_answer(sections: Sequence[Section]) -> str | None:
    """The final answer text (module docstring), None without a final-answer section; may be empty."""
    finals = [section.content for section in sections if section.kind == "final"]
    if not finals:
        return None
    content = finals[-1]
    boxed = last_boxed_content(content)
    if boxed is not None:
        return boxed.strip()
    lines = [line.strip() for line in content.splitlines() if line.strip()]
    return lines[0].rstrip(".").strip() if lines else ""


def _is_valid(sections: Sequence[Section]) -> bool:
    kinds = [section.kind for section in sections]
    if any(not section.content.strip() for section in sections if section.kind != "think"):
        return False
    if kinds.count("description") != 1 or kinds.count("rationales") != 1 or kinds.count("final") != 1:
        return False
    if "step" not in kinds:
        return False
    first_step = kinds.index("step")
    background = [kind for kind in kinds[:first_step] if kind != "think"]
    if sorted(background) != ["description", "rationales"]:
        return False
    steps = [section.number for section in sections[first_step:-1]]
    return kinds[first_step:-1] == ["step"] * len(steps) and steps == list(range(1, len(steps) + 1))


def step_rvr(response: str) -> float:
    """StepRVR: 1.0 when the response's reasoning is complete and in order (module docstring), else 0.0."""
    return 1.0 if _is_valid(parse_sections(response)) else 0.0


def parse_key_steps(key_steps: object) -> list[list[str]]:
    """Key steps as lists of alternative forms, from a list or a JSON string of one (module docstring).

    Examples: '["x=0.5", ["c=5", "c = 5.0"]]' -> [["x=0.5"], ["c=5", "c = 5.0"]]; None, "", "x=1" -> [].
    """
    if isinstance(key_steps, str):
        try:
            key_steps = json.loads(key_steps)
        except ValueError:
            return []
    if hasattr(key_steps, "tolist"):  # a numpy array from a parquet list column
        key_steps = key_steps.tolist()
    if not isinstance(key_steps, (list, tuple)):
        return []
    parsed = []
    for item in key_steps:
        forms = [_as_text(form) for form in (item if isinstance(item, (list, tuple)) else [item])]
        forms = [form for form in forms if form is not None and normalize(form)]
        if forms:
            parsed.append(forms)
    return parsed


def _as_text(form: object) -> str | None:
    if isinstance(form, str):
        return form
    if isinstance(form, (int, float)) and not isinstance(form, bool):
        return str(form)
    return None


def _rar(sections: Sequence[Section], key_steps: object) -> float:
    groups = parse_key_steps(key_steps)
    step_text = "\n".join(section.content for section in sections if section.kind == "step")
    if not groups or not step_text.strip():
        return 0.0
    present = key_step_matcher(step_text)
    return sum(any(present(form) for form in forms) for forms in groups) / len(groups)


def step_rar(response: str, key_steps: object) -> float:
    """StepRAR: the fraction of key steps found in the response's step sections (module docstring), in [0, 1]."""
    return _rar(parse_sections(response), key_steps)


def step_grpo_reward(
    response: str,
    answer: str,
    *,
    key_steps: object = None,
    accuracy_weight: float = ACCURACY_WEIGHT,
    format_weight: float = FORMAT_WEIGHT,
    rar_weight: float = RAR_WEIGHT,
    rvr_weight: float = RVR_WEIGHT,
) -> dict[str, float]:
    """Scores one response with R1-VL's StepGRPO rewards.

    Args:
      response: the model's response text (any string; never raises).
      answer: the ground-truth final answer, graded with `grader.math_equal`.
      key_steps: the record's annotated key steps (module docstring), or None.
      accuracy_weight, format_weight, rar_weight, rvr_weight: the weights of the parts in "overall".

    Returns:
      {"overall", "accuracy", "format", "step_rar", "step_rvr", "malformed"}: floats. accuracy: 1.0 when the final
      answer is math-equal to `answer` (and at most MAX_ANSWER_LENGTH characters). format: 1.0 when exactly one
      final-answer section exists, it is the last section and its answer is non-empty. step_rar in [0, 1];
      step_rvr 0.0 or 1.0. malformed: 1.0 when the response has no final-answer section (nothing to grade).
    """
    sections = parse_sections(response)
    predicted = final_answer(sections)
    accuracy = 0.0
    if predicted and len(predicted) <= MAX_ANSWER_LENGTH:
        try:
            accuracy = 1.0 if math_equal(predicted, answer) else 0.0
        except Exception:  # the grader's parsers may fail on odd text: an ungradable answer is wrong
            accuracy = 0.0
    kinds = [section.kind for section in sections]
    format_score = 1.0 if predicted and kinds.count("final") == 1 and kinds[-1] == "final" else 0.0
    rar = _rar(sections, key_steps)
    rvr = 1.0 if _is_valid(sections) else 0.0
    return {
        "overall": accuracy_weight * accuracy + format_weight * format_score + rar_weight * rar + rvr_weight * rvr,
        "accuracy": accuracy,
        "format": format_score,
        "step_rar": rar,
        "step_rvr": rvr,
        "malformed": 1.0 if predicted is None else 0.0,
    }
