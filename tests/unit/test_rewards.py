"""Reward functions, rubric weighting and reward contexts on hand-written completions."""

from __future__ import annotations

import math
import time

import pytest

from hivemind_exp.game.data import Problem, question_id
from hivemind_exp.game.parser import stage_parser
from hivemind_exp.game.prompts import NONE, PromptLimits, stage_prompt
from hivemind_exp.game.rewards import (
    RewardContext,
    Rubric,
    bare_number_reward,
    conciseness_reward,
    correctness_reward,
    format_reward,
    identify_correct_reward,
    identify_valid_reward,
    majority_reward,
    reward_context,
    stage_rubric,
)
from hivemind_exp.swarm.names import pseudonyms

Q = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many altogether?"
PROBLEM = Problem(question_id(Q), Q, "72")

GOOD1 = "<think>\n48 / 2 = 24. 48 + 24 = 72.\n</think>\n<answer>\n72\n</answer>"
WRONG1 = "<think>\n48 + 2 = 50.\n</think>\n<answer>\n50\n</answer>"
WORDY1 = "<think>48 / 2 = 24. 48 + 24 = 72.</think><answer>She sold 72 clips.</answer>"
UNTAGGED1 = "48 / 2 = 24. 48 + 24 = 72. The answer is 72."
HUGE = "<think>" + "lots of thinking " * 6000 + "</think><answer>72</answer>"  # ~100k chars
EMPTY = ""

A, B, C = "peer-A", "peer-B", "peer-C"
NAMES = pseudonyms([A, B, C])


def crit(name: str) -> str:
    return f"<compare>\nchecked the sums\n</compare>\n<identify>\n{name}\n</identify>"


def decide(majority: str, answer: str = "72") -> str:
    return (
        f"<summarize_feedback>\nvotes counted\n</summarize_feedback>\n<majority>\n{majority}\n</majority>\n"
        f"<think>\n48 + 24 = {answer}\n</think>\n<answer>\n{answer}\n</answer>"
    )


def one(func, completion: str, ctx: RewardContext) -> float:
    return func(stage_parser(ctx.stage).parse(completion), ctx)


# ---------------------------------------------------------------- stage 1


def test_stage1_functions_on_hand_written_completions() -> None:
    ctx = reward_context(1, PROBLEM)
    assert one(correctness_reward, GOOD1, ctx) == 1.0
    assert one(correctness_reward, WRONG1, ctx) == 0.0
    assert one(correctness_reward, WORDY1, ctx) == 1.0  # number read out of a sentence
    assert one(correctness_reward, UNTAGGED1, ctx) == 0.0  # the answer must be in <answer>
    assert one(correctness_reward, EMPTY, ctx) == 0.0

    assert one(format_reward, GOOD1, ctx) == pytest.approx(1.0)
    assert one(format_reward, UNTAGGED1, ctx) == 0.0
    assert 0.0 < one(format_reward, "<answer>72</answer>", ctx) < one(format_reward, GOOD1, ctx)

    assert one(bare_number_reward, GOOD1, ctx) == 1.0
    assert one(bare_number_reward, "<answer>$1,080.50</answer>", ctx) == 1.0
    assert one(bare_number_reward, WORDY1, ctx) == 0.0
    assert one(bare_number_reward, EMPTY, ctx) == 0.0

    assert one(conciseness_reward, GOOD1, ctx) == 1.0
    assert one(conciseness_reward, HUGE, ctx) == 0.0
    mid = one(conciseness_reward, "<think>" + "x" * 1900 + "</think><answer>72</answer>", ctx)
    assert 0.0 < mid < 1.0


def test_stage1_rubric_totals_and_breakdown() -> None:
    rubric = stage_rubric(1)
    ctx = reward_context(1, PROBLEM)
    detail = rubric.score_detailed([GOOD1, WRONG1, UNTAGGED1, EMPTY, HUGE], ctx)
    total_weight = sum(w for f, w in rubric.funcs if f.__name__ != "loose_correctness_reward")
    assert detail.totals[0] == pytest.approx(total_weight)  # perfect answer earns every point
    assert detail.totals[0] > detail.totals[1] > detail.totals[2]
    assert detail.totals[3] == pytest.approx(0.25)  # empty: only "not too long"
    assert detail.per_function["correctness_reward"] == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert detail.per_function["conciseness_reward"][4] == 0.0
    assert set(detail.weights) == set(rubric.names)
    means = detail.means()
    assert means["correctness_reward"] == pytest.approx(0.4)
    assert means["total"] == pytest.approx(sum(detail.totals) / 5)
    assert rubric.score([GOOD1], ctx) == [detail.totals[0]]


def test_correct_beats_format_in_every_stage() -> None:
    # A correct untidy answer must beat a tidy wrong one, or the model learns tags, not math.
    ctx = reward_context(1, PROBLEM)
    sloppy_right = "<answer>72</answer>"
    tidy_wrong = WRONG1
    r = stage_rubric(1).score([sloppy_right, tidy_wrong], ctx)
    assert r[0] > r[1]


