"""Dataset sources: local JSONL (with malformed lines), the generator, the round's question set."""

from __future__ import annotations

import json

import pytest

from hivemind_exp.game.data import (
    TEMPLATES, DatasetError, GeneratedSource, JsonlSource, gsm8k_final_answer, open_source, round_problems,
)
from hivemind_exp.common.paths import shared_dir

GSM8K = shared_dir() / "datasets" / "gsm8k" / "train.jsonl"


def test_real_gsm8k_file_loads():
    src = JsonlSource(GSM8K)
    probs = src.problems()
    assert len(probs) > 7000 and not src.skipped
    first = probs[0]
    assert first.answer == "72" and "Natalia" in first.question


def test_malformed_lines_reported_and_skipped(tmp_path, caplog):
    f = tmp_path / "mixed.jsonl"
    f.write_text("\n".join([
        json.dumps({"question": "What is 2+2?", "answer": "2+2=4\n#### 4"}),
        "{not json",
        json.dumps({"question": "", "answer": "#### 1"}),
        json.dumps({"question": "No final number?", "answer": "it is big"}),
        json.dumps(["a", "list"]),
        json.dumps({"question": "Cost?", "answer": "#### 1,234"}),
    ]) + "\n")
    src = JsonlSource(f)
    probs = src.problems()
    assert [p.answer for p in probs] == ["4", "1234"]
    assert [ln for ln, _ in src.skipped] == [2, 3, 4, 5]
    assert any("mixed.jsonl:2" in r.getMessage() for r in caplog.records)


def test_file_without_usable_lines_is_an_error(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text("garbage\n{}\n")
    with pytest.raises(DatasetError, match="no usable line"):
        JsonlSource(f).problems()
    with pytest.raises(DatasetError, match="does not exist"):
        JsonlSource(tmp_path / "missing.jsonl").problems()


def test_final_answer_parsing():
    assert gsm8k_final_answer("x\n#### 72") == "72"
    assert gsm8k_final_answer("#### -3") == "-3"
    assert gsm8k_final_answer("#### 2.50") == "2.50"
    assert gsm8k_final_answer("#### $1,000") == "1000"
    assert gsm8k_final_answer("no marker") is None


def test_generator_is_seeded_exact_and_varied():
    a = GeneratedSource(seed=7, size=400).problems()
    b = GeneratedSource(seed=7, size=400).problems()
    assert a == b
    assert len({p.qid for p in a}) == 400
    assert all(p.answer.lstrip("-").isdigit() for p in a)
    c = GeneratedSource(seed=8, size=400).problems()
    assert a != c
    assert len(TEMPLATES) >= 10
    # every template appears in a large sample
    starts = {p.question.split(" ")[1] for p in a}
    assert len(starts) > 5


def test_generator_answers_are_right_for_a_known_template():
    src = GeneratedSource(seed=3, size=200, templates=[6])  # the bus template
    import re

    for p in src.problems():
        nums = list(map(int, re.findall(r"\d+", p.question)))
        start, off1, on1, off2, on2 = nums[:5]
        assert int(p.answer) == start - off1 + on1 - off2 + on2


def test_round_problems_pure_and_distinct_across_rounds():
    src = GeneratedSource(seed=1, size=500)
    r1 = round_problems(src, swarm_seed=42, round_no=1, n=4)
    assert r1 == round_problems(src, swarm_seed=42, round_no=1, n=4)
    rounds = [tuple(p.qid for p in round_problems(src, 42, r, 4)) for r in range(20)]
    assert len(set(rounds)) == 20  # no two rounds alike
    held = frozenset(p.qid for p in r1)
    assert not held & {p.qid for p in round_problems(src, 42, 1, 4, exclude=held)}


def test_open_source_auto_falls_back_to_generator_offline(monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import logging

    caplog.set_level(logging.INFO)
    src = open_source("auto")
    assert src.name == "generated"
    assert any("Dataset source: built-in generator" in r.getMessage() for r in caplog.records)
    assert open_source("auto", path=GSM8K).name == "jsonl"
