"""One read of the swarm for dashboards: `SwarmReader.poll(rounds, gossip_peers) -> SwarmSnapshot`.

- `SwarmSnapshot` (with `PeerSeen`, `GossipItem`): round/stage, peers seen, per-stage rewards of
  recent rounds, a sample of recent answers/critiques, winners.
- `DhtSwarmReader`: the reader over a client-mode transport (signed, schema-checked records
  only); `connect` joins the DHT as a client with a throwaway identity.
- `snapshot_to_json` / `snapshot_from_json`: the wire form `rl-swarm swarm-reader` serves and the
  dashboard's `HttpSwarmReader` reads. Parsing is strict and bounded (`SnapshotWire`): the
  reader's answer is treated like any peer's data.

Importing this module is cheap: hivemind (and torch) load only inside `DhtSwarmReader.connect`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from hivemind_exp.game import stage as game_stage
from hivemind_exp.swarm.records import EvalSummary, PeerIdStr, Reward, Round, SapoStats, Stage, UnixTime

log = logging.getLogger(__name__)

# Text from peers is data from strangers: clip it before it reaches a cache or a UI.
MAX_QUESTION_CHARS = 300
MAX_ANSWER_CHARS = 160
# What a record of each stage is, per game (the gossip panel's label).
STAGE_KINDS = {"three-stage": ("answer", "critique", "decision"), "sapo": ("rollouts",)}
# Concurrent DHT reads per poll (rewards of several rounds/stages); the transport is thread-safe.
DHT_READ_WORKERS = 8

# Bounds of one snapshot on the wire: generous for a real swarm, finite for a hostile reader.
WIRE_MAX_PEERS = 100_000
WIRE_MAX_REWARD_SETS = 3_000  # (round, stage) pairs: 1000 rounds x 3 stages
WIRE_MAX_GOSSIP = 20_000
WIRE_MAX_WINNER_ROUNDS = 1_000
WIRE_MAX_WINNERS = 1_000


def clip(text: object, limit: int) -> str:
    s = " ".join(str(text).split()) if text is not None else ""
    return s if len(s) <= limit else s[: limit - 1] + "\u2026"


@dataclass(frozen=True)
class PeerSeen:
    peer_id: str
    last_seen: float  # unix seconds of the peer's latest heartbeat
    evaluation: EvalSummary | None = None  # as the peer's heartbeat carried it
    sapo: SapoStats | None = None  # likewise (SAPO game)


@dataclass(frozen=True)
class GossipItem:
    peer_id: str
    round: int
    stage: int
    kind: str  # answer | critique | decision | rollouts | "stage N"
    question: str
    answer: str
    time: float  # unix seconds the record was read


@dataclass
class SwarmSnapshot:
    """One DHT read. `rewards[(round, stage)][peer_id]` is that peer's points for the stage (from 1)."""

    round: int | None
    stage: int | None
    game: str | None = None  # from the coordinator's round record
    stage_deadline: float | None = None
    peers: list[PeerSeen] = field(default_factory=list)
    rewards: dict[tuple[int, int], dict[str, float]] = field(default_factory=dict)
    winners: dict[int, list[str]] = field(default_factory=dict)
    gossip: list[GossipItem] = field(default_factory=list)
    taken_at: float = field(default_factory=time.time)


class SwarmReader(Protocol):
    def poll(self, rounds: Sequence[int], gossip_peers: Sequence[str]) -> SwarmSnapshot:
        """Read round/stage and peers, rewards of `rounds` (all stages) and outputs of `gossip_peers`."""
        ...

    def close(self) -> None: ...


# ---------------------------------------------------------------- wire form


class _WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class PeerSeenWire(_WireModel):
    peer_id: PeerIdStr
    last_seen: UnixTime
    evaluation: EvalSummary | None = None
    sapo: SapoStats | None = None


class GossipWire(_WireModel):
    peer_id: PeerIdStr
    round: Round
    stage: Stage
    kind: Annotated[str, Field(min_length=1, max_length=32)]
    question: Annotated[str, Field(max_length=MAX_QUESTION_CHARS)]
    answer: Annotated[str, Field(max_length=MAX_ANSWER_CHARS)]
    time: UnixTime


class RewardsWire(_WireModel):
    round: Round
    stage: Stage
    rewards: dict[PeerIdStr, Reward] = Field(max_length=WIRE_MAX_PEERS)


class WinnersWire(_WireModel):
    round: Round
    peers: list[PeerIdStr] = Field(max_length=WIRE_MAX_WINNERS)


