"""The dashboard cache (`web/api/state.py`): merging polls, ranking, paging, bounds."""

from __future__ import annotations

import json

from api.sources import ChainSnapshot, GossipItem, PeerSeen, SwarmSnapshot
from api.state import DashboardState, LocalNode
from hivemind_exp.swarm.names import peer_name
from hivemind_exp.swarm.records import EvalSummary, SapoStats

A = "QmAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
B = "QmBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
C = "QmCccccccccccccccccccccccccccccccccccccccccccc"


def snap(round_: int | None = 3, stage: int | None = 1, **kw: object) -> SwarmSnapshot:
    return SwarmSnapshot(round=round_, stage=stage, taken_at=1000.0, **kw)  # type: ignore[arg-type]


def body(state: DashboardState, key: str) -> dict:
    return json.loads(state.bodies[key])


def test_leaderboard_ranks_current_round_and_lists_every_peer() -> None:
    st = DashboardState()
    st.apply_swarm(snap(peers=[PeerSeen(A, 990), PeerSeen(B, 995), PeerSeen(C, 999)],
                        rewards={(3, 1): {A: 1.0, B: 2.0}, (3, 2): {A: 1.5}, (2, 1): {C: 9.0}}))
    board = body(st, "leaderboard")
    assert board["round"] == 3
    assert [(e["peer_id"], e["reward"], e["rank"]) for e in board["entries"]] == [(A, 2.5, 1), (B, 2.0, 2), (C, 0.0, 3)]
    assert board["entries"][0]["stage_rewards"] == [1.0, 1.5, None]
    assert board["entries"][0]["name"] == peer_name(A)
    assert board["total"] == 3


def test_leaderboard_falls_back_to_latest_round_with_rewards() -> None:
    st = DashboardState()
    st.apply_swarm(snap(round_=4, stage=1, rewards={(3, 3): {B: 1.0}}))
    assert body(st, "leaderboard")["round"] == 3


def test_paging_and_search_by_name_or_peer_id() -> None:
    st = DashboardState()
    st.apply_swarm(snap(peers=[PeerSeen(p, 1.0) for p in (A, B, C)], rewards={(3, 1): {A: 3.0, B: 2.0, C: 1.0}}))
    page = json.loads(st.leaderboard_body(1, 1, None))
    assert [e["peer_id"] for e in page["entries"]] == [B]
    assert page["total"] == 3 and page["offset"] == 1 and page["limit"] == 1
    by_name = json.loads(st.leaderboard_body(100, 0, peer_name(C).upper()))
    assert [e["peer_id"] for e in by_name["entries"]] == [C]
    by_id = json.loads(st.leaderboard_body(100, 0, "qmbbbb"))
    assert [e["peer_id"] for e in by_id["entries"]] == [B]
    assert json.loads(st.leaderboard_body(100, 0, "no-such-peer"))["total"] == 0


def test_history_is_bounded_and_backfills_missing_rounds() -> None:
    st = DashboardState(history_rounds=3)
    st.apply_swarm(snap(round_=10, stage=1))
    assert st.rounds_wanted(backfill=3) == [10, 9, 8]  # round 7 is outside the 3-round window
    st.apply_swarm(snap(round_=10, stage=1, rewards={(r, 1): {A: float(r)} for r in range(5, 11)}))
    assert list(st.rewards) == [8, 9, 10]
    hist = body(st, "rewards_history")
    assert hist["rounds"] == [8, 9, 10]
    assert [p["reward"] for p in hist["series"][0]["points"]] == [8.0, 9.0, 10.0]


def test_rounds_wanted_skips_rounds_already_loaded_or_asked() -> None:
    st = DashboardState(history_rounds=50)
    st.apply_swarm(snap(round_=6, stage=3, rewards={(4, 1): {A: 1.0}}))
    assert st.rounds_wanted(backfill=2) == [6, 5, 3, 2]
    # Rounds 3 and 2 were read and had nothing: not asked again; current/previous always are.
    st.apply_swarm(snap(round_=6, stage=3, rewards={(r, s): {} for r in (6, 5, 3, 2) for s in range(1, 4)}))
    assert st.rounds_wanted(backfill=2) == [6, 5, 1, 0]
    st.apply_swarm(snap(round_=6, stage=3, rewards={(r, s): {} for r in (1, 0) for s in range(1, 4)}))
    assert st.rounds_wanted(backfill=2) == [6, 5]


