"""The in-process transport keeps the DHT transport's record rules."""

import msgpack
import pytest

from hivemind_exp.swarm import keys
from hivemind_exp.swarm.memory_transport import MemorySwarm
from hivemind_exp.swarm.records import OutputRecord, RolloutGroup, TaskSpecRecord
from hivemind_exp.swarm.transport import SwarmClosedError, SwarmTransport

A = "QmAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
B = "QmBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"
C = "QmCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"


def group(q: str = "2 + 3 =", n: int = 2) -> RolloutGroup:
    return RolloutGroup(spec=TaskSpecRecord(task="chain_sum", config_hash="0123456789abcdef", seed=5, index=1),
                        question=q, completions=[f"<answer>{i}</answer>" for i in range(n)])


@pytest.fixture
def swarm():
    s = MemorySwarm()
    peers = {p: s.transport(p, coordinator_peer_id=C) for p in (A, B, C)}
    for t in peers.values():
        t.heartbeat(name=t.peer_id[-4:])
    return s, peers


def test_implements_the_protocol(swarm):
    _, peers = swarm
    assert isinstance(peers[A], SwarmTransport)


def test_rollouts_round_trip_per_peer_and_round(swarm):
    _, p = swarm
    assert p[A].publish_rollouts(3, {"k1": group(), "k2": group("1 + 1 =")})
    assert p[B].publish_rollouts(3, {"k1": group("9 - 4 =")})
    got = p[C].fetch_rollouts(3)
    assert set(got) == {A, B}
    assert got[A]["k2"].question == "1 + 1 =" and got[B]["k1"].question == "9 - 4 ="
    assert p[C].fetch_rollouts(4) == {}


def test_forged_and_malformed_values_are_dropped_and_counted(swarm):
    s, p = swarm
    key = keys.rollouts_key("rl-swarm", 1, A)
    good = p[B]  # B writes a record that claims to be A's, under A's key
    from hivemind_exp.swarm.records import RolloutsWire, encode_wire

    forged = encode_wire(RolloutsWire(peer_id=A, round=1, key="k", group=group()))
    s.put_raw(key, "k", B, forged)  # signed by B, claims A
    s.put_raw(key, "junk", A, b"\x00not msgpack")
    s.put_raw(key, "extra", A, msgpack.packb({"kind": "rollouts", "peer_id": A, "round": 1, "key": "extra",
                                              "group": {**group().model_dump(), "answer": "5"}}))
    assert good.fetch_rollouts(1, peers=[A]) == {}
    drops = good.drop_counts()
    assert drops.get("forged") == 1 and drops.get("malformed") == 1 and drops.get("schema") == 1


def test_a_record_under_the_wrong_round_is_dropped(swarm):
    s, p = swarm
    from hivemind_exp.swarm.records import RolloutsWire, encode_wire

    s.put_raw(keys.rollouts_key("rl-swarm", 2, A), "k", A,
              encode_wire(RolloutsWire(peer_id=A, round=1, key="k", group=group())))
    assert p[B].fetch_rollouts(2) == {}
    assert p[B].drop_counts().get("wrong_key") == 1


def test_payload_cap_refuses_at_publish():
    s = MemorySwarm(max_payload_bytes=4096)
    t = s.transport(A)
    with pytest.raises(ValueError, match="dht_max_payload_bytes"):
        t.publish_outputs(0, 1, {"q": OutputRecord(completion="x" * 5000)})


def test_round_state_trusted_from_the_coordinator_only(swarm):
    _, p = swarm
    p[A].publish_round_state(7, 1, 1e9)
    assert p[B].fetch_round_state() is None
    assert p[B].drop_counts().get("untrusted") == 1
    p[C].publish_round_state(8, 1, 1e9)
    assert p[B].fetch_round_state().round == 8


def test_partition_cuts_both_ways_and_heals(swarm):
    s, p = swarm
    s.partition(A)
    assert p[A].publish_reward(0, 1, 0.5) is False
    assert p[A].list_peers() == []
    s.partition(A, cut=False)
    assert p[A].publish_reward(0, 1, 0.5) is True
    assert p[B].fetch_rewards(0, 1) == {A: 0.5}


def test_records_expire_with_the_clock():
    now = [1000.0]
    s = MemorySwarm(clock=lambda: now[0])
    t = s.transport(A, peer_ttl=60)
    t.heartbeat()
    assert [x.peer_id for x in t.list_peers()] == [A]
    now[0] += 61
    assert t.list_peers() == []


def test_closed_transport_refuses_use(swarm):
    _, p = swarm
    p[A].close()
    with pytest.raises(SwarmClosedError):
        p[A].fetch_rollouts(0)
