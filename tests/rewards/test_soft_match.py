"""Hand-computed cases for the normalization and soft key-step matching of `rewards.soft_match`."""

import pytest

from shuffle_r1_jax.rewards.soft_match import key_step_matcher, normalize


@pytest.mark.parametrize(
    "text,expected",
    [
        (r"$X = \dfrac{1}{2}$", "x=1/2"),
        (r"\frac{a^{2}}{b + 1}", "(a^2)/(b+1)"),
        ("3.0, 0.50 and 10.250 of 1,000", "3,0.5 and 10.25 of 1000"),
        (r"50\,\% of 30^\circ", "50% of 30°"),
        ("x  =\n -5 and 8 - 3", "x=-5 and 8-3"),
        (r"12\,\text{cm} \times 2", "12 cm*2"),
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize(
    "key",
    [
        "x=0.5",  # by the value of the right side of "x = \frac{1}{2}"
        "X = 1/2",
        r"x=\frac{1}{2}",
        "x=50%",
        "0.5",
        "1/2",
        "50%",
        "half",
        "twelve",
        "forty-two",
        "42",
        "12 cm",
        "y=2x+1",  # the grader: "y = 1 + 2x"
        "z=0.25",  # second side of the chain "z = 2/8 = 1/4"
        "a^2+b^2=c^2",  # sides swapped in the text
    ],
)
def test_soft_match_accepts(key):
    text = r"So x = \frac{1}{2}, 12\,\text{cm} long, forty two apples; y = 1 + 2x; z = 2/8 = 1/4; c^2 = a^2 + b^2."
    assert key_step_matcher(text)(key)


@pytest.mark.parametrize(
    "key",
    [
        "x=1",  # x=1/2 is not x=1
        "x=0.25",
        "0.33",  # rounded decimals are not the fraction
        "1/3",
        "2",  # only inside "1/2" and "2/8" and "2x"
        "5",  # only in "-5"
        "y=1",  # "2y=1" does not state y
        "w=1.5",  # "v+w=1.5" does not state w
        "cats",
        "",
        "   ",
        "12 m",
    ],
)
def test_soft_match_rejects_near_misses(key):
    text = r"x = \frac{1}{2} and a third is near 0.333..., z = 2/8 and 2x; t = -5; 2y = 1; v + w = 1.5; one cat; 12 cm"
    assert not key_step_matcher(text)(key)
