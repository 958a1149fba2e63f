"""Stages and the response-length schedule: which config values hold at which training steps.

A run may be cut into stages (`stages`, in order), each with its own data, reward and response length and a step
count (LMM-R1's text-only stage before its image-text one; Curr-ReFT's yes/no, then multiple-choice, then open
questions, each with its reward). A stage is a mapping or a string of `key=value` pairs separated by ";":

    "name=text; steps=100; data.train=text.parquet; data.images_column=; reward.name=math"

`steps` is required, `name` optional; every other key is a config key from `STAGE_KEYS` set for the stage's
steps (values are Python literals, else strings). The stages' steps add up to `train.total_steps`. Each stage
reads its data with its own iterator, seeded by `data.seed` + the stage's index.

`rollout.length_schedule` (Vision-R1's progressive thinking suppression) is a tuple of (first step, response
length) pairs: from that step on, responses stop at that length. Each distinct length compiles the step's
programs once (the lengths are the buckets); `rollout.max_new_tokens` stays the longest (memory is planned and
validation runs at it). A stage may set `rollout.max_new_tokens` instead, but not both.

Stages and schedule together cut the run into phases: runs of steps with one stage and one length.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

# what may change between stages: the data, the reward and the response length (the model, the optimizer and the
# batch shapes cannot)
STAGE_KEYS = frozenset(
    {
        "data.train",
        "data.prompt_column",
        "data.answer_column",
        "data.images_column",
        "data.videos_column",
        "data.image_dir",
        "data.prompt_format",
        "data.sampling",
        "data.priority_floor",
        "data.pass_rate_update_weight",
        "data.curriculum_column",
        "data.curriculum_order",
        "data.reward_columns",
        "reward.name",
        "reward.overlong_buffer",
        "reward.overlong_factor",
        "rollout.max_new_tokens",
    }
)
LENGTH_KEY = "rollout.max_new_tokens"


class StageError(ValueError):
    """A stage or the length schedule is invalid; the message names the stage or the key and the value."""


@dataclasses.dataclass(frozen=True)
class PhasePlan:
    """Steps [first_step, last_step) with one stage and one response length.

    Attributes:
      stage: the stage's index (0 without stages).
      name: the stage's name ("stage<k>" unless named; "" without stages).
      first_step: the steps done when the phase starts.
      last_step: the steps done when it ends.
      overrides: (dotted config key, value) pairs that hold in the phase.
    """

    stage: int
    name: str
    first_step: int
    last_step: int
    overrides: tuple[tuple[str, Any], ...]


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_stage(entry: Mapping[str, Any] | str, index: int) -> tuple[str, int, dict[str, Any]]:
    """(name, steps, overrides) of one `stages` entry.

    Raises:
      StageError: the entry is not a mapping or a "key=value; ..." string, lacks a positive integer `steps`, or sets
        a key outside `STAGE_KEYS`.
    """
    if isinstance(entry, str):
        pairs = [item.strip() for item in entry.split(";") if item.strip()]
        if any("=" not in item for item in pairs):
            raise StageError(f"stages[{index}] = {entry!r}: expected 'key=value; key=value; ...'")
        entry = {key.strip(): _literal(value.strip()) for key, _, value in (p.partition("=") for p in pairs)}
    if not isinstance(entry, Mapping):
        raise StageError(f"stages[{index}] = {entry!r}: expected a mapping or a 'key=value; ...' string")
    values = dict(entry)
    steps = values.pop("steps", None)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise StageError(f"stages[{index}].steps = {steps!r} must be an integer >= 1")
    name = str(values.pop("name", f"stage{index}"))
    unknown = sorted(set(values) - STAGE_KEYS)
    if unknown:
        raise StageError(
            f"stages[{index}] ({name}) sets {unknown}: a stage may set only {sorted(STAGE_KEYS)} (the model, the "
            "optimizer and the batch shapes stay the same over the run)"
        )
    return name, steps, values


def _check_length(length: Any, where: str, longest: int) -> None:
    if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= longest:
        raise StageError(
            f"{where} = {length!r} must be an integer in [1, rollout.max_new_tokens = {longest}] (the longest "
            "response: memory is planned and validation runs at it)"
        )


def plan_phases(
    stages: Sequence[Mapping[str, Any] | str],
    length_schedule: Sequence[Sequence[int]],
    total_steps: int,
    max_new_tokens: int,
) -> tuple[PhasePlan, ...]:
    """The run's phases, in step order; () when there are neither stages nor a length schedule.

    Args:
      stages: the `stages` entries.
      length_schedule: `rollout.length_schedule`, (first step, length) pairs.
      total_steps: `train.total_steps`.
      max_new_tokens: `rollout.max_new_tokens`, the longest response.

    Raises:
      StageError: a stage is invalid (`parse_stage`), the stages' steps do not add up to `total_steps`, a
        schedule entry is not a (step, length) pair, its steps are not increasing within [0, total_steps), a length
        is outside [1, max_new_tokens], or both the schedule and a stage set the length.
    """
    if not stages and not length_schedule:
        return ()
    parsed = [parse_stage(entry, i) for i, entry in enumerate(stages)] or [("", total_steps, {})]
    if sum(steps for _, steps, _ in parsed) != total_steps:
        raise StageError(
            f"the stages' steps {[steps for _, steps, _ in parsed]} add up to {sum(s for _, s, _ in parsed)}; "
            f"train.total_steps = {total_steps} must equal it"
        )
    schedule: list[tuple[int, int]] = []
    for i, item in enumerate(length_schedule):
        if not isinstance(item, Sequence) or isinstance(item, str) or len(item) != 2:
            raise StageError(f"rollout.length_schedule[{i}] = {item!r} must be a (first step, length) pair")
        step, length = item
        if not isinstance(step, int) or not (schedule[-1][0] if schedule else -1) < step < total_steps:
            raise StageError(
                f"rollout.length_schedule[{i}] = {tuple(item)!r}: the first steps must increase within "
                f"[0, train.total_steps = {total_steps})"
            )
        _check_length(length, f"rollout.length_schedule[{i}] length", max_new_tokens)
        schedule.append((step, length))
    for i, (name, _, values) in enumerate(parsed):
        if LENGTH_KEY in values:
            if schedule:
                raise StageError(
                    f"stages[{i}] ({name}) sets {LENGTH_KEY} and rollout.length_schedule is set: give the length "
                    "by one of them"
                )
            _check_length(values[LENGTH_KEY], f"stages[{i}].{LENGTH_KEY}", max_new_tokens)
    starts = [sum(steps for _, steps, _ in parsed[:i]) for i in range(len(parsed))]
    boundaries = sorted(set(starts) | {step for step, _ in schedule})
    phases = []
    for first, last in zip(boundaries, boundaries[1:] + [total_steps]):
        stage = max(i for i, start in enumerate(starts) if start <= first)
        name, _, values = parsed[stage]
        overrides = dict(values)
        lengths = [length for step, length in schedule if step <= first]
        if lengths:
            overrides[LENGTH_KEY] = lengths[-1]
        phases.append(PhasePlan(stage, name, first, last, tuple(sorted(overrides.items()))))
    return tuple(phases)
