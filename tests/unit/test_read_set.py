"""The per-read peer cap: `read_set` on its own and through the in-memory transport."""

from __future__ import annotations

import hashlib
from collections import Counter

import base58
import pytest

from hivemind_exp.common.settings_base import SettingsError, load_settings
from hivemind_exp.swarm.memory_transport import MemorySwarm
from hivemind_exp.swarm.read_set import DEFAULT_MAX_PEERS_PER_READ, read_set, ring_position
from hivemind_exp.swarm.records import OutputRecord, RolloutGroup, TaskSpecRecord
from hivemind_exp.swarm.settings import SwarmSettings


def peer_ids(n: int, salt: str = "") -> list[str]:
    # Real-looking base58 multihash peer IDs (0x12 0x20 + 32 bytes), distinct per index.
    return [base58.b58encode(b"\x12\x20" + hashlib.sha256(f"{salt}peer{i}".encode()).digest()).decode()
            for i in range(n)]


def make_swarm(n: int, cap: int = DEFAULT_MAX_PEERS_PER_READ, round_num: int = 7, stage: int = 1):
    """n heartbeating peers, each published one stage output and one rollout group in `round_num`."""
    swarm = MemorySwarm()
    ids = peer_ids(n)
    ts = {p: swarm.transport(p, max_peers_per_read=cap) for p in ids}
    group = RolloutGroup(spec=TaskSpecRecord(task="chain_sum", config_hash="0123456789abcdef", seed=1, index=0),
                         question="1 + 1 =", completions=["<answer>2</answer>", "<answer>3</answer>"])
    for p, t in ts.items():
        assert t.heartbeat(name=p[-4:])
        assert t.publish_outputs(round_num, stage, {"q": OutputRecord(completion=f"from {p}")})
        assert t.publish_rollouts(round_num, {"g": group})
    return ids, ts


def test_the_cap_holds_and_the_reader_is_always_read() -> None:
    ids, ts = make_swarm(40, cap=16)
    for p, t in ts.items():
        got = t.fetch_outputs(7, 1)
        assert len(got) == 16 and p in got
        assert all(recs["q"].completion == f"from {peer}" for peer, recs in got.items())
        rollouts = t.fetch_rollouts(7)
        assert len(rollouts) == 16 and p in rollouts


def test_the_same_reader_round_and_stage_read_the_same_peers_on_a_fresh_transport() -> None:
    ids, ts = make_swarm(40, cap=16)
    reader = ids[3]
    first = set(ts[reader].fetch_outputs(7, 1))
    again = set(ts[reader].fetch_outputs(7, 1))
    # A restarted node: a new transport with the same peer ID over the same swarm.
    restarted = ts[ids[0]]._swarm.transport(reader, max_peers_per_read=16)  # noqa: SLF001 - same store
    assert first == again == set(restarted.fetch_outputs(7, 1))
    # The same peers at every stage of a round (answers and critiques come from the same peers),
    # and for the round's rollouts; another round reshuffles.
    assert set(ts[reader].fetch_rollouts(7)) == first
    assert read_set(ids, reader, 7, 16, namespace="rl-swarm") == sorted(first)  # the transport's namespace
    assert read_set(ids, reader, 8, 16, namespace="rl-swarm") != sorted(first)


def test_every_peer_is_read_by_someone_and_by_equally_many_readers() -> None:
    ids, ts = make_swarm(40, cap=16)
    read_by: Counter[str] = Counter()
    windows = set()
    for t in ts.values():
        got = t.fetch_outputs(7, 1)
        read_by.update(list(got))
        windows.add(frozenset(got))
    assert set(read_by) == set(ids)  # nobody's records go unread
    # The ring: each peer is read by itself and its 15 predecessors, no more and no fewer.
    assert set(read_by.values()) == {16}
    assert len(windows) == 40  # every reader has its own window


def test_coverage_holds_in_other_rounds_and_sizes() -> None:
    for n, cap in ((17, 16), (33, 16), (100, 8), (40, 2)):
        ids = peer_ids(n, salt=f"{n}/{cap}")
        for round_num in (0, 1, 12345):
            counts = Counter(p for r in ids for p in read_set(ids, r, round_num, cap))
            assert set(counts) == set(ids) and set(counts.values()) == {cap}, (n, cap, round_num)


def test_a_reader_cannot_steer_its_window() -> None:
    # The window follows the reader on a ring ordered by a hash of (namespace, round, peer id):
    # the same input gives the same set whatever order the candidates come in, and which peers
    # follow the reader is decided by their ring positions, not by the reader.
    ids = peer_ids(40)
    reader = ids[0]
    window = read_set(ids, reader, 5, 16, namespace="ns")
    assert read_set(list(reversed(ids)), reader, 5, 16, namespace="ns") == window
    ring = sorted(ids, key=lambda p: ring_position("ns", 5, p))
    i = ring.index(reader)
    assert window == sorted(ring[(i + k) % 40] for k in range(16))


def test_peers_the_game_must_read_are_kept() -> None:
    ids = peer_ids(40)
    reader = ids[0]
    window = read_set(ids, reader, 5, 16)
    outsider = next(p for p in ids if p not in window)
    with_it = read_set(ids, reader, 5, 16, always=[outsider])
    assert outsider in with_it and reader in with_it and len(with_it) == 16
    # The reader is read even when the directory does not list it yet.
    assert reader in read_set(ids[1:], reader, 5, 16) and len(read_set(ids[1:], reader, 5, 16)) == 16


@pytest.mark.parametrize("n", [2, 5, 16])
def test_up_to_the_cap_every_peer_is_read_as_before(n: int) -> None:
    ids, ts = make_swarm(n, cap=16)
    for t in ts.values():
        assert set(t.fetch_outputs(7, 1)) == set(ids)
        assert set(t.fetch_rollouts(7)) == set(ids)


def test_cap_zero_reads_every_peer_and_explicit_peers_are_read_whole() -> None:
    ids, ts = make_swarm(40, cap=0)
    assert set(ts[ids[0]].fetch_outputs(7, 1)) == set(ids)
    _, capped = make_swarm(40, cap=16)
    reader = capped[ids[0]]
    # The coordinator's "has everyone published" check names every peer: no cap applies.
    assert set(reader.fetch_outputs(7, 1, peers=ids)) == set(ids)
    assert set(reader.fetch_rollouts(7, peers=ids)) == set(ids)


def test_the_setting_defaults_to_16_and_a_bad_value_says_how_to_fix_it() -> None:
    assert load_settings(SwarmSettings).dht_max_peers_per_read == 16
    assert load_settings(SwarmSettings, dht_max_peers_per_read="0").dht_max_peers_per_read == 0
    assert load_settings(SwarmSettings, dht_max_peers_per_read="2").dht_max_peers_per_read == 2
    for bad in ("1", "-3", "many"):
        with pytest.raises(SettingsError) as err:
            load_settings(SwarmSettings, dht_max_peers_per_read=bad)
        assert "dht_max_peers_per_read" in err.value.message and "--dht-max-peers-per-read" in err.value.message
        assert "RLSWARM_DHT_MAX_PEERS_PER_READ" in err.value.message
    with pytest.raises(SettingsError) as err:
        load_settings(SwarmSettings, dht_max_peers_per_read="1")
    assert "at least 2" in err.value.message and "0 to read every peer" in err.value.message
    with pytest.raises(ValueError, match="at least 2"):
        MemorySwarm().transport(peer_ids(1)[0], max_peers_per_read=1)
