"""Soft matching of an annotated key step (a short phrase, number or equation) against a response text.

`key_step_matcher(text)` normalizes a text once and returns a predicate `present(key_step) -> bool`. A key step
is present when one of these holds, tried in this order:

1. Literal: the normalized key step occurs in the normalized text, not inside a longer word or number. The
   key "x=1" is not found in "x=1.5", "x=15" or "x=1/2"; "5" is not found in "0.5", "25", "1/5" or "x=-5";
   "cat" is not found in "cats"; an equation is not found after an operand or operator ("y=1" is not stated
   by "2y=1", "w=1.5" not by "v+w=1.5").
2. Number: the whole key step is one number and a number of exactly the same value occurs in the text.
   Numbers are decimals ("0.5", ".5", "-3"), fractions of decimals ("1/2", also \\frac{1}{2}), percentages
   ("50%", "50\\%", "50 percent" = 0.5) and number words ("zero" .. "nineteen", the tens, compounds such as
   "forty-two" or "forty two", and "half" = 0.5). So "0.5", "1/2", "50%" and "half" all match each other, and
   "12" matches "twelve". Values are compared as exact fractions: a rounded decimal is not its fraction
   ("0.33" is not "1/3"); a bare "50" is not "50%" by value (it is found literally in "50%"). A number glued
   to a word ("2x", "12cm") is no number; digit runs over 64 characters are ignored.
3. Equation: the key step is `lhs = rhs` (a chain `lhs = a = rhs` uses its first and last side) and the text
   holds `lhs = c1 = c2 ...` (or `rhs = ...` with lhs among the c_i) with the same normalized side, not
   preceded by a letter, digit or operator, where some c_i equals the other side: as numbers (rule 2), else
   by `grader.math_equal` ("x = 1/2" matches "x=0.5"; "y = 1 + 2x" matches "y=2x+1"; "c^2 = a^2 + b^2"
   matches "a^2+b^2=c^2"). A c_i ends at whitespace, ',' or ';'; at most MAX_COMPARISONS sides are compared
   per key step and side, and sides over MAX_GRADED_LENGTH characters are compared as numbers only.

Not accepted (by design or as known limits): paraphrases in words ("x is one half" for "x=0.5"), other
wording or word order ("ABC angle" for "angle ABC"), quantities with units by value ("12 cm" must appear as
"12 cm" or "12\\,\\text{cm}", not "12cm"), points or tuples after '=' ("p=(1,2)" only literally), and a bare
number key inside a difference ("3" is found in "8-3").

Normalization (both sides): Unicode NFKC and case folding; '$', \\( \\) \\[ \\] removed; LaTeX spacing
(\\, \\; \\: \\! \\quad \\qquad, '~') and runs of whitespace become one space; spaces next to
= + * / ^ < > ( ) , ; : and before % and ° are removed, and " - " between two operands becomes "-";
\\left, \\right dropped; \\dfrac, \\tfrac -> \\frac -> a/b (or (a)/(b) for compound parts); \\cdot,
\\times, ×, · -> *; ÷ -> /; −, – -> -; \\text{..}, \\mathrm{..} -> their content; \\% -> %; ^\\circ,
\\degree -> °; braces around a single word dropped (x^{2} -> x^2); thousands commas dropped (1,000 -> 1000,
so also a pair written "(1,234)"); trailing zeros of decimals dropped (0.50 -> 0.5, 3.0 -> 3).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from fractions import Fraction

from shuffle_r1_jax.rewards.grader import math_equal

MAX_COMPARISONS = 16
MAX_GRADED_LENGTH = 64
_MAX_NESTING = 8  # rounds of \frac / brace rewriting: deeper nesting stays as it is
_MAX_DIGITS = 64  # longer digit runs are no number (int() refuses over 4300 digits)

_DELIMITERS = re.compile(r"\$|\\[()\[\]]")
_SPACING = re.compile(r"\\(?:[,;:! ]|q?quad(?![a-z]))|~")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?![a-z])")
_FRAC_VARIANT = re.compile(r"\\[dt]frac(?![a-z])")
_FRAC_BRACED = re.compile(r"\\frac\{([^{}]*)\}\{([^{}]*)\}")
_FRAC_DIGITS = re.compile(r"\\frac(\d)(\d)")
_SIMPLE_ATOM = re.compile(r"[\w.]+")
_TEXT_COMMAND = re.compile(r"\\(?:text|textrm|textbf|mathrm|mathbf|operatorname)\{([^{}]*)\}")
_DEGREE = re.compile(r"\^\{?\\circ\}?|\\circ(?![a-z])|\\degree(?![a-z])")
_BRACED_WORD = re.compile(r"(?<!\\)\{([\w.]+)\}")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_TRAILING_ZEROS = re.compile(r"(?<![\d.])(\d+)\.(\d*[1-9])?0+(?!\d)")
_WHITESPACE = re.compile(r"\s+")
_SPACE_AT_OPERATOR = re.compile(r" ?([=+*/^<>(),;:]) ?")
_SPACE_BEFORE_UNIT = re.compile(r" ([%°])")
_SPACED_MINUS = re.compile(r"(?<=[\w)]) - (?=[\w(])")
_SYMBOLS = str.maketrans({"×": "*", "·": "*", "÷": "/", "−": "-", "⁄": "/", "–": "-"})
_SYMBOL_COMMANDS = re.compile(r"\\(?:cdot|times)(?![a-z])")

_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
_UNITS += " seventeen eighteen nineteen"
_WORD_VALUES = {word: value for value, word in enumerate(_UNITS.split())}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_ONES = "one|two|three|four|five|six|seven|eight|nine"
_NUMBER_WORD = (
    rf"(?:(?:{'|'.join(_TENS)})(?:[- ](?:{_ONES}))?|{'|'.join(sorted(_WORD_VALUES, key=len, reverse=True))}|half)"
)
_DECIMAL = r"(?:\d+(?:\.\d+)?|\.\d+)"
# A number not continuing a word or another number; a '-' is its sign only where no operand precedes it.
_NUMBER_TOKEN = re.compile(
    rf"(?<![\w.])(?P<sign>(?<![\w.)])-)?(?P<num>{_DECIMAL})(?:/(?P<den>{_DECIMAL}))?(?!\w|\.\d|/\d)"
    rf"(?P<pct>%| ?percent(?!\w))?"
    rf"|(?<!\w)(?P<word>{_NUMBER_WORD})(?!\w)"
)
_WHOLE_NUMBER = re.compile(
    rf"(?P<sign>-)?(?P<num>{_DECIMAL})(?:/(?P<den>{_DECIMAL}))?(?P<pct>%| ?percent)?|(?P<word>{_NUMBER_WORD})"
)
_OPERAND_BEFORE = r"[\w.+\-*/^]"


def normalize(text: str) -> str:
    """The matching form of a text (see the module docstring for the rules). Never raises."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_SYMBOLS)
    text = _DELIMITERS.sub("", text)
    text = _SPACING.sub(" ", text)
    text = _LEFT_RIGHT.sub("", text)
    text = _SYMBOL_COMMANDS.sub("*", text)
    text = _FRAC_VARIANT.sub(r"\\frac", text)
    text = _FRAC_DIGITS.sub(r"\1/\2", text)
    text = _TEXT_COMMAND.sub(r"\1", text)
    text = _DEGREE.sub("°", text).replace("\\%", "%")
    for _ in range(_MAX_NESTING):
        rewritten = _BRACED_WORD.sub(r"\1", _FRAC_BRACED.sub(_fraction_as_division, text))
        if rewritten == text:
            break
        text = rewritten
    text = _THOUSANDS_COMMA.sub("", text)
    text = _TRAILING_ZEROS.sub(lambda m: f"{m[1]}.{m[2]}" if m[2] else m[1], text)
    text = _WHITESPACE.sub(" ", text)
    text = _SPACE_BEFORE_UNIT.sub(r"\1", _SPACED_MINUS.sub("-", text))
    return _SPACE_AT_OPERATOR.sub(r"\1", text).strip()


