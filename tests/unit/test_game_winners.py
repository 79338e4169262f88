"""pick_winners: scores, top-k, deterministic tie-breaks, and robustness to bad records."""

from __future__ import annotations

import random

import pytest

from hivemind_exp.game.data import Problem
from hivemind_exp.game.winners import pick_winners, score_peer

PROBLEMS = [Problem("q1", "3 * 4?", "12"), Problem("q2", "10 - 3?", "7"), Problem("q3", "2 + 2?", "4")]


def final(answer: str, tidy: bool = True) -> str:
    if not tidy:
        return f"<answer>{answer}</answer>"
    return (
        "<summarize_feedback>ok</summarize_feedback><majority>None</majority>"
        f"<think>work</think><answer>{answer}</answer>"
    )


def test_scores_and_ranking() -> None:
    outputs = {
        "all-right": {"q1": final("12"), "q2": final("7"), "q3": final("4")},
        "two-right": {"q1": final("12"), "q2": final("7"), "q3": final("5")},
        "two-right-sloppy": {"q1": final("12", tidy=False), "q2": final("7", tidy=False), "q3": final("5", tidy=False)},
        "none-right": {"q1": final("1"), "q2": final("1"), "q3": final("1")},
        "silent": {},
    }
    result = pick_winners(outputs, PROBLEMS, k=10)
    assert result.winners == ("all-right", "two-right", "two-right-sloppy")  # format breaks the 2-2 tie
    s = result.scores
    assert s["all-right"].correct == 3 and s["all-right"].answered == 3
    assert s["all-right"].score == pytest.approx(3 + 0.2 * 3)
    assert s["two-right-sloppy"].format < s["two-right"].format
    assert s["none-right"].correct == 0 and s["none-right"].score > 0  # tidy, but cannot win
    assert s["silent"].answered == 0 and s["silent"].score == 0
    assert set(s) == set(outputs)
    assert pick_winners(outputs, PROBLEMS, k=2).winners == ("all-right", "two-right")
    assert pick_winners(outputs, PROBLEMS, k=0).winners == ()


def test_ties_broken_deterministically_and_fairly() -> None:
    peers = [f"peer-{i:02d}" for i in range(20)]
    outputs = {p: {"q1": final("12")} for p in peers}
    first = pick_winners(outputs, PROBLEMS, k=5, tie_salt="round-1")
    # Same result whatever order the records arrived in.
    for seed in range(5):
        shuffled = dict(random.Random(seed).sample(list(outputs.items()), len(outputs)))
        assert pick_winners(shuffled, PROBLEMS, k=5, tie_salt="round-1") == first
    assert len(first.winners) == 5
    # A different round salt gives other tied peers their turn (not always the smallest id).
    tops = {pick_winners(outputs, PROBLEMS, k=1, tie_salt=f"round-{r}").winners[0] for r in range(30)}
    assert len(tops) > 5


def test_problems_as_mapping_and_bad_records() -> None:
    by_qid = {p.qid: p for p in PROBLEMS}
    outputs = {
        "good": {"q1": final("12"), "unknown-qid": final("99")},
        "bad-types": {"q1": 12, "q2": None, "q3": ["<answer>4</answer>"]},
        "not-a-dict": "garbage",
        "huge": {"q1": "<answer>12</answer>" + "x" * 100_000},
    }
    result = pick_winners(outputs, by_qid)  # type: ignore[arg-type]
    assert result.scores["good"].correct == 1 and result.scores["good"].answered == 1
    assert result.scores["bad-types"].answered == 0
    assert result.scores["not-a-dict"].answered == 0
    assert result.scores["huge"].correct == 1
    assert result.winners[0] == "good"  # same correct count, cleaner format than "huge"


def test_score_peer_direct_and_errors() -> None:
    s = score_peer("p", {"q1": final("12")}, {p.qid: p for p in PROBLEMS}, format_weight=0.0)
    assert s.score == 1.0 and s.correct == 1
    with pytest.raises(ValueError, match="k"):
        pick_winners({}, PROBLEMS, k=-1)
    with pytest.raises(TypeError, match="Problem"):
        pick_winners({}, [{"qid": "q1"}])  # type: ignore[list-item]
    assert pick_winners({}, PROBLEMS).winners == ()
