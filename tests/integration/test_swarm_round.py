"""A whole round over real processes: coordinator + 3 trainer peers (tiny model) on loopback.

The first test runs `rl-swarm up` itself (chain mode on: anvil + contract) and checks the
records every stage left on the DHT, the winners, and that the chain's totals match what
the trainers computed. The fault tests start the processes one by one so they can kill them.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time

import pytest

from tests.fixtures.procs import CLI, free_block, free_port, group_alive, node_env, wait_for
from tests.fixtures.swarm import swarm_settings

pytestmark = [pytest.mark.slow]


def test_local_swarm_plays_a_full_round_on_chain(tmp_path, tiny_model_dir, tiny_profile):
    """`rl-swarm up` with 3 peers: records of every stage, winners, and chain totals that match."""
    from hivemind_exp.chain.client import ChainReader, load_deployment_address
    from hivemind_exp.chain.rewards import points_to_chain
    from hivemind_exp.swarm.identity import ensure_identity, load_peer_id
    from hivemind_exp.swarm.hivemind_transport import HivemindTransport

    base = free_block(4)
    anvil_port = free_port()
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    argv = CLI + ["up", "--num-peers", "3", "--model", str(tiny_model_dir), "--config", str(tiny_profile),
                  "--dataset", "generated", "--stage-seconds", "120", "--min-stage-seconds", "20",
                  "--no-login", "--no-dashboard",
                  "--metrics-base-port", "0", "--anvil-port", str(anvil_port), "--coordinator-port", str(base),
                  "--peer-base-port", str(base + 1), "--run-dir", str(run_dir), "--logs-dir", str(logs)]
    out = tmp_path / "up.out"
    all_logs = [out] + [logs / f"{n}.log" for n in ("chain", "coordinator", "peer0", "peer1", "peer2")]
    fh = out.open("wb")
    proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=node_env(), cwd=tmp_path,
                            start_new_session=True)
    client = None
    try:
        wait_for(lambda: "local swarm is up" in out.read_text(), 300, "the local swarm", [proc], all_logs)
        coord_id = load_peer_id(run_dir / "coordinator" / "swarm.pem")
        peer_ids = sorted(load_peer_id(run_dir / f"peer{i}" / "swarm.pem") for i in range(3))
        client = HivemindTransport.start(swarm_settings(
            ensure_identity(tmp_path / "observer.pem"), [f"/ip4/127.0.0.1/tcp/{base}/p2p/{coord_id}"],
            coordinator_peer_id=coord_id, dht_client_mode=True))

        # Stage 1: every peer publishes its answers.
        wait_for(lambda: sorted(p for p, recs in client.fetch_outputs(0, 1, timeout=5, peers=peer_ids).items()
                                if recs) == peer_ids, 300, "stage-1 outputs of all 3 peers", [proc], all_logs)
        # A whole round: every peer voted for winners of round 0.
        wait_for(lambda: sorted(client.fetch_winners(0, timeout=5)) == peer_ids, 480,
                 "round-0 winners from all 3 peers", [proc], all_logs)
        rewards = {stage: client.fetch_rewards(0, stage, timeout=10) for stage in (1, 2, 3)}
        for stage, got in rewards.items():
            assert sorted(got) == peer_ids, f"stage {stage} reward record lists {sorted(got)}"
        winners = client.fetch_winners(0, timeout=10)
        # a random tiny model rarely answers right: a vote may be empty ("no winner"), never a stranger
        assert all(set(w) <= set(peer_ids) for w in winners.values())
        from hivemind_exp.common.events import read_events

        for i in range(3):
            steps = {e["stage"]: e for e in read_events(run_dir / f"peer{i}" / "events.jsonl", kind="step")
                     if e["round"] == 0}
            assert sorted(steps) == [1, 2, 3], steps
            # stage-2 and stage-3 prompts were built from all three peers' stage-1 answers
            for stage in (2, 3):
                assert (steps[stage]["questions"], steps[stage]["peers_seen"]) == (2, 3), steps[stage]

        # The chain holds exactly what the trainers computed (queued through the outbox).
        reader = ChainReader(f"http://127.0.0.1:{anvil_port}", load_deployment_address(run_dir / "deployment.json"))
        voters = [p for p in peer_ids if winners.get(p)]
        wait_for(lambda: all(reader.reward_on_chain(0, s, p) for s in (0, 1, 2) for p in peer_ids)
                 and all(reader.winners_on_chain(0, p) for p in voters), 120, "submissions on chain",
                 [proc], all_logs)
        # Round 0 on chain is exactly what each trainer published for it on the DHT ...
        eoas = {p: reader.eoa_of(p) for p in peer_ids}
        for s in (1, 2, 3):
            on_chain = reader.round_stage_rewards(0, s - 1, [eoas[p] for p in peer_ids])
            assert on_chain == [points_to_chain(rewards[s][p]) for p in peer_ids], (s, on_chain, rewards[s])
        votes = [w for ws in winners.values() for w in ws]
        for p in peer_ids:
            assert reader.peer_vote_count(0, p) == votes.count(p)
        # ... and getTotalRewards is the sum over every (round, stage) submitted so far. The swarm
        # keeps playing meanwhile, so read both sides until they describe the same moment.
        for _ in range(10):
            current = reader.current_round()
            totals = reader.total_rewards(peer_ids)
            summed = [sum(reader.round_stage_rewards(r, st, [eoas[p]])[0] for r in range(current + 1) for st in (0, 1, 2))
                      for p in peer_ids]
            if totals == summed and reader.current_round() == current:
                break
            time.sleep(1)
        assert totals == summed, (totals, summed)
    finally:
        if client is not None:
            client.close()
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        finally:
            fh.close()
        stopped_in = time.monotonic() - t0
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    assert stopped_in < 20, f"Ctrl-C took {stopped_in:.1f} s"
    pids = [int(m) for m in re.findall(r"\(pid (\d+),", out.read_text())]
    assert len(pids) == 5
    deadline = time.monotonic() + 10  # orphaned children are reaped by init a moment later
    while [p for p in pids if group_alive(p)] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in pids if group_alive(p)], "processes left running after Ctrl-C"
    with socket.socket() as s:  # anvil (its own session) is gone too: nothing accepts on its port
        assert s.connect_ex(("127.0.0.1", anvil_port)) != 0, "anvil still running after Ctrl-C"
