"""What the swarm stores in the DHT: typed records, their wire form, chunking, drop counts.

Public models (what callers pass and get back): `OutputRecord`, `RoundState`, `PeerInfo`,
`EvalSummary`, and the SAPO game's `RolloutGroup` (a question as a `TaskSpecRecord` plus the
sender's completions; the receiver regenerates question and answer from the spec).

On the wire every stored value is msgpack of one ``*Wire`` model, tagged by ``kind``.
Every wire record carries the writer's ``peer_id``, which must equal the owner named
by the (signed) subkey; records also carry the round/stage/question they belong to so
a reader can check they sit under the right key. A logical record bigger than the
per-record cap is stored as ``ChunkWire`` pieces under a blob key plus a ``ManifestWire``
(sha256, size, chunk count) in its place; the reader reassembles, checks the hash and
size, and decodes the inner record as if it had been stored inline.

Decoding is strict (no type coercion, no unknown fields): anything else raises
`RecordRejected` with a short reason, which the transport counts in a `DropCounter`.
This module is pure (no hivemind import) so it is unit-tested without a DHT.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Annotated, Literal, Union

import msgpack
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

log = logging.getLogger(__name__)

PeerIdStr = Annotated[str, Field(pattern=r"^[1-9A-HJ-NP-Za-km-z]{32,128}$")]
QHashStr = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Round = Annotated[int, Field(ge=0, le=2**53)]
Stage = Annotated[int, Field(ge=0, le=63)]
UnixTime = Annotated[float, Field(ge=0, le=1e11, allow_inf_nan=False)]

# Every number a stranger can put in a record has a finite, documented range, so no record can
# rank first by an absurd value (1.7e308) or break JSON (inf/nan serialise as null).
REWARD_LIMIT = 100.0  # |reward| in points; the rubrics' weighted sums stay far below it
Reward = Annotated[float, Field(ge=-REWARD_LIMIT, le=REWARD_LIMIT, allow_inf_nan=False)]
META_INT_LIMIT = 2**53  # exact in a float / JavaScript number
META_FLOAT_LIMIT = 1e15
MetaValue = Union[
    Annotated[str, Field(max_length=1024)],
    Annotated[int, Field(ge=-META_INT_LIMIT, le=META_INT_LIMIT)],
    Annotated[float, Field(ge=-META_FLOAT_LIMIT, le=META_FLOAT_LIMIT, allow_inf_nan=False)],
    bool,
    None,
]
# Most records one owner may keep under one DHT key (questions of a round, SAPO groups); kinds
# with a fixed subkey tag (reward, winners, round state, heartbeat, chunk index) allow one per tag.
MAX_SUBKEYS_PER_OWNER = 256

MAX_CHUNKS = 4096
MAX_CHUNK_BYTES = 64 * 1024
MAX_WINNERS = 256
# Room the wire envelope of a chunk needs around its data (kind, peer ID, hash, indices).
CHUNK_ENVELOPE_BYTES = 320


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


# ---------------------------------------------------------------- public models


class OutputRecord(_Strict):
    """One peer's output for one question in one stage."""

    completion: str = Field(description="the model's full completion text (bounded by dht_max_payload_bytes)")
    final_answer: str | None = Field(None, max_length=1024, description="the answer parsed from the completion")
    reward: Reward | None = Field(None, description=f"the peer's own reward for this completion (|r| <= {REWARD_LIMIT})")
    meta: dict[Annotated[str, Field(max_length=64)], MetaValue] = Field(
        default_factory=dict, max_length=32, description="small extra fields (e.g. the critique's pick)")


class RoundState(_Strict):
    """The round and stage the coordinator says the swarm is in."""

    round: Round
    stage: Stage
    stage_deadline_unix: UnixTime = Field(description="when the coordinator will move on (unix seconds)")
    published_at: UnixTime = Field(description="when the coordinator wrote this (unix seconds)")
    game: Literal["three-stage", "sapo"] = Field("three-stage", description="the game the swarm plays")


Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class EvalSummary(_Strict):
    """A node's latest held-out evaluation, carried in its heartbeat so dashboards can show it."""

    round: Round = Field(description="the round after which the node evaluated")
    accuracy: Fraction = Field(description="share of held-out problems answered correctly")
    format_rate: Fraction = Field(description="share of completions in the expected tagged format")
    problems: Annotated[int, Field(ge=1, le=100_000)] = Field(description="held-out problems evaluated")
    at: UnixTime = Field(description="when the evaluation finished (unix seconds)")


Count = Annotated[int, Field(ge=0, le=1_000_000)]


class SapoStats(_Strict):
    """A SAPO node's latest round, carried in its heartbeat: what it shared, took and trained on."""

    round: Round
    shared: Count = Field(description="rollout groups it published")
    taken: Count = Field(description="external groups it kept after re-scoring")
    trained: Count = Field(description="groups in its GRPO step (own + external)")
    with_signal: Count = Field(description="trained groups whose rewards differ (GRPO learns only from these)")
    dropped: Count = Field(description="peers' records it has dropped since it started (malformed or mismatched)")
    at: UnixTime