def _fraction_as_division(match: re.Match) -> str:
    numerator, denominator = match[1].strip(), match[2].strip()
    if not _SIMPLE_ATOM.fullmatch(numerator):
        numerator = f"({numerator})"
    if not _SIMPLE_ATOM.fullmatch(denominator):
        denominator = f"({denominator})"
    return f"{numerator}/{denominator}"


def _word_value(word: str) -> Fraction:
    if word == "half":
        return Fraction(1, 2)
    tens, _, ones = word.replace("-", " ").partition(" ")
    if tens in _TENS:
        return Fraction(_TENS[tens] + (_WORD_VALUES[ones] if ones else 0))
    return Fraction(_WORD_VALUES[word])


def _value(match: re.Match) -> Fraction | None:
    if match["word"]:
        return _word_value(match["word"].strip())
    if len(match["num"]) > _MAX_DIGITS or len(match["den"] or "") > _MAX_DIGITS:
        return None
    value = Fraction(match["num"])
    if match["den"]:
        denominator = Fraction(match["den"])
        if denominator == 0:
            return None
        value /= denominator
    if match["pct"]:
        value /= 100
    return -value if match["sign"] else value


def number_value(text: str) -> Fraction | None:
    """The exact value of a normalized text that is one number (rule 2 of the module docstring), else None."""
    match = _WHOLE_NUMBER.fullmatch(text)
    return _value(match) if match else None


