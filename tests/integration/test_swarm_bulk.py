"""Hundreds of 20-65 KB outputs through chunking across 3 peers, every byte verified."""

from __future__ import annotations

import hashlib
import random
import threading
import time

import pytest

from hivemind_exp.swarm.hivemind_transport import HivemindTransport
from hivemind_exp.swarm.records import OutputRecord
from tests.fixtures.swarm import fresh_round

pytestmark = pytest.mark.slow

PER_PEER = 70  # 210 values in all


def _text(rng: random.Random, size: int) -> str:
    # Mixed ASCII and multi-byte characters so chunk cuts fall inside UTF-8 sequences.
    alphabet = "abcdefghij klmnop qrstuv wxyz 0123456789 +-*/= éßø∑≈漢字\n"
    return "".join(rng.choices(alphabet, k=size))


def _fetch_until_complete(reader: HivemindTransport, r: int, published: dict[str, dict[str, OutputRecord]],
                          deadline: float) -> tuple[dict[str, dict[str, OutputRecord]], int]:
    """Fetch as a node does during a stage: again and again, keeping what arrived, until all is in.

    Right after three peers pushed ~9 MB at once, a lookup may skip a peer that answered
    late (hivemind blacklists it for a few seconds), so one fetch can come back short.
    """
    got: dict[str, dict[str, OutputRecord]] = {}
    calls = 0
    while time.monotonic() < deadline:
        calls += 1
        for peer_id, records in reader.fetch_outputs(r, 0, timeout=max(1.0, deadline - time.monotonic())).items():
            got.setdefault(peer_id, {}).update(records)
        if all(len(got.get(p, {})) == len(recs) for p, recs in published.items()):
            break
        time.sleep(1.0)
    return got, calls


def test_hundreds_of_large_values_roundtrip(swarm3: list[HivemindTransport]) -> None:
    r = fresh_round()
    rng = random.Random(1234)
    published = {
        peer.peer_id: {f"q{j:03d}": OutputRecord(completion=_text(rng, rng.randint(20_000, 65_000) // 1),
                                                 final_answer=str(j), reward=rng.random())
                       for j in range(PER_PEER)}
        for peer in swarm3
    }
    sizes = [len(rec.completion.encode()) for recs in published.values() for rec in recs.values()]
    assert len(sizes) == 3 * PER_PEER and min(sizes) >= 20_000 and max(sizes) <= 130_000
    drops_before = [p.drop_counts() for p in swarm3]

    results: dict[str, bool] = {}

    def publish(peer: HivemindTransport) -> None:
        results[peer.peer_id] = peer.publish_outputs(r, 0, published[peer.peer_id])

    start = time.monotonic()
    threads = [threading.Thread(target=publish, args=(p,)) for p in swarm3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    publish_s = time.monotonic() - start
    assert results == {p.peer_id: True for p in swarm3}

    fetch_s, polls = [], []
    for reader in swarm3:
        start = time.monotonic()
        got, n = _fetch_until_complete(reader, r, published, deadline=start + 120)
        fetch_s.append(time.monotonic() - start)
        polls.append(n)
        assert set(got) == set(published)
        for peer_id, records in published.items():
            assert set(got[peer_id]) == set(records)
            for qhash, record in records.items():
                mine = got[peer_id][qhash]
                assert hashlib.sha256(mine.completion.encode()).digest() == \
                    hashlib.sha256(record.completion.encode()).digest()
                assert mine == record

    assert [p.restart_count for p in swarm3] == [0, 0, 0], "a DHT process died under load"
    assert [p.drop_counts() for p in swarm3] == drops_before, "honest records were dropped"
    total_mb = sum(sizes) / 1e6
    print(f"\nbulk: {len(sizes)} values, {total_mb:.1f} MB; publish (3 peers in parallel) {publish_s:.1f}s; "
          f"fetch of all per peer {', '.join(f'{s:.1f}s' for s in fetch_s)} ({polls} fetch calls)")
