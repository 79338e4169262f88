"""The trainer node's rules, driven tick by tick on the in-memory transport.

A real `TrainerNode` with a real GRPO engine on the tiny random model, the built-in problem
generator, a `MemorySwarm` and a fake clock: resume without redoing a stage, no training on
a stale stage, a late joiner that skips or plays, winners only for rounds it played, a node
cut off from the DHT that waits and comes back, chain submissions numbered the chain's way,
and a swarm over the read cap, where a node plays and votes on its window of the ring. What these check is read from records, node state and step events, never from logs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hivemind_exp.common.events import MemoryEvents
from hivemind_exp.services.node import TrainerNode
from hivemind_exp.services.settings import TrainerSettings
from hivemind_exp.swarm.memory_transport import MemorySwarm
from hivemind_exp.swarm.records import OutputRecord
from tests.fixtures.tiny_model import make_tiny_model

COORD = "QmCoordCoordCoordCoordCoordCoordCoordCoordCoor"
NODE = "QmNodeNodeNodeNodeNodeNodeNodeNodeNodeNodeNode1"
PEER = "QmPeerPeerPeerPeerPeerPeerPeerPeerPeerPeerPeer2"


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def tiny_engine(seed: int = 0):
    from hivemind_exp.trainer.grpo import GRPOEngine, GRPOParams

    model, tok = make_tiny_model(seed)
    return GRPOEngine(model, tok, GRPOParams(num_generations=2, max_completion_length=6, seed=seed,
                                             learning_rate=1e-3))


class Lab:
    """One in-memory swarm: a coordinator's transport to set the clock, and nodes on it."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.clock = FakeClock()
        self.swarm = MemorySwarm(clock=self.clock)
        self.coord = self.swarm.transport(COORD)
        self.nodes: list[TrainerNode] = []

    def stage(self, round_no: int, stage: int, left: float = 60.0) -> None:
        self.coord.publish_round_state(round_no, stage, self.clock.now + left)

    def node(self, peer_id: str = NODE, data: str = "node", engine=None, chain=None, **settings) -> TrainerNode:
        s = TrainerSettings(data_dir=self.tmp / data, dataset="generated", questions_per_round=1, poll_seconds=0.01,
                            heartbeat_seconds=600, **settings)
        transport = self.swarm.transport(peer_id, coordinator_peer_id=COORD,
                                         max_peers_per_read=s.dht_max_peers_per_read)
        n = TrainerNode(s, transport=transport,
                        engine=engine or tiny_engine(), chain=chain, events=MemoryEvents(), clock=self.clock,
                        telemetry=False)
        n.setup()
        self.nodes.append(n)
        return n

    def close(self) -> None:
        for n in self.nodes:
            n.shutdown()


@pytest.fixture
def lab(tmp_path):
    lab = Lab(tmp_path)
    yield lab
    lab.close()


def steps(node: TrainerNode) -> list[dict]:
    return [e for e in node.events.events if e["kind"] == "step"]


def test_a_stage_is_trained_published_and_checkpointed_once(lab: Lab) -> None:
    n = lab.node()
    assert n.tick() == "no-round-state"
    lab.stage(0, 1)
    assert n.tick() == "trained"
    (ev,) = steps(n)
    assert (ev["round"], ev["stage"], ev["game"], ev["peer"]) == (0, 1, "three-stage", NODE)
    outs = lab.coord.fetch_outputs(0, 1, peers=[NODE])[NODE]
    assert list(outs) == [p.qid for p in n.round_problems(0)]
    assert lab.coord.fetch_rewards(0, 1) == {NODE: pytest.approx(ev["mean_reward"], abs=1e-6)}
    assert n.state.last_done == (0, 1) and (n.data_dir / "checkpoints" / n.state.checkpoint).is_dir()
    assert n.tick() == "stage-done" and len(steps(n)) == 1  # never twice


