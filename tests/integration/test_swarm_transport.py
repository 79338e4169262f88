"""The swarm transport on a real 3-peer Hivemind DHT: exchange, trust, and hostile records."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import msgpack
import pytest

from hivemind_exp.swarm.identity import load_peer_id
from hivemind_exp.swarm import keys
from hivemind_exp.swarm.hivemind_transport import HivemindTransport
from hivemind_exp.swarm.records import (
    EvalSummary,
    OutputRecord,
    OutputWire,
    RoundState,
    RoundStateWire,
    encode_for_store,
    encode_wire,
)
from hivemind_exp.swarm.transport import SwarmClosedError, SwarmTransport
from tests.fixtures.swarm import fresh_round

pytestmark = pytest.mark.slow  # multi-process: DHT child processes and p2p daemons


def _outputs(peer_index: int, n: int = 3, big: int = 0) -> dict[str, OutputRecord]:
    out = {f"q{j}": OutputRecord(completion=f"peer {peer_index} answers question {j}: {j * peer_index}",
                                 final_answer=str(j * peer_index), reward=float(j), meta={"peer": peer_index})
           for j in range(n)}
    if big:
        text = "".join(chr(0x41 + (i * 7 + peer_index) % 50) for i in range(big))
        out["big"] = OutputRecord(completion=text, final_answer=None)
    return out


def test_peer_ids_match_the_p2p_daemon(swarm3: list[HivemindTransport]) -> None:
    for peer in swarm3:
        assert isinstance(peer, SwarmTransport)
        assert peer.peer_id == load_peer_id(peer.identity.path)
        maddrs = peer.visible_maddrs()
        assert maddrs and all(m.endswith(f"/p2p/{peer.peer_id}") for m in maddrs)
    assert len({p.peer_id for p in swarm3}) == 3


def test_peer_directory_lists_everyone(swarm3: list[HivemindTransport]) -> None:
    wallet = "0x" + "12" * 20
    # The shared swarm may be older than the peer TTL by now: heartbeat like a live node does.
    for peer in swarm3[:2]:
        assert peer.heartbeat()
    evaluation = EvalSummary(round=4, accuracy=0.25, format_rate=0.75, problems=16, at=time.time())
    assert swarm3[2].heartbeat(wallet=wallet, evaluation=evaluation)
    for reader in swarm3:
        listed = {p.peer_id: p for p in reader.list_peers(timeout=10)}
        assert set(listed) == {p.peer_id for p in swarm3}
        assert [listed[p.peer_id].name for p in swarm3] == ["peer0", "peer1", "peer2"]
        assert listed[swarm3[2].peer_id].wallet == wallet
        assert listed[swarm3[2].peer_id].evaluation == evaluation
        assert listed[swarm3[0].peer_id].evaluation is None
        assert abs(listed[swarm3[0].peer_id].last_seen - time.time()) < 120


def test_outputs_cross_peers_with_chunked_records(swarm3: list[HivemindTransport]) -> None:
    r = fresh_round()
    published = {p.peer_id: _outputs(i, big=30_000 if i == 1 else 0) for i, p in enumerate(swarm3)}
    for i, peer in enumerate(swarm3):
        assert peer.publish_outputs(r, 0, published[peer.peer_id])
    for reader in swarm3:
        assert reader.fetch_outputs(r, 0, timeout=15) == published
    # Another stage of the same round is a different key: nothing there yet.
    assert swarm3[0].fetch_outputs(r, 1, timeout=5) == {}
    # Explicit peer lists restrict the read; unknown peers are simply absent.
    only = swarm3[2].fetch_outputs(r, 0, timeout=10, peers=[swarm3[1].peer_id, "QmUnknownUnknownUnknownUnknownUnknownUnknown1"])
    assert only == {swarm3[1].peer_id: published[swarm3[1].peer_id]}


def test_republish_replaces_own_output(swarm3: list[HivemindTransport]) -> None:
    r = fresh_round()
    a, b = swarm3[0], swarm3[1]
    assert a.publish_outputs(r, 2, {"q": OutputRecord(completion="first")})
    assert a.publish_outputs(r, 2, {"q": OutputRecord(completion="second")})
    assert b.fetch_outputs(r, 2, timeout=10, peers=[a.peer_id]) == {a.peer_id: {"q": OutputRecord(completion="second")}}


def test_rewards_and_winners(swarm3: list[HivemindTransport]) -> None:
    r = fresh_round()
    for i, peer in enumerate(swarm3):
        assert peer.publish_reward(r, 2, 0.5 * i)
        assert peer.publish_winners(r, [swarm3[(i + 1) % 3].peer_id, swarm3[0].peer_id])
    expected_rewards = {p.peer_id: 0.5 * i for i, p in enumerate(swarm3)}
    expected_winners = {p.peer_id: [swarm3[(i + 1) % 3].peer_id, swarm3[0].peer_id] for i, p in enumerate(swarm3)}
    for reader in swarm3:
        assert reader.fetch_rewards(r, 2, timeout=10) == expected_rewards
        assert reader.fetch_winners(r, timeout=10) == expected_winners
    assert swarm3[0].fetch_rewards(r, 1, timeout=5) == {}


def test_round_state_trusted_only_from_the_coordinator(swarm3: list[HivemindTransport]) -> None:
    coordinator, peer, impostor = swarm3
    assert all(p.settings.coordinator_peer_id == coordinator.peer_id for p in swarm3)
    deadline = time.time() + 90
    assert coordinator.publish_round_state(7, 1, deadline)
    before = peer.drop_counts().get("untrusted", 0)
    assert impostor.publish_round_state(999, 0, deadline + 999)  # any peer can write; nobody trusts it
    state = peer.fetch_round_state(timeout=10)
    assert isinstance(state, RoundState) and (state.round, state.stage) == (7, 1)
    assert state.stage_deadline_unix == pytest.approx(deadline)
    assert peer.drop_counts().get("untrusted", 0) > before
    assert coordinator.publish_round_state(8, 0, deadline + 60)
    assert (impostor.fetch_round_state(timeout=10) or RoundState(round=0, stage=0, stage_deadline_unix=0,
                                                                 published_at=0)).round == 8


def test_no_coordinator_configured_means_no_round_state(tmp_path, swarm3: list[HivemindTransport]) -> None:
    from tests.fixtures.swarm import swarm_settings

    assert swarm3[0].publish_round_state(3, 0, time.time() + 60)
    loner = HivemindTransport.start(swarm_settings(tmp_path / "x.pem", swarm3[0].visible_maddrs(),
                                                   coordinator_peer_id=None))
    try:
        assert loner.fetch_round_state(timeout=10) is None
        assert loner.drop_counts().get("untrusted", 0) >= 1
    finally:
        loner.close()
    with pytest.raises(SwarmClosedError):
        loner.fetch_rewards(0, 0)


def test_later_heartbeats_refresh_a_peer_and_repeat_its_name(tmp_path, swarm3: list[HivemindTransport]) -> None:
    """The node's heartbeat thread calls heartbeat() with no arguments after the first; the name stays."""
    from tests.fixtures.swarm import swarm_settings

    extra = HivemindTransport.start(swarm_settings(tmp_path / "beat.pem", swarm3[0].visible_maddrs()))
    try:
        assert extra.heartbeat(name="beater")
        first = {p.peer_id: p for p in swarm3[0].list_peers(timeout=10)}[extra.peer_id]
        assert first.name == "beater"
        time.sleep(1.0)
        assert extra.heartbeat()
        later = {p.peer_id: p for p in swarm3[0].list_peers(timeout=10)}[extra.peer_id]
        assert later.last_seen > first.last_seen and later.name == "beater"
    finally:
        extra.close()
    assert not extra.is_alive()


