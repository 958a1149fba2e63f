import pytest

from shuffle_r1_jax.demo import synthetic
from shuffle_r1_jax.demo.reward import extract_short_answer, synthetic_reward


@pytest.mark.parametrize(
    "response,expected",
    [
        ("<think> there are 3 red shapes </think> \\boxed{3}", "3"),
        ("\\boxed{ Red }", "red"),
        ("I think the answer: circle.", "circle"),
        ("Answer: 2 ... answer:4", "4"),
        ("\\boxed{2} answer: 4", "2"),  # a box wins over "answer:"
        ("no idea", None),
    ],
)
def test_extract_short_answer(response, expected):
    assert extract_short_answer(response) == expected


@pytest.mark.parametrize(
    "response,answer,expected",
    [
        ("<think> there are 3 red shapes </think> \\boxed{3}", "3", {"overall": 1.0, "format": 1.0, "accuracy": 1.0}),
        ("< think >it is red</ think >\\boxed{RED}", "red", {"overall": 1.0, "format": 1.0, "accuracy": 1.0}),
        ("answer: left", "left", {"overall": 0.9, "format": 0.0, "accuracy": 1.0}),
        ("<think> x </think> \\boxed{3.0}", "3", {"overall": 0.1, "format": 1.0, "accuracy": 0.0}),
        ("<think> x </think> \\boxed{three}", "3", {"overall": 0.1, "format": 1.0, "accuracy": 0.0}),
        ("3", "3", {"overall": 0.0, "format": 0.0, "accuracy": 0.0}),
        ("<think> x </think> \\boxed{2} \\boxed{3}", "3", {"overall": 0.0, "format": 0.0, "accuracy": 0.0}),
        ("<think> the </think> \\boxed{ </think> \\boxed{3}", "3", {"overall": 0.0, "format": 0.0, "accuracy": 0.0}),
        ("<think> x </think> \\boxed{3} because", "3", {"overall": 0.9, "format": 0.0, "accuracy": 1.0}),
    ],
)
def test_synthetic_reward(response, answer, expected):
    assert synthetic_reward(response, answer) == pytest.approx(expected)


def test_reference_responses_score_full_marks():
    for sample in synthetic.generate_samples(30, seed=5):
        assert synthetic_reward(sample.reference_response, sample.answer)["overall"] == 1.0
