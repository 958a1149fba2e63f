"""Rewards for trainer tests (module-level so reward worker processes can import them)."""


def letter_a_fraction(response: str, answer: str) -> dict[str, float]:
    """The fraction of the response's characters that are the letter "a": learnable from any start."""
    score = response.count("a") / max(len(response), 1)
    return {"overall": score, "accuracy": score}
