"""An in-process `SwarmTransport`: several nodes in one process share a `MemorySwarm`.

For unit tests that drive whole nodes in milliseconds, and for benchmarks that run many
peers in one process. The rules are the DHT transport's: every value is stored in its
wire form (msgpack of a ``*Wire`` model) under a key and an owner, readers decode it with
the same strict `decode_wire` (schema, size cap, writer == owner) and drop-and-count what
fails; records over the payload cap are refused at publish; a read of the default peer set asks
for at most `max_peers_per_read` peers, chosen by `read_set` (the DHT transport's
``dht_max_peers_per_read``). What it does not model is the
network: stores always succeed and reads see everything at once, unless a test cuts a
node off (`MemorySwarm.partition`) or plants raw bytes (`MemorySwarm.put_raw`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence

from hivemind_exp.swarm import keys
from hivemind_exp.swarm.records import (
    DropCounter,
    EvalSummary,
    HeartbeatWire,
    OutputRecord,
    OutputWire,
    PeerInfo,
    RecordRejected,
    RewardWire,
    RolloutGroup,
    RolloutsWire,
    RoundState,
    RoundStateWire,
    SapoStats,
    WinnersWire,
    WireRecord,
    _Wire,
    decode_wire,
    encode_wire,
)
from hivemind_exp.swarm.read_set import DEFAULT_MAX_PEERS_PER_READ, check_cap, read_set
from hivemind_exp.swarm.transport import SwarmClosedError

# Values bigger than one DHT record are chunked by the DHT transport; here they are kept whole,
# up to the same payload cap the DHT transport enforces by default.
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024


class MemorySwarm:
    """The shared store: ``{key: {(tag, owner): (raw bytes, expires_at)}}``."""

    def __init__(self, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES, clock=time.time):
        self.max_payload_bytes = max_payload_bytes
        self.clock = clock
        self._lock = threading.Lock()
        self._data: dict[str, dict[tuple[str, str], tuple[bytes, float]]] = {}
        self._cut: set[str] = set()

    def put_raw(self, key: str, tag: str, owner: str, raw: bytes, ttl: float = 600.0) -> None:
        """Store bytes as if `owner` had signed them (tests plant malformed or forged values this way)."""
        with self._lock:
            self._data.setdefault(key, {})[(tag, owner)] = (raw, self.clock() + ttl)

    def read(self, key: str) -> list[tuple[str, str, bytes]]:
        now = self.clock()
        with self._lock:
            entries = self._data.get(key, {})
            return [(tag, owner, raw) for (tag, owner), (raw, exp) in entries.items() if exp > now]

    def partition(self, peer_id: str, cut: bool = True) -> None:
        """Cut a peer off (its stores fail, its reads see nothing) or heal it."""
        with self._lock:
            (self._cut.add if cut else self._cut.discard)(peer_id)

    def is_cut(self, peer_id: str) -> bool:
        with self._lock:
            return peer_id in self._cut

    def transport(self, peer_id: str, *, coordinator_peer_id: str | None = None, record_ttl: float = 600.0,
                  peer_ttl: float = 60.0, max_peers_per_read: int = DEFAULT_MAX_PEERS_PER_READ) -> MemoryTransport:
        return MemoryTransport(self, peer_id, coordinator_peer_id=coordinator_peer_id, record_ttl=record_ttl,
                               peer_ttl=peer_ttl, max_peers_per_read=max_peers_per_read)


class MemoryTransport:
    """One node's view of a `MemorySwarm` (implements `SwarmTransport`)."""

    def __init__(self, swarm: MemorySwarm, peer_id: str, *, coordinator_peer_id: str | None = None,
                 record_ttl: float = 600.0, peer_ttl: float = 60.0, namespace: str = "rl-swarm",
                 max_peers_per_read: int = DEFAULT_MAX_PEERS_PER_READ):
        self._swarm = swarm
        self._read_cap = check_cap(max_peers_per_read)  # the rule SwarmSettings enforces
        self._peer_id = peer_id
        self._coordinator = coordinator_peer_id
        self._record_ttl = record_ttl
        self._peer_ttl = peer_ttl
        self._ns = namespace
        self._drops = DropCounter()
        self._closed = False
        self._hb: dict[str, object] = {"name": None, "wallet": None, "evaluation": None, "sapo": None}

    # ------------------------------------------------------------ plumbing
    @property
    def peer_id(self) -> str:
        return self._peer_id

    def _check_open(self) -> None:
        if self._closed:
            raise SwarmClosedError("transport used after close()")

    def _store(self, items: Sequence[tuple[str, str, _Wire]], ttl: float) -> bool:
        self._check_open()
        encoded = []
        for key, tag, wire in items:
            raw = encode_wire(wire)
            if len(raw) > self._swarm.max_payload_bytes:
                raise ValueError(f"{wire.kind} record is {len(raw)} bytes, over dht_max_payload_bytes="
                                 f"{self._swarm.max_payload_bytes}; shorten it or raise the setting on every peer")
            encoded.append((key, tag, raw))
        if self._swarm.is_cut(self._peer_id):
            return False
        for key, tag, raw in encoded:
            self._swarm.put_raw(key, tag, self._peer_id, raw, ttl)
        return True

    def _entries(self, key: str) -> list[tuple[str, str, WireRecord]]:
        self._check_open()
        if self._swarm.is_cut(self._peer_id):
            return []
        out = []
        for tag, owner, raw in self._swarm.read(key):
            try:
                out.append((tag, owner, decode_wire(raw, max_bytes=self._swarm.max_payload_bytes, owner_peer_id=owner)))
            except RecordRejected as exc:
                self._drops.rejected(exc, key)
        return out

    def _wrong(self, key: str, why: str) -> None:
        self._drops.drop("wrong_key", why, key)

    def _peer_ids(self, peers: Iterable[str] | None, round_num: int) -> list[str]:
        if peers is not None:  # an explicit list is read whole, as in the DHT transport
            return sorted(set(peers))
        # The DHT transport's rule (dht_max_peers_per_read), so a test here reads what a real node reads.
        return read_set((p.peer_id for p in self.list_peers()), self._peer_id, round_num, self._read_cap,
                        namespace=self._ns)

    # ------------------------------------------------------------ outputs (three-stage game)
    def publish_outputs(self, round_num: int, stage: int, outputs: Mapping[str, OutputRecord]) -> bool:
        key = keys.outputs_key(self._ns, round_num, stage, self._peer_id)
        return self._store([(key, q, OutputWire(peer_id=self._peer_id, round=round_num, stage=stage, qhash=q,
                                                record=r)) for q, r in outputs.items()], self._record_ttl)

    def fetch_outputs(self, round_num: int, stage: int, timeout: float | None = None,
                      peers: Iterable[str] | None = None) -> dict[str, dict[str, OutputRecord]]:
        out: dict[str, dict[str, OutputRecord]] = {}
        for peer in self._peer_ids(peers, round_num):
            key = keys.outputs_key(self._ns, round_num, stage, peer)
            for tag, owner, wire in self._entries(key):
                if not isinstance(wire, OutputWire) or owner != peer:
                    self._wrong(key, "not this peer's output")
                elif (wire.round, wire.stage, wire.qhash) != (round_num, stage, tag):
                    self._wrong(key, f"belongs to round {wire.round} stage {wire.stage}")
                else:
                    out.setdefault(owner, {})[wire.qhash] = wire.record
        return out

    # ------------------------------------------------------------ rollouts (SAPO game)
    def publish_rollouts(self, round_num: int, groups: Mapping[str, RolloutGroup]) -> bool:
        key = keys.rollouts_key(self._ns, round_num, self._peer_id)
        return self._store([(key, g, RolloutsWire(peer_id=self._peer_id, round=round_num, key=g, group=group))
                            for g, group in groups.items()], self._record_ttl)

    def fetch_rollouts(self, round_num: int, timeout: float | None = None,
                       peers: Iterable[str] | None = None) -> dict[str, dict[str, RolloutGroup]]:
        out: dict[str, dict[str, RolloutGroup]] = {}
        for peer in self._peer_ids(peers, round_num):
            key = keys.rollouts_key(self._ns, round_num, peer)
            for tag, owner, wire in self._entries(key):
                if not isinstance(wire, RolloutsWire) or owner != peer:
                    self._wrong(key, "not this peer's rollout group")
                elif (wire.round, wire.key) != (round_num, tag):
                    self._wrong(key, f"belongs to round {wire.round} group {wire.key}")
                else:
                    out.setdefault(owner, {})[wire.key] = wire.group
        return out

    # ------------------------------------------------------------ rewards / winners
    def publish_reward(self, round_num: int, stage: int, reward: float) -> bool:
        wire = RewardWire(peer_id=self._peer_id, round=round_num, stage=stage, reward=float(reward))
        return self._store([(keys.rewards_key(self._ns, round_num, stage), "", wire)], self._record_ttl)

    def fetch_rewards(self, round_num: int, stage: int, timeout: float | None = None) -> dict[str, float]:
        key = keys.rewards_key(self._ns, round_num, stage)
        out = {}
        for tag, owner, wire in self._entries(key):
            if not isinstance(wire, RewardWire) or tag or (wire.round, wire.stage) != (round_num, stage):
                self._wrong(key, "not this round/stage's reward")
            else:
                out[owner] = wire.reward
        return out

    def publish_winners(self, round_num: int, winners: Sequence[str]) -> bool:
        wire = WinnersWire(peer_id=self._peer_id, round=round_num, winners=list(winners))
        return self._store([(keys.winners_key(self._ns, round_num), "", wire)], self._record_ttl)

    def fetch_winners(self, round_num: int, timeout: float | None = None) -> dict[str, list[str]]:
        key = keys.winners_key(self._ns, round_num)
        out = {}
        for tag, owner, wire in self._entries(key):
            if not isinstance(wire, WinnersWire) or tag or wire.round != round_num:
                self._wrong(key, "not this round's winners")
            else:
                out[owner] = list(wire.winners)
        return out

    # ------------------------------------------------------------ round state
    def publish_round_state(self, round_num: int, stage: int, stage_deadline_unix: float,
                            game: str = "three-stage") -> bool:
        state = RoundState(round=round_num, stage=stage, stage_deadline_unix=float(stage_deadline_unix),
                           published_at=self._swarm.clock(), game=game)
        return self._store([(keys.round_state_key(self._ns), "", RoundStateWire(peer_id=self._peer_id, state=state))],
                           self._record_ttl)

    def fetch_round_state(self, timeout: float | None = None) -> RoundState | None:
        key = keys.round_state_key(self._ns)
        best: RoundState | None = None
        for tag, owner, wire in self._entries(key):
            if not isinstance(wire, RoundStateWire) or tag:
                self._wrong(key, "not a round state")
            elif owner != self._coordinator:
                self._drops.drop("untrusted", f"round state from {owner}, not the coordinator", key)
            elif best is None or wire.state.published_at > best.published_at:
                best = wire.state
        return best

    # ------------------------------------------------------------ peers
    def heartbeat(self, name: str | None = None, wallet: str | None = None,
                  evaluation: EvalSummary | None = None, sapo: SapoStats | None = None) -> bool:
        for field, value in (("name", name), ("wallet", wallet), ("evaluation", evaluation), ("sapo", sapo)):
            if value is not None:
                self._hb[field] = value
        wire = HeartbeatWire(peer_id=self._peer_id, name=self._hb["name"], wallet=self._hb["wallet"],
                             last_seen=self._swarm.clock(), evaluation=self._hb["evaluation"], sapo=self._hb["sapo"])
        return self._store([(keys.peers_key(self._ns), "", wire)], self._peer_ttl)

    def list_peers(self, timeout: float | None = None) -> list[PeerInfo]:
        key = keys.peers_key(self._ns)
        out = []
        for tag, owner, wire in self._entries(key):
            if not isinstance(wire, HeartbeatWire) or tag:
                self._wrong(key, "not a heartbeat")
                continue
            out.append(PeerInfo(peer_id=owner, name=wire.name, last_seen=wire.last_seen, wallet=wire.wallet,
                                maddrs=list(wire.maddrs), evaluation=wire.evaluation, sapo=wire.sapo))
        return sorted(out, key=lambda p: p.peer_id)

    def visible_maddrs(self) -> list[str]:
        return []

    def drop_counts(self) -> dict[str, int]:
        return self._drops.snapshot()

    def close(self) -> None:
        self._closed = True
