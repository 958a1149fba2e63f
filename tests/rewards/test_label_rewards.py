"""Hand-written cases for the classification (label_match) and counting (count_match) rewards."""

import pytest

from shuffle_r1_jax.rewards.labels import count_match, label_match, normalize_label


@pytest.mark.parametrize(
    "text,expected",
    [
        ("The  Cat.", "cat"),
        ("  GOLDEN-retriever!! ", "golden retriever"),
        ('"sofa"', "sofa"),
        ("Ｃａｔ", "cat"),  # full-width letters (NFKC)
        ("Straße", "strasse"),  # case folding
        ("the", "the"),  # a lone article stays
        ("...", ""),
    ],
)
def test_normalize_label(text, expected):
    assert normalize_label(text) == expected


@pytest.mark.parametrize(
    "response,accuracy,format_score",
    [
        ("<answer>Cat</answer>", 1.0, 1.0),
        ("<think>whiskers</think><answer> a cat. </answer>", 1.0, 1.0),
        (r"\boxed{cat}", 1.0, 1.0),
        ("cat", 1.0, 0.0),  # unmarked whole response
        ('<answer>{"label": "Cat"}</answer>', 1.0, 1.0),
        ("<answer>dog</answer>", 0.0, 1.0),
        ("<answer>a black cat</answer>", 0.0, 1.0),  # exact match, no partial credit
        ("The animal is a cat.", 0.0, 0.0),
    ],
)
def test_label_match(response, accuracy, format_score):
    scores = label_match(response, "cat")
    assert scores == pytest.approx(
        {
            "overall": 0.9 * accuracy + 0.1 * format_score,
            "format": format_score,
            "accuracy": accuracy,
            "malformed": 0.0,
        }
    )


def test_synonyms_from_the_answer_and_the_option():
    answer = '{"label": "sofa", "synonyms": ["couch"]}'
    assert label_match("<answer>Couch</answer>", answer)["accuracy"] == 1.0
    assert label_match("<answer>settee</answer>", answer)["accuracy"] == 0.0
    groups = {"couch": ["settee", "divan"]}  # reached through the answer's synonym "couch"
    assert label_match("<answer>settee</answer>", answer, synonyms=groups)["accuracy"] == 1.0
    assert label_match("<answer>settee</answer>", "sofa", synonyms=groups)["accuracy"] == 0.0
    assert label_match("<answer>Couch</answer>", "divan", synonyms=groups)["accuracy"] == 1.0  # a value's group
    assert label_match("<answer>sofa</answer>", "divan", synonyms=groups)["accuracy"] == 0.0


def test_label_malformed_and_bad_answers():
    assert label_match("<answer> ?! </answer>", "cat")["malformed"] == 1.0
    assert label_match("", "cat") == {"overall": 0.0, "format": 0.0, "accuracy": 0.0, "malformed": 1.0}
    assert label_match("<answer>cat</answer>", "cat", require_tags=True)["format"] == 0.0
    for bad in ('{"label": 3}', '{"label": "cat", "synonyms": "feline"}', "{broken", "..."):
        with pytest.raises(ValueError, match="label answer"):
            label_match("cat", bad)


@pytest.mark.parametrize(
    "response,accuracy,format_score",
    [
        ("<answer>3</answer>", 1.0, 1.0),
        ("<answer>Three</answer>", 1.0, 1.0),
        (r"I see 2 cats and 1 dog, so \boxed{3}", 1.0, 1.0),
        ("There are 2 cats and 1 dog: 3 animals.", 1.0, 0.0),  # unmarked: the last number
        ("3 animals, one of them asleep", 0.0, 0.0),  # the last number is "one"
        ("<answer>3.0</answer>", 1.0, 1.0),
        ("<answer>3.5</answer>", 0.0, 1.0),
        ("<answer>4</answer>", 0.0, 1.0),
        ("<answer>someone</answer> 3", 0.0, 0.0),  # "one" inside a word is no number: malformed, the tag wins
        ("<answer>x3</answer>", 0.0, 0.0),  # a digit inside a word is no number: malformed
    ],
)
def test_count_match(response, accuracy, format_score):
    scores = count_match(response, "3")
    assert scores["accuracy"] == accuracy
    assert scores["format"] == format_score
    assert scores["overall"] == pytest.approx(0.9 * accuracy + 0.1 * format_score)


def test_count_large_and_word_numbers():
    assert count_match("<answer>1,000</answer>", "1000")["accuracy"] == 1.0
    assert count_match("<answer>twenty</answer>", "20")["accuracy"] == 1.0
    assert count_match("<answer>zero</answer>", "0")["accuracy"] == 1.0
    assert count_match("<answer>" + "9" * 5000 + "</answer>", "9")["accuracy"] == 0.0


def test_count_malformed_and_bad_answers():
    assert count_match("<answer>many</answer>", "3") == {
        "overall": 0.0,
        "format": 0.0,
        "accuracy": 0.0,
        "malformed": 1.0,
    }
    for bad in ("three", "3.5", "", "nan"):
        with pytest.raises(ValueError, match="count answer"):
            count_match("3", bad)
