"""The swarm reader split: the snapshot's wire form, `rl-swarm swarm-reader`'s app over a real
in-memory swarm, and the dashboard's `HttpSwarmReader` against it and against broken readers.

The reader's app runs for real (lifespan, join thread, `DhtSwarmReader`) over `MemoryTransport`,
the in-process transport with the DHT's validation rules; only the network is left out here
(tests/integration/test_dashboard_reader.py runs it over a real DHT).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings as hsettings
from hypothesis import strategies as st
from pydantic import ValidationError

from hivemind_exp.common.settings_base import SettingsError, load_settings
from hivemind_exp.services.settings import SwarmReaderSettings
from hivemind_exp.services.swarm_reader import create_app as create_reader_app
from hivemind_exp.swarm.identity import b58encode
from hivemind_exp.swarm.memory_transport import MemorySwarm
from hivemind_exp.swarm.reader import (
    MAX_QUESTION_CHARS,
    DhtSwarmReader,
    GossipItem,
    PeerSeen,
    SwarmSnapshot,
    snapshot_from_json,
    snapshot_to_json,
)
from hivemind_exp.swarm.records import REWARD_LIMIT, EvalSummary, OutputRecord, SapoStats

REPO = Path(__file__).resolve().parents[2]


def pid(i: int) -> str:
    """A well-formed peer ID (base58 sha2-256 multihash), distinct per i."""
    return b58encode(b"\x12\x20" + hashlib.sha256(str(i).encode()).digest())


PEERS = [pid(i) for i in range(3)]


def full_snapshot() -> SwarmSnapshot:
    ev = EvalSummary(round=4, accuracy=0.625, format_rate=1.0, problems=16, at=1_700_000_100.25)
    sapo = SapoStats(round=4, at=1_700_000_050.5, shared=3, taken=2, trained=5, with_signal=4, dropped=1)
    return SwarmSnapshot(
        round=5, stage=2, game="three-stage", stage_deadline=1_700_000_600.125,
        peers=[PeerSeen(PEERS[0], 1_700_000_000.5, ev, None), PeerSeen(PEERS[1], 1_700_000_001.0, None, sapo),
               PeerSeen(PEERS[2], 1_700_000_002.0)],
        rewards={(5, 1): {PEERS[0]: 1.1, PEERS[1]: -0.3}, (5, 2): {PEERS[2]: 0.1 + 0.2}, (4, 3): {}},
        winners={4: [PEERS[2], PEERS[0]], 3: [PEERS[1]]},
        gossip=[GossipItem(PEERS[0], 5, 1, "answer", "How many apples?", "5", 1_700_000_002.5),
                GossipItem(PEERS[1], 5, 2, "critique", "q\u00e9?" + "x" * 100, "\u2026", 1_700_000_002.75)],
        taken_at=1_700_000_003.0009)


# ---------------------------------------------------------------- wire form


def test_snapshot_round_trips_exactly() -> None:
    snap = full_snapshot()
    back = snapshot_from_json(snapshot_to_json(snap))
    assert back == snap
    # Keys keep their types (tuple/int, not strings) and the pydantic models come back as models.
    assert list(back.rewards) == [(5, 1), (5, 2), (4, 3)] and list(back.winners) == [4, 3]
    assert isinstance(back.peers[0].evaluation, EvalSummary) and isinstance(back.peers[1].sapo, SapoStats)
    assert back.rewards[(5, 2)][PEERS[2]] == 0.1 + 0.2  # floats bit-exact
    empty = SwarmSnapshot(round=None, stage=None, taken_at=1.0)
    assert snapshot_from_json(snapshot_to_json(empty)) == empty


finite = st.floats(min_value=-REWARD_LIMIT, max_value=REWARD_LIMIT, allow_nan=False, allow_infinity=False)
times = st.floats(min_value=0, max_value=1e11, allow_nan=False)
peer_ids = st.integers(0, 50).map(pid)


@hsettings(max_examples=60, deadline=None)
@given(rewards=st.dictionaries(st.tuples(st.integers(0, 2**53), st.integers(0, 63)),
                               st.dictionaries(peer_ids, finite, max_size=4), max_size=5),
       winners=st.dictionaries(st.integers(0, 2**53), st.lists(peer_ids, max_size=4), max_size=3),
       last_seen=st.lists(times, max_size=4), taken_at=times,
       text=st.text(max_size=MAX_QUESTION_CHARS))
def test_any_snapshot_in_bounds_round_trips(rewards: dict, winners: dict, last_seen: list[float], taken_at: float,
                                            text: str) -> None:
    snap = SwarmSnapshot(round=3, stage=1, game="sapo", peers=[PeerSeen(pid(i), t) for i, t in enumerate(last_seen)],
                         rewards=rewards, winners=winners,
                         gossip=[GossipItem(pid(1), 3, 1, "rollouts", text, text[:160], taken_at)], taken_at=taken_at)
    assert snapshot_from_json(snapshot_to_json(snap)) == snap


def _wire(**change: Any) -> bytes:
    data = json.loads(snapshot_to_json(full_snapshot()))
    for path, value in change.items():
        *parents, leaf = path.split("__")
        node = data
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[int(leaf) if leaf.isdigit() else leaf] = value
    return json.dumps(data).encode()


@pytest.mark.parametrize("bad", [
    _wire(peers__0__peer_id="not a peer"),
    _wire(peers__0__last_seen=float("nan")),
    _wire(rewards__0__rewards={PEERS[0]: 1e300}),
    _wire(gossip__0__question="x" * (MAX_QUESTION_CHARS + 1)),
    _wire(gossip__0__kind=""),
    _wire(version=2),
    _wire(extra="field"),
    _wire(game="chess"),
    _wire(peers__0__evaluation={"round": 1, "accuracy": 2.0, "format_rate": 1, "problems": 1, "at": 1}),
    _wire(winners=[{"round": 1, "peers": []}, {"round": 1, "peers": []}]),
    _wire(rewards=[{"round": 1, "stage": 1, "rewards": {}}, {"round": 1, "stage": 1, "rewards": {}}]),
    b"[]", b"{", b"",
])
def test_off_schema_snapshots_are_refused(bad: bytes) -> None:
    with pytest.raises(ValueError):
        snapshot_from_json(bad)


def test_a_snapshot_over_the_wire_bounds_is_not_served() -> None:
    snap = full_snapshot()
    snap.gossip.append(GossipItem(PEERS[0], 5, 1, "answer", "q" * (MAX_QUESTION_CHARS + 1), "a", 1.0))
    with pytest.raises(ValidationError):
        snapshot_to_json(snap)


# ---------------------------------------------------------------- the reader service over a memory swarm


def memory_swarm() -> MemorySwarm:
    """Three peers: heartbeats (one with an evaluation), the coordinator's round state, rewards, outputs, winners."""
    swarm = MemorySwarm()
    ts = [swarm.transport(p, coordinator_peer_id=PEERS[0]) for p in PEERS]
    ts[0].heartbeat(name="a", evaluation=EvalSummary(round=1, accuracy=0.5, format_rate=0.75, problems=8,
                                                     at=time.time()))
    ts[1].heartbeat(name="b", sapo=SapoStats(round=1, at=time.time(), shared=1, taken=0, trained=1, with_signal=1, dropped=0))
    ts[2].heartbeat(name="c")
    assert ts[0].publish_round_state(3, 2, time.time() + 600)
    for i, t in enumerate(ts):
        for rnd in (1, 2, 3):
            for stage in (1, 2):
                assert t.publish_reward(rnd, stage, 1.0 + i + rnd / 10 + stage / 100)
        for stage in (1, 2):
            assert t.publish_outputs(3, stage, {"q1": OutputRecord(completion="<answer>7</answer>", final_answer=str(i),
                                                                   meta={"question": f"question {stage}"})})
    assert ts[1].publish_winners(2, [PEERS[2], PEERS[0]])
    return swarm


