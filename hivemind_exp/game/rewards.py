"""Reward rubrics of the three stages.

A reward function is `f(parsed, ctx) -> float` in [0, 1]: pure, no hidden state, reading
a completion parsed once (`parser.Parsed`) and facts computed once per prompt
(`RewardContext`, built by `reward_context`). A `Rubric` pairs functions with weights:

    rubric = stage_rubric(2)
    ctx = reward_context(2, problem, answers={peer_id: stage1_text, ...})
    rewards = rubric.score(completions, ctx)            # weighted sums, one per completion
    detail = rubric.score_detailed(completions, ctx)    # + per-function values for metrics

Stage 1 (answer):   format, correct answer, bare-number answer, conciseness.
Stage 2 (critique): format, names a correct peer (None only when no peer is right),
                    names someone who exists, conciseness.
Stage 3 (decide):   format, correct answer, names the majority's pick, bare-number
                    answer, conciseness.

Correctness dominates the weights; format is there so a 135M model that starts with no
tags gets a gradient towards them, and conciseness is a mild nudge against rambling
until the token limit (which also makes GRPO steps slower).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hivemind_exp.game.data import Problem
from hivemind_exp.game.answers import answers_match, extract_number
from hivemind_exp.game.parser import Parsed, TagParser, stage_parser
from hivemind_exp.game.prompts import DEFAULT_LIMITS, NONE, PromptLimits, resolve_choice, swarm_view


@dataclass(frozen=True)
class RewardContext:
    """Everything a reward function may read about one prompt; built by `reward_context`."""

    stage: int
    problem: Problem
    answers: Mapping[str, str] = field(default_factory=dict)  # pseudonym -> stage-1 completion shown
    critiques: Mapping[str, str] = field(default_factory=dict)  # pseudonym -> stage-2 completion shown
    peer_of: Mapping[str, str] = field(default_factory=dict)  # pseudonym -> peer id
    correct: frozenset[str] = frozenset()  # pseudonyms whose stage-1 <answer> is right
    votes: Mapping[str, int] = field(default_factory=dict)  # pseudonym or NONE -> critiques backing it
    majority: frozenset[str] = frozenset()  # the most-backed choice(s); empty without readable votes

    @property
    def answer_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.answers))


def reward_context(
    stage: int,
    problem: Problem,
    answers: Mapping[str, str] | None = None,
    critiques: Mapping[str, str] | None = None,
    limits: PromptLimits = DEFAULT_LIMITS,
) -> RewardContext:
    """Facts for scoring one prompt of `stage`, from the same view `stage_prompt` shows.

    `answers` / `critiques` are keyed by peer id (as given to `stage_prompt`); names,
    correctness and the majority are computed here once.
    """
    if stage not in (1, 2, 3):
        raise ValueError(f"stage must be 1 (answer), 2 (critique) or 3 (decide), got {stage!r}")
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a hivemind_exp.game.data.Problem, got {type(problem).__name__}")
    if stage == 1:
        return RewardContext(stage=1, problem=problem)
    view = swarm_view(problem, answers, critiques if stage == 3 else None, limits)
    correct = frozenset(a.name for a in view.answers if a.number is not None and answers_match(a.number, problem.answer))
    votes = Counter(c.choice for c in view.critiques if c.choice is not None)
    top = max(votes.values(), default=0)
    return RewardContext(
        stage=stage,
        problem=problem,
        answers={a.name: a.parsed.text for a in view.answers},
        critiques={c.name: c.parsed.text for c in view.critiques},
        peer_of=dict(view.peer_of),
        correct=correct,
        votes=dict(votes),
        majority=frozenset(k for k, v in votes.items() if v == top and top > 0),
    )


RewardFunc = Callable[[Parsed, RewardContext], float]

# ---------------------------------------------------------------------------------------
# Reward functions. Each returns a value in [0, 1].

_BARE_NUMBER = re.compile(r"[-\u2212]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?")
# Characters of a completion that earn full conciseness credit, and where it reaches 0.
_CONCISE = {1: (900, 3000), 2: (600, 2400), 3: (1100, 3600)}


def format_reward(parsed: Parsed, ctx: RewardContext) -> float:
    """The stage's tags present, each once, closed, non-empty and in order; partial credit."""
    return parsed.format_score


def correctness_reward(parsed: Parsed, ctx: RewardContext) -> float:
    """1 when the number in <answer> equals the reference answer."""
    return float(answers_match(parsed.get("answer"), ctx.problem.answer))


def loose_correctness_reward(parsed: Parsed, ctx: RewardContext) -> float:
    """1 when the completion's final number is right even without an <answer> tag.

    A 135M model rarely writes the tags at first; without this, every completion of a group
    scores the same, the advantages are all zero and GRPO learns nothing. Weighted well
    below tagged correctness so the tags still pay.
    """
    if parsed.get("answer") is not None:
        return 0.0  # tagged answers are judged by correctness_reward alone
    return float(answers_match(extract_number(parsed.text), ctx.problem.answer))


def bare_number_reward(parsed: Parsed, ctx: RewardContext) -> float:
    """1 when <answer> holds just a number ("72", "$1,080"), not a sentence."""
    value = parsed.get("answer")
    return float(value is not None and len(value) <= 40 and _BARE_NUMBER.fullmatch(value) is not None)


