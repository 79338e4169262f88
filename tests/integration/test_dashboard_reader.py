"""The dashboard through `rl-swarm swarm-reader` (the Compose set-up) against a real 3-peer loopback DHT:
it must show what the dashboard with its own in-process DHT client shows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.procs import wait_for
from tests.fixtures.web import (
    CURRENT_ROUND,
    CURRENT_STAGE,
    DashboardProc,
    ReaderProc,
    WebSwarm,
    launch_dashboard,
    launch_swarm_reader,
)

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def reader(web_swarm: WebSwarm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReaderProc]:
    r = launch_swarm_reader(tmp_path_factory.mktemp("swarm-reader"), web_swarm)
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="module")
def pair(web_swarm: WebSwarm, reader: ReaderProc, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[DashboardProc, DashboardProc]]:
    """(dashboard with its own DHT client, dashboard through the reader), both with the chain off."""
    local = launch_dashboard(tmp_path_factory.mktemp("dash-local"), web_swarm, None)
    try:
        remote = launch_dashboard(tmp_path_factory.mktemp("dash-remote"), web_swarm, None, swarm_reader_url=reader.url)
        try:
            yield local, remote
        finally:
            remote.stop()
    finally:
        local.stop()


def remote_url(d: DashboardProc) -> str:
    """The reader URL the dashboard was started with (its command line)."""
    args = d.proc.args
    return str(args[args.index("--swarm-reader-url") + 1])


def _gossip(d: DashboardProc) -> set[tuple]:
    return {(e["peer_id"], e["round"], e["stage"], e["kind"], e["question"], e["answer"])
            for e in d.get("/api/gossip?limit=200").json()["entries"]}


def test_nodes_gossip_and_boards_match_the_in_process_reader(pair: tuple[DashboardProc, DashboardProc],
                                                             web_swarm: WebSwarm) -> None:
    local, remote = pair
    local_nodes, remote_nodes = ({n["peer_id"]: n["name"] for n in d.get("/api/nodes").json()["nodes"]} for d in pair)
    assert remote_nodes == local_nodes and set(remote_nodes) == set(web_swarm.peer_ids)
    # Every peer's answers of the current and previous stage; the sample rotates, so wait for all of them.
    want = wait_for(lambda: (g := _gossip(local)) and {e[0] for e in g} == set(web_swarm.peer_ids) and g,
                    timeout=30, what="local gossip from every peer")
    got = wait_for(lambda: (g := _gossip(remote)) and g >= want and g, timeout=30,
                   what=f"remote gossip covering {len(want)} entries")
    assert got == want and {e[3] for e in got} == {"answer", "critique"}
    for path in ("/api/round_and_stage", "/api/leaderboard", "/api/rewards-history"):
        a, b = local.get(path).json(), remote.get(path).json()
        for body in (a, b):
            body.pop("stage_deadline", None)
            body.pop("updated_at", None)
        assert a == b, path
    rs = remote.get("/api/round_and_stage").json()
    assert (rs["round"], rs["stage"], rs["source"]) == (CURRENT_ROUND, CURRENT_STAGE, "dht")
    h = remote.get("/api/healthz").json()
    assert h["status"] == "ok" and h["dht"]["ok"]
    assert f"reading the swarm through the swarm reader at {remote_url(remote)}" in remote.log_text()
    assert "joined the swarm DHT via" in local.log_text() and "joined the swarm DHT" not in remote.log_text()


def test_the_reader_serves_bounded_snapshots(reader: ReaderProc, web_swarm: WebSwarm) -> None:
    from hivemind_exp.swarm.reader import snapshot_from_json

    r = reader.get("/api/snapshot", params=[("rounds", CURRENT_ROUND), ("gossip_peers", web_swarm.peer_ids[1])])
    assert r.status_code == 200
    snap = snapshot_from_json(r.content)
    assert snap.round == CURRENT_ROUND and {p.peer_id for p in snap.peers} == set(web_swarm.peer_ids)
    assert {g.peer_id for g in snap.gossip} == {web_swarm.peer_ids[1]}
    assert set(snap.rewards) == {(CURRENT_ROUND, s) for s in (1, 2, 3)}
    too_many = reader.get("/api/snapshot", params=[("rounds", i) for i in range(65)])
    assert too_many.status_code == 422 and "at most 64" in too_many.json()["detail"]
    bad = reader.get("/api/snapshot", params={"gossip_peers": "../etc/passwd"})
    assert bad.status_code == 422 and "not a peer ID" in bad.json()["detail"]
    h = reader.get("/api/healthz").json()
    assert h["joined"] and h["peer_id"] not in web_swarm.peer_ids  # its own throwaway identity


def test_a_dashboard_whose_reader_restarts_turns_unhealthy_and_recovers(web_swarm: WebSwarm,
                                                                         tmp_path_factory: pytest.TempPathFactory
                                                                         ) -> None:
    """Compose's `restart:` of the reader alone: the dashboard says 503 while it is gone, 200 once it is back."""
    base = tmp_path_factory.mktemp("reader-restart")
    r = launch_swarm_reader(base / "reader", web_swarm)
    port = int(r.url.rsplit(":", 1)[1])
    d = launch_dashboard(base / "dash", web_swarm, None, swarm_reader_url=r.url, dht_stale_after=3, dht_timeout=2)
    try:
        r.stop()
        h = wait_for(lambda: (x := d.get("/api/healthz")).status_code == 503 and x.json(), timeout=30,
                     what="503 once the reader is gone")
        assert any("swarm reader" in reason and "unreachable" in reason for reason in h["reasons"]), h
        assert d.get("/api/nodes").json()["count"] == 3  # still answered from the cache
        r = launch_swarm_reader(base / "reader2", web_swarm, port=port)
        assert r.url == d.proc.args[d.proc.args.index("--swarm-reader-url") + 1]
        wait_for(lambda: d.get("/api/healthz").status_code == 200, timeout=60, what="healthy with the reader back")
        assert d.proc.poll() is None and d.get("/api/nodes").json()["count"] == 3
    finally:
        d.stop()
        r.stop()
