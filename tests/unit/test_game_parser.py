"""TagParser: values and format facts from clean, malformed, empty and huge completions."""

from __future__ import annotations

import time

import pytest

from hivemind_exp.game.parser import STAGE_FIELDS, TagParser, completion_text, stage_parser

P1 = stage_parser(1)


def test_clean_completion() -> None:
    p = P1.parse("<think>\n48 / 2 = 24; 48 + 24 = 72\n</think>\n<answer>\n72\n</answer>")
    assert p.get("think") == "48 / 2 = 24; 48 + 24 = 72"
    assert p["answer"] == "72"
    assert p.well_formed("think") and p.well_formed("answer")
    assert p.in_order and p.outside_chars == 0
    assert p.format_score == pytest.approx(1.0)


def test_case_and_spaces_in_tags() -> None:
    p = P1.parse("<THINK>x</ think ><Answer > 3 </answer>")
    assert (p["think"], p["answer"]) == ("x", "3")
    assert p.format_score == pytest.approx(1.0)


def test_missing_tag_gives_none_and_partial_credit() -> None:
    p = P1.parse("<answer>72</answer>")
    assert p["think"] is None and p["answer"] == "72"
    assert 0.3 < p.format_score < 0.7


def test_unclosed_tag_reads_up_to_next_tag() -> None:
    p = P1.parse("<think>long reasoning\n<answer>5</answer>")
    assert p["think"] == "long reasoning"
    assert not p.tags["think"].complete and not p.well_formed("think")
    assert p["answer"] == "5" and p.well_formed("answer")
    assert 0.7 < p.format_score < 1.0


def test_unclosed_last_tag_reads_to_end() -> None:
    p = P1.parse("<think>a</think><answer>12 apples")
    assert p["answer"] == "12 apples"
    assert p.tags["answer"].opened == 1 and p.tags["answer"].closed == 0


def test_duplicated_tag_last_pair_wins_and_is_flagged() -> None:
    p = P1.parse("<think>a</think><answer>1</answer><answer>2</answer>")
    assert p["answer"] == "2"
    assert p.tags["answer"].opened == 2 and not p.well_formed("answer")
    assert p.format_score < P1.parse("<think>a</think><answer>2</answer>").format_score


def test_reopened_then_unclosed_keeps_last_complete_pair() -> None:
    p = P1.parse("<think>a</think><answer>1</answer> <answer>oops")
    assert p["answer"] == "1"
    assert not p.well_formed("answer")


def test_stray_close_and_nesting() -> None:
    p = P1.parse("</answer>72")
    assert p["answer"] is None and p.tags["answer"].closed == 1
    assert p.format_score == 0.0
    nested = P1.parse("<think>x <answer>7</answer> more</think>")
    assert nested["answer"] == "7"
    assert not nested.in_order


def test_wrong_order_loses_order_credit() -> None:
    right = P1.parse("<think>x</think><answer>7</answer>")
    wrong = P1.parse("<answer>7</answer><think>x</think>")
    assert wrong["answer"] == "7" and not wrong.in_order
    assert wrong.format_score < right.format_score


def test_untagged_text_lowers_score_gradually() -> None:
    base = "<think>x</think><answer>7</answer>"
    assert P1.parse("Sure! " + base).format_score == pytest.approx(1.0)  # small allowance
    long_junk = P1.parse("blah " * 100 + base)
    assert long_junk.outside_chars == 400
    assert 0.7 < long_junk.format_score < 1.0


def test_empty_tags_score_below_filled() -> None:
    empty = P1.parse("<think></think><answer></answer>")
    assert empty["answer"] == "" and not empty.well_formed("answer")
    assert empty.format_score < P1.parse("<think>x</think><answer>7</answer>").format_score
    assert P1.parse("<answer>").format_score < P1.parse("<answer>7</answer>").format_score


@pytest.mark.parametrize("text", ["", "   ", "no tags at all, the answer is 72", "<>", "<<>>", "</>"])
def test_no_tags(text: str) -> None:
    p = P1.parse(text)
    assert p["think"] is None and p["answer"] is None
    assert p.format_score == 0.0 and not p.in_order


def test_similar_tag_names_do_not_match() -> None:
    p = P1.parse("<answers>7</answers><answer_x>8</answer_x>")
    assert p["answer"] is None


def test_stage_parsers() -> None:
    assert stage_parser(3).fields == STAGE_FIELDS[3]
    text = (
        "<summarize_feedback>two votes</summarize_feedback><majority>quick-amber-otter</majority>"
        "<think>3*4=12</think><answer>12</answer>"
    )
    p = stage_parser(3).parse(text)
    assert p["majority"] == "quick-amber-otter" and p["answer"] == "12"
    assert p.format_score == pytest.approx(1.0)
    assert stage_parser(2).parse(text)["compare"] is None
    with pytest.raises(ValueError, match="stage"):
        stage_parser(4)


def test_chat_message_completion() -> None:
    msgs = [{"role": "assistant", "content": "<think>x</think><answer>7</answer>"}]
    assert completion_text(msgs) == msgs[0]["content"]
    assert P1.parse(msgs)["answer"] == "7"
    assert P1.parse(None)["answer"] is None
    with pytest.raises(TypeError, match="completion"):
        completion_text(42)


def test_bad_tag_names_rejected() -> None:
    with pytest.raises(ValueError, match="tag name"):
        TagParser(["Answer!"])
    with pytest.raises(ValueError, match="duplicate"):
        TagParser(["a", "a"])
    with pytest.raises(ValueError):
        TagParser([])


@pytest.mark.parametrize(
    "text",
    [
        "<think>" + "a" * 100_000,
        "<" * 100_000,
        "</" + " " * 100_000,
        "<think>" * 15_000,
        "<think>x</think>" * 7_000,
        "<answer " + " " * 100_000,
        "x" * 100_000 + "<think>y</think><answer>1</answer>",
    ],
)
def test_huge_completions_parse_fast(text: str) -> None:
    start = time.perf_counter()
    for parser in (stage_parser(1), stage_parser(2), stage_parser(3)):
        p = parser.parse(text)
        assert 0.0 <= p.format_score <= 1.0
    assert time.perf_counter() - start < 2.0
