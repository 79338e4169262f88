"""One SAPO round for one node: sample, share, take, re-score, train.

1. Draw I questions from the node's own seed stream (peers cover different questions).
2. Sample G completions each, score them with the SAPO rubric.
3. Publish each group (spec + question text + completions; signed, schema-checked, size
   capped by the transport).
4. Collect groups that other peers published for the round, until J usable ones arrived
   or the collect deadline passed (never waits for a silent swarm).
5. Check each one: the spec must regenerate (same mix, same config hash) and its question
   text must equal what the sender published, else the group is dropped and counted.
   Its completions are re-scored here against the regenerated answer: nothing the sender
   claims about correctness is read.
6. Select J of them (`selection`), and make one GRPO step on the I local plus J external
   groups with the engine's objective.

Off-policy choice: external completions are trained exactly like local ones. The engine
takes one update per generation, so its importance ratio is 1 against the current model
(the PPO clip never binds); the sender's sampling policy is not corrected for. That is
the SAPO paper's choice too; the group baseline (advantages relative to the group's mean)
and `max_grad_norm` bound what one foreign group can do to a step. Completions are
re-tokenised from their text (clipped to ``max_completion_length``, an EOS appended when
there is room) and paired with the receiver's own prompt for the regenerated question.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hivemind_exp.sapo.selection import POLICIES, ScoredGroup, select_groups, usable
from hivemind_exp.swarm.records import MAX_COMPLETION_CHARS, DropCounter, RolloutGroup, SapoStats, TaskSpecRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SapoParams:
    local_groups: int = 4  # I: own questions per round
    external_groups: int = 4  # J: groups taken from other peers per round (0 = train alone)
    policy: str = "signal"  # how the J are chosen: signal, random or best
    collect_seconds: float = 30.0  # longest wait for external groups after publishing
    poll_seconds: float = 1.0  # how often to look for newly published groups while waiting

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.local_groups <= 64:
            problems.append(f"sapo_local_groups={self.local_groups}: use 1-64 questions per round")
        if not 0 <= self.external_groups <= 64:
            problems.append(f"sapo_external_groups={self.external_groups}: use 0-64 (0 trains on own groups only)")
        if self.policy not in POLICIES:
            problems.append(f"sapo_policy={self.policy!r}: use one of {', '.join(POLICIES)}")
        if self.collect_seconds < 0:
            problems.append(f"sapo_collect_seconds={self.collect_seconds}: use >= 0")
        if self.poll_seconds <= 0:
            problems.append(f"poll_seconds={self.poll_seconds}: use > 0")
        if problems:
            raise ValueError("Invalid SAPO settings:\n  - " + "\n  - ".join(problems))


def spec_key(spec: Any) -> str:
    """The DHT subkey tag of a group: its spec as text (letters, digits, '_', '.', ':')."""
    return f"{spec.task}:{spec.config_hash}:{spec.seed}:{spec.index}"


@dataclass
class Sampled:
    round: int
    local: list[ScoredGroup]
    prompt_ids: list[list[int]]
    completion_ids: list[list[list[int]]]
    published: bool
    seconds: float


@dataclass
class RoundOutcome:
    round: int
    local: list[ScoredGroup]
    taken: list[ScoredGroup]
    candidates: int  # valid external groups seen
    trained_external: int  # taken groups that carried a gradient (not all-equal rewards)
    loss: float
    mean_reward: float  # over this node's own completions (what goes to the chain)
    completion_tokens: int
    gen_seconds: float
    train_seconds: float
    published: bool
    winners: list[str] = field(default_factory=list)
    event: dict[str, Any] = field(default_factory=dict)


class SapoPlayer:
    """Plays SAPO rounds for one node; every collaborator is passed in.

    ``engine``: a `GRPOEngine` (encode_prompts, generate_token_ids, train_on, tokenizer, params);
    ``transport``: a `SwarmTransport`; ``source``: a task source with draw/regenerate/score;
    ``rubric``: scores completions of a problem; ``prompt``: problem -> chat messages.
    """

    def __init__(self, engine: Any, transport: Any, source: Any, rubric: Any,
                 prompt: Callable[[Any], list[dict[str, str]]], params: SapoParams, node_seed: int,
                 events: Any = None, clock: Callable[[], float] = time.time,
                 wait: Callable[[float], bool] | None = None):
        self.engine = engine
        self.transport = transport
        self.source = source
        self.rubric = rubric
        self.prompt = prompt
        self.p = params
        self.node_seed = node_seed
        self.events = events
        self.clock = clock
        self._wait = wait or (lambda s: (time.sleep(s), False)[1])
        self.drops = DropCounter()

    # ------------------------------------------------------------ the round
    def play_round(self, round_no: int, deadline: float | None = None) -> RoundOutcome:
        """Sample and publish, then collect, select and train: one round, one GRPO step."""
        return self.learn(self.sample(round_no), deadline)

    def sample(self, round_no: int) -> Sampled:
        """Steps 1-3: own questions, G completions each, scored and published."""
        t0 = time.monotonic()
        problems = self.source.draw(self.node_seed, round_no, self.p.local_groups)
        prompt_ids = self.engine.encode_prompts([self.prompt(p) for p in problems])
        completion_ids = self.engine.generate_token_ids(prompt_ids)
        tok = self.engine.tokenizer
        local = []
        for prob, ids in zip(problems, completion_ids):
            texts = list(tok.batch_decode(ids, skip_special_tokens=True))
            local.append(ScoredGroup(self.transport.peer_id, spec_key(prob.spec), prob, texts,
                                     list(self.rubric.score(texts, prob, self.source))))
        published = self.transport.publish_rollouts(round_no, {g.key: self._wire_group(g) for g in local})
        return Sampled(round_no, local, prompt_ids, completion_ids, published, time.monotonic() - t0)

    def learn(self, sampled: Sampled, deadline: float | None = None) -> RoundOutcome:
        """Steps 4-6: collect external groups, select J, one GRPO step on own + taken groups."""
        t0 = time.monotonic()
        round_no, local = sampled.round, sampled.local
        candidates = self.collect(round_no, deadline)
        rng = random.Random(f"{self.node_seed}:{round_no}:select")
        taken = select_groups(candidates, self.p.external_groups, self.p.policy, rng)

        ext_prompts = self.engine.encode_prompts([self.prompt(g.problem) for g in taken]) if taken else []
        ext_ids = [[self._retokenize(c) for c in g.completions] for g in taken]
        t1 = time.monotonic()
        loss, _, skipped = self.engine.train_on(list(sampled.prompt_ids) + ext_prompts,
                                                list(sampled.completion_ids) + ext_ids,
                                                [g.rewards for g in local] + [g.rewards for g in taken])
        train_seconds = time.monotonic() - t1
        trained_external = sum(1 for g in taken if g.has_signal)
        tokens = sum(len(c) for group in list(sampled.completion_ids) + ext_ids for c in group)
        local_flat = [r for g in local for r in g.rewards]
        outcome = RoundOutcome(round=round_no, local=local, taken=taken, candidates=len(candidates),
                               trained_external=trained_external, loss=float(loss),
                               mean_reward=sum(local_flat) / len(local_flat), completion_tokens=tokens,
                               gen_seconds=sampled.seconds, train_seconds=train_seconds, published=sampled.published,
                               winners=self.winners(local + candidates))
        if not taken and self.p.external_groups:
            log.info("round %d: no external groups arrived in time; training on my own %d group(s) alone",
                     round_no, len(local))
        outcome.event = self._event(outcome, skipped, sampled.seconds + time.monotonic() - t0)
        return outcome

    # ------------------------------------------------------------ collecting
    def collect(self, round_no: int, deadline: float | None) -> list[ScoredGroup]:
        """Valid, re-scored external groups of the round that arrived by the collect deadline."""
        if self.p.external_groups == 0:
            return []
        until = self.clock() + self.p.collect_seconds
        if deadline is not None:
            until = min(until, deadline)
        seen: dict[tuple[str, str], ScoredGroup | None] = {}
        while True:
            left = max(0.0, until - self.clock())
            got = self.transport.fetch_rollouts(round_no, timeout=min(left, 10.0) or 1.0)
            for peer, groups in got.items():
                if peer == self.transport.peer_id:
                    continue
                for key, group in groups.items():
                    if (peer, key) not in seen:
                        seen[(peer, key)] = self.check(peer, key, group)
            valid = [g for g in seen.values() if g is not None]
            if sum(usable(g, self.p.policy) for g in valid) >= self.p.external_groups or self.clock() >= until:
                return sorted(valid, key=lambda g: (g.peer, g.key))
            self._wait(min(self.p.poll_seconds, max(0.05, until - self.clock())))

    def check(self, peer: str, key: str, group: RolloutGroup) -> ScoredGroup | None:
        """Regenerate the group's question from its spec, compare, re-score; None (counted) if it fails."""
        from hivemind_exp.sapo.tasks import SpecError, TaskSpec

        spec = TaskSpec(task=group.spec.task, config_hash=group.spec.config_hash, seed=group.spec.seed,
                        index=group.spec.index)
        if key != spec_key(spec):
            self.drops.drop("wrong_key", f"group {key!r} carries spec {spec_key(spec)!r}", peer)
            return None
        try:
            problem = self.source.regenerate(spec)
        except SpecError as err:
            self.drops.drop("bad_spec", str(err), peer)
            return None
        if problem.question != group.question:
            self.drops.drop("question_mismatch", f"{key}: the spec does not regenerate the published question", peer)
            return None
        rewards = list(self.rubric.score(list(group.completions), problem, self.source))
        return ScoredGroup(peer, key, problem, list(group.completions), rewards)

    # ------------------------------------------------------------ helpers
    def _wire_group(self, g: ScoredGroup) -> RolloutGroup:
        s = g.problem.spec
        return RolloutGroup(spec=TaskSpecRecord(task=s.task, config_hash=s.config_hash, seed=s.seed, index=s.index),
                            question=g.problem.question, completions=[c[:MAX_COMPLETION_CHARS] for c in g.completions])

    def _retokenize(self, text: str) -> list[int]:
        limit = self.engine.params.max_completion_length
        ids = list(self.engine.tokenizer(text, add_special_tokens=False)["input_ids"])[:limit]
        eos = self.engine.tokenizer.eos_token_id
        if eos is not None and len(ids) < limit:
            ids.append(int(eos))
        return ids

    @staticmethod
    def winners(groups: list[ScoredGroup]) -> list[str]:
        """The peers whose groups scored best by this node's own re-scoring (none if nobody scored)."""
        by_peer: dict[str, list[float]] = {}
        for g in groups:
            by_peer.setdefault(g.peer, []).extend(g.rewards)
        means = {p: sum(r) / len(r) for p, r in by_peer.items() if r}
        if not means or max(means.values()) <= 0:
            return []
        best = max(means.values())
        return sorted(p for p, m in means.items() if m >= best - 1e-9)

    def _event(self, o: RoundOutcome, skipped: int, seconds: float) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "round": o.round, "game": "sapo", "peer": self.transport.peer_id,
            "local_groups": len(o.local), "external_candidates": o.candidates,
            "external_taken": len(o.taken), "external_trained": o.trained_external,
            "external": [{"peer": g.peer, "key": g.key, "mean_reward": round(g.mean, 4)} for g in o.taken],
            "from_peers": dict(Counter(g.peer for g in o.taken)),
            "solo": not o.taken,
            "mean_reward": round(o.mean_reward, 4),
            "local_correct": round(_mean(self.correct_share(g) for g in o.local), 4),
            "external_mean_reward": round(_mean(g.mean for g in o.taken), 4) if o.taken else None,
            "skipped_groups": skipped, "loss": o.loss, "completion_tokens": o.completion_tokens,
            "gen_seconds": round(o.gen_seconds, 3), "train_seconds": round(o.train_seconds, 3),
            "seconds": round(seconds, 3), "published": o.published, "winners": o.winners,
            "tasks": dict(Counter(g.problem.spec.task for g in o.local)),
            "dropped": self.drops.snapshot(),
        }
        if self.events is not None:
            return self.events.emit("step", **fields)
        return {"kind": "step", **fields}

    def stats(self, o: RoundOutcome, now: float, transport_dropped: int = 0) -> SapoStats:
        """What this node's heartbeat tells dashboards about its latest SAPO round.

        ``transport_dropped``: records the transport itself refused (bad schema, signature, size)."""
        trained = o.local + o.taken
        return SapoStats(round=o.round, shared=len(o.local) if o.published else 0, taken=len(o.taken),
                         trained=len(trained), with_signal=sum(1 for g in trained if g.has_signal),
                         dropped=min(sum(self.drops.snapshot().values()) + transport_dropped, 1_000_000), at=now)

    def correct_share(self, g: ScoredGroup) -> float:
        """Share of a group's completions whose answer the task scores fully correct."""
        from hivemind_exp.sapo.evaluation import correct_flags

        flags = correct_flags(self.rubric, g.completions, g.problem, self.source)
        return sum(flags) / max(1, len(flags))


def _mean(values: Any) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else 0.0
