"""GUI action reward in the style of UI-R1 (arXiv 2503.21620): action type + coordinate (argument) + format.

UI-R1 scores a predicted action with three rule-based parts, each 0 or 1: the action type reward (the predicted
type equals the true one), the coordinate accuracy reward (the predicted click point lies inside the target
element's box) and the format reward (<think>...</think><answer>...</answer>), and adds them. This module keeps
the sum, so `overall` lies in [0, 3]. It extends the coordinate part to the arguments of the other actions (a
scroll's direction, the typed text, an app's name) and calls it "argument": UI-R1's released training script
gives that part 1 to any non-click action of the right type, here its arguments must match too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from shuffle_r1_jax.rewards.answer_parsing import as_finite_number, final_answer, load_json, think_answer_form
from shuffle_r1_jax.rewards.boxes import BOX_KEYS, Box, boxes_in_json, is_valid_box, resize_scale, scale_box

CLICK = "click"
POINT_KEYS = ("coordinate", "point")
ACTION_ALIASES = {"tap": CLICK, "input_text": "type", "type_text": "type"}
COORDINATE_MODES = ("inside", "distance")


def normalize_action(name: str) -> str:
    """Lower case, spaces and hyphens as underscores, aliases resolved: "Tap" -> "click", "input text" -> "type"."""
    key = "_".join(name.strip().lower().replace("-", " ").split())
    return ACTION_ALIASES.get(key, key)


def _single_action(value: Any) -> dict | None:
    """A JSON object with a string "action", or a one-element list holding one; else None."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict) and isinstance(value.get("action"), str):
        return value
    return None


def _read_true_action(answer: str, scale: tuple[float, float]) -> tuple[str, Box | None, dict[str, Any]]:
    """(action, target box in the resized frame or None, the other arguments) of a GUI answer."""
    action = _single_action(load_json(answer))
    if action is None:
        raise ValueError(f"GUI answer {answer[:200]!r} is not a JSON object with a string 'action'")
    name = normalize_action(action["action"])
    arguments = {k: v for k, v in action.items() if k != "action" and k not in BOX_KEYS}
    if name != CLICK:
        return name, None, arguments
    boxes = boxes_in_json({k: action[k] for k in BOX_KEYS if k in action})
    if len(boxes) != 1 or not is_valid_box(boxes[0]):
        raise ValueError(f"GUI click answer {answer[:200]!r} needs one valid 'bbox' [x1, y1, x2, y2]")
    return name, scale_box(boxes[0], scale), arguments


def _point(action: dict) -> tuple[float, float] | None:
    """The (x, y) of a predicted click: two finite numbers under "coordinate" or "point"."""
    value = next((action[k] for k in POINT_KEYS if k in action), None)
    if not isinstance(value, list) or len(value) != 2:
        return None
    x, y = (as_finite_number(v) for v in value)
    return None if x is None or y is None else (x, y)


def _same_argument(expected: Any, given: Any) -> bool:
    """Strings equal after case-folding and collapsing whitespace; numbers equal as floats; else ==."""
    if isinstance(expected, str):
        return isinstance(given, str) and " ".join(expected.casefold().split()) == " ".join(given.casefold().split())
    expected_number = as_finite_number(expected)
    if expected_number is not None:
        return as_finite_number(given) == expected_number
    return expected == given


def _inside(point: tuple[float, float], box: Box) -> bool:
    x, y = point
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def _centre_closeness(point: tuple[float, float], box: Box, distance_scale: float) -> float:
    """max(0, 1 - distance to the box centre / (distance_scale * half the box diagonal))."""
    centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half_diagonal = math.hypot(box[2] - box[0], box[3] - box[1]) / 2
    distance = math.hypot(point[0] - centre_x, point[1] - centre_y)
    return max(0.0, 1.0 - distance / (distance_scale * half_diagonal))


