"""SAPO prompt and reward: ordering of correct / untagged / wrong / garbage completions."""

from __future__ import annotations

import math

import pytest

from hivemind_exp.trainer.profiles import CONFIG_ROOT, DEFAULT_TASK_MIX
from hivemind_exp.sapo.rubric import FORMAT_WEIGHT, sapo_prompt, sapo_rubric, untagged_answer_candidates
from hivemind_exp.sapo.tasks import ReasoningGymSource, TaskMix


@pytest.fixture(scope="module")
def source() -> ReasoningGymSource:
    return ReasoningGymSource(TaskMix.from_yaml(CONFIG_ROOT / DEFAULT_TASK_MIX))


@pytest.fixture(scope="module")
def words() -> ReasoningGymSource:
    """A task with word answers, so the untagged fallback is tried on a last line, not a number."""
    return ReasoningGymSource(TaskMix.from_mapping({"tasks": [{"name": "family_relationships", "weight": 1}]}))


def _wrong(answer: str) -> str:
    """A wrong answer that does not contain the right one (score_answer gives partial credit for that)."""
    return str(int(answer) + 1) if answer.lstrip("-").isdigit() else "zzz"


@pytest.mark.parametrize("format_weight", [FORMAT_WEIGHT, 0.2])
def test_reward_ordering_on_every_task_of_the_default_mix(source: ReasoningGymSource, format_weight: float):
    rubric = sapo_rubric(format_weight=format_weight)
    seen = set()
    for p in source.draw(node_seed=3, round_no=0, n=40):
        seen.add(p.spec.task)
        completions = [
            f"<think>\nLet me work it out.\n</think>\n<answer>\n{p.answer}\n</answer>",  # right, tagged
            f"Let me work it out.\nThe answer is {p.answer}.",  # right, no tags
            f"<think>\nLet me work it out.\n</think>\n<answer>\n{_wrong(p.answer)}\n</answer>",  # wrong, tagged
            f"<answer>{_wrong(p.answer)}</answer>",  # wrong, half the tags
            "qwerty zxcv",  # garbage
            "",
        ]
        r = rubric.score(completions, p, source)
        if format_weight:  # the tags pay even on a wrong answer
            assert r[0] > r[1] > r[2] > r[3] > r[4] == r[5] == 0.0, (p.spec.task, p.answer, r)
        else:  # only right answers pay, tagged ones twice as much
            assert r[0] > r[1] > r[2] == r[3] == r[4] == r[5] == 0.0, (p.spec.task, p.answer, r)
        assert r[0] == pytest.approx(1.0 + format_weight)
        assert all(math.isfinite(x) and 0.0 <= x <= rubric.max_reward for x in r)
        assert rubric.score(completions, p, source) == r  # pure: same input, same rewards
    assert seen == set(source.tasks)


def test_untagged_fallback_reads_the_last_line_or_the_last_number(words: ReasoningGymSource):
    rubric = sapo_rubric()
    p = words.draw(node_seed=1, round_no=0, n=1)[0]
    assert p.answer.isalpha()
    r = rubric.score([f"Thinking about the family.\n{p.answer}", f"Thinking.\nAnswer: {p.answer}.",
                      f"{p.answer}\nbut maybe not", "no idea"], p, words)
    assert r[0] == r[1] == pytest.approx(0.5) and r[2] == r[3] == 0.0
    assert untagged_answer_candidates("x = 3 + 4\nso 7 apples, I think") == ["so 7 apples, I think", "7"]
    assert untagged_answer_candidates("") == []


def test_score_detailed_gives_each_function(source: ReasoningGymSource):
    p = source.draw(node_seed=9, round_no=1, n=1)[0]
    detail = sapo_rubric().score_detailed([f"<think>ok</think><answer>{p.answer}</answer>", "nothing"], p, source)
    assert detail.per_function["correctness_reward"] == [1.0, 0.0]
    assert detail.per_function["untagged_correctness_reward"] == [0.0, 0.0]
    assert detail.per_function["format_reward"][0] == 1.0 and detail.per_function["format_reward"][1] == 0.0
    assert detail.weights["format_reward"] == FORMAT_WEIGHT
    assert detail.means()["total"] == pytest.approx((1.0 + FORMAT_WEIGHT) / 2)


def test_chat_message_completions_are_scored_like_text(source: ReasoningGymSource):
    p = source.draw(node_seed=2, round_no=4, n=1)[0]
    text = f"<think>ok</think><answer>{p.answer}</answer>"
    rubric = sapo_rubric()
    assert rubric.score([[{"role": "assistant", "content": text}]], p, source) == rubric.score([text], p, source)


def test_prompt_asks_for_think_and_answer_tags(source: ReasoningGymSource):
    p = source.draw(node_seed=4, round_no=0, n=1)[0]
    messages = sapo_prompt(p)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert p.question.strip() in messages[1]["content"]
    for tag in ("<think>", "</think>", "<answer>", "</answer>"):
        assert tag in messages[0]["content"] and tag in messages[1]["content"]
    with pytest.raises(ValueError, match="question"):
        sapo_prompt(object())  # type: ignore[arg-type]


def test_bad_weights_are_refused():
    with pytest.raises(ValueError, match="untagged_weight"):
        sapo_rubric(untagged_weight=2.0)
    with pytest.raises(ValueError, match="format_weight"):
        sapo_rubric(format_weight=-0.1)
