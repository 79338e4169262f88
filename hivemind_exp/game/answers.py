"""Final numeric answers: pull the number out of free text and compare numbers.

Used by the stage rewards, the round winners and the evaluator, so every part of the
system agrees on what "the model answered 72" means.

- `extract_number(text)` returns a canonical number string ("1234", "-3.5", "0.75",
  "1/3") or None. Commas, currency signs, units, negatives, decimals and simple
  fractions are understood. With several numbers it takes the first number after the
  last "answer is" / "answer:" / "####" / "\\boxed" marker, else the last number.
- `answers_match(pred, reference)` compares numerically ("72.0" == "72", "$1,234" == "1234").
- `reference_from_gsm8k(answer_field)` reads the number after GSM8K's "####".

All regular expressions here are linear-time (no nested quantifiers), so a 100k-character
completion is handled in milliseconds.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

# A number token. The lookbehind stops matches inside words ("x2") or in the middle of
# another number; the sign counts only when it is not a binary minus ("12-5").
_NUMBER = re.compile(
    r"(?<![\w.])"
    r"(?P<sign>[-\u2212])?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d|,\d)|\d+(?:\.\d+)?|\.\d+)"
    r"(?:[ \t]*/[ \t]*(?P<den>\d+)(?![\d.]))?"
)
# Phrases after which the final answer follows. Last one wins.
_MARKER = re.compile(r"\banswer\s*(?:is|was|:|=)|####|\\boxed", re.IGNORECASE)
# Longer digit runs are not answers (and would hit Python's int-string size limit).
_MAX_DIGITS = 60
# Relative/absolute tolerance for "equal" numbers: rounding noise only, not 72 vs 72.5.
_TOLERANCE = Fraction(1, 10**6)


def _token_value(match: re.Match[str]) -> Fraction | None:
    if not _plausible(match):
        return None
    num = match.group("num").replace(",", "")
    den = match.group("den")
    try:
        value = Fraction(Decimal(num))
    except (InvalidOperation, ValueError):
        return None
    if den is not None and int(den) != 0:
        value /= int(den)
    if match.group("sign"):
        value = -value
    return value


def canonical(value: Fraction) -> str:
    """Integer, exact decimal, or "p/q" for repeating decimals; never an exponent."""
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:
        return f"{value.numerator}/{value.denominator}"
    text = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _plausible(match: re.Match[str]) -> bool:
    den = match.group("den")
    return len(match.group("num")) <= _MAX_DIGITS and (den is None or len(den) <= _MAX_DIGITS)


def _last_number(text: str) -> Fraction | None:
    # Convert only the winner: a long text can hold tens of thousands of numbers.
    last = None
    for m in _NUMBER.finditer(text):
        if _plausible(m):
            last = m
    return None if last is None else _token_value(last)


def _first_number(text: str, start: int) -> Fraction | None:
    for m in _NUMBER.finditer(text, start):
        v = _token_value(m)
        if v is not None:
            return v
    return None


def extract_value(text: str | None) -> Fraction | None:
    """The final numeric answer in `text` as an exact Fraction, or None."""
    if not text:
        return None
    last_marker = None
    for last_marker in _MARKER.finditer(text):
        pass
    if last_marker is not None:
        after = _first_number(text, last_marker.end())
        if after is not None:
            return after
    return _last_number(text)


def extract_number(text: str | None) -> str | None:
    """The final numeric answer in `text` as a canonical string, or None when there is none.

    >>> extract_number("She pays $1,234.50 in total")
    '1234.5'
    >>> extract_number("12 - 5 = 7 apples")
    '7'
    """
    value = extract_value(text)
    return None if value is None else canonical(value)


def answers_match(pred: str | None, reference: str | None) -> bool:
    """True when both contain a number and the numbers are equal (tiny rounding tolerated)."""
    p = extract_value(pred)
    r = extract_value(reference)
    if p is None or r is None:
        return False
    return abs(p - r) <= _TOLERANCE * max(Fraction(1), abs(r))


def reference_from_gsm8k(answer_field: str) -> str:
    """The canonical final answer of a GSM8K `answer` field ("... #### 1,080" -> "1080")."""
    if not isinstance(answer_field, str) or "####" not in answer_field:
        shown = repr(answer_field)[:80]
        raise ValueError(f"GSM8K answer field has no '#### <number>' line: {shown}; is this really GSM8K's 'answer' column?")
    tail = answer_field.rsplit("####", 1)[1]
    number = extract_number(tail)
    if number is None:
        raise ValueError(f"GSM8K answer field has no number after '####': {tail.strip()[:80]!r}")
    return number
