"""Math-equivalence grading of an answer string against a ground truth, with HF `math-verify`.

Both strings are parsed as LaTeX / plain expressions (wrapped in `$...$`) into sympy objects and compared
numerically and symbolically: 1/2, 0.5, \\frac{1}{2}, \\dfrac{1}{2} are equal; units in \\text{} or plain
words after a number ("5 cm") are dropped; 10\\% equals 10 and 0.1; degrees (30^\\circ) equal 30;
"x=3" equals 3; sets compare unordered. Limits (tested): a bare word is parsed as a product of
one-letter symbols, so anagrams such as "listen" / "silent" compare equal, and numbers are compared
after rounding to 6 decimals.

math-verify's own signal-based time limits are switched off (they only work in a main thread); callers
bound the time with `shuffle_r1_jax.rewards.pool`, which runs graders in killable processes.
"""

from __future__ import annotations

import logging

from math_verify import parse, verify


class _DropTimeoutDisabledNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.grader", "math_verify.parser"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledNotice())


def math_equal(given: str, ground_truth: str) -> bool:
    """True if `given` is mathematically equivalent to `ground_truth` (empty strings never match)."""
    given, ground_truth = given.strip(), ground_truth.strip()
    if not given or not ground_truth:
        return False
    if given == ground_truth:
        return True
    gold = parse(f"${ground_truth}$", parsing_timeout=None)
    prediction = parse(f"${given}$", parsing_timeout=None)
    return bool(verify(gold, prediction, timeout_seconds=None))
