"""Rewards for the evaluation tests (module-level so reward worker processes can import them)."""


def has_letter_e(response: str, answer: str) -> dict[str, float]:
    """1 when the response holds the letter "e", else 0: right or wrong by sample, even for an untrained model."""
    score = float("e" in response)
    return {"overall": score, "accuracy": score}
