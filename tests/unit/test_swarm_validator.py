"""The DHT process's record validator on real RSA-signed records (no network): bounded numbers,
subkey tags per kind, and the per-owner subkey cap (issue 12)."""

from __future__ import annotations

import msgpack
import pytest

from hivemind_exp.swarm.identity import ensure_identity, load_identity
from hivemind_exp.swarm import keys
from hivemind_exp.swarm.records import MAX_SUBKEYS_PER_OWNER, OutputRecord, OutputWire, RewardWire, encode_wire

pytest.importorskip("hivemind")


@pytest.fixture(scope="module")
def idents(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("ids")
    return [load_identity(ensure_identity(base / f"p{i}.pem")) for i in range(2)]


def _record(ident, key: str, tag: str, raw: bytes):
    from hivemind.dht.routing import DHTID
    from hivemind.dht.validation import DHTRecord
    from hivemind.utils.serializer import MSGPackSerializer

    from hivemind_exp.swarm.validator import SwarmRecordValidator

    signer = SwarmRecordValidator(ident.hivemind_private_key())
    rec = DHTRecord(key=DHTID.generate(source=key).to_bytes(),
                    subkey=MSGPackSerializer.dumps(keys.make_subkey(tag, ident.public_key_ssh)),
                    value=MSGPackSerializer.dumps(raw), expiration_time=1e10)
    return DHTRecord(rec.key, rec.subkey, signer.sign_value(rec), rec.expiration_time)


def _honest(idents, **kw):
    from hivemind_exp.swarm.validator import SwarmRecordValidator

    return SwarmRecordValidator(idents[1].hivemind_private_key(), **kw)


def test_unbounded_numbers_are_refused(idents) -> None:
    atk = idents[0]
    v = _honest(idents)
    key = keys.rewards_key("rl_swarm", 1, 0)
    ok = _record(atk, key, "", encode_wire(RewardWire(peer_id=atk.peer_id, round=1, stage=0, reward=2.5)))
    assert v.validate(ok)
    for reward in (1.7e308, float("inf"), float("nan"), 101.0, -1e6):
        raw = msgpack.packb({"kind": "reward", "peer_id": atk.peer_id, "round": 1, "stage": 0, "reward": reward})
        assert not v.validate(_record(atk, key, "", raw)), reward
    out = {"kind": "output", "peer_id": atk.peer_id, "round": 1, "stage": 0, "qhash": "q1",
           "record": {"completion": "x", "final_answer": None, "reward": 1e300, "meta": {}}}
    assert not v.validate(_record(atk, keys.outputs_key("rl_swarm", 1, 0, atk.peer_id), "q1", msgpack.packb(out)))
    out["record"] = {"completion": "x", "final_answer": None, "reward": None, "meta": {"n": 2**63}}
    assert not v.validate(_record(atk, keys.outputs_key("rl_swarm", 1, 0, atk.peer_id), "q1", msgpack.packb(out)))
    assert v.counts["schema"] == 7


def test_fixed_tag_kinds_allow_one_record_per_owner(idents) -> None:
    atk = idents[0]
    v = _honest(idents)
    raw = encode_wire(RewardWire(peer_id=atk.peer_id, round=1, stage=0, reward=1.0))
    key = keys.rewards_key("rl_swarm", 1, 0)
    assert not any(v.validate(_record(atk, key, f"pad{i}", raw)) for i in range(5))
    assert v.counts["wrong_tag"] == 5
    wire = OutputWire(peer_id=atk.peer_id, round=1, stage=0, qhash="q1", record=OutputRecord(completion="a"))
    assert not v.validate(_record(atk, keys.outputs_key("rl_swarm", 1, 0, atk.peer_id), "q2", encode_wire(wire)))


def test_owner_subkey_cap_per_key(idents) -> None:
    atk = idents[0]
    v = _honest(idents, max_subkeys_per_owner=20)
    key = keys.outputs_key("rl_swarm", 1, 0, atk.peer_id)

    def out(i: int):
        wire = OutputWire(peer_id=atk.peer_id, round=1, stage=0, qhash=f"q{i}", record=OutputRecord(completion="a"))
        return _record(atk, key, f"q{i}", encode_wire(wire))

    records = [out(i) for i in range(30)]
    assert [v.validate(r) for r in records] == [True] * 20 + [False] * 10
    assert v.counts["owner_cap"] == 10
    assert v.validate(records[3])  # re-storing (or looking up) a counted record still passes
    # Another key of the same owner has its own allowance.
    other = OutputWire(peer_id=atk.peer_id, round=2, stage=0, qhash="q0", record=OutputRecord(completion="a"))
    assert v.validate(_record(atk, keys.outputs_key("rl_swarm", 2, 0, atk.peer_id), "q0", encode_wire(other)))
    assert MAX_SUBKEYS_PER_OWNER >= 256  # room for the largest questions_per_round


def test_cap_table_is_bounded() -> None:
    from hivemind_exp.swarm.validator import OwnerSubkeyCap

    cap = OwnerSubkeyCap(limit=2, max_tracked=50)
    for i in range(10_000):
        assert cap.admit(f"k{i}".encode(), "owner", b"s")
    assert len(cap._seen) == 50
