"""Swarm records without a DHT: strict wire schemas, signed subkeys, chunking, settings."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hivemind_exp.swarm.identity import ensure_identity, load_identity
from hivemind_exp.common.settings_base import SettingsError, load_settings
from hivemind_exp.swarm import keys
from hivemind_exp.swarm.records import (
    ChunkWire,
    DropCounter,
    EvalSummary,
    HeartbeatWire,
    ManifestWire,
    OutputRecord,
    OutputWire,
    RecordRejected,
    RewardWire,
    RoundState,
    RoundStateWire,
    WinnersWire,
    decode_wire,
    encode_for_store,
    encode_wire,
    reassemble,
    split_payload,
)
from hivemind_exp.swarm.settings import PROTOCOL_MAX_RECORD_BYTES, SwarmSettings

PEER_A = "QmPzZwkpeCwESmMgJsKcHAKMeU7QFEq6FhqU2MFmQPTuto"
PEER_B = "QmPMh1KP3Mn6T2sk6n7ZmwxGNGieZhPg4B3jgii5TqC7bT"


@pytest.fixture(scope="module")
def ident(tmp_path_factory: pytest.TempPathFactory):
    return load_identity(ensure_identity(tmp_path_factory.mktemp("id") / "swarm.pem"))


def _output(text: str = "The answer is 42.", qhash: str = "q1", peer: str = PEER_A) -> OutputWire:
    return OutputWire(peer_id=peer, round=3, stage=1, qhash=qhash,
                      record=OutputRecord(completion=text, final_answer="42", reward=1.5, meta={"pick": 2}))


# ---------------------------------------------------------------- wire schemas


@pytest.mark.parametrize("wire", [
    _output(),
    RewardWire(peer_id=PEER_A, round=0, stage=2, reward=-0.25),
    WinnersWire(peer_id=PEER_A, round=7, winners=[PEER_A, PEER_B]),
    RoundStateWire(peer_id=PEER_A, state=RoundState(round=4, stage=0, stage_deadline_unix=1.7e9, published_at=1.7e9)),
    HeartbeatWire(peer_id=PEER_A, name="quick-amber-otter", last_seen=1.7e9,
                  wallet="0x" + "ab" * 20, maddrs=["/ip4/127.0.0.1/tcp/1/p2p/" + PEER_A]),
    HeartbeatWire(peer_id=PEER_A, last_seen=1.7e9,
                  evaluation=EvalSummary(round=9, accuracy=0.25, format_rate=1.0, problems=32, at=1.7e9)),
    ManifestWire(peer_id=PEER_A, sha256="0" * 64, size=100, n_chunks=1),
    ChunkWire(peer_id=PEER_A, sha256="0" * 64, index=0, n_chunks=1, data=b"\x00\xff"),
])
def test_every_kind_roundtrips(wire) -> None:
    raw = encode_wire(wire)
    assert decode_wire(raw, max_bytes=8192, owner_peer_id=PEER_A) == wire


def _raw(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _good_dict() -> dict:
    return msgpack.unpackb(encode_wire(_output()), raw=False)


@pytest.mark.parametrize("mutate, reason", [
    (lambda d: d.update(kind="telepathy"), "schema"),
    (lambda d: d.update(extra_field=1), "schema"),
    (lambda d: d.update(round="3"), "schema"),  # no coercion from strings
    (lambda d: d.update(round=-1), "schema"),
    (lambda d: d.update(peer_id="not-a-peer-id"), "schema"),
    (lambda d: d.update(qhash="has space"), "schema"),
    (lambda d: d["record"].update(reward=float("nan")), "schema"),
    (lambda d: d["record"].update(reward="1.0"), "schema"),
    (lambda d: d["record"].update(completion=b"bytes, not text"), "schema"),
    (lambda d: d["record"].pop("completion"), "schema"),
])
def test_schema_violations_rejected(mutate, reason: str) -> None:
    d = _good_dict()
    mutate(d)
    with pytest.raises(RecordRejected) as err:
        decode_wire(_raw(d), max_bytes=8192)
    assert err.value.reason == reason


def test_garbage_oversize_and_forged_claims() -> None:
    for junk in (b"\xc1", b"\x92\x01", os.urandom(64)):
        with pytest.raises(RecordRejected) as err:
            decode_wire(junk, max_bytes=8192)
        assert err.value.reason in ("malformed", "schema")
    with pytest.raises(RecordRejected) as err:
        decode_wire("text", max_bytes=8192)  # type: ignore[arg-type]
    assert err.value.reason == "malformed"
    big = encode_wire(_output("x" * 9000))
    with pytest.raises(RecordRejected) as err:
        decode_wire(big, max_bytes=8192)
    assert err.value.reason == "oversize"
    with pytest.raises(RecordRejected) as err:
        decode_wire(encode_wire(_output()), max_bytes=8192, owner_peer_id=PEER_B)
    assert err.value.reason == "forged" and PEER_B in str(err.value)


def test_public_models_validate_input() -> None:
    with pytest.raises(ValueError):
        OutputRecord(completion="x", meta={f"k{i}": i for i in range(40)})
    with pytest.raises(ValueError):
        HeartbeatWire(peer_id=PEER_A, last_seen=1.0, wallet="0x123")
    with pytest.raises(ValueError):
        WinnersWire(peer_id=PEER_A, round=1, winners=[PEER_A] * 300)
    assert OutputRecord(completion="x", reward=1).reward == 1.0
    for bad in (dict(accuracy=1.5), dict(format_rate=-0.1), dict(accuracy=float("nan")), dict(problems=0)):
        fields = dict(round=1, accuracy=0.5, format_rate=0.5, problems=8, at=1.7e9) | bad
        with pytest.raises(ValueError):
            EvalSummary(**fields)


def test_heartbeat_with_a_bad_evaluation_is_dropped() -> None:
    d = msgpack.unpackb(encode_wire(HeartbeatWire(peer_id=PEER_A, last_seen=1.7e9)), raw=False)
    d["evaluation"] = {"round": 1, "accuracy": 7.0, "format_rate": 0.5, "problems": 8, "at": 1.7e9}
    with pytest.raises(RecordRejected) as err:
        decode_wire(_raw(d), max_bytes=8192)
    assert err.value.reason == "schema"


# ---------------------------------------------------------------- chunking


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(min_value=1, max_value=70_000), cap=st.sampled_from([2048, 4096, 8192, 11264]))
def test_chunking_roundtrip_any_size(size: int, cap: int) -> None:
    wire = _output("é" * (size // 2) + "a" * (size % 2))
    value, chunks, manifest = encode_for_store(wire, max_record_bytes=cap, max_payload_bytes=1 << 20)
    assert len(value) <= cap
    for chunk in chunks:
        assert len(encode_wire(chunk)) <= cap
    if manifest is None:
        assert decode_wire(value, max_bytes=cap) == wire and not chunks
    else:
        assert decode_wire(value, max_bytes=cap) == manifest
        assert manifest.n_chunks == len(chunks) == math.ceil(manifest.size / (cap - 320))
        got = reassemble(manifest, {c.index: c for c in reversed(chunks)}, max_payload_bytes=1 << 20,
                         max_record_bytes=cap)
        assert got == wire


def _split(text_len: int = 30_000):
    wire = _output("z" * text_len)
    payload = encode_wire(wire)
    manifest, chunks = split_payload(payload, peer_id=PEER_A, max_record_bytes=8192)
    return wire, payload, manifest, {c.index: c for c in chunks}


def test_reassembly_detects_tampering_and_gaps() -> None:
    wire, payload, manifest, chunks = _split()
    assert manifest.sha256 == hashlib.sha256(payload).hexdigest() and manifest.size == len(payload)

    missing = dict(chunks)
    del missing[1]
    with pytest.raises(RecordRejected) as err:
        reassemble(manifest, missing, max_payload_bytes=1 << 20, max_record_bytes=8192)
    assert err.value.reason == "incomplete"

    flipped = dict(chunks)
    data = bytearray(flipped[2].data)
    data[10] ^= 1
    flipped[2] = flipped[2].model_copy(update={"data": bytes(data)})
    with pytest.raises(RecordRejected) as err:
        reassemble(manifest, flipped, max_payload_bytes=1 << 20, max_record_bytes=8192)
    assert err.value.reason == "chunk_mismatch"

    swapped = dict(chunks)
    swapped[0], swapped[1] = chunks[1], chunks[0]
    with pytest.raises(RecordRejected) as err:
        reassemble(manifest, swapped, max_payload_bytes=1 << 20, max_record_bytes=8192)
    assert err.value.reason == "chunk_mismatch"

    other_owner = {i: c.model_copy(update={"peer_id": PEER_B}) for i, c in chunks.items()}
    with pytest.raises(RecordRejected) as err:
        reassemble(manifest, other_owner, max_payload_bytes=1 << 20, max_record_bytes=8192)
    assert err.value.reason == "chunk_mismatch"


def test_manifest_lies_are_rejected() -> None:
    wire, payload, manifest, chunks = _split()
    with pytest.raises(RecordRejected) as err:  # promises more than the reader accepts
        reassemble(manifest, chunks, max_payload_bytes=len(payload) - 1, max_record_bytes=8192)
    assert err.value.reason == "oversize"
    absurd = manifest.model_copy(update={"n_chunks": 4000})
    with pytest.raises(RecordRejected) as err:
        reassemble(absurd, chunks, max_payload_bytes=1 << 20, max_record_bytes=8192)
    assert err.value.reason == "schema"
    # A manifest may not stand for another manifest (no unbounded indirection).
    inner = encode_wire(manifest)
    m2, c2 = split_payload(inner, peer_id=PEER_A, max_record_bytes=8192)
    with pytest.raises(RecordRejected) as err:
        reassemble(m2, {c.index: c for c in c2}, max_payload_bytes=1 << 20, max_record_bytes=8192)
    assert err.value.reason == "schema"
    # Chunks of peer A's record cannot be passed off as peer B's.
    forged = manifest.model_copy(update={"peer_id": PEER_B})
    relabelled = {i: c.model_copy(update={"peer_id": PEER_B}) for i, c in chunks.items()}
    with pytest.raises(RecordRejected) as err:
        reassemble(forged, relabelled, max_payload_bytes=1 << 20, max_record_bytes=8192)
    assert err.value.reason == "forged"


def test_payload_cap_on_publish() -> None:
    with pytest.raises(ValueError, match="dht_max_payload_bytes"):
        encode_for_store(_output("x" * 50_000), max_record_bytes=8192, max_payload_bytes=40_000)


# ---------------------------------------------------------------- signed subkeys


def test_subkey_roundtrip_names_owner(ident) -> None:
    sub = keys.make_subkey("q-17", ident.public_key_ssh)
    parsed = keys.parse_subkey(sub)
    assert parsed.tag == "q-17" and parsed.owner_peer_id == ident.peer_id
    assert keys.parse_subkey(keys.make_subkey("", ident.public_key_ssh)).tag == ""
    with pytest.raises(ValueError):
        keys.make_subkey("bad tag!", ident.public_key_ssh)


@pytest.mark.parametrize("bad", [
    "text subkey",
    b"q1",
    b"q1[owner:ssh-rsa AAAA]",
    b"bad tag[owner:KEY]",
])
def test_bad_subkeys_rejected(ident, bad) -> None:
    with pytest.raises(ValueError):
        keys.parse_subkey(bad)


def test_subkey_with_two_owners_or_trailing_bytes(ident) -> None:
    marker = keys.owner_marker(ident.public_key_ssh)
    with pytest.raises(ValueError, match="2 owner markers"):
        keys.parse_subkey(b"q" + marker + marker)
    with pytest.raises(ValueError, match="after the owner marker"):
        keys.parse_subkey(b"q" + marker + b"tail")


def test_key_names_are_distinct() -> None:
    names = {keys.outputs_key("ns", 1, 0, PEER_A), keys.outputs_key("ns", 1, 0, PEER_B),
             keys.outputs_key("ns", 10, 0, PEER_A), keys.rewards_key("ns", 1, 0), keys.winners_key("ns", 1),
             keys.round_state_key("ns"), keys.peers_key("ns"), keys.blob_key("ns", PEER_A, "0" * 64),
             keys.outputs_key("other", 1, 0, PEER_A)}
    assert len(names) == 9


def test_drop_counter_counts_by_reason() -> None:
    counter = DropCounter()
    counter.drop("schema", "x")
    counter.rejected(RecordRejected("forged", "y"))
    counter.drop("schema")
    assert counter.snapshot() == {"schema": 2, "forged": 1}


# ---------------------------------------------------------------- settings


def test_settings_defaults_and_lists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    s = load_settings(SwarmSettings)
    assert s.host_maddrs == ["/ip4/0.0.0.0/tcp/38331"] and s.initial_peers == [] and s.coordinator_peer_id is None
    assert s.dht_max_record_bytes + 1024 <= PROTOCOL_MAX_RECORD_BYTES
    peers = f"/ip4/10.0.0.1/tcp/38331/p2p/{PEER_A}, /dns4/boot.example/tcp/38331/p2p/{PEER_B}"
    monkeypatch.setenv("RLSWARM_INITIAL_PEERS", peers)
    monkeypatch.setenv("RLSWARM_HOST_MADDRS", '["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic"]')
    s = load_settings(SwarmSettings)
    assert s.initial_peers == [p.strip() for p in peers.split(",")]
    assert s.host_maddrs == ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic"]


@pytest.mark.parametrize("field, value, needle", [
    ("initial_peers", ["/ip4/10.0.0.1/tcp/38331"], "/p2p/PEER_ID"),
    ("initial_peers", ["10.0.0.1:38331"], "not a multiaddr"),
    ("host_maddrs", [], "at least one"),
    ("host_maddrs", ["/ip4/0.0.0.0"], "/tcp/PORT"),
    ("announce_maddrs", ["/ip4/1.2.3.4/tcp/0"], "port 0"),
    ("dht_max_record_bytes", 20000, "less than or equal"),
    ("coordinator_peer_id", "0xabc", "peer ID"),
    ("dht_namespace", "has space", "letters"),
])
def test_settings_errors_name_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, field: str, value: object,
                                      needle: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError) as err:
        load_settings(SwarmSettings, **{field: value})
    assert needle in err.value.message and "--" + field.replace("_", "-") in err.value.message