# ---------------------------------------------------------------- stage 2


def stage2_ctx(answers: dict[str, str]) -> RewardContext:
    return reward_context(2, PROBLEM, answers)


def test_reward_context_stage2_facts() -> None:
    ctx = stage2_ctx({A: GOOD1, B: WRONG1, C: UNTAGGED1})
    assert set(ctx.answers) == {NAMES[A], NAMES[B], NAMES[C]}
    assert ctx.correct == frozenset({NAMES[A]})  # C is right in prose but gave no <answer>
    assert ctx.peer_of[NAMES[B]] == B
    assert ctx.votes == {} and ctx.majority == frozenset()
    # Key order does not matter.
    assert stage2_ctx({C: UNTAGGED1, B: WRONG1, A: GOOD1}) == ctx


def test_identify_rewards() -> None:
    ctx = stage2_ctx({A: GOOD1, B: WRONG1})
    assert one(identify_correct_reward, crit(NAMES[A]), ctx) == 1.0
    assert one(identify_correct_reward, crit(NAMES[A].replace("-", " ").title()), ctx) == 1.0
    assert one(identify_correct_reward, crit(f"I pick {NAMES[A]}."), ctx) == 1.0
    assert one(identify_correct_reward, crit(NAMES[B]), ctx) == 0.0
    assert one(identify_correct_reward, crit("None"), ctx) == 0.0  # someone was right
    assert one(identify_correct_reward, crit("brisk-sample-fox"), ctx) == 0.0  # not a peer
    both = crit(f"{NAMES[A]} or {NAMES[B]}")
    assert one(identify_correct_reward, both, ctx) == 0.0  # listing everyone earns nothing
    assert one(identify_valid_reward, both, ctx) == 0.0
    assert one(identify_valid_reward, crit(NAMES[B]), ctx) == 1.0
    assert one(identify_valid_reward, crit("none"), ctx) == 1.0
    assert one(identify_valid_reward, EMPTY, ctx) == 0.0

    nobody = stage2_ctx({A: WRONG1, B: WRONG1})
    assert nobody.correct == frozenset()
    assert one(identify_correct_reward, crit("None"), nobody) == 1.0
    assert one(identify_correct_reward, crit("nobody"), nobody) == 1.0
    assert one(identify_correct_reward, crit(NAMES[A]), nobody) == 0.0

    no_answers = stage2_ctx({})
    assert one(identify_correct_reward, crit("None"), no_answers) == 0.0


def test_stage2_rubric_orders_completions() -> None:
    ctx = stage2_ctx({A: GOOD1, B: WRONG1})
    r = stage_rubric(2).score([crit(NAMES[A]), crit(NAMES[B]), f"<identify>{NAMES[A]}</identify>", EMPTY, HUGE], ctx)
    assert r[0] == pytest.approx(sum(w for _, w in stage_rubric(2).funcs))
    assert r[0] > r[2] > r[1] > r[3]
    assert all(math.isfinite(x) for x in r)


# ---------------------------------------------------------------- stage 3


def test_majority_and_stage3_rewards() -> None:
    answers = {A: GOOD1, B: WRONG1, C: UNTAGGED1}
    critiques = {A: crit(NAMES[A]), B: crit(NAMES[A]), C: crit(NAMES[B])}
    ctx = reward_context(3, PROBLEM, answers, critiques)
    assert ctx.votes == {NAMES[A]: 2, NAMES[B]: 1}
    assert ctx.majority == frozenset({NAMES[A]})
    assert one(majority_reward, decide(NAMES[A]), ctx) == 1.0
    assert one(majority_reward, decide(NAMES[B]), ctx) == 0.0
    assert one(majority_reward, decide("None"), ctx) == 0.0
    assert one(correctness_reward, decide(NAMES[B], "72"), ctx) == 1.0
    assert one(correctness_reward, decide(NAMES[A], "50"), ctx) == 0.0

    rubric = stage_rubric(3)
    r = rubric.score([decide(NAMES[A]), decide(NAMES[B]), decide(NAMES[A], "50"), EMPTY, HUGE], ctx)
    assert r[0] == pytest.approx(sum(w for f, w in rubric.funcs if f.__name__ != "loose_correctness_reward"))
    assert r[0] > r[1] > r[2] > r[3]


def test_majority_ties_and_none_votes() -> None:
    answers = {A: GOOD1, B: WRONG1}
    tie = reward_context(3, PROBLEM, answers, {A: crit(NAMES[A]), B: crit(NAMES[B])})
    assert tie.majority == frozenset({NAMES[A], NAMES[B]})
    assert one(majority_reward, decide(NAMES[B]), tie) == 1.0
    nones = reward_context(3, PROBLEM, answers, {A: crit("None"), B: crit("none"), C: crit(NAMES[A])})
    assert nones.majority == frozenset({NONE})
    assert one(majority_reward, decide("None"), nones) == 1.0
    unreadable = reward_context(3, PROBLEM, answers, {A: "garbage", B: crit("who knows")})
    assert unreadable.majority == frozenset()
    assert one(majority_reward, decide("None"), unreadable) == 0.0