def identify_correct_reward(parsed: Parsed, ctx: RewardContext) -> float:
    """1 when <identify> names a peer whose answer is right, or None when no shown answer is."""
    choice = resolve_choice(parsed.get("identify"), ctx.answer_names)
    if choice is None or not ctx.answers:
        return 0.0
    if choice == NONE:
        return float(not ctx.correct)
    return float(choice in ctx.correct)


def identify_valid_reward(parsed: Parsed, ctx: RewardContext) -> float:
    """1 when <identify> names exactly one shown peer or None (a readable vote)."""
    return float(resolve_choice(parsed.get("identify"), ctx.answer_names) is not None)


def majority_reward(parsed: Parsed, ctx: RewardContext) -> float:
    """1 when <majority> names the choice most critiques backed (any of them on a tie)."""
    choice = resolve_choice(parsed.get("majority"), ctx.answer_names)
    return float(choice is not None and choice in ctx.majority)


def conciseness_reward(parsed: Parsed, ctx: RewardContext) -> float:
    """1 up to a stage-specific length, falling linearly to 0 at about 3-4x that."""
    full, zero = _CONCISE.get(ctx.stage, (1000, 3500))
    n = len(parsed.text)
    if n <= full:
        return 1.0
    return max(0.0, (zero - n) / (zero - full))


# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RubricScores:
    """Weighted totals plus each function's unweighted values, for logging and metrics."""

    totals: list[float]
    per_function: dict[str, list[float]]
    weights: dict[str, float]

    def means(self) -> dict[str, float]:
        """Mean of each function's values (and of the totals, under "total")."""
        out = {name: (sum(v) / len(v) if v else 0.0) for name, v in self.per_function.items()}
        out["total"] = sum(self.totals) / len(self.totals) if self.totals else 0.0
        return out


class Rubric:
    """Weighted reward functions that share one parse per completion."""

    def __init__(self, funcs: Sequence[tuple[RewardFunc, float]], parser: TagParser | None = None):
        pairs = list(funcs)
        if not pairs:
            raise ValueError("Rubric needs at least one (reward function, weight) pair")
        names = set()
        for func, weight in pairs:
            if not callable(func):
                raise TypeError(f"Rubric entry {func!r} is not callable; pass (function, weight) pairs")
            if not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise ValueError(f"weight of {func.__name__} must be a finite number, got {weight!r}")
            name = getattr(func, "__name__", repr(func))
            if name in names:
                raise ValueError(f"reward function {name} appears twice in the rubric")
            names.add(name)
        self.funcs: tuple[tuple[RewardFunc, float], ...] = tuple((f, float(w)) for f, w in pairs)
        self.parser = parser  # None: the parser of ctx.stage

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(getattr(f, "__name__", repr(f)) for f, _ in self.funcs)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={w:g}" for n, (_, w) in zip(self.names, self.funcs, strict=True))
        return f"Rubric({inner})"

    def parse(self, completions: Sequence[Any], ctx: RewardContext) -> list[Parsed]:
        parser = self.parser or stage_parser(ctx.stage)
        return [parser.parse(c) for c in completions]

    def score_detailed(self, completions: Sequence[Any], ctx: RewardContext) -> RubricScores:
        parsed = self.parse(completions, ctx)
        per_function: dict[str, list[float]] = {}
        totals = [0.0] * len(parsed)
        for name, (func, weight) in zip(self.names, self.funcs, strict=True):
            values = []
            for i, p in enumerate(parsed):
                try:
                    v = float(func(p, ctx))
                except Exception as err:  # name the culprit instead of a bare traceback deep in GRPO
                    raise RuntimeError(f"reward function {name} failed on completion #{i} (stage {ctx.stage}): {err!r}") from err
                if not math.isfinite(v):
                    raise RuntimeError(f"reward function {name} returned {v} on completion #{i}; rewards must be finite")
                values.append(v)
                totals[i] += weight * v
            per_function[name] = values
        return RubricScores(totals, per_function, dict(zip(self.names, (w for _, w in self.funcs), strict=True)))

    def score(self, completions: Sequence[Any], ctx: RewardContext) -> list[float]:
        """Weighted reward of each completion (a string or a chat-message list)."""
        return self.score_detailed(completions, ctx).totals


def stage_rubric(stage: int) -> Rubric:
    """The rubric of stage 1 (answer), 2 (critique) or 3 (decide)."""
    if stage == 1:
        funcs = [(correctness_reward, 2.0), (loose_correctness_reward, 0.5), (format_reward, 0.5),
                 (bare_number_reward, 0.25), (conciseness_reward, 0.25)]
    elif stage == 2:
        funcs = [(identify_correct_reward, 1.5), (format_reward, 0.5), (identify_valid_reward, 0.25), (conciseness_reward, 0.25)]
    elif stage == 3:
        funcs = [
            (correctness_reward, 2.0),
            (loose_correctness_reward, 0.5),
            (majority_reward, 1.0),
            (format_reward, 0.5),
            (bare_number_reward, 0.25),
            (conciseness_reward, 0.25),
        ]
    else:
        raise ValueError(f"stage must be 1 (answer), 2 (critique) or 3 (decide), got {stage!r}")
    return Rubric(funcs, stage_parser(stage))
