"""SIGKILL a trainer at several points while it writes checkpoints (issue 12, "Stopping").

A child process runs a real `TrainerNode` (tiny model, in-memory transport) that trains one
stage per round and checkpoints after each. The parent kills it with SIGKILL at a range of
delays after a checkpoint write starts, so kills land before, inside and after the write and
the state flip. After every kill: the checkpoint the node state names loads whole, the node
state marks the round it was killed in as done once it was published, a node started on the
same data dir resumes from that checkpoint, does not play (or republish) that stage again,
and clears the temp copies the killed write left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hivemind_exp.services.node_state import NodeState
from tests.fixtures.procs import node_env

pytestmark = pytest.mark.slow

PEER = "QmNodeNodeNodeNodeNodeNodeNodeNodeNodeNodeNode1"
COORD = "QmCoordCoordCoordCoordCoordCoordCoordCoordCoor"

CHILD = textwrap.dedent(
    f"""
    import sys, time
    from pathlib import Path
    from hivemind_exp.common.events import MemoryEvents
    from hivemind_exp.trainer.model_source import load_model_and_tokenizer
    from hivemind_exp.services.node import TrainerNode
    from hivemind_exp.services.settings import TrainerSettings
    from hivemind_exp.swarm.memory_transport import MemorySwarm
    from hivemind_exp.trainer.grpo import GRPOEngine, GRPOParams

    model_dir, data_dir = sys.argv[1], Path(sys.argv[2])
    model, tok = load_model_and_tokenizer(model_dir, progress=False)
    engine = GRPOEngine(model, tok, GRPOParams(num_generations=2, max_completion_length=6, seed=0,
                                               learning_rate=1e-3))
    save = engine.save

    def marked_save(directory):
        print("SAVE", flush=True)
        out = save(directory)
        print("SAVED", flush=True)
        return out

    engine.save = marked_save
    swarm = MemorySwarm()
    coord = swarm.transport("{COORD}")
    node = TrainerNode(TrainerSettings(data_dir=data_dir, dataset="generated", questions_per_round=1,
                                       poll_seconds=0.01, heartbeat_seconds=600),
                       transport=swarm.transport("{PEER}", coordinator_peer_id="{COORD}"), engine=engine,
                       events=MemoryEvents(), telemetry=False)
    node.setup()
    r = node.state.last_done[0] + 1 if node.state.last_done else 0
    print("READY", r, flush=True)
    while True:
        coord.publish_round_state(r, 1, time.time() + 60)
        outcome = node.tick()
        assert outcome == "trained", outcome
        print("DONE", r, flush=True)
        r += 1
    """
)


def _leftovers(data: Path) -> list[str]:
    root = data / "checkpoints"
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".")) if root.is_dir() else []


def _run_until_killed(model_dir: Path, data: Path, delay: float, log: Path) -> tuple[int, list[int]]:
    """Start the child, SIGKILL it `delay` s after its second checkpoint write began."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(model_dir), str(data)], stdout=subprocess.PIPE,
                            stderr=log.open("ab"), env=node_env(), text=True, start_new_session=True)
    done: list[int] = []
    start_round = -1
    saves = 0
    deadline = time.monotonic() + 180
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            word, *rest = line.split()
            if word == "READY":
                start_round = int(rest[0])
            elif word == "DONE":
                done.append(int(rest[0]))
            elif word == "SAVE":
                saves += 1
                if saves == 2:
                    time.sleep(delay)
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
            assert time.monotonic() < deadline, "the child did not reach its second checkpoint in 180 s"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert start_round >= 0, log.read_text()[-3000:]
    return start_round, done


def test_sigkill_during_checkpointing_leaves_a_loadable_checkpoint_and_no_republish(tmp_path, tiny_model_dir):
    from hivemind_exp.common.events import MemoryEvents
    from hivemind_exp.services.node import TrainerNode
    from hivemind_exp.services.settings import TrainerSettings
    from hivemind_exp.swarm.memory_transport import MemorySwarm
    from hivemind_exp.trainer.grpo import GRPOEngine, GRPOParams
    from tests.fixtures.tiny_model import make_tiny_model

    data = tmp_path / "node"
    log = tmp_path / "child.log"
    mid_write = 0
    for delay in (0.0, 0.01, 0.03, 0.06, 0.1, 0.2, 0.4):
        start, done = _run_until_killed(tiny_model_dir, data, delay, log)
        # The second write of this run is of round start + 1; its stage was published before it began,
        # so the node state already names that round as done.
        # (With the longer delays the child plays on through more rounds before the kill lands.)
        mid_write += bool(_leftovers(data))
        state = NodeState.load(data / "node-state.json")
        assert state.last_done is not None and state.last_done[1] == 1, (delay, state)
        killed_in = state.last_done[0]
        assert killed_in >= start + 1 and done[0] == start and max(done) <= killed_in, (delay, done, killed_in)
        assert state.checkpoint is not None
        GRPOEngine.load(data / "checkpoints" / state.checkpoint)  # whole: every file there and readable

        # A node started on the same data dir resumes and does not play that stage again.
        model, tok = make_tiny_model()
        swarm = MemorySwarm()
        coord = swarm.transport(COORD)
        node = TrainerNode(TrainerSettings(data_dir=data, dataset="generated", questions_per_round=1,
                                           poll_seconds=0.01, heartbeat_seconds=600),
                           transport=swarm.transport(PEER, coordinator_peer_id=COORD),
                           engine=GRPOEngine(model, tok, GRPOParams(num_generations=2, max_completion_length=6)),
                           events=MemoryEvents(), telemetry=False)
        node.setup()
        try:
            assert _leftovers(data) == []  # what the killed write left is cleared at start
            coord.publish_round_state(killed_in, 1, time.time() + 60)
            assert node.tick() == "stage-done"
            assert swarm.transport(COORD).fetch_outputs(killed_in, 1, peers=[PEER]) == {}
        finally:
            node.shutdown()
    assert mid_write >= 2, "fewer than two kills landed inside a checkpoint write: the delays need retuning"
