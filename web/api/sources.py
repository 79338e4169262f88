"""What the dashboard reads, behind two small interfaces, and their real implementations.

- `SwarmReader.poll(...) -> SwarmSnapshot`: one read of the DHT (round/stage, peers seen,
  per-stage rewards of recent rounds, a sample of recent answers/critiques, winners).
  Real one: `DhtSwarmReader` (a client-mode `hivemind_exp.swarm` transport).
- `ChainReader.poll(...) -> ChainSnapshot`: one read of the SwarmCoordinator contract
  (round/stage, total rewards and wins, the local trainer's wallet). Real one:
  `ContractChainReader` (`hivemind_exp.chain.client.ChainReader` over JSON-RPC).

Both are blocking and are only ever called from the poller's worker thread, never inside
a request. Peer-supplied text is clipped here so the cache holds bounded data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from hivemind_exp.game import stage as game_stage
from hivemind_exp.swarm.records import EvalSummary, SapoStats

if TYPE_CHECKING:
    from api.settings import DashboardSettings

log = logging.getLogger(__name__)

# Text from peers is data from strangers: clip it before it reaches the cache or the UI.
MAX_QUESTION_CHARS = 300
MAX_ANSWER_CHARS = 160
# getTotalRewards takes a list; keep each call's calldata small.
TOTAL_REWARDS_BATCH = 200
WINNER_PAGE = 100


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
    kind: str  # answer | critique | decision
    question: str
    answer: str
    time: float  # unix seconds the record was published


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


@dataclass
class ChainSnapshot:
    """One contract read. Rewards are points (the contract's integers / 1000)."""

    round: int
    stage: int
    stage_count: int
    contract_address: str
    total_rewards: dict[str, float] = field(default_factory=dict)
    total_wins: dict[str, int] = field(default_factory=dict)
    bootnodes: list[str] = field(default_factory=list)
    local_wallet: str | None = None
    taken_at: float = field(default_factory=time.time)


class SwarmReader(Protocol):
    def poll(self, rounds: Sequence[int], gossip_peers: Sequence[str]) -> SwarmSnapshot:
        """Read round/stage and peers, rewards of `rounds` (all stages) and outputs of `gossip_peers`."""
        ...

    def close(self) -> None: ...


class ChainReader(Protocol):
    def poll(self, peer_ids: Sequence[str], local_peer_id: str | None) -> ChainSnapshot:
        """Read round/stage, totals of `peer_ids` (plus every peer with wins) and the local wallet."""
        ...

    def close(self) -> None: ...


class ContractChainReader:
    """`ChainReader` over the SwarmCoordinator contract (read-only; no key needed)."""

    def __init__(self, rpc_url: str, contract_address: str, timeout: float = 10.0):
        from hivemind_exp.chain.client import ChainReader as RpcReader

        self._rpc = RpcReader(rpc_url, contract_address, timeout=timeout)
        self._stage_count: int | None = None

    @classmethod
    def from_settings(cls, settings: DashboardSettings) -> "ContractChainReader":
        from hivemind_exp.chain.client import load_deployment_address

        address = settings.contract_address or load_deployment_address(settings.deployment_file)
        return cls(settings.rpc_url, address, timeout=settings.rpc_timeout)

    @property
    def contract_address(self) -> str:
        return self._rpc.contract_address

    def _winners(self) -> dict[str, int]:
        wins: dict[str, int] = {}
        start = 0
        while True:
            page = self._rpc.winner_leaderboard(start, start + WINNER_PAGE)
            for entry in page:
                wins[entry.peer_id] = entry.count
            if len(page) < WINNER_PAGE:
                return wins
            start += WINNER_PAGE

    def poll(self, peer_ids: Sequence[str], local_peer_id: str | None) -> ChainSnapshot:
        from hivemind_exp.chain.rewards import chain_to_points

        if self._stage_count is None:
            self._stage_count = self._rpc.stage_count()
        rnd, stage = self._rpc.round_and_stage()
        wins = self._winners()
        wanted = list(dict.fromkeys([*peer_ids, *wins, *([local_peer_id] if local_peer_id else [])]))
        totals: dict[str, float] = {}
        for i in range(0, len(wanted), TOTAL_REWARDS_BATCH):
            batch = wanted[i : i + TOTAL_REWARDS_BATCH]
            for pid, value in zip(batch, self._rpc.total_rewards(batch), strict=True):
                totals[pid] = chain_to_points(value)
        wallet = self._rpc.eoa_of(local_peer_id) if local_peer_id else None
        return ChainSnapshot(round=rnd, stage=stage, stage_count=self._stage_count,
                             contract_address=self._rpc.contract_address, total_rewards=totals,
                             total_wins={p: wins.get(p, 0) for p in wanted}, bootnodes=self._rpc.bootnodes(),
                             local_wallet=wallet)

    def close(self) -> None:
        """Nothing to release: every RPC is a plain HTTP request."""


# What a record of each stage is, per game (the gossip panel's label).
STAGE_KINDS = {"three-stage": ("answer", "critique", "decision"), "sapo": ("rollouts",)}
# Concurrent DHT reads per poll (rewards of several rounds/stages); the transport is thread-safe.
DHT_READ_WORKERS = 8


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
    def connect(cls, initial_peers: Sequence[str], settings: DashboardSettings) -> "DhtSwarmReader":
        """Join the swarm as a DHT client with the dashboard's own identity (blocking)."""
        import shutil
        import tempfile
        from pathlib import Path

        from hivemind_exp.swarm.hivemind_transport import HivemindTransport
        from hivemind_exp.swarm.settings import SwarmSettings

        tmp: str | None = None
        identity = settings.dht_identity_file
        if identity is None:
            tmp = tempfile.mkdtemp(prefix="rlswarm-dashboard-")
            identity = Path(tmp) / "dashboard.pem"
        swarm = SwarmSettings(
            initial_peers=list(initial_peers), identity_path=identity, dht_client_mode=True,
            host_maddrs=["/ip4/127.0.0.1/tcp/0"], announce_maddrs=[], dht_namespace=settings.dht_namespace,
            coordinator_peer_id=settings.trusted_coordinator(list(initial_peers)),
            dht_check_identity_free=False, dht_startup_retries=0,
            dht_startup_timeout=max(5.0, settings.dht_timeout), dht_fetch_timeout=settings.dht_timeout / 3)
        try:
            transport = HivemindTransport.start(swarm)
        except BaseException:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(transport, fetch_timeout=settings.dht_timeout / 3,
                   cleanup=(lambda: shutil.rmtree(tmp, ignore_errors=True)) if tmp else None)

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


def read_local_peer_id(identity_file: Any) -> str | None:
    """The base58 peer ID of a libp2p key file (swarm.pem), or None when there is none yet."""
    from pathlib import Path

    from hivemind_exp.swarm.identity import load_peer_id

    path = Path(identity_file)
    if not path.is_file():
        return None
    return load_peer_id(path)