class SnapshotWire(_WireModel):
    """`SwarmSnapshot` as JSON: tuple-keyed `rewards` and int-keyed `winners` become lists of objects."""

    version: Literal[1] = 1
    round: Round | None
    stage: Stage | None
    game: Literal["three-stage", "sapo"] | None = None
    stage_deadline: UnixTime | None = None
    peers: list[PeerSeenWire] = Field(default_factory=list, max_length=WIRE_MAX_PEERS)
    rewards: list[RewardsWire] = Field(default_factory=list, max_length=WIRE_MAX_REWARD_SETS)
    winners: list[WinnersWire] = Field(default_factory=list, max_length=WIRE_MAX_WINNER_ROUNDS)
    gossip: list[GossipWire] = Field(default_factory=list, max_length=WIRE_MAX_GOSSIP)
    taken_at: UnixTime


def snapshot_to_wire(snap: SwarmSnapshot) -> SnapshotWire:
    """Raises pydantic.ValidationError when the snapshot is outside the wire bounds."""
    return SnapshotWire(
        round=snap.round, stage=snap.stage, game=snap.game, stage_deadline=snap.stage_deadline,
        peers=[PeerSeenWire(peer_id=p.peer_id, last_seen=p.last_seen, evaluation=p.evaluation, sapo=p.sapo)
               for p in snap.peers],
        rewards=[RewardsWire(round=r, stage=s, rewards=by_peer) for (r, s), by_peer in snap.rewards.items()],
        winners=[WinnersWire(round=r, peers=peers) for r, peers in snap.winners.items()],
        gossip=[GossipWire(peer_id=g.peer_id, round=g.round, stage=g.stage, kind=g.kind, question=g.question,
                           answer=g.answer, time=g.time) for g in snap.gossip],
        taken_at=snap.taken_at)


def snapshot_from_wire(wire: SnapshotWire) -> SwarmSnapshot:
    rewards: dict[tuple[int, int], dict[str, float]] = {}
    for entry in wire.rewards:
        if (entry.round, entry.stage) in rewards:
            raise ValueError(f"rewards of round {entry.round} stage {entry.stage} appear twice")
        rewards[(entry.round, entry.stage)] = dict(entry.rewards)
    winners: dict[int, list[str]] = {}
    for w in wire.winners:
        if w.round in winners:
            raise ValueError(f"winners of round {w.round} appear twice")
        winners[w.round] = list(w.peers)
    return SwarmSnapshot(
        round=wire.round, stage=wire.stage, game=wire.game, stage_deadline=wire.stage_deadline,
        peers=[PeerSeen(p.peer_id, p.last_seen, p.evaluation, p.sapo) for p in wire.peers],
        rewards=rewards, winners=winners,
        gossip=[GossipItem(g.peer_id, g.round, g.stage, g.kind, g.question, g.answer, g.time) for g in wire.gossip],
        taken_at=wire.taken_at)


def snapshot_to_json(snap: SwarmSnapshot) -> bytes:
    return snapshot_to_wire(snap).model_dump_json().encode()


def snapshot_from_json(data: bytes | str) -> SwarmSnapshot:
    """Strict parse; raises ValueError (pydantic.ValidationError is one) on anything off-schema."""
    return snapshot_from_wire(SnapshotWire.model_validate_json(data))


# ---------------------------------------------------------------- the DHT reader