def test_chain_round_drives_reads_when_the_dht_has_no_trusted_round() -> None:
    st = DashboardState()
    assert st.rounds_wanted() == []
    st.apply_chain(ChainSnapshot(round=2, stage=0, stage_count=3, contract_address="0x" + "1" * 40))
    assert st.rounds_wanted() == [2, 1, 0]


def test_history_includes_my_node_beyond_the_top_n() -> None:
    st = DashboardState()
    st.set_local(LocalNode(peer_id=C, reason=None, pending=2, failed=0))
    st.apply_swarm(snap(rewards={(3, 1): {A: 5.0, B: 4.0, C: 0.5}}))
    hist = json.loads(st.history_body(1))
    assert [(s["peer_id"], s["is_me"]) for s in hist["series"]] == [(A, False), (C, True)]


def test_peers_are_bounded_least_recently_seen_dropped() -> None:
    st = DashboardState(max_peers=2)
    st.apply_swarm(snap(peers=[PeerSeen(A, 10), PeerSeen(B, 30), PeerSeen(C, 20)]))
    nodes = body(st, "nodes")
    assert nodes["count"] == 2
    assert [n["peer_id"] for n in nodes["nodes"]] == [B, C]  # most recent first


def test_gossip_deduplicates_and_keeps_newest() -> None:
    st = DashboardState(gossip_size=2)
    items = [GossipItem(A, 3, 0, "answer", f"q{i}", str(i), float(i)) for i in range(4)]
    st.apply_swarm(snap(gossip=items[:3]))
    st.apply_swarm(snap(gossip=items[2:]))  # q2 again: not duplicated
    entries = body(st, "gossip")["entries"]
    assert [e["question"] for e in entries] == ["q3", "q2"]


def test_me_card_combines_dht_chain_and_outbox() -> None:
    st = DashboardState()
    st.set_local(LocalNode(peer_id=B, reason=None, pending=3, failed=1))
    st.apply_swarm(snap(peers=[PeerSeen(B, 999.0)], rewards={(3, 1): {A: 2.0, B: 1.0}}))
    st.apply_chain(ChainSnapshot(round=3, stage=1, stage_count=3, contract_address="0x" + "1" * 40,
                                 total_rewards={A: 5.0, B: 7.5}, total_wins={A: 0, B: 2},
                                 local_wallet="0x" + "2" * 40, taken_at=1001.0))
    me = body(st, "me")
    assert me["known"] and me["peer_id"] == B and me["name"] == peer_name(B)
    assert (me["rank"], me["round_reward"], me["total_rewards"], me["total_wins"]) == (2, 1.0, 7.5, 2)
    assert (me["pending_submissions"], me["failed_submissions"]) == (3, 1)
    assert me["wallet"] == "0x" + "2" * 40 and me["online"] is True
    cumulative = body(st, "leaderboard_cumulative")
    assert [(e["peer_id"], e["rank"], e["is_me"]) for e in cumulative["entries"]] == [(B, 1, True), (A, 2, False)]


def test_unknown_local_node_explains_why() -> None:
    st = DashboardState()
    st.set_local(LocalNode(reason="no local trainer found: swarm.pem does not exist"))
    me = body(st, "me")
    assert me["known"] is False and "swarm.pem" in me["reason"]


def test_round_and_stage_prefers_dht_and_falls_back_to_chain() -> None:
    st = DashboardState()
    assert body(st, "round_and_stage")["source"] == "none"
    st.apply_chain(ChainSnapshot(round=5, stage=2, stage_count=3, contract_address="0x" + "1" * 40))
    rs = body(st, "round_and_stage")
    assert (rs["round"], rs["stage"], rs["stage_name"], rs["source"]) == (5, 3, "decide", "chain")
    st.apply_swarm(SwarmSnapshot(round=6, stage=1, stage_deadline=1234.0))
    rs = body(st, "round_and_stage")
    assert (rs["round"], rs["stage_name"], rs["source"], rs["chain_round"], rs["stage_deadline"]) == \
        (6, "answer", "dht", 5, 1234.0)


