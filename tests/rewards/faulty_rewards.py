"""Module-level reward functions that misbehave on request, for the scoring-pool tests.

They must live in an importable module: worker processes import them by name.
"""

import os
import time


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
