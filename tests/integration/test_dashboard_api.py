"""The dashboard service end to end over HTTP: a real 3-peer DHT publishing records, anvil with the
contract and submitted rewards, and `rl-swarm dashboard` as a subprocess reading both."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from hivemind_exp.chain.anvil import ANVIL_DEV_KEYS
from hivemind_exp.swarm.names import peer_name
from tests.fixtures.chain import TcpProxy
from tests.fixtures.procs import wait_for
from tests.fixtures.web import (
    CURRENT_ROUND,
    CURRENT_STAGE,
    QUESTIONS,
    DashboardProc,
    WebChain,
    WebSwarm,
    dht_reward,
    launch_dashboard,
)

pytestmark = [pytest.mark.slow, pytest.mark.chain]




def test_round_and_stage_from_the_coordinator_and_the_chain(dashboard: DashboardProc) -> None:
    rs = dashboard.get("/api/round_and_stage").json()
    assert (rs["round"], rs["stage"], rs["stage_name"], rs["source"]) == (CURRENT_ROUND, CURRENT_STAGE, "critique", "dht")
    assert (rs["chain_round"], rs["chain_stage"]) == (1, 1)  # the contract's stage 0, in the swarm's numbering
    assert rs["stage_deadline"] > time.time()


def test_leaderboard_ranks_every_peer_by_this_rounds_rewards(dashboard: DashboardProc, web_swarm: WebSwarm) -> None:
    board = dashboard.get("/api/leaderboard").json()
    ids = web_swarm.peer_ids
    expected = sorted(range(3), key=lambda i: -sum(dht_reward(i, CURRENT_ROUND, s) for s in range(1, CURRENT_STAGE + 1)))
    assert board["round"] == CURRENT_ROUND and board["total"] == 3
    assert [e["peer_id"] for e in board["entries"]] == [ids[i] for i in expected]
    top = board["entries"][0]
    assert top["name"] == peer_name(top["peer_id"]) and top["rank"] == 1
    i = ids.index(top["peer_id"])
    assert top["stage_rewards"] == [dht_reward(i, CURRENT_ROUND, 1), dht_reward(i, CURRENT_ROUND, 2), None]
    assert [e["is_me"] for e in board["entries"]] == [ids[i] == dashboard.local_peer_id for i in expected]

    page = dashboard.get("/api/leaderboard?limit=1&offset=1").json()
    assert [e["rank"] for e in page["entries"]] == [2] and page["total"] == 3
    name = peer_name(ids[0])
    found = dashboard.get("/api/leaderboard", params={"q": name}).json()
    assert [e["peer_id"] for e in found["entries"]] == [ids[0]]
    by_id = dashboard.get("/api/leaderboard", params={"q": ids[1][-10:].lower()}).json()
    assert [e["peer_id"] for e in by_id["entries"]] == [ids[1]]


@pytest.mark.parametrize("path", ["/api/leaderboard?limit=0", "/api/leaderboard?limit=9999", "/api/leaderboard?offset=x",
                                  "/api/leaderboard-cumulative?limit=-1", "/api/gossip?limit=0",
                                  "/api/rewards-history?limit=1000"])
def test_bad_query_values_are_rejected_with_a_message(dashboard: DashboardProc, path: str) -> None:
    r = dashboard.get(path)
    assert r.status_code == 422
    assert path.split("?")[1].split("=")[0] in r.json()["detail"]


def test_cumulative_leaderboard_comes_from_the_chain(dashboard: DashboardProc, web_swarm: WebSwarm,
                                                     web_chain: WebChain) -> None:
    c = dashboard.get("/api/leaderboard-cumulative").json()
    assert c["available"] is True and c["total"] == 3
    got = {e["peer_id"]: (e["total_rewards"], e["total_wins"]) for e in c["entries"]}
    want = {pid: (pytest.approx(web_chain.totals[i]), web_chain.wins[i]) for i, pid in enumerate(web_swarm.peer_ids)}
    assert got == want
    assert [e["rank"] for e in c["entries"]] == [1, 2, 3]
    assert c["entries"][0]["total_rewards"] >= c["entries"][-1]["total_rewards"]


def test_rewards_history_has_every_round_per_peer(dashboard: DashboardProc, web_swarm: WebSwarm) -> None:
    h = dashboard.get("/api/rewards-history").json()
    assert h["rounds"] == list(range(1, CURRENT_ROUND + 1))
    series = {s["peer_id"]: s for s in h["series"]}
    assert set(series) == set(web_swarm.peer_ids)
    for i, pid in enumerate(web_swarm.peer_ids):
        pts = {p["round"]: p["reward"] for p in series[pid]["points"]}
        for rnd in range(1, CURRENT_ROUND + 1):
            last = 3 if rnd < CURRENT_ROUND else CURRENT_STAGE
            assert pts[rnd] == pytest.approx(sum(dht_reward(i, rnd, s) for s in range(1, last + 1)))
    assert [s["is_me"] for s in h["series"]].count(True) == 1
    one = dashboard.get("/api/rewards-history", params={"limit": 1, "peer_id": web_swarm.peer_ids[0]}).json()
    assert len(one["series"]) == 2


def test_gossip_shows_answers_with_names_and_questions(dashboard: DashboardProc, web_swarm: WebSwarm) -> None:
    entries = dashboard.get("/api/gossip?limit=200").json()["entries"]
    assert entries
    assert {e["question"] for e in entries} <= set(QUESTIONS.values())
    for e in entries:
        i = web_swarm.peer_ids.index(e["peer_id"])
        assert e["name"] == peer_name(e["peer_id"]) and e["answer"] == str(5 + i)
        assert e["round"] == CURRENT_ROUND and e["kind"] in ("answer", "critique")


def test_nodes_lists_the_connected_peers(dashboard: DashboardProc, web_swarm: WebSwarm) -> None:
    nodes = dashboard.get("/api/nodes").json()
    assert nodes["count"] == 3
    assert {n["peer_id"] for n in nodes["nodes"]} == set(web_swarm.peer_ids)
    assert all(n["last_seen"] > time.time() - 600 for n in nodes["nodes"])


def test_names_both_ways(dashboard: DashboardProc, web_swarm: WebSwarm) -> None:
    pid = web_swarm.peer_ids[1]
    r = dashboard.get("/api/name-to-id", params={"name": peer_name(pid).replace("-", " ").title()})
    assert r.status_code == 200 and r.json() == {"name": peer_name(pid), "peer_ids": [pid]}
    assert dashboard.get("/api/name-to-id", params={"name": "nobody-here-at-all"}).status_code == 404
    r = httpx.post(dashboard.url + "/api/id-to-name", json=web_swarm.peer_ids)
    assert r.status_code == 200 and r.json()["names"] == {p: peer_name(p) for p in web_swarm.peer_ids}


def test_id_to_name_caps_count_and_body(dashboard: DashboardProc, web_swarm: WebSwarm) -> None:
    too_many = httpx.post(dashboard.url + "/api/id-to-name", json=[web_swarm.peer_ids[0]] * 1001)
    assert too_many.status_code == 413 and "1000" in too_many.json()["detail"]
    huge = httpx.post(dashboard.url + "/api/id-to-name", content=b"[" + b" " * 70_000 + b"]",
                      headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "bytes" in huge.json()["detail"]
    bad = httpx.post(dashboard.url + "/api/id-to-name", content=b"not json")
    assert bad.status_code == 400


def test_me_card_is_the_local_trainer(dashboard: DashboardProc, web_chain: WebChain, web_swarm: WebSwarm) -> None:
    from eth_account import Account

    me = dashboard.get("/api/me").json()
    assert me["known"] and me["peer_id"] == web_swarm.peer_ids[2] == dashboard.local_peer_id
    assert me["name"] == peer_name(me["peer_id"])
    assert me["wallet"].lower() == Account.from_key(ANVIL_DEV_KEYS[3]).address.lower()
    assert me["total_rewards"] == pytest.approx(web_chain.totals[2]) and me["total_wins"] == web_chain.wins[2]
    assert (me["pending_submissions"], me["failed_submissions"]) == (1, 0)
    assert me["rank"] == 1 and me["online"] is True


def test_health_and_metrics(dashboard: DashboardProc) -> None:
    h = dashboard.get("/api/healthz")
    assert h.status_code == 200 and h.json()["status"] == "ok"
    assert h.json()["dht"]["ok"] and h.json()["chain"]["configured"] and h.json()["chain"]["ok"]
    assert dashboard.get("/health").status_code == 200
    text = dashboard.get("/metrics").text
    assert 'http_route="/api/healthz"' in text
    assert "rlswarm_dashboard_cache_age" in text


def test_ui_not_built_message_at_root(dashboard: DashboardProc) -> None:
    # This fixture serves the built UI; the not-built page is covered in tests/unit/test_web_api.py.
    r = dashboard.get("/")
    assert r.status_code == 200 and '<div id="root">' in r.text
    asset = next(part.split('"')[0] for part in r.text.split('src="')[1:] if part.startswith("/assets/"))
    assert dashboard.get(asset).status_code == 200


def test_live_events_announce_a_stage_change(dashboard: DashboardProc, web_swarm: WebSwarm) -> None:
    coordinator = web_swarm.transports[0]
    with httpx.stream("GET", dashboard.url + "/api/events", timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert coordinator.publish_round_state(CURRENT_ROUND, CURRENT_STAGE + 1, time.time() + 600)
        try:
            deadline = time.time() + 30
            for line in r.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["stage"] == CURRENT_STAGE + 1:
                    break
                assert time.time() < deadline, "no event with the new stage"
        finally:
            assert coordinator.publish_round_state(CURRENT_ROUND, CURRENT_STAGE, time.time() + 600)
    wait_for(lambda: dashboard.get("/api/round_and_stage").json()["stage"] == CURRENT_STAGE, what="stage restored")


def test_a_failing_chain_is_retried_and_reported(tmp_path, web_swarm: WebSwarm, web_chain: WebChain,
                                                 rpc_proxy: TcpProxy) -> None:
    chain = WebChain(web_chain.contract)
    chain.contract = type(web_chain.contract)(rpc_url=rpc_proxy.url, address=web_chain.address,
                                              implementation=web_chain.contract.implementation,
                                              deployment_path=web_chain.contract.deployment_path)
    d = launch_dashboard(tmp_path, web_swarm, chain, chain_stale_after=3, rpc_timeout=1)
    try:
        rpc_proxy.down()
        h = wait_for(lambda: (r := d.get("/api/healthz")).status_code == 503 and r.json(), timeout=30,
                     what="503 while the RPC is down")
        assert any("chain" in reason for reason in h["reasons"]) and h["chain"]["consecutive_failures"] >= 1
        assert h["dht"]["ok"]
        # Requests keep answering from the cache meanwhile.
        assert d.get("/api/leaderboard-cumulative").json()["available"] is True
        rpc_proxy.up()
        wait_for(lambda: d.get("/api/healthz").status_code == 200, timeout=30, what="healthy again")
        assert "chain poll failed" in d.log_text()
    finally:
        d.stop()