def reader_settings(**kw: Any) -> SwarmReaderSettings:
    base: dict[str, Any] = dict(initial_peers=["/ip4/127.0.0.1/tcp/1/p2p/" + PEERS[0]], join_retry_seconds=0.05,
                                max_rounds=4, max_gossip_peers=3, deployment_file=Path("/nonexistent/deployment.json"))
    base.update(kw)
    return load_settings(SwarmReaderSettings, **base)


def memory_factory(swarm: MemorySwarm, joined: list[list[str]] | None = None) -> Any:
    def build(peers: list[str]) -> DhtSwarmReader:
        if joined is not None:
            joined.append(peers)
        return DhtSwarmReader(swarm.transport(pid(99), coordinator_peer_id=PEERS[0]), fetch_timeout=1.0)

    return build


def wait_until(fn: Any, timeout: float = 10.0) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
def reader_client() -> Iterator[tuple[TestClient, MemorySwarm]]:
    swarm = memory_swarm()
    with TestClient(create_reader_app(reader_settings(), reader_factory=memory_factory(swarm))) as c:
        wait_until(lambda: c.get("/api/healthz").status_code == 200)
        yield c, swarm


def test_snapshot_endpoint_serves_what_the_dht_reader_reads(reader_client: tuple[TestClient, MemorySwarm]) -> None:
    c, swarm = reader_client
    r = c.get("/api/snapshot", params=[("rounds", 3), ("rounds", 2), ("gossip_peers", PEERS[1])])
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    got = snapshot_from_json(r.content)
    direct = memory_factory(swarm)([]).poll([3, 2], [PEERS[1]])
    assert (got.round, got.stage, got.game) == (3, 2, "three-stage")
    assert got.peers == direct.peers and {p.peer_id for p in got.peers} == set(PEERS)
    assert got.rewards == direct.rewards and got.rewards[(3, 2)][PEERS[2]] == pytest.approx(3.32)
    assert got.winners == direct.winners == {2: sorted([PEERS[2], PEERS[0]])}  # one vote each: by peer ID
    assert [(g.peer_id, g.stage, g.answer) for g in got.gossip] == [(PEERS[1], 1, "1"), (PEERS[1], 2, "1")]
    h = c.get("/api/healthz").json()
    assert h["joined"] and h["consecutive_failures"] == 0 and h["last_success"] is not None
    assert h["joined_via"] == ["/ip4/127.0.0.1/tcp/1/p2p/" + PEERS[0]]