def test_a_restarted_node_resumes_its_weights_and_does_not_redo_the_stage(lab: Lab) -> None:
    import torch

    first = lab.node()
    lab.stage(0, 1)
    assert first.tick() == "trained"
    trained = {k: v.clone() for k, v in first.engine.model.state_dict().items()}
    first.shutdown()
    again = lab.node(engine=tiny_engine(seed=5))  # other initial weights: the checkpoint must replace them
    for k, v in again.engine.model.state_dict().items():
        assert torch.equal(v, trained[k]), k
    assert again.tick() == "stage-done" and steps(again) == []
    lab.stage(0, 2)
    assert again.tick() == "trained"
    (ev,) = steps(again)
    assert ev["stage"] == 2 and ev["peers_seen"] == 1  # its own stage-1 answer, from before the restart


def test_a_stale_stage_is_not_trained(lab: Lab) -> None:
    n = lab.node(stage_stale_seconds=30)
    lab.stage(0, 1, left=-31)  # the deadline passed 31 s ago and the coordinator went quiet
    assert n.tick() == "stale-stage"
    assert steps(n) == [] and lab.coord.fetch_outputs(0, 1, peers=[NODE]) == {}
    lab.stage(0, 1, left=-29)  # within the grace period: still played
    assert n.tick() == "trained"


def test_a_late_joiner_with_no_answers_sits_the_round_out(lab: Lab) -> None:
    n = lab.node()
    lab.stage(0, 2)
    assert n.tick() == "skipped"
    assert steps(n) == [] and n.state.done(0, 3) and 0 in n.state.winners_done
    lab.stage(0, 3)
    assert n.tick() == "stage-done"
    lab.stage(1, 1)
    assert n.tick() == "trained"
    assert lab.coord.fetch_winners(0) == {}  # no vote on a round it did not play
    assert n.rounds_finished == 0


def test_a_late_joiner_plays_on_the_swarms_answers(lab: Lab) -> None:
    peer = lab.swarm.transport(PEER, coordinator_peer_id=COORD)
    peer.heartbeat()
    n = lab.node()
    qid = n.round_problems(0)[0].qid
    peer.publish_outputs(0, 1, {qid: OutputRecord(completion="<think>t</think><answer>7</answer>", final_answer="7",
                                                  reward=1.0, meta={"stage": 1})})
    lab.stage(0, 2)
    assert n.tick() == "trained"
    (ev,) = steps(n)
    assert (ev["stage"], ev["peers_seen"]) == (2, 1)


def test_winners_are_picked_from_the_swarms_final_answers(lab: Lab) -> None:
    peer = lab.swarm.transport(PEER, coordinator_peer_id=COORD)
    peer.heartbeat()
    n = lab.node(max_rounds=1)
    for stage in (1, 2, 3):
        lab.stage(0, stage)
        assert n.tick() == "trained"
    prob = n.round_problems(0)[0]
    right = (f"<summarize_feedback>ok</summarize_feedback><majority>{PEER}</majority><think>sum</think>"
             f"<answer>{prob.answer}</answer>")
    peer.publish_outputs(0, 3, {prob.qid: OutputRecord(completion=right, final_answer=prob.answer, reward=1.0,
                                                       meta={"stage": 3})})
    lab.stage(1, 1)
    assert n.tick() == "finished"  # round 0 is over: vote, count it, and --max-rounds 1 is reached
    assert lab.coord.fetch_winners(0) == {NODE: [PEER]}
    assert n.rounds_finished == 1 and 0 in n.state.winners_done


def test_a_node_cut_off_from_the_dht_waits_and_comes_back(lab: Lab) -> None:
    n = lab.node()
    lab.stage(0, 1)
    lab.swarm.partition(NODE)
    assert n.tick() == "no-round-state"  # no crash, no training blind
    assert steps(n) == []
    lab.swarm.partition(NODE, cut=False)
    assert n.tick() == "trained"


