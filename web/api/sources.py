"""What the dashboard reads, behind two small interfaces, and their real implementations.

- `SwarmReader.poll(...) -> SwarmSnapshot`: one read of the DHT (round/stage, peers seen,
  per-stage rewards of recent rounds, a sample of recent answers/critiques, winners).
  Real ones: `DhtSwarmReader` (a client-mode `hivemind_exp.swarm` transport in this process;
  defined in `hivemind_exp.swarm.reader`) and `HttpSwarmReader` (the same poll over HTTP from
  `rl-swarm swarm-reader`, so this process needs neither hivemind nor torch).
- `ChainReader.poll(...) -> ChainSnapshot`: one read of the SwarmCoordinator contract
  (round/stage, total rewards and wins, the local trainer's wallet). Real one:
  `ContractChainReader` (`hivemind_exp.chain.client.ChainReader` over JSON-RPC).

All are blocking and are only ever called from the poller's worker thread, never inside
a request. Peer-supplied text is clipped (DHT) or bounded by the wire schema (HTTP), so the
cache holds bounded data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from hivemind_exp.swarm.reader import (
    MAX_ANSWER_CHARS,
    MAX_QUESTION_CHARS,
    STAGE_KINDS,
    DhtSwarmReader,
    GossipItem,
    PeerSeen,
    SwarmReader,
    SwarmSnapshot,
    clip,
    snapshot_from_json,
)

if TYPE_CHECKING:
    from api.settings import DashboardSettings

log = logging.getLogger(__name__)

# getTotalRewards takes a list; keep each call's calldata small.
TOTAL_REWARDS_BATCH = 200
WINNER_PAGE = 100

__all__ = ["MAX_ANSWER_CHARS", "MAX_QUESTION_CHARS", "STAGE_KINDS", "ChainReader", "ChainSnapshot",
           "ContractChainReader", "DhtSwarmReader", "GossipItem", "HttpSwarmReader", "PeerSeen", "SwarmReader",
           "SwarmSnapshot", "clip", "read_local_peer_id"]


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


# Shown from a reader's error body: enough to say what went wrong, not a page of it.
MAX_REMOTE_DETAIL_CHARS = 300


class HttpSwarmReader:
    """`SwarmReader` over `rl-swarm swarm-reader`'s GET /api/snapshot (its own DHT client does the reads).

    The answer is checked like peer data: at most `max_bytes` (counted while streaming, after
    decompression), JSON of the strict `SnapshotWire` schema. Every failure is a RuntimeError
    naming the reader and the cause, which the poller records for /api/healthz.
    """

    def __init__(self, url: str, timeout: float = 10.0, max_bytes: int = 16 * 1024 * 1024):
        import httpx

        self.base_url = url.rstrip("/")
        self._max_bytes = max_bytes
        # trust_env=False: an internal service, never reached through a proxy from the environment.
        self._client = httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False)

    def _get(self, params: list[tuple[str, str]]) -> tuple[int, str, bytes]:
        import httpx

        try:
            with self._client.stream("GET", self.base_url + "/api/snapshot", params=params,
                                     headers={"accept": "application/json"}) as r:
                declared = r.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self._max_bytes:
                    raise RuntimeError(f"swarm reader {self.base_url} sent {declared} bytes, over the "
                                       f"{self._max_bytes}-byte limit (RLSWARM_SWARM_READER_MAX_BYTES)")
                body = bytearray()
                for chunk in r.iter_bytes():
                    body += chunk
                    if len(body) > self._max_bytes:
                        raise RuntimeError(f"swarm reader {self.base_url} sent more than {self._max_bytes} bytes "
                                           "(RLSWARM_SWARM_READER_MAX_BYTES)")
                return r.status_code, r.headers.get("content-type", ""), bytes(body)
        except httpx.HTTPError as exc:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise RuntimeError(f"swarm reader {self.base_url} unreachable ({why}); is `rl-swarm swarm-reader` "
                               "running there? (RLSWARM_SWARM_READER_URL)") from None

    @staticmethod
    def _detail(body: bytes) -> str:
        import json

        try:
            detail = json.loads(body).get("detail")
        except (ValueError, AttributeError):
            detail = None
        text = detail if isinstance(detail, str) else body.decode("utf-8", "replace")
        return clip(text, MAX_REMOTE_DETAIL_CHARS) or "no detail"

    def poll(self, rounds: Sequence[int], gossip_peers: Sequence[str]) -> SwarmSnapshot:
        params = [("rounds", str(int(r))) for r in rounds] + [("gossip_peers", str(p)) for p in gossip_peers]
        status, ctype, body = self._get(params)
        if status != 200:
            raise RuntimeError(f"swarm reader {self.base_url} answered {status}: {self._detail(body)}")
        if not ctype.split(";")[0].strip().lower() == "application/json":
            raise RuntimeError(f"swarm reader {self.base_url} answered {ctype or 'no content type'}, not JSON")
        try:
            return snapshot_from_json(body)
        except ValueError as exc:
            # pydantic's message lists every error; the first few say enough.
            lines = [ln for ln in str(exc).splitlines() if ln.strip()][:6]
            raise RuntimeError(f"swarm reader {self.base_url} sent an invalid snapshot: "
                               f"{clip(' | '.join(lines), MAX_REMOTE_DETAIL_CHARS)}") from None

    def close(self) -> None:
        self._client.close()


def read_local_peer_id(identity_file: Any) -> str | None:
    """The base58 peer ID of a libp2p key file (swarm.pem), or None when there is none yet."""
    from pathlib import Path

    from hivemind_exp.swarm.identity import load_peer_id

    path = Path(identity_file)
    if not path.is_file():
        return None
    return load_peer_id(path)