def gui_action(
    response: str,
    answer: str,
    *,
    image_sizes: Sequence[Sequence[float]] | None = None,
    coordinate_mode: str = "inside",
    distance_scale: float = 1.0,
    require_tags: bool = True,
) -> dict[str, float]:
    """Scores one GUI action: overall = action_type + argument + format (UI-R1's sum, in [0, 3]).

    The predicted action is JSON in the last <answer>...</answer> content, else in the whole response (code
    fences allowed): `{"action": "click", "coordinate": [x, y]}` ("point" also read) in pixels of the resized
    screenshot, `{"action": "scroll", "direction": "down"}`, `{"action": "type", "text": "hello"}`, or a list
    holding one such object. Action names are compared after `normalize_action`.

    Parts (each 0 when the action type is wrong, except format):
      action_type: 1 when the predicted type equals the true one.
      argument: for a click, 1 when the point lies inside the target box (borders included), or with
        coordinate_mode="distance" max(0, 1 - d / (distance_scale * r)), d the point's distance to the box
        centre and r half the box diagonal (1 at the centre, 0 from distance_scale * r on); for other actions,
        1 when every argument of the answer (all keys but "action") is in the response with an equal value
        (strings compared case-folded with whitespace collapsed).
      accuracy: 1 when the type matches and, for a click, the point is inside the box, for other actions the
        arguments match: the action would have done the right thing.
      format: 1 when an action object was read (a click with a well-formed point) and, with require_tags, the
        whole response is <think>...</think> <answer>...</answer> as UI-R1 requires.
      malformed: 1 when no action object could be read; then every other part is 0.

    Args:
      response: the model's response text.
      answer: the true action as JSON: `{"action": "click", "bbox": [x1, y1, x2, y2]}` (original-image pixels;
        "bbox_2d" also read), `{"action": "scroll", "direction": "up"}`, `{"action": "type", "text": "..."}`,
        `{"action": "open_app", "app": "Clock"}`, `{"action": "back"}`.
      image_sizes: one (original width, original height, resized width, resized height) per image; the first
        scales the answer's box into the resized frame. None: the box is already in that frame.
      coordinate_mode: "inside" (UI-R1's) or "distance".
      distance_scale: with "distance", how many half-diagonals from the centre the argument part reaches 0.
      require_tags: format requires the think/answer tags.

    Returns:
      {"overall", "format", "accuracy", "malformed", "action_type", "argument"}.

    Raises:
      ValueError: the answer, `image_sizes`, `coordinate_mode` or `distance_scale` is malformed.
    """
    if coordinate_mode not in COORDINATE_MODES:
        raise ValueError(f"coordinate_mode must be one of {COORDINATE_MODES}, got {coordinate_mode!r}")
    if not distance_scale > 0:
        raise ValueError(f"distance_scale must be positive, got {distance_scale}")
    true_name, target, true_arguments = _read_true_action(answer, resize_scale(image_sizes))
    text, _ = final_answer(response, boxed=False)
    action = _single_action(load_json(text))
    if action is None:
        return {"overall": 0.0, "format": 0.0, "accuracy": 0.0, "malformed": 1.0, "action_type": 0.0, "argument": 0.0}
    name = normalize_action(action["action"])
    point = _point(action) if name == CLICK else None
    well_formed = name != CLICK or point is not None
    format_score = 1.0 if well_formed and (not require_tags or think_answer_form(response)) else 0.0
    action_type = 1.0 if name == true_name else 0.0
    argument = accuracy = 0.0
    if action_type and target is not None:
        if point is not None:
            accuracy = 1.0 if _inside(point, target) else 0.0
            argument = accuracy if coordinate_mode == "inside" else _centre_closeness(point, target, distance_scale)
    elif action_type:
        argument = accuracy = float(all(_same_argument(v, action.get(k)) for k, v in true_arguments.items()))
    return {
        "overall": action_type + argument + format_score,
        "format": format_score,
        "accuracy": accuracy,
        "malformed": 0.0,
        "action_type": action_type,
        "argument": argument,
    }