class LedgerChain:
    """A contract's clock and ledger in memory (0-based stages, as SwarmCoordinator 0.4.2)."""

    mode = "memory"
    contract_address = "0x" + "c0" * 20

    def __init__(self, round_no: int = 0, stage0: int = 0):
        self.round, self.stage0 = round_no, stage0
        self.rewards: dict[tuple[int, int, str], int] = {}
        self.votes: dict[tuple[int, str], list[str]] = {}

    def round_and_stage(self) -> tuple[int, int]:
        return self.round, self.stage0

    def account_address(self, peer_id=None):
        return "0x" + "ab" * 20

    def reward_on_chain(self, r, s, peer_id) -> bool:
        return (r, s, peer_id) in self.rewards

    def winners_on_chain(self, r, peer_id) -> bool:
        return (r, peer_id) in self.votes

    def registered_peers(self, peer_ids):
        return list(peer_ids)

    def transaction_status(self, tx_hash):
        return "success"

    def submit_reward(self, r, s, reward, peer_id, *, on_sent=None):
        from hivemind_exp.chain.client import TxResult

        self.rewards[(r, s, peer_id)] = reward
        return TxResult(tx_hash="0x" + "11" * 32, block_number=1, gas_used=1)

    def submit_winners(self, r, winners, peer_id, *, on_sent=None):
        from hivemind_exp.chain.client import TxResult

        self.votes[(r, peer_id)] = list(winners)
        return TxResult(tx_hash="0x" + "22" * 32, block_number=2, gas_used=1)


def test_chain_submissions_use_the_chains_stage_numbers(lab: Lab) -> None:
    from hivemind_exp.chain.rewards import points_to_chain

    chain = LedgerChain(round_no=3, stage0=1)  # the chain's critique stage
    n = lab.node(chain=chain)  # a given chain client is used whatever chain_mode says
    peer = lab.swarm.transport(PEER, coordinator_peer_id=COORD)
    peer.heartbeat()
    qid = n.round_problems(3)[0].qid
    peer.publish_outputs(3, 1, {qid: OutputRecord(completion="<answer>1</answer>", reward=0.0, meta={"stage": 1})})
    lab.stage(3, 2)
    assert n.tick() == "trained"
    assert n.drain_outbox(timeout=10)
    (ev,) = steps(n)
    assert chain.rewards == {(3, 1, NODE): points_to_chain(ev["mean_reward"])}


def test_over_the_read_cap_a_node_plays_and_judges_the_same_window_all_round(lab: Lab) -> None:
    # 11 other peers, read cap 4: the node's stages 2-3 show, and its winners vote scores, only itself
    # and the 3 peers after it on round 0's ring, though every other peer answered correctly.
    import hashlib

    import base58

    from hivemind_exp.swarm.read_set import read_set

    others = [base58.b58encode(b"\x12\x20" + hashlib.sha256(f"node-cap{i}".encode()).digest()).decode()
              for i in range(11)]
    n = lab.node(dht_max_peers_per_read=4)
    window = set(read_set(others + [NODE], NODE, 0, 4, namespace="rl-swarm"))
    assert len(window) == 4 and NODE in window
    (prob,) = n.round_problems(0)
    texts = {1: f"<think>so</think><answer>{prob.answer}</answer>",
             2: "<compare>fine</compare><identify>None</identify>",
             3: f"<summarize_feedback>ok</summarize_feedback><majority>None</majority><think>so</think>"
                f"<answer>{prob.answer}</answer>"}
    peers = [lab.swarm.transport(p) for p in others]
    for t in peers:
        t.heartbeat()
    for stage in (1, 2, 3):
        for t in peers:
            t.publish_outputs(0, stage, {prob.qid: OutputRecord(completion=texts[stage])})
        lab.stage(0, stage)
        assert n.tick() == "trained"
    assert [e["peers_seen"] for e in steps(n)] == [0, 4, 4]  # stage 1 reads nobody
    lab.stage(1, 1)
    assert n.tick() == "trained"
    (vote,) = lab.coord.fetch_winners(0).values()
    assert set(vote) - {NODE} == window - {NODE}  # every correct peer it read, and no other
