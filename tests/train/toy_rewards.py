"""Rewards for trainer tests (module-level so reward worker processes can import them)."""

import time


def letter_a_fraction(response: str, answer: str) -> dict[str, float]:
    """The fraction of the response's characters that are the letter "a": learnable from any start."""
    score = response.count("a") / max(len(response), 1)
    return {"overall": score, "accuracy": score}


def distinct_characters_of_color_answers(response: str, answer: str) -> dict[str, float]:
    """For prompts whose answer is a colour, the fraction of the response's characters that are distinct (varies
    with any response, even an untrained model's); 0 for the other prompts: their groups are all equal (no signal),
    so DAPO's dynamic sampling has groups to drop and refill."""
    if answer not in ("red", "green", "blue", "yellow"):
        return {"overall": 0.0, "accuracy": 0.0}
    score = len(set(response)) / max(len(response), 1)
    return {"overall": score, "accuracy": score}


def hangs(response: str, answer: str) -> dict[str, float]:
    """Never returns in a test's time (a grader stuck on every response)."""
    time.sleep(600)
    return {"overall": 0.0}


def first_character_span(response: str, answer: str) -> dict:
    """Outcome 0 and a span reward of 1 on the response's first character (no spans for an empty response)."""
    return {"overall": 0.0, "spans": [(0, 1, 1.0)] if response else []}