def test_context_matches_prompt_when_peers_are_capped() -> None:
    limits = PromptLimits(max_peers=3)
    answers = {f"peer-{i}": (GOOD1 if i % 2 else WRONG1) for i in range(10)}
    ctx = reward_context(2, PROBLEM, answers, limits=limits)
    prompt = stage_prompt(2, PROBLEM, answers, limits=limits)[1]["content"]
    assert len(ctx.answers) == 3
    shown = [line.split(":")[0] for line in prompt.splitlines() if line.split(":")[0] in ctx.peer_of]
    assert sorted(shown) == sorted(ctx.answers)


def test_context_validation() -> None:
    with pytest.raises(ValueError, match="stage"):
        reward_context(0, PROBLEM)
    with pytest.raises(TypeError, match="Problem"):
        reward_context(1, {"question": Q})  # type: ignore[arg-type]
    # Non-string records from strangers are dropped, not crashed on.
    ctx = reward_context(2, PROBLEM, {A: GOOD1, B: None, C: 42})  # type: ignore[dict-item]
    assert set(ctx.answers) == {NAMES[A]}


# ---------------------------------------------------------------- the Rubric machinery


def test_rubric_weighting_with_custom_functions() -> None:
    def always_one(parsed, ctx):
        return 1.0

    def answer_length(parsed, ctx):
        return float(len(parsed.get("answer") or ""))

    rubric = Rubric([(always_one, 2.0), (answer_length, -0.5)])
    ctx = reward_context(1, PROBLEM)
    assert rubric.score(["<answer>1234</answer>", "", "<answer>1</answer>"], ctx) == [0.0, 2.0, 1.5]
    assert rubric.names == ("always_one", "answer_length")
    assert "always_one=2" in repr(rubric)
    assert rubric.score([], ctx) == []


def test_rubric_parses_each_completion_once() -> None:
    seen: list[int] = []

    def first(parsed, ctx):
        seen.append(id(parsed))
        return 0.0

    def second(parsed, ctx):
        seen.append(id(parsed))
        return 0.0

    Rubric([(first, 1.0), (second, 1.0)]).score([GOOD1, WRONG1], reward_context(1, PROBLEM))
    assert seen[:2] == seen[2:]  # the same Parsed objects reach both functions


def test_rubric_errors_name_the_culprit() -> None:
    def broken(parsed, ctx):
        raise KeyError("boom")

    def nan(parsed, ctx):
        return float("nan")

    ctx = reward_context(1, PROBLEM)
    with pytest.raises(RuntimeError, match="broken failed on completion #0"):
        Rubric([(broken, 1.0)]).score([GOOD1], ctx)
    with pytest.raises(RuntimeError, match="nan returned nan"):
        Rubric([(nan, 1.0)]).score([GOOD1], ctx)
    with pytest.raises(ValueError, match="at least one"):
        Rubric([])
    with pytest.raises(ValueError, match="twice"):
        Rubric([(nan, 1.0), (nan, 2.0)])
    with pytest.raises(ValueError, match="finite"):
        Rubric([(nan, float("inf"))])
    with pytest.raises(TypeError, match="callable"):
        Rubric([("format", 1.0)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="stage"):
        stage_rubric(7)


def test_every_stage_scores_bad_input_fast_and_finite() -> None:
    answers = {A: HUGE, B: EMPTY, C: "<think>" * 10_000}
    critiques = {A: HUGE, B: EMPTY, C: "<identify>" + "x" * 100_000}
    junk = [EMPTY, HUGE, "<" * 100_000, "<answer>" + "9" * 100_000, "\x00\ufffd" * 1000, "<think>" * 10_000]
    start = time.perf_counter()
    for stage in (1, 2, 3):
        ctx = reward_context(stage, PROBLEM, answers, critiques)
        detail = stage_rubric(stage).score_detailed(junk, ctx)
        assert all(math.isfinite(x) for x in detail.totals)
        for values in detail.per_function.values():
            assert all(0.0 <= v <= 1.0 for v in values)
    assert time.perf_counter() - start < 5.0


def test_untagged_right_answer_earns_a_little_so_groups_differ():
    from hivemind_exp.game.data import Problem
    from hivemind_exp.game.rewards import loose_correctness_reward, reward_context, stage_rubric

    prob = Problem(qid="q", question="What is 3 + 4?", answer="7")
    ctx = reward_context(1, prob)
    untagged_right, untagged_wrong = "3 plus 4 makes 7", "3 plus 4 makes 8"
    tagged_right = "<think>3+4</think>\n<answer>7</answer>"
    rubric = stage_rubric(1)
    right, wrong, tagged = rubric.score([untagged_right, untagged_wrong, tagged_right], ctx)
    assert right > wrong  # a real signal even before the model learns the tags
    assert tagged > right  # and the tagged right answer still pays most
    parsed = rubric.parser.parse(tagged_right) if hasattr(rubric, "parser") else None
    if parsed is not None:
        assert loose_correctness_reward(parsed, ctx) == 0.0  # no double credit for tagged answers
