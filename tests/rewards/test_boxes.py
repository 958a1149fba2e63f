"""Hand-computed cases for box reading, the frame change, IoU and the one-to-one matching."""

import math

import pytest

from shuffle_r1_jax.rewards.answer_parsing import answer_tag_content, load_json, strip_code_fence, think_answer_form
from shuffle_r1_jax.rewards.boxes import (
    MAX_BOXES,
    boxes_in_json,
    boxes_in_text,
    iou,
    is_valid_box,
    matched_score,
    read_predicted_boxes,
    read_true_boxes,
    resize_scale,
    scale_box,
)


@pytest.mark.parametrize(
    "a,b,expected",
    [
        ((0, 0, 10, 10), (5, 5, 15, 15), 25 / 175),
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (2, 2, 4, 4), 4 / 100),  # nested
        ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),  # touching edges share no area
        ((0, 0, 10, 10), (20, 20, 30, 30), 0.0),
        ((10, 0, 0, 10), (0, 0, 10, 10), 0.0),  # x2 < x1
        ((0, 0, 0, 10), (0, 0, 10, 10), 0.0),  # zero width
        ((-5, 0, 10, 10), (0, 0, 10, 10), 0.0),  # negative corner
        ((0, 0, math.nan, 10), (0, 0, 10, 10), 0.0),
        ((0, 0, math.inf, 10), (0, 0, 10, 10), 0.0),
    ],
)
def test_iou(a, b, expected):
    assert iou(a, b) == pytest.approx(expected)
    assert iou(b, a) == pytest.approx(expected)


def test_scale_into_resized_frame():
    # original 1000x500 shown to the model at 504x252: both sides scale by 0.504
    scale = resize_scale([(1000, 500, 504, 252)])
    assert scale_box((100, 50, 300, 250), scale) == pytest.approx((50.4, 25.2, 151.2, 126.0))
    assert resize_scale(None) == (1.0, 1.0)
    assert resize_scale([]) == (1.0, 1.0)
    assert resize_scale([(640, 480, 644, 476), (10, 10, 28, 28)]) == pytest.approx((644 / 640, 476 / 480))


@pytest.mark.parametrize("sizes", [[(0, 500, 504, 252)], [(1000, 500, 504)], [(1000, math.nan, 504, 252)]])
def test_bad_image_sizes_raise(sizes):
    with pytest.raises(ValueError, match="image size"):
        resize_scale(sizes)


def test_one_to_one_matching_beats_greedy():
    # IoU matrix (rows p1, p2; columns a, b) = [[9/11, 7/13], [2/5, 0]]. Greedy on the best pair takes p1-a
    # (9/11) and leaves p2-b (0): total 9/11. The optimal matching p1-b + p2-a totals 7/13 + 2/5 = 61/65.
    a, b = (0, 0, 10, 10), (4, 0, 14, 10)
    p1, p2 = (1, 0, 11, 10), (0, 0, 4, 10)
    assert iou(p1, a) == pytest.approx(9 / 11) and iou(p1, b) == pytest.approx(7 / 13)
    assert iou(p2, a) == pytest.approx(2 / 5) and iou(p2, b) == 0.0
    assert matched_score([p1, p2], [a, b]) == pytest.approx(61 / 130)
    assert matched_score([p2, p1], [b, a]) == pytest.approx(61 / 130)


def test_matching_divides_by_the_larger_side():
    box = (0, 0, 10, 10)
    assert matched_score([box], [box, (20, 20, 30, 30)]) == pytest.approx(0.5)  # a missed object
    assert matched_score([box, box], [box]) == pytest.approx(0.5)  # a duplicate
    assert matched_score([box, (10, 0, 0, 10)], [box]) == pytest.approx(0.5)  # an invalid extra box
    assert matched_score([], [box]) == 0.0


def test_matching_with_threshold_counts_hits():
    # IoU matrix (rows p1, p2; columns a, b) = [[1, 2/3], [1/2, 1/4]]. Maximizing total IoU pairs p1-a, p2-b
    # (1.25 > 2/3 + 1/2), one hit at threshold 0.5; maximizing hits pairs p1-b, p2-a: two hits.
    a, b = (0, 0, 10, 10), (2, 0, 12, 10)
    p1, p2 = (0, 0, 10, 10), (0, 0, 5, 10)
    assert iou(p1, b) == pytest.approx(2 / 3) and iou(p2, a) == pytest.approx(0.5) and iou(p2, b) == pytest.approx(0.25)
    assert matched_score([p1, p2], [a, b]) == pytest.approx(1.25 / 2)
    assert matched_score([p1, p2], [a, b], iou_threshold=0.5) == pytest.approx(1.0)
    assert matched_score([p1, p2], [a, b], iou_threshold=0.6) == pytest.approx(0.5)
    assert matched_score([p1, p2], [a, b], iou_threshold=1.0) == pytest.approx(0.5)


