"""The SAPO prompt and reward for ReasoningGym problems.

    messages = sapo_prompt(problem)                          # system + user chat turns
    rubric = sapo_rubric()
    rewards = rubric.score(completions, problem, source)     # one float per completion
    detail = rubric.score_detailed(completions, problem, source)  # + per-function values

The reward is built from the three-stage game's parts: `TagParser` reads <think>/<answer>
once per completion and `Rubric` weighs pure reward functions. Correctness is the task's
own `score_answer` (through the source) on the <answer> text. A 135M model often writes no
tags at first, so an untagged completion is scored on its last line and its last
number-like token at half weight: the first GRPO steps get a signal from right answers, and
the tags still pay. A format reward (off by default, see FORMAT_WEIGHT) can pull towards
the tags. Totals lie in
[0, 1 + format_weight]: the tagged and untagged correctness terms never both pay.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hivemind_exp.game.answers import extract_number
from hivemind_exp.game.parser import Parsed, stage_parser
from hivemind_exp.game.rewards import Rubric, RubricScores, format_reward

if TYPE_CHECKING:
    from hivemind_exp.sapo.tasks import ReasoningGymSource, TaskProblem

SAPO_SYSTEM = (
    "You solve short reasoning problems. Write your reasoning inside <think> </think>, "
    "then only the final answer inside <answer> </answer>.\n\n"
    "Example:\n"
    "<think>\n3 + 4 = 7, then 7 - 2 = 5.\n</think>\n"
    "<answer>\n5\n</answer>"
)
# The fill-in skeleton at the end of the user turn: on SmolLM2-135M it raised the share of
# tagged replies well above the system prompt alone (see game/prompts.py REPLY_FORMATS).
SAPO_REPLY_FORMAT = "Reply in this format:\n<think>\nyour reasoning\n</think>\n<answer>\nthe final answer only\n</answer>"

# Off by default, measured: with 0.2 the embedded 135M model learned the tags in 24 solo steps
# (format 0% -> 84%) and lost accuracy (14.1% -> 8.6% held-out); with 0 it went 14.1% -> 31.2%
# in 16 steps (bench/swarm_vs_solo.py --game sapo --solo-only, 2026-12-02). The tags still pay
# where it matters: a right tagged answer earns twice a right untagged one.
FORMAT_WEIGHT = 0.0
UNTAGGED_WEIGHT = 0.5  # an untagged right answer earns half a tagged one

# Prefixes a model puts before a final answer on its last line ("Answer: 7", "So the result is 7.").
_ANSWER_PREFIX = re.compile(r"^.*?\b(?:answer|result)\s*(?:is|:|=)\s*", re.IGNORECASE)
_FALLBACK_CHARS = 200  # a "last line" longer than this is prose, not an answer


@dataclass(frozen=True)
class SapoContext:
    """What the SAPO reward functions read about one question."""

    problem: TaskProblem
    source: ReasoningGymSource
    stage: str = "sapo"  # Rubric names the stage in its error messages


def correctness_reward(parsed: Parsed, ctx: SapoContext) -> float:
    """The task's own score_answer on the <answer> text, in [0, 1]."""
    answer = parsed.get("answer")
    if answer is None:
        return 0.0
    return ctx.source.score(ctx.problem, answer)


def untagged_answer_candidates(text: str) -> list[str]:
    """What an untagged completion most likely answers: its last line (with an "answer is"
    prefix and trailing full stop removed) and its last number-like token."""
    out: list[str] = []
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if lines and len(lines[-1]) <= _FALLBACK_CHARS:
        last = lines[-1]
        out.append(last)
        stripped = _ANSWER_PREFIX.sub("", last).strip().rstrip(".").strip()
        if stripped and stripped != last:
            out.append(stripped)
    number = extract_number(text)
    if number is not None:
        out.append(number)
    return out


def untagged_correctness_reward(parsed: Parsed, ctx: SapoContext) -> float:
    """Without an <answer> tag: the best score_answer among the untagged candidates."""
    if parsed.get("answer") is not None:
        return 0.0  # a tagged answer is judged by correctness_reward alone
    return max((ctx.source.score(ctx.problem, c) for c in untagged_answer_candidates(parsed.text)), default=0.0)


class SapoRubric:
    """`Rubric` of the SAPO game: scores completions of one question against its own task."""

    def __init__(self, format_weight: float = FORMAT_WEIGHT, untagged_weight: float = UNTAGGED_WEIGHT):
        if not 0 <= untagged_weight <= 1:
            raise ValueError(f"untagged_weight must be in [0, 1] (a fraction of a tagged answer), got {untagged_weight}")
        if not 0 <= format_weight <= 1:
            raise ValueError(f"format_weight must be in [0, 1], got {format_weight}")
        self.rubric = Rubric(
            [(correctness_reward, 1.0), (untagged_correctness_reward, untagged_weight), (format_reward, format_weight)],
            stage_parser(1),  # <think>, <answer>
        )
        self.max_reward = 1.0 + format_weight

    def __repr__(self) -> str:
        return f"Sapo{self.rubric!r}"

    @property
    def names(self) -> tuple[str, ...]:
        return self.rubric.names

    def score_detailed(self, completions: Sequence[Any], problem: TaskProblem, source: ReasoningGymSource) -> RubricScores:
        return self.rubric.score_detailed(completions, SapoContext(problem, source))  # type: ignore[arg-type]

    def score(self, completions: Sequence[Any], problem: TaskProblem, source: ReasoningGymSource) -> list[float]:
        """Reward of each completion (a string or a chat-message list), in [0, max_reward]."""
        return self.score_detailed(completions, problem, source).totals


def sapo_rubric(format_weight: float = FORMAT_WEIGHT, untagged_weight: float = UNTAGGED_WEIGHT) -> SapoRubric:
    return SapoRubric(format_weight, untagged_weight)


def sapo_prompt(problem: TaskProblem) -> list[dict[str, str]]:
    """Chat messages for one question: the system prompt and the question with the reply skeleton."""
    question = getattr(problem, "question", None)
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"sapo_prompt needs a TaskProblem with a question, got {problem!r}")
    return [
        {"role": "system", "content": SAPO_SYSTEM},
        {"role": "user", "content": f"{question.strip()}\n\n{SAPO_REPLY_FORMAT}"},
    ]