@pytest.mark.parametrize(("query", "says"), [
    ("rounds=1&rounds=2&rounds=3&rounds=4&rounds=5", "at most 4"),
    ("rounds=-1", "not a round number"),
    ("rounds=abc", "not a round number"),
    (f"rounds={2**53 + 1}", "not a round number"),
    ("gossip_peers=not-a-peer", "not a peer ID"),
    ("gossip_peers=" + "&gossip_peers=".join([PEERS[0]] * 4), "at most 3"),
    ("round=1", "unknown parameter"),
])
def test_bad_snapshot_requests_are_422_saying_what_to_fix(reader_client: tuple[TestClient, MemorySwarm], query: str,
                                                          says: str) -> None:
    c, _ = reader_client
    r = c.get(f"/api/snapshot?{query}")
    assert r.status_code == 422 and says in r.json()["detail"], r.text


def test_reader_without_peers_is_unhealthy_and_says_why(tmp_path: Path) -> None:
    swarm, joined = memory_swarm(), []
    boot = tmp_path / "bootnode.json"
    settings = reader_settings(initial_peers=[], bootnode_file=boot)
    with TestClient(create_reader_app(settings, reader_factory=memory_factory(swarm, joined))) as c:
        h = wait_until(lambda: (r := c.get("/api/healthz")).status_code == 503 and "no DHT peers" in
                       (r.json()["reason"] or "") and r.json())
        assert str(boot) in h["reason"] and not h["joined"]
        r = c.get("/api/snapshot")
        assert r.status_code == 503 and "not joined" in r.json()["detail"]
        # The coordinator writes its bootnode file: the reader joins through it.
        boot.write_text(json.dumps({"peer_id": PEERS[0], "maddrs": ["/ip4/10.0.0.1/tcp/38331/p2p/" + PEERS[0]]}))
        wait_until(lambda: c.get("/api/healthz").status_code == 200)
        assert joined == [["/ip4/10.0.0.1/tcp/38331/p2p/" + PEERS[0]]]
        assert c.get("/api/snapshot").status_code == 200


