"""Evaluator scoring on hand-written completions, result arithmetic, and the held-out split."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hivemind_exp.game.data import GeneratedSource, Problem, question_id, round_problems
from hivemind_exp.game.evaluation import (
    EvalRecord, EvalResult, HeldOutLeakError, _batches_by_length, assert_disjoint, held_out_count, held_out_ids,
    held_out_split, score_completion,
)

GOOD = "<think>\n48 / 2 = 24 in May, 48 + 24 = 72.\n</think>\n<answer>\n72\n</answer>"


# --- scoring -----------------------------------------------------------------------------


def test_well_formed_correct_answer():
    s = score_completion(GOOD, "72")
    assert (s.predicted, s.correct, s.format_ok, s.from_answer_tag) == ("72", True, True, True)
    assert s.format_score == pytest.approx(1.0)


def test_well_formed_wrong_answer():
    s = score_completion(GOOD.replace("72\n</answer>", "70\n</answer>"), "72")
    assert (s.predicted, s.correct, s.format_ok) == ("70", False, True)


def test_answer_tag_wins_over_numbers_in_reasoning():
    # The reasoning ends on 72 but the committed answer is 24: the answer tag counts.
    text = "<think>May: 24. Total 72.</think><answer>24</answer>"
    s = score_completion(text, "72")
    assert (s.predicted, s.correct) == ("24", False)


def test_tags_missing_number_read_from_whole_text():
    s = score_completion("She sold 48 + 24 = 72 clips in total.", "72")
    assert (s.predicted, s.correct, s.format_ok, s.from_answer_tag) == ("72", True, False, False)
    assert s.format_score == 0.0


def test_no_number_at_all():
    s = score_completion("<think>I am not sure.</think><answer>many</answer>", "72")
    assert (s.predicted, s.correct, s.format_ok) == (None, False, True)


def test_empty_answer_tag_is_not_rescued_from_reasoning():
    s = score_completion("<think>48 + 24 = 72</think><answer></answer>", "72")
    assert s.predicted is None and not s.correct and not s.format_ok


def test_unclosed_answer_and_formatted_numbers():
    s = score_completion("<think>sum</think><answer>$1,234.00", "1234")
    assert (s.predicted, s.correct, s.format_ok, s.from_answer_tag) == ("1234", True, False, True)
    assert 0.0 < s.format_score < 1.0


def test_gsm8k_reference_field_and_decimals():
    assert score_completion("<answer>0.5</answer>", "Half of 1.\n#### 0.50").correct
    assert not score_completion("<answer>5</answer>", "#### 0.5").correct


def test_order_and_duplicates_break_format():
    swapped = "<answer>72</answer><think>48 + 24</think>"
    s = score_completion(swapped, "72")
    assert s.correct and not s.format_ok
    twice = "<think>a</think><answer>70</answer><answer>72</answer>"
    s2 = score_completion(twice, "72")
    assert s2.predicted == "72" and not s2.format_ok  # the last complete answer wins, flagged


# --- results -----------------------------------------------------------------------------


def _record(correct: bool, fmt: bool, tokens: int, truncated: bool = False) -> EvalRecord:
    return EvalRecord(qid="q", question="?", reference="1", completion="", predicted="1" if correct else None,
                      correct=correct, format_ok=fmt, format_score=1.0 if fmt else 0.25,
                      completion_tokens=tokens, truncated=truncated)


def test_result_aggregates_and_serialises():
    recs = [_record(True, True, 10), _record(False, True, 20), _record(False, False, 30, truncated=True),
            _record(True, False, 40)]
    r = EvalResult.from_records(recs, seconds=2.0)
    assert (r.n, r.accuracy, r.format_rate, r.mean_completion_tokens) == (4, 0.5, 0.5, 25.0)
    assert r.truncated_rate == 0.25 and r.mean_format_score == pytest.approx(0.625)
    d = json.loads(json.dumps(r.to_dict()))
    assert "records" not in d and d["n"] == 4
    assert len(r.to_dict(include_records=True)["records"]) == 4
    assert EvalResult.from_records(recs, keep=False).records == ()
    empty = EvalResult.from_records([])
    assert empty.n == 0 and empty.accuracy == 0.0


def test_length_batches_cover_every_index_once_longest_first():
    lengths = [5, 50, 7, 50, 1, 30, 9]
    batches = list(_batches_by_length(lengths, 3))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)


# --- held-out split ----------------------------------------------------------------------


def _problems(n: int) -> list[Problem]:
    return [Problem(qid=question_id(f"question {i}"), question=f"question {i}", answer=str(i)) for i in range(n)]


def test_split_sizes_disjoint_and_order_kept():
    probs = _problems(200)
    train, held = held_out_split(probs, 0.1, seed=3)
    assert len(held) == 20 and len(train) == 180
    assert not held_out_ids(held) & held_out_ids(train)
    assert [p for p in probs if p in held] == held  # input order kept
    train2, held2 = held_out_split(probs, 37, seed=3)
    assert len(held2) == 37 and len(train2) == 163


def test_split_ignores_dataset_order_and_depends_on_seed():
    probs = _problems(300)
    shuffled = probs[:]
    random.Random(1).shuffle(shuffled)
    ids = held_out_ids(held_out_split(probs, 25, seed=7)[1])
    assert held_out_ids(held_out_split(shuffled, 25, seed=7)[1]) == ids
    assert held_out_ids(held_out_split(probs, 25, seed=8)[1]) != ids


def test_duplicates_stay_on_one_side():
    probs = _problems(50)
    doubled = probs + probs[:25]
    train, held = held_out_split(doubled, 10, seed=0)
    assert not held_out_ids(held) & held_out_ids(train)
    assert len(held_out_ids(held)) == 10


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5, -0.1, float("nan"), 50, 60, -1])
def test_split_rejects_sizes_that_leave_nothing(bad):
    with pytest.raises(ValueError, match="held"):
        held_out_split(_problems(50), bad)


def test_split_rejects_non_numbers():
    with pytest.raises(TypeError, match="count"):
        held_out_count(10, True)
    with pytest.raises(TypeError, match="count"):
        held_out_count(10, "0.1")  # type: ignore[arg-type]
    assert held_out_count(10, 0) == 0
    assert held_out_count(3, 0.01) == 1  # a positive fraction always holds out something


def test_assert_disjoint_names_the_leak():
    probs = _problems(10)
    assert_disjoint(probs[:5], probs[5:])
    leaked = Problem(qid=question_id("question 7"), question="  question 7 ", answer="7")
    with pytest.raises(HeldOutLeakError, match="1 training problem.*question 7"):
        assert_disjoint(probs[:5] + [leaked], probs[5:])


def test_round_problems_never_draw_held_out():
    src = GeneratedSource(seed=11, size=300)
    _, held = held_out_split(src.problems(), 0.2, seed=11)
    exclude = held_out_ids(held)
    for round_no in range(20):
        drawn = round_problems(src, swarm_seed=11, round_no=round_no, n=16, exclude=exclude)
        assert not held_out_ids(drawn) & exclude


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 80), frac=st.floats(0.01, 0.99), seed=st.integers(0, 2**32))
def test_split_property(n, frac, seed):
    probs = _problems(n)
    train, held = held_out_split(probs, frac, seed=seed)
    assert len(train) + len(held) == n and train and held
    assert not held_out_ids(train) & held_out_ids(held)
