"""Evaluate a model on GSM8K-format problems, and keep a held-out set out of training.

- `evaluate(model, tokenizer, problems, ...) -> EvalResult`: greedy answers to the
  problems with the trainer's stage-1 prompt, scored for accuracy, format compliance and
  completion length. The trainer calls it every K rounds; `rl-swarm eval` wraps it.
- `score_completion(completion, reference) -> Score`: how one completion is judged (the
  number comes from `<answer>` when that tag is present, else from the whole text).
- `held_out_split(problems, held_out, seed) -> (train, held_out)` and
  `assert_disjoint(train, held_out)`: the node and the swarm-vs-solo benchmark hold the
  same problems out of training, whatever order the dataset lists them in.

torch is imported inside the functions that need it, so importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from hivemind_exp.game.data import Problem

if TYPE_CHECKING:
    from hivemind_exp.trainer.sampling import Sampler

DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_NEW_TOKENS = 256
ANSWER_STAGE = 1  # evaluation asks the stage-1 (answer) question, exactly as the trainer does


# ---------------------------------------------------------------------------
# Scoring one completion


@dataclass(frozen=True)
class Score:
    """How one completion was judged against its reference answer."""

    predicted: str | None  # canonical number the completion answered, None when it gave none
    correct: bool
    format_ok: bool  # every stage-1 tag exactly once, closed, non-empty, in order
    format_score: float  # the parser's partial credit in [0, 1]
    from_answer_tag: bool  # the number was read from <answer> (else from the whole text)


def score_completion(completion: str, reference: str) -> Score:
    """Judge one completion. The reference is a number or a GSM8K answer field ('... #### 72')."""
    from hivemind_exp.game.answers import answers_match, extract_number
    from hivemind_exp.game.parser import stage_parser

    parsed = stage_parser(ANSWER_STAGE).parse(completion)
    tagged = parsed.get("answer")
    # A present <answer> is the model's commitment: do not rescue an empty one with a
    # number from its reasoning, or a badly formatted answer would still score.
    predicted = extract_number(tagged if tagged is not None else completion)
    ref = reference.rsplit("####", 1)[1] if "####" in reference else reference
    format_ok = parsed.in_order and all(parsed.well_formed(name) for name in parsed.fields)
    return Score(
        predicted=predicted,
        correct=predicted is not None and answers_match(predicted, ref),
        format_ok=format_ok,
        format_score=float(parsed.format_score),
        from_answer_tag=tagged is not None,
    )


# ---------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class EvalRecord:
    """One problem's outcome (kept when `evaluate(..., keep_records=True)`)."""

    qid: str
    question: str
    reference: str
    completion: str
    predicted: str | None
    correct: bool
    format_ok: bool
    format_score: float
    completion_tokens: int  # generated tokens, the end-of-sequence token included
    truncated: bool  # hit max_new_tokens before the end-of-sequence token


@dataclass(frozen=True)
class EvalResult:
    """Aggregate scores over `n` problems; rates are fractions in [0, 1]."""

    accuracy: float
    format_rate: float
    mean_completion_tokens: float
    n: int
    mean_format_score: float = 0.0
    truncated_rate: float = 0.0
    seconds: float = 0.0
    records: tuple[EvalRecord, ...] = field(default=(), repr=False)

    def to_dict(self, include_records: bool = False) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "records"}
        if include_records:
            out["records"] = [asdict(r) for r in self.records]
        return out

    @classmethod
    def from_records(cls, records: Sequence[EvalRecord], seconds: float = 0.0, keep: bool = True) -> EvalResult:
        n = len(records)
        if n == 0:
            return cls(accuracy=0.0, format_rate=0.0, mean_completion_tokens=0.0, n=0, seconds=seconds)
        return cls(
            accuracy=sum(r.correct for r in records) / n,
            format_rate=sum(r.format_ok for r in records) / n,
            mean_completion_tokens=sum(r.completion_tokens for r in records) / n,
            n=n,
            mean_format_score=sum(r.format_score for r in records) / n,
            truncated_rate=sum(r.truncated for r in records) / n,
            seconds=seconds,
            records=tuple(records) if keep else (),
        )


# ---------------------------------------------------------------------------
# Generation


def _batches_by_length(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped so prompts of similar length share a batch (little padding).

    Longest first: an out-of-memory error shows up in the first batch, not after minutes.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _decoder(model: Any, tokenizer: Any, batch_size: int, max_new_tokens: int) -> Sampler:
    """The trainer's own generation loop (left padding, KV cache, finished rows dropped), sized for
    evaluation: a `Sampler` on the model's device, with no optimizer and no thread tuning, so
    evaluating leaves the caller's torch thread count alone (the trainer set it already; the CLI
    honours OMP_NUM_THREADS)."""
    from hivemind_exp.trainer.params import GRPOParams
    from hivemind_exp.trainer.sampling import Sampler

    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None) or 4096
    params = GRPOParams(max_completion_length=max_new_tokens, generation_batch_size=batch_size,
                        max_prompt_length=max(1, int(positions) - max_new_tokens))
    return Sampler(model, tokenizer, params)