class FlakyReader:
    """A real DhtSwarmReader whose transport can be closed under it (reads then fail)."""

    def __init__(self, swarm: MemorySwarm):
        self.transport = swarm.transport(pid(98), coordinator_peer_id=PEERS[0])
        self.inner = DhtSwarmReader(self.transport, fetch_timeout=1.0)

    def poll(self, rounds: Any, gossip: Any) -> SwarmSnapshot:
        return self.inner.poll(rounds, gossip)

    def close(self) -> None:
        self.inner.close()


def test_failed_reads_are_502_and_the_reader_rejoins() -> None:
    swarm = memory_swarm()
    made: list[FlakyReader] = []

    def factory(_peers: list[str]) -> FlakyReader:
        made.append(FlakyReader(swarm))
        return made[-1]

    with TestClient(create_reader_app(reader_settings(rejoin_after=2), reader_factory=factory)) as c:
        wait_until(lambda: c.get("/api/healthz").status_code == 200)
        made[0].transport.close()  # the DHT client dies: reads raise SwarmClosedError
        r = c.get("/api/snapshot?rounds=3")
        assert r.status_code == 502 and "reading the swarm DHT failed" in r.json()["detail"]
        assert c.get("/api/healthz").json()["consecutive_failures"] == 1
        assert c.get("/api/snapshot?rounds=3").status_code == 502
        wait_until(lambda: len(made) == 2 and c.get("/api/healthz").status_code == 200)
        assert c.get("/api/snapshot?rounds=3").status_code == 200


def test_reader_settings_explain_bad_values() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(SwarmReaderSettings, initial_peers="nope", max_rounds=0, coordinator_peer_id="x",
                      contract_address="0x12")
    msg = err.value.message
    for name in ("initial_peers", "max_rounds", "coordinator_peer_id", "contract_address"):
        assert name in msg
    assert "RLSWARM_MAX_ROUNDS" in msg and "/ip4/" in msg


