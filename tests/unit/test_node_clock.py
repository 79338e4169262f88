"""The node's stage clock: one stage numbering, and a game mismatch that waits and says why."""

from __future__ import annotations

import time

from hivemind_exp.services.node import TrainerNode
from hivemind_exp.services.settings import TrainerSettings
from hivemind_exp.swarm.memory_transport import MemorySwarm

COORD = "QmCoordCoordCoordCoordCoordCoordCoordCoordCoor"
NODE = "QmNodeNodeNodeNodeNodeNodeNodeNodeNodeNodeNode1"


class FakeChain:
    """Just the clock of the contract: 0-based stages, as SwarmCoordinator 0.4.2 counts them."""

    def __init__(self, r: int, s0: int):
        self.r, self.s0 = r, s0

    def round_and_stage(self) -> tuple[int, int]:
        return self.r, self.s0


def node(tmp_path, game: str, chain=None) -> tuple[TrainerNode, object]:
    swarm = MemorySwarm()
    n = TrainerNode(TrainerSettings(game=game, data_dir=tmp_path))
    n.transport, n.chain = swarm.transport(NODE, coordinator_peer_id=COORD), chain
    return n, swarm.transport(COORD)


def test_chain_stages_map_to_the_swarms_numbering(tmp_path) -> None:
    for s0, stage in ((0, 1), (1, 2), (2, 3)):
        n, coord = node(tmp_path, "three-stage", FakeChain(4, s0))
        coord.publish_round_state(4, stage, time.time() + 60)
        clock = n.read_clock()
        assert (clock.round, clock.stage, clock.source) == (4, stage, "chain")
        assert clock.deadline is not None  # the DHT record names the same stage, so its deadline is used


def test_every_chain_stage_is_the_one_sapo_stage(tmp_path) -> None:
    for s0 in (0, 1, 2):
        n, coord = node(tmp_path, "sapo", FakeChain(7, s0))
        coord.publish_round_state(7, 1, time.time() + 60, game="sapo")
        assert (n.read_clock().round, n.read_clock().stage) == (7, 1)


def test_a_node_of_another_game_waits_and_names_the_fix(tmp_path) -> None:
    n, coord = node(tmp_path, "three-stage")
    coord.publish_round_state(2, 1, time.time() + 60, game="sapo")
    assert n.read_clock() is None and n.foreign_game == "sapo"
    coord.publish_round_state(3, 1, time.time() + 60, game="three-stage")
    assert n.read_clock().round == 3 and n.foreign_game is None
