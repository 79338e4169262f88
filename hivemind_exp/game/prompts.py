"""Chat prompts of the three stages, and the swarm view they are built from.

Written for a 135M instruct model: a short system prompt that spells out the exact tags
and shows one tiny example, then the problem (and, in stages 2-3, the swarm's
answers and votes) as the user turn.

Peers appear under their pseudonyms (`hivemind_exp.swarm.names`). Everything a stranger wrote
is cleaned before it is shown (tags removed so they cannot fake our format, non-ASCII
folded, whitespace collapsed) and cut to a budget that shrinks as more peers are shown,
so a stage-3 prompt with 8 peers stays well under 1,500 tokens. At most
`PromptLimits.max_peers` answers and critiques are shown; which ones is a pure function
of the question and the peer ids, so every node picks the same ones.

`swarm_view` does the selection, naming and parsing once; `stage_prompt` renders it and
`rewards.reward_context` derives the reward facts from the very same view.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hivemind_exp.game.data import Problem
from hivemind_exp.game.answers import extract_number
from hivemind_exp.game.parser import Parsed, stage_parser
from hivemind_exp.swarm.names import normalize_name, pseudonyms

NONE = "None"  # the "no peer" choice in <identify> and <majority>
_NONE_WORDS = frozenset(
    normalize_name(w) for w in ("none", "no one", "nobody", "noone", "neither", "none of them", "no answer", "n/a")
)

# Example names use a word ("sample") outside the name lists, so they never equal a real peer.
_EX_A = "brisk-sample-fox"
_EX_B = "calm-sample-owl"

STAGE1_SYSTEM = (
    "You solve math word problems. Write your reasoning inside <think> </think>, "
    "then only the final number inside <answer> </answer>.\n\n"
    "Example:\n"
    "<think>\n3 bags with 4 apples each: 3 * 4 = 12.\n</think>\n"
    "<answer>\n12\n</answer>"
)

STAGE2_SYSTEM = (
    "Students answered a math word problem. Check their work.\n"
    "Inside <compare> </compare>, compare their final answers in one or two sentences.\n"
    "Inside <identify> </identify>, write only the name of a student whose final answer is correct, "
    "or None if all are wrong.\n\n"
    "Example:\n"
    f"<compare>\n{_EX_A} says 12 and 3 * 4 = 12 is right. {_EX_B} says 7, which is wrong.\n</compare>\n"
    f"<identify>\n{_EX_A}\n</identify>"
)

STAGE3_SYSTEM = (
    "Students answered a math word problem, then voted for the answer they think is correct.\n"
    "Inside <summarize_feedback> </summarize_feedback>, sum up the votes in one sentence.\n"
    "Inside <majority> </majority>, write only the name that got the most votes, or None.\n"
    "Then solve the problem yourself: reasoning inside <think> </think>, "
    "only the final number inside <answer> </answer>.\n\n"
    "Example:\n"
    f"<summarize_feedback>\nTwo votes for {_EX_A}, one for None.\n</summarize_feedback>\n"
    f"<majority>\n{_EX_A}\n</majority>\n"
    f"<think>\n3 * 4 = 12, as {_EX_A} said.\n</think>\n"
    "<answer>\n12\n</answer>"
)

SYSTEM_PROMPTS: Mapping[int, str] = {1: STAGE1_SYSTEM, 2: STAGE2_SYSTEM, 3: STAGE3_SYSTEM}

# A fill-in skeleton at the very end of the user turn. Measured on SmolLM2-135M-Instruct
# (2 GSM8K questions x 6 samples, T=0.7): the system prompt alone gave 0/12 replies with
# any of our tags, a one-line "Reply with <think> and <answer>" reminder 1/12, this
# skeleton 2-3/12: enough for GRPO's format reward to reinforce from the first step.
REPLY_FORMATS: Mapping[int, str] = {
    1: "Reply in this format:\n<think>\nyour reasoning\n</think>\n<answer>\nthe final number\n</answer>",
    2: "Reply in this format:\n<compare>\nyour comparison\n</compare>\n<identify>\nname or None\n</identify>",
    3: (
        "Reply in this format:\n<summarize_feedback>\nthe votes in one sentence\n</summarize_feedback>\n"
        "<majority>\nname or None\n</majority>\n<think>\nyour reasoning\n</think>\n<answer>\nthe final number\n</answer>"
    ),
}


@dataclass(frozen=True)
class PromptLimits:
    """Character budgets for what strangers wrote (the model's own text is not cut)."""

    max_peers: int = 8  # answers (and critiques) shown per prompt
    question_chars: int = 1200  # GSM8K's longest question is ~1,000 characters
    final_chars: int = 40  # a peer's <answer> text
    work_chars_total: int = 1600  # all peers' reasoning together, stage 2
    work_chars_total_decide: int = 960  # all peers' reasoning together, stage 3 (votes need room too)
    work_chars_min: int = 60
    work_chars_max: int = 400
    reason_chars_total: int = 480  # all critics' <compare> text together, stage 3
    reason_chars_min: int = 30
    reason_chars_max: int = 160
    # With a tokenizer, `stage_prompt` shrinks the budgets above until the prompt fits.
    max_prompt_tokens: int = 1500

    def __post_init__(self) -> None:
        if self.max_peers < 1:
            raise ValueError(f"PromptLimits.max_peers must be at least 1, got {self.max_peers}")
        if self.work_chars_min > self.work_chars_max or self.reason_chars_min > self.reason_chars_max:
            raise ValueError("PromptLimits: a *_min budget is larger than its *_max; lower the min or raise the max")

    def share(self, total: int, count: int, low: int, high: int) -> int:
        return max(low, min(high, total // max(1, count)))

    def scaled(self, factor: float) -> PromptLimits:
        """The same limits with every budget for peers' text multiplied by `factor` (< 1 shrinks).

        The question is ours, not a stranger's, and is never shrunk."""
        def f(v: int, floor: int) -> int:
            return max(floor, int(v * factor))

        return dataclasses.replace(
            self,
            final_chars=f(self.final_chars, 12),
            work_chars_total=f(self.work_chars_total, 80),
            work_chars_total_decide=f(self.work_chars_total_decide, 80),
            work_chars_min=f(self.work_chars_min, 10),
            work_chars_max=f(self.work_chars_max, 10),
            reason_chars_total=f(self.reason_chars_total, 40),
            reason_chars_min=f(self.reason_chars_min, 5),
            reason_chars_max=f(self.reason_chars_max, 5),
        )


DEFAULT_LIMITS = PromptLimits()

# Tag-like snippets (ours or anyone's) are removed from shown text; they would teach the
# model to copy them and let a peer fake a format inside another peer's prompt. Chat
# special tokens ("<|im_end|>") go too: the tokenizer would turn them into real turn
# boundaries, letting a peer write a fake system turn into our prompt.
_TAGLIKE = re.compile(r"</?\s*[A-Za-z_][\w\s=\"'-]{0,60}>|<\|[^<>|\n]{0,60}\|>")
_FOLD = str.maketrans(
    {
        "\u00d7": "*", "\u00f7": "/", "\u2212": "-", "\u2013": "-", "\u2014": "-", "\u2018": "'",
        "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2026": "...", "\u20ac": "EUR ", "\u00a3": "GBP ",
        "\u00b7": "*", "\u2248": "~", "\u2264": "<=", "\u2265": ">=",
    }
)


def clean_text(text: str | None) -> str:
    """Shown form of untrusted text: no tags, ASCII only (byte-level tokens stay <= chars), one line."""
    if not text:
        return ""
    text = unicodedata.normalize("NFKD", text).translate(_FOLD)  # NFKD: "é" -> "e" + accent, dropped below
    text = _TAGLIKE.sub(" ", text)
    text = text.encode("ascii", "ignore").decode("ascii")
    return " ".join(text.split())


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary when one is near."""
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - 3)]
    space = cut.rfind(" ")
    if space > limit * 0.6:
        cut = cut[:space]
    return cut.rstrip() + "..."


def clip_middle(text: str, limit: int) -> str:
    """Keep the start and (mostly) the end: the last steps of a solution carry the result."""
    if len(text) <= limit:
        return text
    head = limit // 3
    tail = max(0, limit - head - 5)
    return text[:head].rstrip() + " ... " + (text[-tail:].lstrip() if tail else "")


@dataclass(frozen=True)
class PeerAnswer:
    name: str
    peer_id: str
    parsed: Parsed  # stage-1 parse
    number: str | None  # canonical number in its <answer>, None without one


@dataclass(frozen=True)
class PeerCritique:
    name: str
    peer_id: str
    parsed: Parsed  # stage-2 parse
    choice: str | None  # a shown answer's name, NONE, or None when unreadable


@dataclass(frozen=True)
class SwarmView:
    """What one stage-2/3 prompt shows, parsed once: answers and critiques sorted by name."""

    problem: Problem
    answers: tuple[PeerAnswer, ...]
    critiques: tuple[PeerCritique, ...]
    peer_of: Mapping[str, str]  # pseudonym -> peer id (answer peers and critics)

    @property
    def answer_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.answers)


def _selected(problem: Problem, peers: Mapping[str, str] | None, limit: int) -> dict[str, str]:
    # Drop what is not a string, then keep `limit` peers ranked by hash(question, peer):
    # the same pick on every node, and a different sample of a large swarm per question.
    items = {str(k): v for k, v in (peers or {}).items() if isinstance(v, str)}
    if len(items) <= limit:
        return items
    rank = sorted(items, key=lambda p: hashlib.sha256(f"{problem.qid}:{p}".encode()).digest())
    return {p: items[p] for p in rank[:limit]}


def resolve_choice(value: str | None, names: tuple[str, ...] | list[str]) -> str | None:
    """Which shown peer a free-text choice names: a name, NONE, or None when unreadable.

    Accepts loose typing ("Quick Amber Otter", "[quick-amber-otter]") and a single name
    inside a short phrase; a text naming several peers, or a peer and "none", is unreadable
    (so listing every name never earns credit).
    """
    if value is None or len(value) > 200:
        return None
    norm = normalize_name(value)
    if not norm:
        return None
    if norm in names:
        return norm
    if norm in _NONE_WORDS:
        return NONE
    padded = f"-{norm}-"
    hits = [n for n in names if f"-{n}-" in padded]
    # A suffixed name ("x-y-z-2") also contains its base name; keep the longer one.
    hits = [h for h in hits if not any(o != h and o.startswith(h + "-") for o in hits)]
    says_none = any(f"-{w}-" in padded for w in _NONE_WORDS)
    if len(hits) == 1 and not says_none:
        return hits[0]
    if not hits and says_none:
        return NONE
    return None


def swarm_view(
    problem: Problem,
    answers: Mapping[str, str] | None = None,
    critiques: Mapping[str, str] | None = None,
    limits: PromptLimits = DEFAULT_LIMITS,
) -> SwarmView:
    """Select, name and parse the peers' stage-1 answers and stage-2 critiques once."""
    shown_answers = _selected(problem, answers, limits.max_peers)
    shown_critiques = _selected(problem, critiques, limits.max_peers)
    names = pseudonyms(set(shown_answers) | set(shown_critiques))
    p1, p2 = stage_parser(1), stage_parser(2)
    peer_answers = []
    for peer, text in shown_answers.items():
        parsed = p1.parse(text)
        peer_answers.append(PeerAnswer(names[peer], peer, parsed, extract_number(parsed.get("answer"))))
    peer_answers.sort(key=lambda a: a.name)
    answer_names = tuple(a.name for a in peer_answers)
    peer_critiques = []
    for peer, text in shown_critiques.items():
        parsed = p2.parse(text)
        choice = resolve_choice(parsed.get("identify"), answer_names)
        peer_critiques.append(PeerCritique(names[peer], peer, parsed, choice))
    peer_critiques.sort(key=lambda c: c.name)
    return SwarmView(problem, tuple(peer_answers), tuple(peer_critiques), {v: k for k, v in names.items()})


def _answer_lines(view: SwarmView, work_total: int, limits: PromptLimits) -> list[str]:
    if not view.answers:
        return ["(no answers were shared)"]
    work_chars = limits.share(work_total, len(view.answers), limits.work_chars_min, limits.work_chars_max)
    lines = []
    for a in view.answers:
        final = a.parsed.get("answer")
        work = a.parsed.get("think")
        if final is None and work is None:
            work = a.parsed.text  # untagged answer: show the text itself
        shown_final = clip(clean_text(final), limits.final_chars) or "none given"
        shown_work = clip_middle(clean_text(work), work_chars) or "no work shown"
        lines.append(f"{a.name}: {shown_work} (final answer: {shown_final})")
    return lines


def _vote_lines(view: SwarmView, limits: PromptLimits) -> list[str]:
    if not view.critiques:
        return ["(no votes were shared)"]
    reason_chars = limits.share(
        limits.reason_chars_total, len(view.critiques), limits.reason_chars_min, limits.reason_chars_max
    )
    lines = []
    for c in view.critiques:
        voted = c.choice if c.choice is not None else "unclear"
        reason = clip(clean_text(c.parsed.get("compare")), reason_chars)
        lines.append(f"{c.name} voted for {voted}." + (f" Reason: {reason}" if reason else ""))
    return lines


def _question(problem: Problem, limits: PromptLimits) -> str:
    return clip(" ".join(problem.question.split()), limits.question_chars)


def render_prompt(stage: int, view: SwarmView, limits: PromptLimits = DEFAULT_LIMITS) -> list[dict[str, str]]:
    """The chat messages of `stage` for an already built view."""
    question = _question(view.problem, limits)
    if stage == 1:
        user = f"{question}\n\n{REPLY_FORMATS[1]}"
    elif stage == 2:
        user = "\n".join(
            [f"Problem: {question}", "", "Answers:", *_answer_lines(view, limits.work_chars_total, limits), "",
             REPLY_FORMATS[2]]
        )
    elif stage == 3:
        user = "\n".join(
            [f"Problem: {question}", "", "Answers:", *_answer_lines(view, limits.work_chars_total_decide, limits), "",
             "Votes:", *_vote_lines(view, limits), "",
             REPLY_FORMATS[3]]
        )
    else:
        raise ValueError(f"stage must be 1 (answer), 2 (critique) or 3 (decide), got {stage!r}")
    return [{"role": "system", "content": SYSTEM_PROMPTS[stage]}, {"role": "user", "content": user}]


def count_prompt_tokens(messages: list[dict[str, str]], tokenizer: Any) -> int:
    """Tokens the model sees for `messages` (chat template with the generation prompt)."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        return len(ids)
    return sum(len(tokenizer(m["content"])["input_ids"]) for m in messages)


def stage_prompt(
    stage: int,
    problem: Problem,
    answers: Mapping[str, str] | None = None,
    critiques: Mapping[str, str] | None = None,
    limits: PromptLimits = DEFAULT_LIMITS,
    tokenizer: Any = None,
) -> list[dict[str, str]]:
    """Chat messages for one stage of one problem.

    `answers`: peer id -> that peer's stage-1 completion (stages 2-3; this peer's own may be
    included). `critiques`: peer id -> stage-2 completion (stage 3).

    The character budgets keep ordinary text (about 2-4 characters per token) under
    `limits.max_prompt_tokens`. Digit soup or random characters run near 1 token per
    character; pass the model's `tokenizer` to make the bound exact: the budgets then
    shrink until the rendered prompt fits.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a hivemind_exp.game.data.Problem, got {type(problem).__name__}")
    if stage not in SYSTEM_PROMPTS:
        raise ValueError(f"stage must be 1 (answer), 2 (critique) or 3 (decide), got {stage!r}")
    if stage == 1:
        view = SwarmView(problem, (), (), {})
    else:
        view = swarm_view(problem, answers, critiques if stage == 3 else None, limits)
    messages = render_prompt(stage, view, limits)
    if tokenizer is None:
        return messages
    current = limits
    for _ in range(6):  # each pass shrinks by at least half of the excess; 6 is plenty
        n = count_prompt_tokens(messages, tokenizer)
        if n <= limits.max_prompt_tokens:
            break
        current = current.scaled(max(0.3, 0.95 * limits.max_prompt_tokens / n))
        messages = render_prompt(stage, view, current)
    return messages