def test_fetch_respects_its_deadline(swarm3: list[HivemindTransport]) -> None:
    r = fresh_round()
    assert swarm3[1].publish_outputs(r, 0, _outputs(1))
    start = time.monotonic()
    assert swarm3[0].fetch_outputs(r, 0, timeout=0.0) == {}
    assert time.monotonic() - start < 1.5
    start = time.monotonic()
    swarm3[0].fetch_outputs(r + 1, 0, timeout=3.0)
    assert time.monotonic() - start < 5.0


def test_publish_refuses_records_over_the_payload_cap(swarm3: list[HivemindTransport]) -> None:
    too_big = OutputRecord(completion="x" * (swarm3[0].settings.dht_max_payload_bytes + 10))
    with pytest.raises(ValueError, match="dht_max_payload_bytes"):
        swarm3[0].publish_outputs(fresh_round(), 0, {"q": too_big})


# ---------------------------------------------------------------- hostile records


def _total_drops(peers: list[HivemindTransport]) -> Counter[str]:
    total: Counter[str] = Counter()
    for peer in peers:
        total.update(peer.drop_counts())
    return total


def _attack_and_fetch(swarm3: list[HivemindTransport], attack: Callable[[], None], reader: HivemindTransport, r: int,
                      victim_id: str, expected: dict) -> dict[str, int]:
    """Run the attack, fetch, check nothing hostile came back; drops the honest peers counted meanwhile.

    Honest peers count a hostile record when the attacker asks them to store it, and again
    when a lookup of theirs gets it served by the attacker.
    """
    before = _total_drops(swarm3)
    attack()
    got = reader.fetch_outputs(r, 0, timeout=10, peers=[victim_id])
    assert got == expected, "a hostile record leaked into a fetch"
    after = _total_drops(swarm3)
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def test_record_with_victims_key_but_wrong_signature_is_dropped(swarm3, attacker) -> None:
    victim, reader = swarm3[1], swarm3[2]
    r = fresh_round()
    honest = _outputs(1, n=2)
    assert victim.publish_outputs(r, 0, honest)
    forged = OutputWire(peer_id=victim.peer_id, round=r, stage=0, qhash="q0",
                        record=OutputRecord(completion="forged answer", final_answer="-1"))
    delta = _attack_and_fetch(swarm3, lambda: attacker.store(
        keys.outputs_key("rl_swarm", r, 0, victim.peer_id), keys.make_subkey("q0", victim.identity.public_key_ssh),
        encode_wire(forged)), reader, r, victim.peer_id, {victim.peer_id: honest})
    assert delta.get("bad_signature", 0) >= 1, delta


