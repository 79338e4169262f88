"""Round winners from the swarm's final (stage-3) outputs: a pure function.

Every node runs `pick_winners` on the DHT data it reads and submits the result on-chain, so
the same records must give the same answer everywhere: no clocks, no randomness, no
dict-order dependence. (In a swarm bigger than ``dht_max_peers_per_read`` a node reads, and
so judges, its window of the round's ring, `hivemind_exp.swarm.read_set`; every peer is in
the same number of windows, and the chain tallies the votes.) A peer's score is, per
question of the round, 1 for a correct final answer plus `format_weight` x the stage-3
format score; missing or malformed outputs score 0.
Ties are broken by a hash of (`tie_salt`, peer id), so with the round number as salt no
peer is favoured round after round the way a plain peer-id sort would favour one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hivemind_exp.game.data import Problem
from hivemind_exp.game.answers import answers_match
from hivemind_exp.game.parser import stage_parser


@dataclass(frozen=True)
class PeerScore:
    peer_id: str
    score: float  # correct + format_weight * sum of format scores
    correct: int  # questions answered correctly
    answered: int  # questions with an output at all
    format: float  # mean stage-3 format score over the round's questions


@dataclass(frozen=True)
class RoundWinners:
    winners: tuple[str, ...]  # best first, at most k
    scores: Mapping[str, PeerScore]  # every peer that sent outputs


def _problems_by_qid(problems: Mapping[str, Problem] | Iterable[Problem]) -> dict[str, Problem]:
    items = problems.values() if isinstance(problems, Mapping) else problems
    out: dict[str, Problem] = {}
    for p in items:
        if not isinstance(p, Problem):
            raise TypeError(f"problems must be hivemind_exp.game.data.Problem objects, got {type(p).__name__}")
        out[p.qid] = p
    return out


def score_peer(peer_id: str, outputs: Mapping[str, object], problems: Mapping[str, Problem], format_weight: float = 0.2) -> PeerScore:
    """Score one peer's stage-3 completions (qid -> text) on the round's problems."""
    parser = stage_parser(3)
    correct = answered = 0
    fmt = 0.0
    for qid in sorted(problems):
        text = outputs.get(qid) if isinstance(outputs, Mapping) else None
        if not isinstance(text, str):  # missing, or a stranger's record of the wrong type
            continue
        answered += 1
        parsed = parser.parse(text)
        fmt += parsed.format_score
        correct += answers_match(parsed.get("answer"), problems[qid].answer)
    n = max(1, len(problems))
    return PeerScore(peer_id, correct + format_weight * fmt, correct, answered, fmt / n)


def pick_winners(
    outputs: Mapping[str, Mapping[str, object]],
    problems: Mapping[str, Problem] | Iterable[Problem],
    k: int = 10,
    tie_salt: str = "",
    format_weight: float = 0.2,
    min_correct: int = 1,
) -> RoundWinners:
    """The round's top peers and every peer's score.

    outputs: peer id -> {qid: stage-3 completion}; qids outside `problems` are ignored.
    A peer needs at least `min_correct` correct answers to win, so a round where nobody
    solved anything has no winners rather than rewarding tidy tags.
    """
    if k < 0:
        raise ValueError(f"k (how many winners) must be >= 0, got {k}")
    by_qid = _problems_by_qid(problems)
    scores = {str(peer): score_peer(str(peer), outs, by_qid, format_weight) for peer, outs in outputs.items()}

    def order(s: PeerScore) -> tuple[float, int, bytes]:
        # Round to kill float-summation noise, so equal work ties exactly on every machine.
        return (-round(s.score, 9), -s.correct, hashlib.sha256(f"{tie_salt}:{s.peer_id}".encode()).digest())

    ranked = sorted((s for s in scores.values() if s.correct >= min_correct), key=order)
    return RoundWinners(tuple(s.peer_id for s in ranked[:k]), scores)