def _literal_pattern(key: str) -> re.Pattern:
    before = after = ""
    if "=" in key:  # an equation's left side continues no operand: "x=1" is not stated by "2x=1" or "y+x=1"
        before = rf"(?<!{_OPERAND_BEFORE})"
    elif re.match(r"\w", key):
        before = r"(?<!\w)"
        if key[0].isdigit():
            before += r"(?<!\d[./])(?<!(?<![\w.)])-)"
    if re.search(r"\w$", key):
        after = r"(?!\w)"
        if key[-1].isdigit():
            after += r"(?![./]\d)"
    return re.compile(before + re.escape(key) + after)


class _Text:
    """A normalized text with its number values computed on first use."""

    def __init__(self, text: str):
        self.text = normalize(text)
        self._numbers: set[Fraction] | None = None

    @property
    def numbers(self) -> set[Fraction]:
        if self._numbers is None:
            values = (_value(match) for match in _NUMBER_TOKEN.finditer(self.text))
            self._numbers = {value for value in values if value is not None}
        return self._numbers

    def has_literal(self, key: str) -> bool:
        return _literal_pattern(key).search(self.text) is not None

    def has_equation(self, lhs: str, rhs: str) -> bool:
        """Some `lhs = c1 = c2 ...` in the text has a c_i equal to `rhs`; at most MAX_COMPARISONS sides tried."""
        rhs_value = number_value(rhs)
        compared = 0
        for statement in re.finditer(rf"(?<!{_OPERAND_BEFORE}){re.escape(lhs)}=([^\s,;]+)", self.text):
            for side in statement[1].split("="):
                side = _strip_closing(side.rstrip(".:"))
                if not side:
                    continue
                if _sides_equal(side, rhs, rhs_value):
                    return True
                compared += 1
                if compared == MAX_COMPARISONS:
                    return False
        return False


def _strip_closing(side: str) -> str:
    """Drops trailing ')' that close a parenthesis opened before the statement: "(so x=1/2)" -> "1/2"."""
    while side.endswith(")") and side.count(")") > side.count("("):
        side = side[:-1]
    return side


def _sides_equal(side: str, rhs: str, rhs_value: Fraction | None) -> bool:
    if side == rhs:
        return True
    side_value = number_value(side)
    if side_value is not None and rhs_value is not None:
        return side_value == rhs_value
    if len(side) > MAX_GRADED_LENGTH or len(rhs) > MAX_GRADED_LENGTH:
        return False
    try:
        return math_equal(side, rhs)
    except Exception:  # the grader's parsers may fail on odd text: such a side simply does not match
        return False


def key_step_matcher(text: str) -> Callable[[str], bool]:
    """Normalizes `text` once; returns `present(key_step) -> bool` by the rules of the module docstring.

    A key step that is empty after normalization is never present. Neither function raises on any string.
    """
    normalized = _Text(text)

    def present(key_step: str) -> bool:
        key = normalize(key_step).rstrip(".,;:")
        if not key:
            return False
        if normalized.has_literal(key):
            return True
        value = number_value(key)
        if value is not None:
            return value in normalized.numbers
        sides = key.split("=")
        if len(sides) < 2 or not sides[0] or not sides[-1]:
            return False
        lhs, rhs = sides[0], sides[-1]
        return normalized.has_equation(lhs, rhs) or normalized.has_equation(rhs, lhs)

    return present
