"""Hand-computed cases for the grounding IoU reward."""

import pytest

from shuffle_r1_jax.rewards.grounding import grounding_iou

QWEN_STYLE = '```json\n[\n  {"bbox_2d": [0, 0, 10, 10], "label": "cat"}\n]\n```'


def test_qwen_style_answer_scores_iou_and_format():
    scores = grounding_iou(QWEN_STYLE, "[5, 5, 15, 15]")
    assert scores == pytest.approx(
        {"overall": 0.9 * 25 / 175 + 0.1, "format": 1.0, "accuracy": 25 / 175, "malformed": 0.0}
    )


def test_ground_truth_is_scaled_into_the_resized_frame():
    # original 1000x500 resized to 504x252: the true [100, 50, 300, 250] is [50.4, 25.2, 151.2, 126] there
    response = '[{"bbox_2d": [50.4, 25.2, 151.2, 126], "label": "dog"}]'
    scaled = grounding_iou(response, "[100, 50, 300, 250]", image_sizes=[(1000, 500, 504, 252)])
    assert scaled["accuracy"] == pytest.approx(1.0)
    # without sizes the answer is taken as already resized: [50.4, 25.2, 151.2, 126] inside [100, 50, 300, 250]
    # overlaps [100, 50, 151.2, 126] = 51.2 * 76 of a union 200 * 200 + 100.8 * 100.8 - 51.2 * 76
    unscaled = grounding_iou(response, "[100, 50, 300, 250]")
    overlap = 51.2 * 76
    assert unscaled["accuracy"] == pytest.approx(overlap / (200 * 200 + 100.8 * 100.8 - overlap))


@pytest.mark.parametrize(
    "response,accuracy,format_score",
    [
        ("<answer>[0, 0, 10, 10]</answer>", 1.0, 1.0),
        ('<think>look</think><answer>{"bbox_2d": [0, 0, 10, 10]}</answer>', 1.0, 1.0),
        ("The box is [0, 0, 10, 10].", 1.0, 0.0),  # free text: read, but not the expected JSON
        ("from (0, 0), (10, 10)", 1.0, 0.0),
        ('[{"bbox_2d": [0, 0, 10, 10]}, {"bbox_2d": [0, 0, 10, 10]}]', 0.5, 1.0),  # a duplicate is unmatched
        ('[{"bbox_2d": [0, 0, 10, 10]}, {"bbox_2d": [10, 10, 0, 0]}]', 0.5, 0.0),  # a degenerate extra box
        ('[{"bbox_2d": [-1, 0, 10, 10]}]', 0.0, 0.0),
        ('[{"bbox_2d": [NaN, 0, 10, 10]}]', 0.0, 0.0),
        ('[{"bbox_2d": [0, 0, Infinity, 10]}]', 0.0, 0.0),
    ],
)
def test_answer_forms(response, accuracy, format_score):
    scores = grounding_iou(response, "[0, 0, 10, 10]")
    assert scores["accuracy"] == pytest.approx(accuracy)
    assert scores["format"] == format_score
    assert scores["malformed"] == 0.0


def test_several_true_boxes_matched_optimally():
    # see tests/rewards/test_boxes.py::test_one_to_one_matching_beats_greedy: optimal total 61/65 over 2 boxes
    response = '[{"bbox_2d": [1, 0, 11, 10]}, {"bbox_2d": [0, 0, 4, 10]}]'
    answer = '[{"bbox_2d": [0, 0, 10, 10]}, {"bbox_2d": [4, 0, 14, 10]}]'
    assert grounding_iou(response, answer)["accuracy"] == pytest.approx(61 / 130)


def test_iou_threshold():
    assert grounding_iou(QWEN_STYLE, "[0, 0, 10, 12]", iou_threshold=0.8)["accuracy"] == 1.0  # IoU 100/120
    assert grounding_iou(QWEN_STYLE, "[0, 0, 10, 12]", iou_threshold=0.9)["accuracy"] == 0.0
    with pytest.raises(ValueError, match="iou_threshold"):
        grounding_iou(QWEN_STYLE, "[0, 0, 10, 10]", iou_threshold=0.0)


def test_required_tags_and_format_weight():
    tagged = '<think>a cat, top left</think> <answer>[{"bbox_2d": [0, 0, 10, 10]}]</answer>'
    assert grounding_iou(tagged, "[0, 0, 10, 10]", require_tags=True)["format"] == 1.0
    assert grounding_iou(QWEN_STYLE, "[0, 0, 10, 10]", require_tags=True)["format"] == 0.0
    assert grounding_iou(QWEN_STYLE, "[5, 5, 15, 15]", format_weight=0.5)["overall"] == pytest.approx(
        0.5 * 25 / 175 + 0.5
    )


def test_the_last_answer_tag_is_read():
    response = "<answer>[0, 0, 10, 10]</answer> on second thought <answer>[20, 20, 30, 30]</answer>"
    assert grounding_iou(response, "[0, 0, 10, 10]")["accuracy"] == 0.0


@pytest.mark.parametrize("answer", ["", "cat", "[1, 2, 3]", "[10, 0, 0, 10]"])
def test_malformed_ground_truth_raises(answer):
    with pytest.raises(ValueError, match="grounding answer"):
        grounding_iou(QWEN_STYLE, answer)
