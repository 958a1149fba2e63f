"""Hand-written cases for the UI-R1 style GUI action reward."""

import pytest

from shuffle_r1_jax.rewards.gui_action import gui_action, normalize_action

CLICK_ANSWER = '{"action": "click", "bbox": [100, 50, 300, 250]}'


def tagged(action_json: str) -> str:
    return f"<think>the button is there</think>\n<answer>{action_json}</answer>"


def test_click_inside_the_box_after_resizing():
    # original 1000x500 resized to 504x252: the target box is [50.4, 25.2, 151.2, 126] in the model's frame
    sizes = [(1000, 500, 504, 252)]
    inside = gui_action(tagged('{"action": "click", "coordinate": [60, 30]}'), CLICK_ANSWER, image_sizes=sizes)
    assert inside == {
        "overall": 3.0,
        "format": 1.0,
        "accuracy": 1.0,
        "malformed": 0.0,
        "action_type": 1.0,
        "argument": 1.0,
    }
    # (160, 60) is inside the original-frame box but right of the resized one
    outside = gui_action(tagged('{"action": "click", "coordinate": [160, 60]}'), CLICK_ANSWER, image_sizes=sizes)
    assert outside["overall"] == 2.0 and outside["argument"] == 0.0 and outside["accuracy"] == 0.0
    assert gui_action(tagged('{"action": "click", "coordinate": [160, 60]}'), CLICK_ANSWER)["argument"] == 1.0


def test_click_borders_count_as_inside():
    response = tagged('{"action": "click", "coordinate": [100, 250]}')
    assert gui_action(response, CLICK_ANSWER)["argument"] == 1.0


def test_distance_mode():
    # box [0, 0, 6, 8]: centre (3, 4), half diagonal 5
    answer = '{"action": "click", "bbox": [0, 0, 6, 8]}'

    def argument(x, y, **options):
        response = tagged(f'{{"action": "click", "coordinate": [{x}, {y}]}}')
        return gui_action(response, answer, coordinate_mode="distance", **options)

    assert argument(3, 4)["argument"] == pytest.approx(1.0)
    assert argument(6, 4)["argument"] == pytest.approx(1 - 3 / 5)
    assert argument(6, 4)["accuracy"] == 1.0  # accuracy stays "inside the box"
    assert argument(0, 0)["argument"] == pytest.approx(0.0)
    assert argument(30, 40)["argument"] == 0.0
    assert argument(6, 4, distance_scale=2.0)["argument"] == pytest.approx(1 - 3 / 10)
    assert argument(9, 4, distance_scale=2.0)["argument"] == pytest.approx(1 - 6 / 10)
    assert argument(9, 4, distance_scale=2.0)["accuracy"] == 0.0


@pytest.mark.parametrize(
    "response_action,action_type,argument",
    [
        ('{"action": "scroll", "direction": "down"}', 1.0, 1.0),
        ('{"action": "Scroll", "direction": " DOWN "}', 1.0, 1.0),
        ('{"action": "scroll", "direction": "up"}', 1.0, 0.0),
        ('{"action": "scroll"}', 1.0, 0.0),  # the direction is missing
        ('{"action": "click", "coordinate": [5, 5]}', 0.0, 0.0),
    ],
)
def test_scroll(response_action, action_type, argument):
    scores = gui_action(tagged(response_action), '{"action": "scroll", "direction": "down"}')
    assert scores["action_type"] == action_type
    assert scores["argument"] == argument
    assert scores["accuracy"] == argument
    assert scores["overall"] == action_type + argument + 1.0


def test_type_open_app_and_argumentless_actions():
    typed = '{"action": "type", "text": "Hello  World"}'
    assert gui_action(tagged('{"action": "input_text", "text": "hello world"}'), typed)["accuracy"] == 1.0
    assert gui_action(tagged('{"action": "type", "text": "hello"}'), typed)["argument"] == 0.0
    app = '{"action": "open_app", "app": "Clock"}'
    assert gui_action(tagged('{"action": "open app", "app": "clock"}'), app)["accuracy"] == 1.0
    assert gui_action(tagged('{"action": "back"}'), '{"action": "back"}')["overall"] == 3.0
    assert gui_action(tagged('[{"action": "back"}]'), '{"action": "back"}')["overall"] == 3.0  # a one-action list


def test_format():
    answer = '{"action": "back"}'
    assert gui_action('<answer>{"action": "back"}</answer>', answer)["format"] == 0.0  # no think block
    assert gui_action('<answer>{"action": "back"}</answer>', answer, require_tags=False)["format"] == 1.0
    assert gui_action('```json\n{"action": "back"}\n```', answer, require_tags=False)["overall"] == 3.0
    # a click without a well-formed point: the type is right, the format is not
    no_point = gui_action(tagged('{"action": "click", "coordinate": [5]}'), CLICK_ANSWER)
    assert (no_point["action_type"], no_point["argument"], no_point["format"]) == (1.0, 0.0, 0.0)
    assert normalize_action(" Tap ") == "click" and normalize_action("Open-App") == "open_app"


@pytest.mark.parametrize(
    "response",
    [
        "",
        "<think>hmm</think><answer>click the button</answer>",
        '<answer>[{"action": "back"}, {"action": "home"}]</answer>',  # two actions
        '<answer>{"act": "back"}</answer>',
        '<answer>{"action": 3}</answer>',
    ],
)
def test_malformed_responses(response):
    assert gui_action(response, '{"action": "back"}') == {
        "overall": 0.0,
        "format": 0.0,
        "accuracy": 0.0,
        "malformed": 1.0,
        "action_type": 0.0,
        "argument": 0.0,
    }


@pytest.mark.parametrize(
    "answer,message",
    [
        ("click", "GUI answer"),
        ('{"action": "click"}', "needs one valid 'bbox'"),
        ('{"action": "click", "bbox": [10, 10, 0, 0]}', "needs one valid 'bbox'"),
    ],
)
def test_malformed_answers_raise(answer, message):
    with pytest.raises(ValueError, match=message):
        gui_action(tagged('{"action": "back"}'), answer)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="coordinate_mode"):
        gui_action("", CLICK_ANSWER, coordinate_mode="near")
    with pytest.raises(ValueError, match="distance_scale"):
        gui_action("", CLICK_ANSWER, distance_scale=0.0)
