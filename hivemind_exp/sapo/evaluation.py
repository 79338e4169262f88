"""Held-out accuracy on ReasoningGym problems: greedy decoding, each task's own scorer.

A problem counts as solved when the SAPO rubric's correctness (tagged <answer>, or the
tolerant untagged reading) is 1.0, i.e. the task's `score_answer` accepts the answer in
full; the format rate is the share of completions with a well-formed <answer> tag.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

EVAL_BATCH = 32


@dataclass
class TaskEval:
    n: int
    accuracy: float
    format_rate: float
    seconds: float
    per_task: dict[str, float] = field(default_factory=dict)
    solved: list[bool] = field(default_factory=list, repr=False)  # per problem, in order (for paired statistics)


def correct_flags(rubric: Any, completions: Sequence[str], problem: Any, source: Any) -> list[bool]:
    """Per completion: whether the task scores its answer fully correct (tagged or untagged)."""
    from hivemind_exp.sapo.rubric import correctness_reward, untagged_correctness_reward

    d = rubric.score_detailed(completions, problem, source).per_function
    tagged, untagged = d[correctness_reward.__name__], d[untagged_correctness_reward.__name__]
    return [max(a, b) >= 1.0 for a, b in zip(tagged, untagged)]


def evaluate_tasks(sampler: Any, problems: Sequence[Any], source: Any, rubric: Any, prompt: Any,
                   max_new_tokens: int | None = None) -> TaskEval:
    """Greedy completions of every problem (no autograd; the model's train flag is restored).

    `sampler`: a `hivemind_exp.trainer.sampling.Sampler`, or a `GRPOEngine` (its own sampler is
    used) or another training engine; `max_new_tokens` defaults to its `params.max_completion_length`.
    """
    from hivemind_exp.game.rewards import format_reward

    if not problems:
        raise ValueError("no held-out problems to evaluate")
    sampler = getattr(sampler, "sampler", sampler)
    # Only when asked: any engine with generate_token_ids(prompt_ids, n, greedy) works without it.
    limit = {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}
    t0 = time.monotonic()
    texts: list[str] = []
    for i in range(0, len(problems), EVAL_BATCH):
        chunk = problems[i:i + EVAL_BATCH]
        ids = sampler.generate_token_ids(sampler.encode_prompts([prompt(p) for p in chunk]), 1, greedy=True, **limit)
        texts.extend(sampler.tokenizer.decode(group[0], skip_special_tokens=True) for group in ids)
    solved, formatted = [], []
    per_task: dict[str, list[bool]] = {}
    for prob, text in zip(problems, texts):
        ok = correct_flags(rubric, [text], prob, source)[0]
        solved.append(ok)
        formatted.append(rubric.score_detailed([text], prob, source).per_function[format_reward.__name__][0] >= 1.0)
        per_task.setdefault(prob.spec.task, []).append(ok)
    n = len(problems)
    return TaskEval(n=n, accuracy=sum(solved) / n, format_rate=sum(formatted) / n, seconds=time.monotonic() - t0,
                    per_task={t: sum(v) / len(v) for t, v in sorted(per_task.items())}, solved=solved)
