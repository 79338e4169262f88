"""The coordinator's clock rules, tick by tick on the in-memory transport with a fake clock."""

from __future__ import annotations

from hivemind_exp.services.coordinator import Coordinator
from hivemind_exp.services.settings import CoordinatorSettings
from hivemind_exp.swarm.memory_transport import MemorySwarm
from hivemind_exp.swarm.records import OutputRecord, RolloutGroup, TaskSpecRecord

COORD = "QmCoordCoordCoordCoordCoordCoordCoordCoordCoor"
PEERS = ["QmPeerAPeerAPeerAPeerAPeerAPeerAPeerAPeerAPeer", "QmPeerBPeerBPeerBPeerBPeerBPeerBPeerBPeerBPeer"]


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def coordinator(swarm: MemorySwarm, clock: FakeClock, chain=None, **settings) -> Coordinator:
    s = CoordinatorSettings(**{"stage_seconds": 30, "min_stage_seconds": 5, "republish_seconds": 10, **settings})
    c = Coordinator(s, transport=swarm.transport(COORD, coordinator_peer_id=COORD), chain=chain, clock=clock,
                    wait=lambda _s: False, telemetry=False)
    c.setup()
    return c


def published(swarm: MemorySwarm) -> tuple[int, int, float, str]:
    st = swarm.transport(PEERS[0], coordinator_peer_id=COORD).fetch_round_state()
    return st.round, st.stage, st.stage_deadline_unix, st.game


def test_stages_advance_at_their_deadlines_and_roll_into_the_next_round() -> None:
    clock = FakeClock()
    swarm = MemorySwarm(clock=clock)
    c = coordinator(swarm, clock, early_advance=False, max_rounds=1)
    assert published(swarm) == (0, 1, clock.now + 30, "three-stage")
    seen = []
    for _ in range(3):
        clock.now += 29
        assert c.tick() in ("waiting", "republished")
        clock.now += 1
        assert c.tick() == "advanced"
        seen.append(published(swarm)[:2])
    assert seen == [(0, 2), (0, 3), (1, 1)]
    assert c.tick() == "finished"


def test_the_round_state_is_republished_while_a_stage_runs() -> None:
    clock = FakeClock()
    swarm = MemorySwarm(clock=clock)
    c = coordinator(swarm, clock, early_advance=False)
    clock.now += 3
    assert c.tick() == "waiting"
    clock.now += 7
    assert c.tick() == "republished"


def test_it_moves_on_early_only_when_every_live_peer_published_and_not_before_the_minimum() -> None:
    clock = FakeClock()
    swarm = MemorySwarm(clock=clock)
    peers = [swarm.transport(p, coordinator_peer_id=COORD) for p in PEERS]
    for p in peers:
        p.heartbeat()
    c = coordinator(swarm, clock, early_advance_min_peers=2)
    rec = {"q1": OutputRecord(completion="<answer>1</answer>", reward=0.0, meta={"stage": 1})}
    peers[0].publish_outputs(0, 1, rec)
    clock.now += 6
    assert c.tick() == "waiting"  # the second peer has not published yet
    peers[1].publish_outputs(0, 2, rec)  # another stage's record does not count
    assert c.tick() == "waiting"
    peers[1].publish_outputs(0, 1, rec)
    clock.now -= 2  # back inside min_stage_seconds: too early even though everyone is done
    assert c.tick() == "waiting"
    clock.now += 2
    assert c.tick() == "advanced" and published(swarm)[:2] == (0, 2)


def test_a_restarted_coordinator_starts_the_round_after_the_one_in_flight(tmp_path) -> None:
    clock = FakeClock()
    swarm = MemorySwarm(clock=clock)
    state = tmp_path / "coordinator.json"
    c = coordinator(swarm, clock, early_advance=False, state_file=state)
    for _ in range(4):  # to round 1 stage 2
        clock.now += 30
        c.tick()
    assert (c.round, c.stage) == (1, 2)
    again = coordinator(swarm, clock, early_advance=False, state_file=state)
    assert (again.round, again.stage) == (2, 1) and published(swarm)[:2] == (2, 1)


class ChainClock:
    """The contract's clock: three 0-based stages per round (SwarmCoordinator 0.4.2)."""

    mode = "memory"
    contract_address = "0x" + "c0" * 20

    def __init__(self) -> None:
        self.round, self.stage0, self.calls = 0, 0, 0

    def round_and_stage(self) -> tuple[int, int]:
        return self.round, self.stage0

    def update_stage_and_round(self):
        self.calls += 1
        self.stage0 += 1
        if self.stage0 == 3:
            self.round, self.stage0 = self.round + 1, 0
        return None, (self.round, self.stage0)

    def bootnodes(self) -> list[str]:
        return []


def test_a_sapo_round_moves_the_contract_a_whole_round() -> None:
    clock = FakeClock()
    swarm = MemorySwarm(clock=clock)
    chain = ChainClock()
    c = coordinator(swarm, clock, chain=chain, game="sapo", early_advance=False)
    assert published(swarm)[::3] == (0, "sapo") and published(swarm)[1] == 1
    clock.now += 30
    assert c.tick() == "advanced"
    assert chain.round_and_stage() == (1, 0) and chain.calls == 3
    assert published(swarm)[:2] == (1, 1)


def test_sapo_rounds_end_early_once_every_peer_shared_rollouts() -> None:
    clock = FakeClock()
    swarm = MemorySwarm(clock=clock)
    peer = swarm.transport(PEERS[0], coordinator_peer_id=COORD)
    peer.heartbeat()
    c = coordinator(swarm, clock, game="sapo")
    clock.now += 6
    assert c.tick() == "waiting"
    spec = TaskSpecRecord(task="chain_sum", config_hash="0" * 16, seed=1, index=0)
    peer.publish_rollouts(0, {"g": RolloutGroup(spec=spec, question="1 + 1 =", completions=["2", "3"])})
    assert c.tick() == "advanced" and published(swarm)[:2] == (1, 1)
