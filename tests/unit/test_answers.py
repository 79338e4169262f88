"""extract_number / answers_match / reference_from_gsm8k on the number formats models write."""

from __future__ import annotations

import json
import time

import pytest

from hivemind_exp.game.answers import answers_match, extract_number, reference_from_gsm8k
from hivemind_exp.common.paths import shared_dir

GSM8K = shared_dir() / "datasets" / "gsm8k" / "train.jsonl"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("72", "72"),
        ("1,234", "1234"),
        ("It costs 1,234,567 in total", "1234567"),
        ("I have 1,234, and more", "1234"),
        ("$5", "5"),
        ("$1,234.50", "1234.5"),
        ("12 apples", "12"),
        ("5kg of flour", "5"),
        ("50%", "50"),
        ("-3", "-3"),
        ("The temperature is -3.5 degrees", "-3.5"),
        ("\u22124", "-4"),  # unicode minus
        ("12-5=7", "7"),  # a binary minus is not a sign
        ("12 - 5", "5"),
        ("3.75", "3.75"),
        ("0.10", "0.1"),
        (".5", "0.5"),
        ("72.0", "72"),
        ("3/4", "0.75"),
        ("1/3", "1/3"),
        ("48/2 = 24", "24"),
        ("5/0 cups", "5"),
        ("First 3 then 4 then 10", "10"),
        ("The answer is 72 apples, because 70 + 2 = 72 and 1 more", "72"),
        ("So the final answer: $18.", "18"),
        ("Thus answer = 9 since 3*3", "9"),
        ("blah 5\n#### 1,080", "1080"),
        ("\\boxed{42} after 7 tries", "42"),
        ("the answer is unknown, but 7 maybe", "7"),  # marker without a number: last number
        ("answer is -0", "0"),
        ("x2 and y3", None),  # digits glued to words are not numbers
        ("no number here", None),
        ("", None),
        (None, None),
        ("9" * 200, None),  # an absurd digit run is not an answer
    ],
)
def test_extract_number(text: str | None, expected: str | None) -> None:
    assert extract_number(text) == expected


@pytest.mark.parametrize(
    ("pred", "ref", "ok"),
    [
        ("72.0", "72", True),
        ("72", "72", True),
        ("$1,080", "1080", True),
        ("The answer is 72 clips", "72", True),
        ("0.75", "3/4", True),
        ("-3.5", "-3.5", True),
        ("72.5", "72", False),
        ("71", "72", False),
        ("3.5", "-3.5", False),
        ("0.3333333", "1/3", True),  # within 1e-6 relative
        ("0.33", "1/3", False),
        (None, "72", False),
        ("", "72", False),
        ("no idea", "72", False),
        ("72", "", False),
    ],
)
def test_answers_match(pred: str | None, ref: str, ok: bool) -> None:
    assert answers_match(pred, ref) is ok


def test_reference_from_gsm8k() -> None:
    assert reference_from_gsm8k("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72") == "72"
    assert reference_from_gsm8k("... #### 1,080") == "1080"
    assert reference_from_gsm8k("#### -3") == "-3"
    with pytest.raises(ValueError, match="####"):
        reference_from_gsm8k("no marker, 72")
    with pytest.raises(ValueError, match="no number"):
        reference_from_gsm8k("#### ")


@pytest.mark.skipif(not GSM8K.is_file(), reason="shared GSM8K copy not present")
def test_every_gsm8k_reference_parses_and_matches_its_own_text() -> None:
    lines = GSM8K.read_text().splitlines()
    assert len(lines) > 7000
    for line in lines[::5]:  # every 5th row keeps the unit test fast; all 7,473 pass too
        row = json.loads(line)
        ref = reference_from_gsm8k(row["answer"])
        tail = row["answer"].rsplit("####", 1)[1].strip()
        assert answers_match(tail, ref), (tail, ref)
        # The whole worked solution ends in the answer, so the last-number rule finds it too.
        assert answers_match(row["answer"], ref)


@pytest.mark.parametrize(
    "text",
    ["1 " * 50_000, "a" * 100_000, "<" * 100_000, "1," * 50_000, "answer is " * 10_000, "9" * 100_000, "- " * 50_000],
)
def test_huge_inputs_are_fast(text: str) -> None:
    start = time.perf_counter()
    extract_number(text)
    answers_match(text, "1")
    assert time.perf_counter() - start < 2.0