MAX_GROUP_COMPLETIONS = 64
MAX_COMPLETION_CHARS = 8000


class TaskSpecRecord(_Strict):
    """A procedurally generated question as a spec: any peer with the same task mix regenerates it."""

    task: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")]
    config_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
    seed: Annotated[int, Field(ge=0, lt=2**31)]
    index: Annotated[int, Field(ge=0, lt=2**20)]


class RolloutGroup(_Strict):
    """One SAPO group: a question (spec + the text the sender saw) and the sender's completions.

    Nothing in it is a claim the receiver trusts: the question is regenerated from the spec
    and must equal ``question``; the completions are re-scored by the receiver."""

    spec: TaskSpecRecord
    question: Annotated[str, Field(min_length=1, max_length=4000)]
    completions: list[Annotated[str, Field(max_length=MAX_COMPLETION_CHARS)]] = Field(
        min_length=2, max_length=MAX_GROUP_COMPLETIONS)


class PeerInfo(_Strict):
    """A connected peer, from its latest heartbeat."""

    peer_id: PeerIdStr
    name: Annotated[str, Field(max_length=128)] | None = None
    last_seen: UnixTime
    wallet: Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$")] | None = None
    maddrs: list[Annotated[str, Field(max_length=256)]] = Field(default_factory=list, max_length=8)
    evaluation: EvalSummary | None = None
    sapo: SapoStats | None = None


# ---------------------------------------------------------------- wire models


class _Wire(_Strict):
    peer_id: PeerIdStr


class OutputWire(_Wire):
    kind: Literal["output"] = "output"
    round: Round
    stage: Stage
    qhash: QHashStr
    record: OutputRecord


class RewardWire(_Wire):
    kind: Literal["reward"] = "reward"
    round: Round
    stage: Stage
    reward: Reward


class WinnersWire(_Wire):
    kind: Literal["winners"] = "winners"
    round: Round
    winners: list[PeerIdStr] = Field(max_length=MAX_WINNERS)


class RoundStateWire(_Wire):
    kind: Literal["round_state"] = "round_state"
    state: RoundState


class HeartbeatWire(_Wire):
    kind: Literal["peer"] = "peer"
    name: Annotated[str, Field(max_length=128)] | None = None
    last_seen: UnixTime
    wallet: Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$")] | None = None
    maddrs: list[Annotated[str, Field(max_length=256)]] = Field(default_factory=list, max_length=8)
    evaluation: EvalSummary | None = None
    sapo: SapoStats | None = None


class RolloutsWire(_Wire):
    kind: Literal["rollouts"] = "rollouts"
    round: Round
    key: QHashStr
    group: RolloutGroup


class ManifestWire(_Wire):
    kind: Literal["manifest"] = "manifest"
    sha256: Sha256Hex
    size: int = Field(ge=1, le=MAX_CHUNKS * MAX_CHUNK_BYTES)
    n_chunks: int = Field(ge=1, le=MAX_CHUNKS)


class ChunkWire(_Wire):
    kind: Literal["chunk"] = "chunk"
    sha256: Sha256Hex
    index: int = Field(ge=0, lt=MAX_CHUNKS)
    n_chunks: int = Field(ge=1, le=MAX_CHUNKS)
    data: bytes = Field(min_length=1, max_length=MAX_CHUNK_BYTES)


WireRecord = Annotated[
    Union[OutputWire, RewardWire, WinnersWire, RoundStateWire, HeartbeatWire, RolloutsWire, ManifestWire, ChunkWire],
    Field(discriminator="kind"),
]
_WIRE = TypeAdapter(WireRecord)
# Records a manifest may stand for (never another manifest, never a chunk).
_INNER_KINDS = ("output", "reward", "winners", "round_state", "peer", "rollouts")


# Subkey tag a record of each kind must sit under; None: the kind's own field below decides.
_FIXED_TAG_KINDS = ("reward", "winners", "round_state", "peer")


def check_tag(record: "_Wire", tag: str) -> None:
    """The subkey tag must be the one the record's kind is written under (`RecordRejected` if not).

    With it, an owner holds one reward / winners / round-state / heartbeat record per key, one
    chunk per index, and one output or group per question: anything else is padding."""
    kind = getattr(record, "kind", "")
    if kind in _FIXED_TAG_KINDS:
        want: str | None = ""
    elif isinstance(record, OutputWire):
        want = record.qhash
    elif isinstance(record, RolloutsWire):
        want = record.key
    elif isinstance(record, ChunkWire):
        want = str(record.index)
    else:
        want = None  # a manifest stands in for an output or group under that record's tag
    if want is not None and tag != want:
        raise RecordRejected("wrong_tag", f"a {kind} record under subkey tag {tag!r}")