def test_cumulative_unavailable_without_chain_names_the_reason() -> None:
    st = DashboardState()
    c = body(st, "leaderboard_cumulative")
    assert c["available"] is False and "no chain configured" in c["reason"]
    st.set_chain_configured(True)
    st.poll_failed("chain", "ChainUnavailable: connection refused")
    c = json.loads(st.cumulative_body(100, 0))
    assert c["available"] is False and "connection refused" in c["reason"]


def test_health_grace_then_stale_with_reason() -> None:
    st = DashboardState()
    st.started_at = 1000.0
    st._now = lambda: 1005.0  # type: ignore[method-assign]
    ok, h = st.health(dht_stale_after=10, chain_stale_after=10)
    assert ok, h.reasons  # within the start-up grace
    st._now = lambda: 1020.0  # type: ignore[method-assign]
    st.poll_failed("dht", "RuntimeError: no DHT peers to join")
    ok, h = st.health(dht_stale_after=10, chain_stale_after=10)
    assert not ok
    assert "DHT" in h.reasons[0] and "no DHT peers to join" in h.reasons[0]
    assert h.chain.ok and not h.chain.configured  # no chain configured: not a reason
    st.apply_swarm(SwarmSnapshot(round=1, stage=1, taken_at=1019.0))
    ok, h = st.health(dht_stale_after=10, chain_stale_after=10)
    assert ok and h.dht.age_s == 1.0


def test_latest_evaluation_reaches_nodes_and_my_card() -> None:
    st = DashboardState(local=LocalNode(peer_id=A), max_peers=2)
    older = EvalSummary(round=1, accuracy=0.1, format_rate=0.5, problems=16, at=500.0)
    newer = EvalSummary(round=3, accuracy=0.3, format_rate=0.9, problems=16, at=900.0)
    st.apply_swarm(snap(peers=[PeerSeen(A, 950, newer), PeerSeen(B, 960)]))
    # A later heartbeat without an evaluation (e.g. after a restart) keeps the last one known;
    # an older evaluation never replaces a newer one.
    st.apply_swarm(snap(peers=[PeerSeen(A, 990, older), PeerSeen(B, 995)]))
    nodes = {n["peer_id"]: n for n in body(st, "nodes")["nodes"]}
    assert nodes[A]["evaluation"] == {"round": 3, "accuracy": 0.3, "format_rate": 0.9, "problems": 16, "at": 900.0}
    assert nodes[B]["evaluation"] is None
    assert body(st, "me")["evaluation"]["accuracy"] == 0.3
    # Evicting a peer forgets its evaluation too (bounded memory). The local trainer (A) has
    # evidence and stays; B, the least recently seen of the rest, goes.
    st.apply_swarm(snap(peers=[PeerSeen(B, 1000, older)]))
    assert B in st.evals
    st.apply_swarm(snap(peers=[PeerSeen(C, 1001)]))
    assert A in st.peers and B not in st.peers and B not in st.evals


