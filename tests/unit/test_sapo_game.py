"""SAPO rounds of three nodes on the in-memory transport (tiny random model, real task source)."""

from __future__ import annotations

import pytest

from hivemind_exp.common.events import MemoryEvents
from hivemind_exp.sapo.game import SapoParams, SapoPlayer, spec_key
from hivemind_exp.sapo.rubric import sapo_prompt, sapo_rubric
from hivemind_exp.swarm.memory_transport import MemorySwarm
from hivemind_exp.swarm.records import RolloutGroup, TaskSpecRecord

PEERS = ["QmAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "QmBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
         "QmCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC"]


@pytest.fixture(scope="module")
def source():
    from hivemind_exp.trainer.profiles import CONFIG_ROOT, DEFAULT_TASK_MIX
    from hivemind_exp.sapo.tasks import ReasoningGymSource, TaskMix

    return ReasoningGymSource(TaskMix.from_yaml(CONFIG_ROOT / DEFAULT_TASK_MIX))


def make_players(tiny_model, source, external=2, policy="random", n=3, collect_seconds=0.0):
    from hivemind_exp.trainer.grpo import GRPOEngine, GRPOParams

    model, tok = tiny_model
    swarm = MemorySwarm()
    players = []
    for i, pid in enumerate(PEERS[:n]):
        # One model shared by the players is fine here: the test checks the protocol, not learning.
        engine = GRPOEngine(model, tok, GRPOParams(num_generations=3, max_completion_length=8, seed=i,
                                                   learning_rate=1e-4))
        t = swarm.transport(pid)
        t.heartbeat()
        players.append(SapoPlayer(engine, t, source, sapo_rubric(), sapo_prompt,
                                  SapoParams(local_groups=2, external_groups=external, policy=policy,
                                             collect_seconds=collect_seconds, poll_seconds=0.01),
                                  node_seed=1000 + i, events=MemoryEvents()))
    return swarm, players


def test_every_node_trains_on_groups_of_the_others(tiny_model, source):
    swarm, players = make_players(tiny_model, source)
    sampled = [p.sample(0) for p in players]
    assert all(s.published for s in sampled)
    own_questions = [{g.problem.question for g in s.local} for s in sampled]
    assert own_questions[0] != own_questions[1]  # peers cover different questions
    for p, s in zip(players, sampled):
        out = p.learn(s)
        ev = out.event
        assert ev["game"] == "sapo" and ev["round"] == 0 and ev["local_groups"] == 2
        assert ev["external_candidates"] == 4 and ev["external_taken"] == 2 and ev["solo"] is False
        assert p.transport.peer_id not in ev["from_peers"]
        assert sum(ev["from_peers"].values()) == 2
        assert all(g.peer != p.transport.peer_id for g in out.taken)
        assert ev["dropped"] == {}
    assert players[0].events.events[-1]["kind"] == "step"


def test_external_rewards_are_recomputed_from_the_regenerated_answer(tiny_model, source):
    swarm, players = make_players(tiny_model, source, n=2)
    a, b = players
    prob = source.draw(77, 0, 1)[0]
    right = f"<think>easy</think><answer>{prob.answer}</answer>"
    wrong = "<think>hmm</think><answer>not a number</answer>"
    spec = TaskSpecRecord(task=prob.spec.task, config_hash=prob.spec.config_hash, seed=prob.spec.seed,
                          index=prob.spec.index)
    group = RolloutGroup(spec=spec, question=prob.question, completions=[right, wrong, right])
    b.transport.publish_rollouts(0, {spec_key(prob.spec): group})
    got = a.collect(0, None)
    assert len(got) == 1
    r = got[0].rewards
    assert r[0] == r[2] > r[1] and r[0] >= 1.0


def _planted(source, question: str | None = None, **spec_changes) -> tuple[str, RolloutGroup]:
    prob = source.draw(99, 3, 1)[0]
    spec = {"task": prob.spec.task, "config_hash": prob.spec.config_hash, "seed": prob.spec.seed,
            "index": prob.spec.index, **spec_changes}
    rec = TaskSpecRecord(**spec)
    return spec_key(rec), RolloutGroup(spec=rec, question=question or prob.question, completions=["1", "2"])


def test_tampered_question_or_unknown_spec_is_dropped_and_counted(tiny_model, source):
    swarm, players = make_players(tiny_model, source, n=2)
    a, b = players
    k1, tampered = _planted(source, question="What is 2 + 2? (the sender rewrote the question)")
    k2, bad_hash = _planted(source, config_hash="0" * 16)
    k3, unknown = _planted(source, task="no_such_task")
    k4, good = _planted(source)
    b.transport.publish_rollouts(3, {k1: tampered, k2: bad_hash, k3: unknown, k4 + "x": good})
    assert a.collect(3, None) == []
    drops = a.drops.snapshot()
    assert drops == {"question_mismatch": 1, "bad_spec": 2, "wrong_key": 1}