class RecordRejected(ValueError):
    """A stored value failed a check; ``reason`` is the short counter name."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------- encode / decode


def encode_wire(record: _Wire) -> bytes:
    return msgpack.packb(record.model_dump(mode="python"), use_bin_type=True)


def decode_wire(raw: bytes, *, max_bytes: int, owner_peer_id: str | None = None) -> WireRecord:
    """Parse one stored value strictly; check its size and that its writer is the subkey's owner."""
    if not isinstance(raw, (bytes, bytearray)):
        raise RecordRejected("malformed", f"value is {type(raw).__name__}, not bytes")
    if len(raw) > max_bytes:
        raise RecordRejected("oversize", f"{len(raw)} bytes > {max_bytes}")
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several types on garbage
        raise RecordRejected("malformed", f"not msgpack ({type(exc).__name__})") from None
    try:
        record = _WIRE.validate_python(obj)
    except ValidationError as exc:
        raise RecordRejected("schema", _short_errors(exc)) from None
    if owner_peer_id is not None and record.peer_id != owner_peer_id:
        raise RecordRejected("forged", f"record claims peer {record.peer_id} but is signed by {owner_peer_id}")
    return record


def _short_errors(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3]]
    return "; ".join(parts)


# ---------------------------------------------------------------- chunking


def chunk_data_bytes(max_record_bytes: int) -> int:
    """Data bytes per chunk so that a chunk's wire form fits ``max_record_bytes``."""
    return max_record_bytes - CHUNK_ENVELOPE_BYTES


def split_payload(payload: bytes, *, peer_id: str, max_record_bytes: int) -> tuple[ManifestWire, list[ChunkWire]]:
    """Cut an encoded record into chunks plus the manifest that stands in its place."""
    size = chunk_data_bytes(max_record_bytes)
    n = max(1, math.ceil(len(payload) / size))
    if n > MAX_CHUNKS:
        raise ValueError(f"payload of {len(payload)} bytes needs {n} chunks (> {MAX_CHUNKS})")
    digest = hashlib.sha256(payload).hexdigest()
    chunks = [ChunkWire(peer_id=peer_id, sha256=digest, index=i, n_chunks=n, data=payload[i * size:(i + 1) * size])
              for i in range(n)]
    return ManifestWire(peer_id=peer_id, sha256=digest, size=len(payload), n_chunks=n), chunks


def check_manifest(manifest: ManifestWire, *, max_payload_bytes: int) -> None:
    if manifest.size > max_payload_bytes:
        raise RecordRejected("oversize", f"manifest promises {manifest.size} bytes > {max_payload_bytes}")
    # A chunk holds at least ~1.7 KB (smallest allowed record cap); more chunks than that is a lie.
    if manifest.n_chunks > math.ceil(manifest.size / chunk_data_bytes(2048)) or manifest.n_chunks > manifest.size:
        raise RecordRejected("schema", f"{manifest.n_chunks} chunks for {manifest.size} bytes")


def reassemble(manifest: ManifestWire, chunks: Mapping[int, ChunkWire], *, max_payload_bytes: int,
               max_record_bytes: int) -> WireRecord:
    """Join verified chunks and decode the record they carry; `RecordRejected` on any mismatch."""
    check_manifest(manifest, max_payload_bytes=max_payload_bytes)
    parts = []
    for i in range(manifest.n_chunks):
        chunk = chunks.get(i)
        if chunk is None:
            raise RecordRejected("incomplete", f"chunk {i} of {manifest.n_chunks} missing")
        if (chunk.sha256, chunk.n_chunks, chunk.peer_id) != (manifest.sha256, manifest.n_chunks, manifest.peer_id):
            raise RecordRejected("chunk_mismatch", f"chunk {i} belongs to another record")
        parts.append(chunk.data)
    payload = b"".join(parts)
    if len(payload) != manifest.size or hashlib.sha256(payload).hexdigest() != manifest.sha256:
        raise RecordRejected("chunk_mismatch", "reassembled bytes do not match the manifest's size and sha256")
    inner = decode_wire(payload, max_bytes=max_payload_bytes, owner_peer_id=manifest.peer_id)
    if inner.kind not in _INNER_KINDS:
        raise RecordRejected("schema", f"a manifest cannot stand for a {inner.kind} record")
    return inner


def encode_for_store(record: _Wire, *, max_record_bytes: int, max_payload_bytes: int
                     ) -> tuple[bytes, list[ChunkWire], ManifestWire | None]:
    """The value to store in the record's place, plus chunks to store first (if any)."""
    payload = encode_wire(record)
    if len(payload) <= max_record_bytes:
        return payload, [], None
    if len(payload) > max_payload_bytes:
        raise ValueError(f"{record.kind} record is {len(payload)} bytes, over dht_max_payload_bytes="
                         f"{max_payload_bytes}; shorten it or raise the setting on every peer")
    manifest, chunks = split_payload(payload, peer_id=record.peer_id, max_record_bytes=max_record_bytes)
    return encode_wire(manifest), chunks, manifest


# ---------------------------------------------------------------- drop counter


class DropCounter:
    """Thread-safe counts of dropped records by reason (for metrics), with a debug log line each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def drop(self, reason: str, detail: str = "", where: str = "") -> None:
        with self._lock:
            self._counts[reason] += 1
        log.debug("dropped swarm record (%s)%s: %s", reason, f" at {where}" if where else "", detail)

    def rejected(self, exc: RecordRejected, where: str = "") -> None:
        self.drop(exc.reason, exc.detail, where)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