def test_identity_flood_neither_grows_memory_nor_evicts_peers_with_evidence() -> None:
    """50 000 fresh identities, all seen more recently than the real peers, some even publishing
    a reward: the state stays within max_peers everywhere, and the real peers (local trainer,
    rewarded on chain, reward records over several rounds) keep their places."""
    import random

    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    rng = random.Random(7)
    fake = ["Qm" + "".join(rng.choice(alphabet) for _ in range(44)) for _ in range(50_000)]
    st = DashboardState(local=LocalNode(peer_id=A), max_peers=100, history_rounds=5)
    st.apply_chain(ChainSnapshot(round=3, stage=1, stage_count=3, contract_address="0x" + "00" * 20,
                                 total_rewards={B: 12.0}))
    st.apply_swarm(snap(peers=[PeerSeen(A, 100), PeerSeen(B, 100), PeerSeen(C, 100)],
                        rewards={(r, 1): {C: 1.0, A: 0.5} for r in (1, 2, 3)}))
    for i in range(0, len(fake), 5000):
        batch = fake[i:i + 5000]
        st.apply_swarm(snap(peers=[PeerSeen(p, 5000 + i + j) for j, p in enumerate(batch)],
                            rewards={(3, 2): {p: 100.0 for p in batch[:2000]}}))
        assert len(st.peers) <= 100 and len(st.evals) <= 100 and len(st.names) <= 4 * 100 + 1
        assert all(len(m) <= 100 for stages in st.rewards.values() for m in stages.values())
    assert {A, B, C} <= set(st.peers)
    nodes = {n["peer_id"] for n in body(st, "nodes")["nodes"]}
    assert {A, B, C} <= nodes and len(nodes) == 100
    board = {e["peer_id"] for e in json.loads(st.leaderboard_body(500, 0, None))["entries"]}
    assert {A, B, C} <= board


def test_sapo_round_is_one_stage_on_every_surface() -> None:
    """A SAPO round has one stage: the chain's 0-based stages 0..2 all show as stage 1, rollouts."""
    st = DashboardState(local=LocalNode(peer_id=A))
    st.apply_swarm(SwarmSnapshot(round=4, stage=1, game="sapo", taken_at=1000.0, rewards={(4, 1): {A: 0.5, B: 0.25}},
                                 gossip=[GossipItem(B, 4, 1, "rollouts", "What is 2+3?", "5", 999.0)]))
    for chain_stage in (0, 1, 2):
        st.apply_chain(ChainSnapshot(round=4, stage=chain_stage, stage_count=3, contract_address="0x" + "1" * 40))
        rs = body(st, "round_and_stage")
        assert (rs["game"], rs["stage"], rs["stage_name"], rs["stage_names"], rs["stage_count"], rs["chain_stage"]) \
            == ("sapo", 1, "rollouts", ["rollouts"], 1, 1)
    board = body(st, "leaderboard")
    assert [(e["peer_id"], e["stage_rewards"]) for e in board["entries"]] == [(A, [0.5]), (B, [0.25])]
    assert body(st, "gossip")["entries"][0]["stage_name"] == "rollouts"


def test_three_stage_names_follow_the_swarm_numbering() -> None:
    st = DashboardState()
    for stage, name in ((1, "answer"), (2, "critique"), (3, "decide")):
        st.apply_swarm(snap(round_=2, stage=stage))
        st.apply_chain(ChainSnapshot(round=2, stage=stage - 1, stage_count=3, contract_address="0x" + "1" * 40))
        rs = body(st, "round_and_stage")
        assert (rs["stage"], rs["stage_name"], rs["chain_stage"]) == (stage, name, stage)


def test_sapo_stats_reach_nodes_and_my_card() -> None:
    st = DashboardState(local=LocalNode(peer_id=A), max_peers=2)
    newer = SapoStats(round=5, shared=4, taken=3, trained=7, with_signal=2, dropped=1, at=900.0)
    older = SapoStats(round=4, shared=4, taken=0, trained=4, with_signal=0, dropped=0, at=800.0)
    st.apply_swarm(snap(peers=[PeerSeen(A, 950, None, newer), PeerSeen(B, 960, None, older)]))
    st.apply_swarm(snap(peers=[PeerSeen(A, 990, None, older), PeerSeen(B, 995)]))
    nodes = {n["peer_id"]: n for n in body(st, "nodes")["nodes"]}
    assert nodes[A]["sapo"] == {"round": 5, "shared": 4, "taken": 3, "trained": 7, "with_signal": 2, "dropped": 1,
                                "at": 900.0}
    assert nodes[B]["sapo"]["round"] == 4
    assert body(st, "me")["sapo"]["taken"] == 3
    # Evicting a peer forgets its stats too; the local trainer (A) has evidence and stays.
    st.apply_swarm(snap(peers=[PeerSeen(C, 1001)]))
    assert B not in st.peers and B not in st.sapo and A in st.sapo