def test_swarm_reader_help_is_instant_and_lists_its_settings() -> None:
    t = time.monotonic()
    out = subprocess.run([sys.executable, "-c", "import sys; from hivemind_exp.cli import main\ntry: main(['swarm-reader', '--help'])\n"
                          "except SystemExit: pass\nprint('torch' in sys.modules, 'hivemind' in sys.modules, 'fastapi' in "
                          "sys.modules)"], capture_output=True, text=True, cwd=REPO, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert "--max-rounds" in out.stdout and "--bootnode-file" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "False False False"
    assert time.monotonic() - t < 20


# ---------------------------------------------------------------- HttpSwarmReader against broken readers


class BadReader(http.server.ThreadingHTTPServer):
    """A real HTTP server answering /api/snapshot with whatever the test sets (a misbehaving reader)."""

    def __init__(self) -> None:
        self.reply: tuple[int, str, bytes] = (200, "application/json", b"{}")
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                code, ctype, body = outer.reply
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_a: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def bad_reader() -> Iterator[BadReader]:
    srv = BadReader()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize(("reply", "says"), [
    ((200, "application/json", b"x" * 70_000), "over the 65536-byte limit"),
    ((200, "application/json", b'{"round": 1}'), "invalid snapshot"),
    ((200, "text/html", b"<html>"), "not JSON"),
    ((503, "application/json", b'{"detail": "not joined to the swarm DHT yet: no DHT peers"}'),
     "answered 503: not joined"),
])
def test_http_reader_refuses_what_a_bad_reader_sends(bad_reader: BadReader, reply: tuple[int, str, bytes],
                                                     says: str) -> None:
    from api.sources import HttpSwarmReader

    bad_reader.reply = reply
    reader = HttpSwarmReader(bad_reader.url, timeout=5, max_bytes=65536)
    try:
        with pytest.raises(RuntimeError, match=says):
            reader.poll([1], [])
    finally:
        reader.close()


def test_http_reader_unreachable_says_where() -> None:
    from api.sources import HttpSwarmReader
    from hivemind_exp.chain.anvil import free_port

    reader = HttpSwarmReader(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(RuntimeError, match="unreachable.*RLSWARM_SWARM_READER_URL"):
        reader.poll([], [])


def test_dashboard_healthz_reports_a_bad_reader_and_recovers(bad_reader: BadReader, tmp_path: Path) -> None:
    from api.server import create_app
    from api.settings import DashboardSettings

    bad_reader.reply = (200, "application/json", b'{"not": "a snapshot"}')
    settings = load_settings(DashboardSettings, chain="off", swarm_reader_url=bad_reader.url, data_dir=tmp_path,
                             identity_file=tmp_path / "none.pem", ui_dist=tmp_path / "dist", dht_poll_interval=0.05,
                             dht_stale_after=0.5)
    with TestClient(create_app(settings)) as c:
        h = wait_until(lambda: (r := c.get("/api/healthz")).status_code == 503 and r.json())
        assert any("invalid snapshot" in reason for reason in h["reasons"]), h
        snap = full_snapshot()
        snap.taken_at = time.time()
        bad_reader.reply = (200, "application/json", snapshot_to_json(snap))
        wait_until(lambda: c.get("/api/healthz").status_code == 200)  # the poller kept going
        nodes = c.get("/api/nodes").json()
        assert {n["peer_id"] for n in nodes["nodes"]} == set(PEERS)


def test_dashboard_settings_refuse_peers_together_with_a_reader(tmp_path: Path) -> None:
    from api.settings import DashboardSettings

    with pytest.raises(SettingsError, match="swarm_reader_url"):
        load_settings(DashboardSettings, swarm_reader_url="http://swarm-reader:8090",
                      initial_peers=["/ip4/127.0.0.1/tcp/1/p2p/" + PEERS[0]])
    with pytest.raises(SettingsError, match="http:// or https://"):
        load_settings(DashboardSettings, swarm_reader_url="swarm-reader:8090")
    ok = load_settings(DashboardSettings, swarm_reader_url="http://swarm-reader:8090/", chain="off")
    assert ok.swarm_reader_url == "http://swarm-reader:8090"


# ---------------------------------------------------------------- the dashboard's import closure

CLOSURE_CHILD = r"""
import json, sys, time
from pathlib import Path
from fastapi.testclient import TestClient
from api.server import create_app
from api.settings import DashboardSettings
from hivemind_exp.common.settings_base import load_settings

url, tmp, identity = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
settings = load_settings(DashboardSettings, swarm_reader_url=url, chain="auto", data_dir=tmp,
                         deployment_file=tmp / "no-deployment.json", identity_file=identity,
                         ui_dist=tmp / "dist", dht_poll_interval=0.1)
with TestClient(create_app(settings)) as c:
    deadline = time.time() + 60
    while time.time() < deadline:
        nodes = c.get("/api/nodes").json()
        gossip = c.get("/api/gossip").json()
        if nodes["count"] >= 3 and gossip["entries"] and c.get("/api/healthz").status_code == 200:
            break
        time.sleep(0.1)
    out = {"nodes": sorted(n["peer_id"] for n in nodes["nodes"]), "gossip": len(gossip["entries"]),
           "round": c.get("/api/round_and_stage").json()["round"], "me": c.get("/api/me").json()["peer_id"],
           "healthz": c.get("/api/healthz").status_code}
heavy = sorted(m for m in ("torch", "hivemind", "transformers", "trl") if m in sys.modules)
print(json.dumps({**out, "heavy": heavy}))
"""


def test_dashboard_with_the_http_reader_never_imports_hivemind_or_torch(tmp_path: Path) -> None:
    """The whole start (import, app, lifespan, polls through a real reader service) in a fresh interpreter."""
    import uvicorn

    from hivemind_exp.chain.anvil import free_port
    from hivemind_exp.swarm.identity import ensure_identity, load_identity

    identity = tmp_path / "swarm.pem"
    me = load_identity(ensure_identity(identity)).peer_id
    swarm = memory_swarm()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_reader_app(reader_settings(port=port),
                                                             reader_factory=memory_factory(swarm)),
                                           host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RLSWARM_", "OTEL_"))}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "web")])
        out = subprocess.run([sys.executable, "-c", CLOSURE_CHILD, f"http://127.0.0.1:{port}", str(tmp_path),
                              str(identity)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        got = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        server.should_exit = True
        thread.join(15)
    assert got["heavy"] == [], f"the dashboard imported {got['heavy']} with the HTTP reader"
    assert got["nodes"] == sorted(PEERS) and got["gossip"] > 0 and got["round"] == 3
    assert got["me"] == me and got["healthz"] == 200
