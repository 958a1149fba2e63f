"""Module-level reward functions that misbehave on request, for the scoring-pool tests.

They must live in an importable module: worker processes import them by name.
"""

import os
import time

import numpy as np


def flaky_reward(response: str, answer: str) -> dict:
    """Behaves according to `response`: raise / sleep / exit / missing / nan / else exact match."""
    if response == "raise":
        raise RuntimeError("boom")
    if response == "sleep":
        time.sleep(30)
    if response == "exit":
        os._exit(3)
    if response == "missing":
        return {"accuracy": 1.0}
    if response == "nan":
        return {"overall": float("nan")}
    correct = float(response == answer)
    return {"overall": correct, "accuracy": correct, "length": float(len(response))}


def not_a_dict(response: str, answer: str) -> float:
    return 1.0


def typed_reward(response: str, answer: str) -> dict:
    """Returns the 'overall' (and an 'accuracy' part) typed as `response` names: a string, a bool, inf, a numpy
    float32, an int, or (else) a float."""
    overall = {
        "string": "1.0",
        "bool": True,
        "inf": float("inf"),
        "float32": np.float32(0.5),
        "int": 1,
    }.get(response, 0.25)
    accuracy = "1" if response == "string_part" else 0.0
    return {"overall": overall, "accuracy": accuracy}


def sleeping_reward(response: str, answer: str) -> dict:
    """Sleeps `float(response)` seconds, then scores 1."""
    time.sleep(float(response))
    return {"overall": 1.0}


def context_reward(response: str, answer: str, *, key_steps=None, scale: float = 1.0) -> dict:
    """`scale` x the number of key steps (a reward with keyword arguments)."""
    return {"overall": scale * len(key_steps or [])}


def any_context_reward(response: str, answer: str, **context) -> dict:
    """The number of keyword arguments it was given."""
    return {"overall": float(len(context))}


SPANS_BY_RESPONSE = {
    "good": [(0, 2, 0.5), [3, 4, np.float32(-1.0)], (np.int64(1), 4, 2)],
    "empty": [],
    "none": None,
    "not_a_list": "0-2",
    "not_a_triple": [(0, 2)],
    "float_bound": [(0.0, 2, 1.0)],
    "bool_bound": [(False, 2, 1.0)],
    "string_value": [(0, 2, "1")],
    "nan_value": [(0, 2, float("nan"))],
    "empty_span": [(2, 2, 1.0)],
    "negative_start": [(-1, 2, 1.0)],
    "past_the_end": [(0, 99, 1.0)],
}


def span_reward(response: str, answer: str) -> dict:
    """Score 1 with the "spans" of `SPANS_BY_RESPONSE[response]` (responses are padded with "." to 12 characters
    so the in-range spans fit: the key is the text before the first ".")."""
    return {"overall": 1.0, "spans": SPANS_BY_RESPONSE[response.split(".")[0]]}