def evaluate(model: Any, tokenizer: Any, problems: Sequence[Problem], batch_size: int = DEFAULT_BATCH_SIZE,
             max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, progress: bool = False,
             keep_records: bool = False) -> EvalResult:
    """Greedy-decode every problem with the stage-1 prompt and score the answers.

    Prompts are encoded and decoded by the trainer's `Sampler` (what `GRPOEngine` generates
    with), so evaluation sees exactly what training sees. The model's train/eval flags (per
    sub-module) are restored afterwards, and nothing runs with autograd, so the trainer can call
    this between rounds.
    `mean_completion_tokens` counts generated tokens including the end-of-sequence token
    (TRL's convention for completion length).
    """
    import torch
    from tqdm.auto import tqdm

    from hivemind_exp.game.prompts import stage_prompt

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    problems = list(problems)
    if not problems:
        return EvalResult.from_records([])

    modes = {module: module.training for module in model.modules()}
    outputs: list[list[int] | None] = [None] * len(problems)
    started = time.perf_counter()
    bar = tqdm(total=len(problems), desc="eval", unit="problem", file=sys.stderr, disable=not progress)
    try:
        sampler = _decoder(model, tokenizer, batch_size, max_new_tokens)
        encoded = sampler.encode_prompts([stage_prompt(ANSWER_STAGE, p) for p in problems])
        eos = set(sampler.eos_ids)
        model.eval()
        with torch.inference_mode():
            for idx in _batches_by_length([len(e) for e in encoded], batch_size):
                groups = sampler.generate_token_ids([encoded[i] for i in idx], num_generations=1, greedy=True)
                for i, group in zip(idx, groups):
                    outputs[i] = group[0]
                bar.update(len(idx))
    finally:
        bar.close()
        # The sampler restores only the top-level flag; put every sub-module back as it was.
        for module, was_training in modes.items():
            module.training = was_training
    seconds = time.perf_counter() - started

    records = []
    for problem, tokens in zip(problems, outputs):
        assert tokens is not None  # every index is in exactly one batch
        ended = bool(tokens) and tokens[-1] in eos
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        score = score_completion(text, problem.answer)
        records.append(EvalRecord(
            qid=problem.qid, question=problem.question, reference=problem.answer, completion=text,
            predicted=score.predicted, correct=score.correct, format_ok=score.format_ok,
            format_score=score.format_score, completion_tokens=len(tokens),
            truncated=not ended and len(tokens) >= max_new_tokens,
        ))
    return EvalResult.from_records(records, seconds=seconds, keep=keep_records)


# ---------------------------------------------------------------------------
# Held-out split


class HeldOutLeakError(AssertionError):
    """Training problems overlap the held-out set."""


def _rank(seed: int, qid: str) -> bytes:
    return hashlib.sha256(f"held-out:{seed}:{qid}".encode()).digest()


def held_out_count(total: int, held_out: float | int) -> int:
    """How many distinct problems `held_out` means: an int is a count, a float in (0, 1) a fraction."""
    if isinstance(held_out, bool) or not isinstance(held_out, (int, float)):
        raise TypeError(f"held_out must be a count (int) or a fraction (float in (0, 1)), got {held_out!r}")
    if isinstance(held_out, float):
        if not 0.0 < held_out < 1.0 or math.isnan(held_out):
            raise ValueError(f"held-out fraction must be between 0 and 1 (exclusive), got {held_out}; "
                             "pass an int to hold out a number of problems")
        # Rounded, but a positive fraction holds out at least one and leaves at least one.
        count = min(max(1, round(total * held_out)), max(1, total - 1))
    else:
        count = held_out
    if not 0 <= count < total:
        raise ValueError(f"cannot hold out {count} of {total} distinct problems: at least one must remain for training; "
                         "lower the held-out size or use a bigger dataset")
    return count


def held_out_split(problems: Sequence[Problem], held_out: float | int,
                   seed: int = 0) -> tuple[list[Problem], list[Problem]]:
    """Split into (train, held_out), disjoint by question id.

    The choice is a pure function of (seed, the set of question ids): shuffling or
    reordering the dataset, or loading it on another peer, picks the same held-out set.
    Duplicated questions always land on the same side. Both lists keep the input order.
    """
    distinct = list(dict.fromkeys(p.qid for p in problems))
    count = held_out_count(len(distinct), held_out)
    chosen = set(sorted(distinct, key=lambda q: _rank(seed, q))[:count])
    train = [p for p in problems if p.qid not in chosen]
    held = [p for p in problems if p.qid in chosen]
    assert_disjoint(train, held)
    return train, held


def assert_disjoint(train: Sequence[Problem], held_out: Sequence[Problem]) -> None:
    """Raise `HeldOutLeakError` naming the overlap when any held-out question is in `train`.

    Questions are compared by id (hash of the stripped text), so the same question from two
    sources still counts as a leak.
    """
    held = {p.qid: p for p in held_out}
    leaked = [p for p in train if p.qid in held]
    if leaked:
        examples = "; ".join(repr(p.question[:60]) for p in leaked[:3])
        raise HeldOutLeakError(f"{len(leaked)} training problem(s) are in the held-out set, e.g. {examples}. "
                               "Build training rounds with exclude=held_out_ids(held_out).")


def held_out_ids(held_out: Sequence[Problem]) -> frozenset[str]:
    """Question ids to pass as `exclude=` to `data.round_problems`."""
    return frozenset(p.qid for p in held_out)