def test_boxes_in_json():
    assert boxes_in_json([1, 2, 3, 4]) == [(1, 2, 3, 4)]
    assert boxes_in_json([[1, 2, 3, 4], [5, 6, 7, 8]]) == [(1, 2, 3, 4), (5, 6, 7, 8)]
    assert boxes_in_json([{"bbox_2d": [1, 2, 3, 4], "label": "cat"}, {"bbox": [5, 6, 7, 8]}]) == [
        (1, 2, 3, 4),
        (5, 6, 7, 8),
    ]
    assert boxes_in_json({"objects": [{"box": [1, 2, 3, 4]}]}) == [(1, 2, 3, 4)]
    assert boxes_in_json([True, 2, 3, 4]) == []  # a bool is not a coordinate
    assert boxes_in_json(["1", 2, 3, 4]) == []
    assert boxes_in_json({"bbox_2d": [1, 2, 3]}) == []
    assert boxes_in_json(None) == []
    deep = [1, 2, 3, 4]
    for _ in range(100):
        deep = [deep]
    assert boxes_in_json(deep) == []  # deeper than MAX_JSON_DEPTH


def test_boxes_in_text():
    assert boxes_in_text("the cat is at [10, 20, 30.5, 40] and (1,2),(3,4)") == [(10, 20, 30.5, 40), (1, 2, 3, 4)]
    assert boxes_in_text("from (1, 2) to (3, 4)") == []  # corner pairs must be adjacent
    assert boxes_in_text("no boxes [1, 2, 3]") == []


def test_read_predicted_boxes():
    assert read_predicted_boxes('```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "a"}]\n```') == ([(1, 2, 3, 4)], True)
    assert read_predicted_boxes("Here:\n```json\n[[1, 2, 3, 4]]\n```\nDone.") == ([(1, 2, 3, 4)], True)
    assert read_predicted_boxes('Sure: [{"bbox_2d": [1, 2, 3, 4]}] done') == ([(1, 2, 3, 4)], False)
    assert read_predicted_boxes("box (1, 2), (3, 4)") == ([(1, 2, 3, 4)], False)
    assert read_predicted_boxes("nothing") is None
    assert read_predicted_boxes(str([[0, 0, 1, 1]] * (MAX_BOXES + 1))) is None
    nan_box = read_predicted_boxes('[{"bbox_2d": [NaN, 0, 1e999, 4]}]')
    assert nan_box is not None and not is_valid_box(nan_box[0][0])
    assert read_predicted_boxes("[" + "9" * 500 + ", 0, 1, 1]") is not None  # an int too large for a float


def test_read_true_boxes():
    assert read_true_boxes("[100, 50, 300, 250]") == [(100, 50, 300, 250)]
    assert read_true_boxes('[{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": [5, 6, 7, 8]}]') == [(1, 2, 3, 4), (5, 6, 7, 8)]
    for bad in ("", "cat", "[3, 2, 1, 0]", "[]"):
        with pytest.raises(ValueError, match="grounding answer"):
            read_true_boxes(bad)


def test_answer_helpers():
    assert answer_tag_content("<answer>1</answer> x <answer>2</answer>") == "2"
    assert answer_tag_content("<answer>open only") is None
    assert think_answer_form("<think>a</think>\n<answer>b</answer>\n")
    assert not think_answer_form("<think>a</think> text <answer>b</answer>")
    assert not think_answer_form("<answer>b</answer>")
    assert strip_code_fence("x ```json\n[1]\n``` y ```json\n[2]\n``` z") == "\n[2]\n"
    assert strip_code_fence("```json\n[1]\n``` then ```json\n[2") == "\n[1]\n"  # an unclosed last fence
    assert load_json("[" * 100000) is None
    assert load_json("[" * 5000 + "]" * 5000) is None  # nesting past the parser's limit
