"""Boxes for the perception rewards: reading them from text and JSON, the image-size frame change, IoU, and the
one-to-one matching of predicted to true boxes.

A box is (x1, y1, x2, y2) in pixels: top-left and bottom-right corners. It is valid when all four values are
finite, x1 and y1 are not negative, x2 > x1 and y2 > y1; an invalid box overlaps nothing (IoU 0).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from shuffle_r1_jax.rewards.answer_parsing import MAX_ANSWER_CHARS, as_finite_number, load_json

Box = tuple[float, float, float, float]

MAX_BOXES = 100
"""A response with more boxes than this is not scored (it counts as malformed)."""
MAX_JSON_DEPTH = 16
BOX_KEYS = ("bbox_2d", "bbox", "box")

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_BRACKET_BOX = re.compile(rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]")
_CORNER_PAIR_BOX = re.compile(
    rf"\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)\s*,?\s*\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)"
)


def _as_float(value: Any) -> float | None:
    """A JSON number as a float (an integer too large for a float becomes inf), else None (bools included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _as_box(value: Any) -> Box | None:
    """A list of exactly four JSON numbers as a box (possibly invalid), else None."""
    if not isinstance(value, list) or len(value) != 4:
        return None
    numbers_ = [_as_float(v) for v in value]
    if any(v is None for v in numbers_):
        return None
    return tuple(numbers_)


def is_valid_box(box: Sequence[float]) -> bool:
    """True if all four values are finite, x1, y1 >= 0, x2 > x1 and y2 > y1."""
    x1, y1, x2, y2 = box
    return all(math.isfinite(v) for v in box) and x1 >= 0 and y1 >= 0 and x2 > x1 and y2 > y1


def boxes_in_json(value: Any) -> list[Box]:
    """Every box in a parsed JSON value, in reading order.

    A box is a list of four numbers, or the value under "bbox_2d", "bbox" or "box" of an object (the first of
    those keys present; the object's other values are not searched). Lists and other objects are searched down
    to `MAX_JSON_DEPTH` levels; at most `MAX_BOXES + 1` boxes are collected.
    """
    found: list[Box] = []
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack and len(found) <= MAX_BOXES:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            continue
        if isinstance(item, dict):
            key = next((k for k in BOX_KEYS if k in item), None)
            if key is not None:
                box = _as_box(item[key])
                if box is not None:
                    found.append(box)
                continue
            stack.extend((child, depth + 1) for child in reversed(list(item.values())))
        elif isinstance(item, list):
            box = _as_box(item)
            if box is not None:
                found.append(box)
            else:
                stack.extend((child, depth + 1) for child in reversed(item))
    return found


def boxes_in_text(text: str) -> list[Box]:
    """Boxes written "[x1, y1, x2, y2]" or "(x1, y1), (x2, y2)" in free text, in reading order (at most
    `MAX_BOXES + 1`)."""
    matches = sorted([*_BRACKET_BOX.finditer(text), *_CORNER_PAIR_BOX.finditer(text)], key=lambda match: match.start())
    return [tuple(float(g) for g in match.groups()) for match in matches[: MAX_BOXES + 1]]


def read_predicted_boxes(text: str) -> tuple[list[Box], bool] | None:
    """The boxes of a response's answer and whether they came from JSON.

    Args:
      text: the answer part of a response: JSON (code fences allowed) such as
        `[{"bbox_2d": [x1, y1, x2, y2], "label": "cat"}]`, or free text with "[x1, y1, x2, y2]" or
        "(x1, y1), (x2, y2)" boxes.

    Returns:
      (boxes, from_json): from_json is True when the whole text (or its last code fence) is JSON holding boxes.
      Else the boxes of JSON inside prose, else those written in the free text. None when there are none, more
      than `MAX_BOXES`, or the text is longer than `MAX_ANSWER_CHARS`.
    """
    if len(text) > MAX_ANSWER_CHARS:
        return None
    boxes, from_json = boxes_in_json(load_json(text, embedded=False)), True
    if not boxes:
        boxes, from_json = boxes_in_json(load_json(text)), False
    if not boxes:
        boxes = boxes_in_text(text)
    if not boxes or len(boxes) > MAX_BOXES:
        return None
    return boxes, from_json


def read_true_boxes(answer: str) -> list[Box]:
    """The ground-truth boxes of a grounding answer.

    Args:
      answer: JSON: `[x1, y1, x2, y2]`, a list of such boxes, `{"bbox_2d": [...]}` or a list of such objects.

    Returns:
      The boxes, at least one, each valid.

    Raises:
      ValueError: the answer is not such JSON or has an invalid box.
    """
    boxes = boxes_in_json(load_json(answer))
    if not boxes or len(boxes) > MAX_BOXES:
        raise ValueError(f"grounding answer {answer[:200]!r} holds no boxes (or more than {MAX_BOXES})")
    for box in boxes:
        if not is_valid_box(box):
            raise ValueError(f"grounding answer {answer[:200]!r} has an invalid box {box}")
    return boxes


def resize_scale(image_sizes: Sequence[Sequence[float]] | None) -> tuple[float, float]:
    """(x scale, y scale) from original to resized pixels of the first image; (1, 1) when `image_sizes` is None
    or empty (coordinates are then taken as already in the resized frame).

    Args:
      image_sizes: one (original width, original height, resized width, resized height) per image.

    Raises:
      ValueError: the first entry does not hold four positive finite numbers.
    """
    if not image_sizes:
        return 1.0, 1.0
    size = list(image_sizes[0])
    values = [as_finite_number(v) for v in size] if len(size) == 4 else []
    if len(values) != 4 or any(v is None or v <= 0 for v in values):
        raise ValueError(f"image size {size!r} is not (width, height, resized width, resized height)")
    width, height, resized_width, resized_height = values
    return resized_width / width, resized_height / height


def scale_box(box: Box, scale: tuple[float, float]) -> Box:
    """`box` with x values multiplied by scale[0] and y values by scale[1]."""
    sx, sy = scale
    x1, y1, x2, y2 = box
    return x1 * sx, y1 * sy, x2 * sx, y2 * sy


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes; 0 when either is invalid."""
    if not (is_valid_box(a) and is_valid_box(b)):
        return 0.0
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union


def matched_score(predicted: Sequence[Box], true: Sequence[Box], iou_threshold: float | None = None) -> float:
    """Mean score of a one-to-one matching of predicted to true boxes that maximizes the total score.

    A pair's score is its IoU, or with `iou_threshold` 1 when IoU >= threshold else 0 (the matching then
    maximizes the number of hits). Unmatched boxes on either side score 0 and the total is divided by
    max(#predicted, #true): a missed object and an extra or duplicated box cost the same.

    Returns:
      A float in [0, 1]; 0 when either side is empty.
    """
    if not predicted or not true:
        return 0.0
    scores = np.array([[iou(p, t) for t in true] for p in predicted], dtype=np.float64)
    if iou_threshold is not None:
        scores = (scores >= iou_threshold).astype(np.float64)
    rows, cols = linear_sum_assignment(scores, maximize=True)
    return float(scores[rows, cols].sum()) / max(len(predicted), len(true))