def test_validly_signed_record_claiming_another_peer_is_dropped(swarm3, attacker) -> None:
    victim, reader = swarm3[1], swarm3[0]
    r = fresh_round()
    honest = _outputs(1, n=1)
    assert victim.publish_outputs(r, 0, honest)
    claim = OutputWire(peer_id=victim.peer_id, round=r, stage=0, qhash="q9",
                       record=OutputRecord(completion="not really the victim"))
    delta = _attack_and_fetch(swarm3, lambda: attacker.store(
        keys.outputs_key("rl_swarm", r, 0, victim.peer_id), keys.make_subkey("q9", attacker.public_key_ssh),
        encode_wire(claim)), reader, r, victim.peer_id, {victim.peer_id: honest})
    assert delta.get("forged", 0) >= 1, delta


def test_own_record_under_a_victims_key_is_dropped(swarm3, attacker) -> None:
    victim, reader = swarm3[2], swarm3[1]
    r = fresh_round()
    honest = _outputs(2, n=1)
    assert victim.publish_outputs(r, 0, honest)
    # Honest about who wrote it, but filed under the victim's outputs: passes the DHT, fails the reader.
    squat = OutputWire(peer_id=attacker.peer_id, round=r, stage=0, qhash="q5",
                       record=OutputRecord(completion="squatting"))
    delta = _attack_and_fetch(swarm3, lambda: attacker.store(
        keys.outputs_key("rl_swarm", r, 0, victim.peer_id), keys.make_subkey("q5", attacker.public_key_ssh),
        encode_wire(squat)), reader, r, victim.peer_id, {victim.peer_id: honest})
    assert delta.get("wrong_key", 0) >= 1, delta


