"""A reward for the pass-rate filter's tests (module-level, so reward worker processes can import it)."""


def answer_is_the_accuracy(response: str, answer: str) -> dict[str, float]:
    """Every response to a prompt scores its answer read as a number: the prompt's pass rate is known in advance
    (clipped to [0, 1] by the filter)."""
    value = float(answer)
    return {"overall": value, "accuracy": value}