def test_heartbeat_stats_say_what_was_shared_taken_and_trained(tiny_model, source):
    swarm, players = make_players(tiny_model, source)
    sampled = [p.sample(2) for p in players]
    out = players[0].learn(sampled[0])
    st = players[0].stats(out, now=123.0, transport_dropped=5)
    assert (st.round, st.shared, st.taken, st.trained) == (2, 2, 2, 4)
    assert st.with_signal == sum(g.has_signal for g in out.local + out.taken) and st.dropped == 5
    # The heartbeat carries them to whoever lists the peers (the dashboard).
    players[0].transport.heartbeat(sapo=st)
    seen = {p.peer_id: p for p in players[1].transport.list_peers()}
    assert seen[PEERS[0]].sapo == st and seen[PEERS[1]].sapo is None


def test_solo_node_trains_on_its_own_without_waiting(tiny_model, source):
    swarm, players = make_players(tiny_model, source, external=0, n=1, collect_seconds=3600)
    out = players[0].play_round(5)
    assert out.event["solo"] is True and out.event["external_taken"] == 0 and out.taken == []


def test_a_silent_swarm_does_not_block_past_the_deadline(tiny_model, source):
    import time

    swarm, players = make_players(tiny_model, source, n=1, policy="signal", collect_seconds=0.3)
    t0 = time.monotonic()
    out = players[0].play_round(0)
    assert out.candidates == 0 and out.event["solo"] is True
    assert time.monotonic() - t0 < 30
    # a stage deadline already past cuts the wait short too
    swarm2, p2 = make_players(tiny_model, source, n=1, policy="signal", collect_seconds=3600)
    t0 = time.monotonic()
    assert p2[0].collect(0, deadline=time.time() - 1) == []
    assert time.monotonic() - t0 < 5


def test_winners_are_the_best_scoring_peers_by_own_rescoring():
    from hivemind_exp.sapo.selection import ScoredGroup

    groups = [ScoredGroup("a", "k", None, ["x", "y"], [1.0, 0.0]), ScoredGroup("b", "k", None, ["x", "y"], [1.0, 1.0]),
              ScoredGroup("c", "k", None, ["x", "y"], [1.0, 1.0])]
    assert SapoPlayer.winners(groups) == ["b", "c"]
    assert SapoPlayer.winners([ScoredGroup("a", "k", None, ["x"], [0.0])]) == []


def test_bad_settings_name_the_setting():
    with pytest.raises(ValueError, match="sapo_policy"):
        SapoParams(policy="best-ever")
    with pytest.raises(ValueError, match="sapo_local_groups"):
        SapoParams(local_groups=0)


def test_in_a_swarm_over_the_read_cap_a_node_takes_and_judges_only_its_window(tiny_model, source):
    # 12 peers, read cap 4: node 0 reads itself and the 3 peers after it on the round's ring, takes
    # external groups from those 3 only, and its winners come from what it read.
    import hashlib

    import base58

    from hivemind_exp.swarm.read_set import read_set
    from hivemind_exp.trainer.grpo import GRPOEngine, GRPOParams

    ids = [base58.b58encode(b"\x12\x20" + hashlib.sha256(f"sapo{i}".encode()).digest()).decode() for i in range(12)]
    swarm = MemorySwarm()
    ts = [swarm.transport(p, max_peers_per_read=4) for p in ids]
    prob = source.draw(5, 0, 1)[0]
    spec = TaskSpecRecord(task=prob.spec.task, config_hash=prob.spec.config_hash, seed=prob.spec.seed,
                          index=prob.spec.index)
    right = f"<think>easy</think><answer>{prob.answer}</answer>"
    for t in ts:
        t.heartbeat()
        t.publish_rollouts(4, {spec_key(prob.spec): RolloutGroup(spec=spec, question=prob.question,
                                                                 completions=[right, right])})
    model, tok = tiny_model
    engine = GRPOEngine(model, tok, GRPOParams(num_generations=2, max_completion_length=8, seed=0))
    player = SapoPlayer(engine, ts[0], source, sapo_rubric(), sapo_prompt,
                        SapoParams(local_groups=1, external_groups=8, policy="random", collect_seconds=0.0,
                                   poll_seconds=0.01), node_seed=1, events=MemoryEvents())
    got = player.collect(4, None)
    window = set(read_set(ids, ids[0], 4, 4, namespace="rl-swarm"))
    assert len(window) == 4 and ids[0] in window
    assert {g.peer for g in got} == window - {ids[0]}
    winners = player.winners(got)
    assert winners and set(winners) <= window - {ids[0]}