@pytest.mark.parametrize("kind", ["garbage", "schema", "oversize", "unsigned"])
def test_malformed_and_oversized_records_are_dropped(swarm3, attacker, kind: str) -> None:
    reader = swarm3[0]
    r = fresh_round()
    key = keys.outputs_key("rl_swarm", r, 0, attacker.peer_id)
    own = keys.make_subkey("q0", attacker.public_key_ssh)
    valid = encode_wire(OutputWire(peer_id=attacker.peer_id, round=r, stage=0, qhash="q0",
                                   record=OutputRecord(completion="fine")))
    bad_schema = {"kind": "output", "peer_id": attacker.peer_id, "round": str(r), "stage": 0, "qhash": "q0",
                  "record": {"completion": "ok"}}
    subkey, value = {
        "garbage": (own, b"\xc1\xc1 definitely not msgpack"),
        "schema": (own, msgpack.packb(bad_schema, use_bin_type=True)),
        "oversize": (own, b"\x00" * 13_000),
        "unsigned": (b"q0", valid),
    }[kind]
    delta = _attack_and_fetch(swarm3, lambda: attacker.store(key, subkey, value), reader, r, attacker.peer_id, {})
    wanted = {"garbage": ("malformed",), "schema": ("schema",), "oversize": ("oversize",), "unsigned": ("unsigned",)}
    assert sum(delta.get(k, 0) for k in wanted[kind]) >= 1, delta
    # The honest peers still work afterwards.
    r2 = fresh_round()
    assert swarm3[1].publish_reward(r2, 0, 1.0)
    assert reader.fetch_rewards(r2, 0, timeout=10) == {swarm3[1].peer_id: 1.0}


def test_tampered_chunk_is_dropped(swarm3, attacker) -> None:
    # The attacker publishes a chunked record of its own, then one chunk with other bytes.
    reader = swarm3[1]
    r = fresh_round()
    wire = OutputWire(peer_id=attacker.peer_id, round=r, stage=0, qhash="big",
                      record=OutputRecord(completion="y" * 20_000))
    value, chunks, manifest = encode_for_store(wire, max_record_bytes=8192, max_payload_bytes=1 << 20)
    assert manifest is not None and len(chunks) >= 3
    bkey = keys.blob_key("rl_swarm", attacker.peer_id, manifest.sha256)
    for chunk in chunks:
        data = chunk.data if chunk.index != 1 else b"z" * len(chunk.data)
        attacker.store(bkey, keys.make_subkey(str(chunk.index), attacker.public_key_ssh),
                       encode_wire(chunk.model_copy(update={"data": data})))
    attacker.store(keys.outputs_key("rl_swarm", r, 0, attacker.peer_id),
                   keys.make_subkey("big", attacker.public_key_ssh), value)
    before = reader.drop_counts().get("chunk_mismatch", 0)
    assert reader.fetch_outputs(r, 0, timeout=10, peers=[attacker.peer_id]) == {}
    # Each chunk is validly signed, so only the reader's reassembly can catch this.
    assert reader.drop_counts().get("chunk_mismatch", 0) > before


def test_honest_chunked_record_from_the_attacker_peer_is_accepted(swarm3, attacker) -> None:
    # Control for the test above: the same path with intact chunks is returned, so the drop is the tamper.
    reader = swarm3[1]
    r = fresh_round()
    record = OutputRecord(completion="w" * 20_000)
    wire = OutputWire(peer_id=attacker.peer_id, round=r, stage=0, qhash="big", record=record)
    value, chunks, manifest = encode_for_store(wire, max_record_bytes=8192, max_payload_bytes=1 << 20)
    assert manifest is not None
    bkey = keys.blob_key("rl_swarm", attacker.peer_id, manifest.sha256)
    for chunk in chunks:
        attacker.store(bkey, keys.make_subkey(str(chunk.index), attacker.public_key_ssh), encode_wire(chunk))
    attacker.store(keys.outputs_key("rl_swarm", r, 0, attacker.peer_id),
                   keys.make_subkey("big", attacker.public_key_ssh), value)
    assert reader.fetch_outputs(r, 0, timeout=10, peers=[attacker.peer_id]) == {attacker.peer_id: {"big": record}}


def test_forged_round_state_with_coordinators_key_is_dropped(swarm3, attacker) -> None:
    coordinator, reader = swarm3[0], swarm3[2]
    assert coordinator.publish_round_state(11, 2, time.time() + 90)
    fake = RoundStateWire(peer_id=coordinator.peer_id,
                          state=RoundState(round=12345, stage=0, stage_deadline_unix=time.time() + 999,
                                           published_at=time.time() + 500))
    attacker.store(keys.round_state_key("rl_swarm"), keys.make_subkey("", coordinator.identity.public_key_ssh),
                   encode_wire(fake), ttl=7200)
    state = reader.fetch_round_state(timeout=10)
    assert state is not None and state.round == 11
