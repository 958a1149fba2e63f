"""Grounding reward: IoU of the predicted boxes with the ground truth, matched one to one."""

from __future__ import annotations

from collections.abc import Sequence

from shuffle_r1_jax.rewards.answer_parsing import final_answer, think_answer_form
from shuffle_r1_jax.rewards.boxes import (
    is_valid_box,
    matched_score,
    read_predicted_boxes,
    read_true_boxes,
    resize_scale,
    scale_box,
)

FORMAT_WEIGHT = 0.1


def grounding_iou(
    response: str,
    answer: str,
    *,
    image_sizes: Sequence[Sequence[float]] | None = None,
    iou_threshold: float | None = None,
    format_weight: float = FORMAT_WEIGHT,
    require_tags: bool = False,
) -> dict[str, float]:
    """Scores one grounding response: overall = (1 - format_weight) * accuracy + format_weight * format.

    The boxes are read from the last <answer>...</answer> content, else from the whole response: JSON such as
    `[{"bbox_2d": [x1, y1, x2, y2], "label": "cat"}]` (inside ```json fences or not; bare `[x1, y1, x2, y2]`
    lists and "bbox"/"box" keys too), else free-text boxes "[x1, y1, x2, y2]" or "(x1, y1), (x2, y2)". They
    are in pixels of the resized image the model saw (Qwen2.5-VL answers in absolute resized coordinates); the
    ground truth is in original-image pixels and is scaled into that frame with the first image's size.

    Accuracy: predicted and true boxes are matched one to one to maximize the total IoU (with `iou_threshold`,
    the number of pairs at or above it); the total is divided by max(#predicted, #true), so extra, duplicated
    or invalid boxes (degenerate, negative or non-finite coordinates) lower the score like missed objects.

    Args:
      response: the model's response text.
      answer: the ground-truth box or boxes in original-image pixels as JSON: `[x1, y1, x2, y2]`, a list of
        them, `{"bbox_2d": [...]}` or a list of such objects.
      image_sizes: one (original width, original height, resized width, resized height) per image; None:
        the answer is already in the resized frame.
      iou_threshold: None scores the continuous IoU; a number in (0, 1] scores a pair 1 when its IoU reaches it.
      format_weight: weight of the format part in `overall`.
      require_tags: format also requires the whole response to be <think>...</think> <answer>...</answer>.

    Returns:
      {"overall", "format", "accuracy", "malformed"}: format is 1 when the answer (or its last code fence) is
      JSON whose boxes are all valid (and the tags are there when required); malformed is 1 when no box could be
      read (also past 100 boxes or 16384 characters of answer), and then every other part is 0.

    Raises:
      ValueError: the answer, `image_sizes` or `iou_threshold` is malformed.
    """
    if iou_threshold is not None and not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1] or None, got {iou_threshold}")
    scale = resize_scale(image_sizes)
    true = [scale_box(box, scale) for box in read_true_boxes(answer)]
    text, _ = final_answer(response, boxed=False)
    read = read_predicted_boxes(text)
    if read is None:
        return {"overall": 0.0, "format": 0.0, "accuracy": 0.0, "malformed": 1.0}
    predicted, from_json = read
    well_formed = from_json and all(is_valid_box(box) for box in predicted)
    format_score = 1.0 if well_formed and (not require_tags or think_answer_form(response)) else 0.0
    accuracy = matched_score(predicted, true, iou_threshold)
    return {
        "overall": (1 - format_weight) * accuracy + format_weight * format_score,
        "format": format_score,
        "accuracy": accuracy,
        "malformed": 0.0,
    }