class DhtSwarmReader:
    """`SwarmReader` over a client-mode `HivemindTransport` (signed, schema-checked records only)."""

    def __init__(self, transport: Any, fetch_timeout: float = 3.0, cleanup: Any = None):
        import concurrent.futures

        self._t = transport
        # Which stages to read rewards of: the game of the latest round record (three-stage until one is read).
        self._game = "three-stage"
        self._timeout = fetch_timeout
        self._cleanup = cleanup
        self._pool = concurrent.futures.ThreadPoolExecutor(DHT_READ_WORKERS, thread_name_prefix="dht-read")

    @classmethod
    def connect(cls, initial_peers: Sequence[str], *, dht_namespace: str, coordinator_peer_id: str | None,
                dht_identity_file: Path | None, dht_timeout: float, tmp_prefix: str = "rlswarm-reader-"
                ) -> "DhtSwarmReader":
        """Join the swarm as a DHT client with its own identity (blocking).

        Without `dht_identity_file` the key is a throwaway one in a temporary folder (never a
        trainer's swarm.pem, which would clash with that trainer), removed on close.
        """
        import shutil
        import tempfile

        from hivemind_exp.swarm.hivemind_transport import HivemindTransport
        from hivemind_exp.swarm.settings import SwarmSettings

        tmp: str | None = None
        identity = dht_identity_file
        if identity is None:
            tmp = tempfile.mkdtemp(prefix=tmp_prefix)
            identity = Path(tmp) / "reader.pem"
        swarm = SwarmSettings(
            initial_peers=list(initial_peers), identity_path=identity, dht_client_mode=True,
            host_maddrs=["/ip4/127.0.0.1/tcp/0"], announce_maddrs=[], dht_namespace=dht_namespace,
            coordinator_peer_id=coordinator_peer_id,
            dht_check_identity_free=False, dht_startup_retries=0,
            dht_startup_timeout=max(5.0, dht_timeout), dht_fetch_timeout=dht_timeout / 3)
        try:
            transport = HivemindTransport.start(swarm)
        except BaseException:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(transport, fetch_timeout=dht_timeout / 3,
                   cleanup=(lambda: shutil.rmtree(tmp, ignore_errors=True)) if tmp else None)

    @property
    def peer_id(self) -> str:
        return self._t.peer_id

    def _outputs(self, rnd: int, stage: int, peers: Sequence[str], now: float) -> list[GossipItem]:
        items = []
        kinds = STAGE_KINDS["three-stage"]
        found = self._t.fetch_outputs(rnd, stage, timeout=self._timeout, peers=list(peers))
        for peer_id, by_question in found.items():
            for qhash, rec in by_question.items():
                question = rec.meta.get("question") if isinstance(rec.meta.get("question"), str) else None
                answer = rec.final_answer if rec.final_answer else rec.completion
                items.append(GossipItem(
                    peer_id=peer_id, round=rnd, stage=stage,
                    kind=kinds[stage - 1] if 1 <= stage <= len(kinds) else f"stage {stage}",
                    question=clip(question or f"question {qhash[:12]}", MAX_QUESTION_CHARS),
                    answer=clip(answer, MAX_ANSWER_CHARS), time=now))
        return items

    def _rollouts(self, rnd: int, peers: Sequence[str], now: float) -> list[GossipItem]:
        """SAPO: one item per shared group: its question and the first completion."""
        items = []
        found = self._t.fetch_rollouts(rnd, timeout=self._timeout, peers=list(peers))
        for peer_id, groups in found.items():
            for group in groups.values():
                items.append(GossipItem(
                    peer_id=peer_id, round=rnd, stage=1, kind="rollouts",
                    question=clip(group.question, MAX_QUESTION_CHARS),
                    answer=clip(group.completions[0], MAX_ANSWER_CHARS), time=now))
        return items

    def poll(self, rounds: Sequence[int], gossip_peers: Sequence[str]) -> SwarmSnapshot:
        now = time.time()
        t = self._t
        state_f = self._pool.submit(t.fetch_round_state, self._timeout)
        peers_f = self._pool.submit(t.list_peers, self._timeout)
        count = game_stage.stage_count(self._game)
        reward_fs = {(r, s): self._pool.submit(t.fetch_rewards, r, s, self._timeout)
                     for r in rounds for s in range(1, count + 1)}
        winner_fs = {r: self._pool.submit(t.fetch_winners, r, self._timeout) for r in rounds[:2]}
        state = state_f.result()
        if state is not None:
            self._game = state.game
        rnd = state.round if state is not None else (max(rounds) if rounds else None)
        gossip: list[GossipItem] = []
        if rnd is not None and gossip_peers:
            if self._game == "sapo":
                gossip.extend(self._rollouts(rnd, gossip_peers, now))
            else:
                stage = state.stage if state is not None else count
                for s in sorted({stage, max(1, stage - 1)}):
                    gossip.extend(self._outputs(rnd, s, gossip_peers, now))
        winners: dict[int, list[str]] = {}
        for r, f in winner_fs.items():
            votes: dict[str, int] = {}
            for picks in f.result().values():
                for w in picks:
                    votes[w] = votes.get(w, 0) + 1
            if votes:
                winners[r] = sorted(votes, key=lambda p: (-votes[p], p))
        return SwarmSnapshot(
            round=state.round if state is not None else None,
            stage=state.stage if state is not None else None,
            game=state.game if state is not None else None,
            stage_deadline=state.stage_deadline_unix if state is not None else None,
            peers=[PeerSeen(p.peer_id, p.last_seen, p.evaluation, p.sapo) for p in peers_f.result()],
            rewards={k: f.result() for k, f in reward_fs.items()},
            winners=winners, gossip=gossip, taken_at=now)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        try:
            self._t.close()
        finally:
            if self._cleanup is not None:
                self._cleanup()
