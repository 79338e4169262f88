"""The dashboard app's request handling without a swarm: validation, size caps, names, UI, health.

The app runs for real (lifespan, poller) with no DHT peers and the chain off, so every DHT
poll fails the way it does on a machine with nothing configured.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.server import create_app
from api.settings import DashboardSettings
from hivemind_exp.swarm.names import peer_name
from hivemind_exp.common.settings_base import SettingsError, load_settings

PEER = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"


def make_settings(tmp_path: Path, **kw: object) -> DashboardSettings:
    base: dict[str, object] = dict(chain="off", initial_peers=[], identity_file=tmp_path / "none.pem",
                                   data_dir=tmp_path, ui_dist=tmp_path / "dist", dht_poll_interval=0.05,
                                   id_to_name_max_ids=5, id_to_name_max_bytes=1024)
    base.update(kw)
    return load_settings(DashboardSettings, **base)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        yield c


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=abc", "offset=-1", "q=" + "x" * 200])
def test_bad_leaderboard_queries_are_422_with_a_message(client: TestClient, query: str) -> None:
    r = client.get(f"/api/leaderboard?{query}")
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert isinstance(detail, str) and query.split("=")[0] in detail


def test_other_bad_queries(client: TestClient) -> None:
    assert client.get("/api/leaderboard-cumulative?offset=-5").status_code == 422
    assert client.get("/api/gossip?limit=100000").status_code == 422
    assert client.get("/api/rewards-history?peer_id=not%20an%20id").status_code == 422
    r = client.get("/api/name-to-id")
    assert r.status_code == 422 and "name" in r.json()["detail"]
    r = client.get("/api/name-to-id?name=---")
    assert r.status_code == 400 and "letters" in r.json()["detail"]
    r = client.get("/api/name-to-id?name=quick-amber-otter")
    assert r.status_code == 404 and "quick-amber-otter" in r.json()["detail"]


def test_good_paging_on_empty_swarm(client: TestClient) -> None:
    r = client.get("/api/leaderboard?limit=5&offset=10&q=otter")
    assert r.status_code == 200
    assert r.json() == {**r.json(), "total": 0, "entries": [], "limit": 5, "offset": 10, "query": "otter"}


def test_id_to_name(client: TestClient) -> None:
    r = client.post("/api/id-to-name", json=[PEER])
    assert r.status_code == 200 and r.json() == {"names": {PEER: peer_name(PEER)}}
    r = client.post("/api/id-to-name", json={"peer_ids": [PEER]})
    assert r.status_code == 200 and r.json()["names"][PEER] == peer_name(PEER)


def test_id_to_name_rejects_bad_bodies(client: TestClient) -> None:
    too_many = client.post("/api/id-to-name", json=[PEER] * 6)
    assert too_many.status_code == 413 and "limit is 5" in too_many.json()["detail"]
    too_big = client.post("/api/id-to-name", content=b"[" + b'"a",' * 400 + b'"a"]',
                          headers={"content-type": "application/json"})
    assert too_big.status_code == 413 and "1024 bytes" in too_big.json()["detail"]
    chunked = client.post("/api/id-to-name", content=iter([b"[", b'"Qm",' * 300, b'"Qm"]']))
    assert chunked.status_code == 413  # no Content-Length: capped while streaming
    assert client.post("/api/id-to-name", content=b"{nope").status_code == 400
    assert client.post("/api/id-to-name", json={"ids": []}).status_code == 400
    bad = client.post("/api/id-to-name", json=[PEER, 5, "has space"])
    assert bad.status_code == 400 and "[1, 2]" in bad.json()["detail"]


def test_every_endpoint_is_in_the_openapi_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/api/healthz", "/health", "/api/round_and_stage", "/api/leaderboard", "/api/leaderboard-cumulative",
              "/api/rewards-history", "/api/gossip", "/api/nodes", "/api/name-to-id", "/api/id-to-name",
              "/api/events", "/api/me"):
        assert p in paths, p
    assert paths["/api/leaderboard"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]


def test_unknown_api_path_is_json_404(client: TestClient) -> None:
    r = client.get("/api/nope")
    assert r.status_code == 404 and "/docs" in r.json()["detail"]


def test_ui_not_built_page_says_how_to_build(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 503 and "text/html" in r.headers["content-type"]
    assert "npm run build" in r.text


def test_built_ui_is_served_with_spa_fallback_and_no_traversal(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><div id=root></div>")
    (dist / "assets" / "app-1234.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("no")
    with TestClient(create_app(make_settings(tmp_path, ui_dist=dist))) as c:
        assert c.get("/").text.startswith("<!doctype html>")
        js = c.get("/assets/app-1234.js")
        assert js.status_code == 200 and "immutable" in js.headers["cache-control"]
        assert c.get("/some/client/route").text.startswith("<!doctype html>")
        assert "no" != c.get("/../secret.txt").text
        assert c.get("/%2e%2e/secret.txt").text.startswith("<!doctype html>")


def test_health_turns_503_with_the_reason_once_the_dht_is_stale(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, dht_stale_after=0.3))) as c:
        deadline = time.time() + 10
        while True:
            r = c.get("/api/healthz")
            if r.status_code == 503 or time.time() > deadline:
                break
            time.sleep(0.1)
        assert r.status_code == 503
        h = r.json()
        assert h["status"] == "unhealthy" and h["dht"]["consecutive_failures"] >= 1
        assert "RLSWARM_INITIAL_PEERS" in h["reasons"][0]
        assert h["chain"] == {**h["chain"], "configured": False, "ok": True}
        assert c.get("/health").status_code == 503


def test_me_without_local_trainer_explains(client: TestClient) -> None:
    me = client.get("/api/me").json()
    assert me["known"] is False and "none.pem" in me["reason"]


def test_events_stream_announces_updates(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        with c.stream("GET", "/api/events") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            seen: list[dict] = []
            for line in r.iter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
                if len(seen) == 2:
                    break
        assert seen[1]["version"] > seen[0]["version"]


def test_settings_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(DashboardSettings, initial_peers="127.0.0.1:38331")
    assert "multiaddr" in err.value.message and "--initial-peers" in err.value.message
    with pytest.raises(SettingsError) as err:
        load_settings(DashboardSettings, chain="on", deployment_file=tmp_path / "missing.json")
    assert "rl-swarm chain" in err.value.message
    with pytest.raises(SettingsError) as err:
        load_settings(DashboardSettings, port="80800")
    assert "--port" in err.value.message
    ok = load_settings(DashboardSettings, initial_peers='["/ip4/127.0.0.1/tcp/1/p2p/Qm1", "/ip4/127.0.0.1/tcp/2"]')
    assert len(ok.initial_peers) == 2


def test_cached_fast_path_matches_the_routed_answer_and_is_measured(tmp_path: Path) -> None:
    from hivemind_exp.common.telemetry import setup_telemetry

    setup_telemetry("dashboard")
    with TestClient(create_app(make_settings(tmp_path))) as c:
        for path, same in (("/api/leaderboard", "/api/leaderboard?limit=100&offset=0"),
                           ("/api/gossip", "/api/gossip?limit=30"),
                           ("/api/rewards-history", "/api/rewards-history?limit=10")):
            fast, routed = c.get(path), c.get(same)
            assert fast.status_code == routed.status_code == 200
            fast_body, routed_body = fast.json(), routed.json()
            fast_body.pop("updated_at"), routed_body.pop("updated_at")
            assert fast_body == routed_body
            assert fast.headers["content-type"] == "application/json"
        assert c.post("/api/leaderboard").status_code == 405  # only GET takes the fast path
        assert c.get("/api/nodes").status_code == 200  # only ever asked without a query: fast path
        metrics = c.get("/metrics").text
        assert 'http_request_method="GET",http_response_status_code="200",http_route="/api/nodes"' in metrics
