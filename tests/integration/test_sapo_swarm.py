"""The SAPO game over real processes: `rl-swarm up --game sapo` with 3 peers (tiny model), chain on.

Read from the nodes' structured event files, not their logs: every peer played rounds 0 and
1, published its own groups, and in round 1 trained on at least one group another peer
published; the DHT holds each peer's groups; the chain holds each peer's round-0 reward
(stage 0: a SAPO round is one stage) exactly as the peer computed it; the round record names
the game and every peer's heartbeat carries its SAPO stats (what the dashboard shows).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.swarm import swarm_settings
from tests.fixtures.procs import CLI, free_block, free_port, group_alive, node_env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.chain]


def steps(path: Path) -> list[dict]:
    from hivemind_exp.common.events import read_events

    return list(read_events(path, kind="step"))


def test_three_sapo_peers_share_and_train_on_each_others_groups(tmp_path, tiny_model_dir, tiny_profile):
    from hivemind_exp.chain.client import ChainReader, load_deployment_address
    from hivemind_exp.chain.rewards import points_to_chain
    from hivemind_exp.swarm.identity import ensure_identity, load_peer_id
    from hivemind_exp.swarm.hivemind_transport import HivemindTransport

    base = free_block(4)
    anvil_port = free_port()
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    argv = CLI + ["up", "--game", "sapo", "--num-peers", "3", "--model", str(tiny_model_dir),
                  "--config", str(tiny_profile), "--stage-seconds", "90", "--min-stage-seconds", "5",
                  "--no-login", "--no-dashboard", "--metrics-base-port", "0",
                  "--anvil-port", str(anvil_port), "--coordinator-port", str(base), "--peer-base-port", str(base + 1),
                  "--run-dir", str(run_dir), "--logs-dir", str(logs)]
    env = {**node_env(), "RLSWARM_SAPO_LOCAL_GROUPS": "2", "RLSWARM_SAPO_EXTERNAL_GROUPS": "2",
           "RLSWARM_SAPO_POLICY": "random", "RLSWARM_SAPO_COLLECT_SECONDS": "20"}
    out = tmp_path / "up.out"
    all_logs = [out] + [logs / f"{n}.log" for n in ("chain", "coordinator", "peer0", "peer1", "peer2")]
    events = [run_dir / f"peer{i}" / "events.jsonl" for i in range(3)]
    fh = out.open("wb")
    proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    client = None
    try:
        wait_for(lambda: all(any(e["round"] >= 1 for e in steps(p)) for p in events), 600,
                 "round-1 steps of all 3 peers", [proc], all_logs)
        peer_ids = sorted(load_peer_id(run_dir / f"peer{i}" / "swarm.pem") for i in range(3))
        by_peer = {}
        for path in events:
            evs = steps(path)
            assert {e["game"] for e in evs} == {"sapo"}
            by_peer[evs[0]["peer"]] = evs
        assert sorted(by_peer) == peer_ids
        for peer, evs in by_peer.items():
            r1 = [e for e in evs if e["round"] == 1]
            assert len(r1) == 1, f"{peer} played round 1 {len(r1)} times"
            e = r1[0]
            assert e["published"] and e["local_groups"] == 2
            assert e["external_taken"] >= 1, f"{peer} took no external group in round 1: {e}"
            assert peer not in e["from_peers"] and set(e["from_peers"]) <= set(peer_ids)
            assert e["dropped"] == {}

        coord_id = load_peer_id(run_dir / "coordinator" / "swarm.pem")
        client = HivemindTransport.start(swarm_settings(
            ensure_identity(tmp_path / "observer.pem"), [f"/ip4/127.0.0.1/tcp/{base}/p2p/{coord_id}"],
            coordinator_peer_id=coord_id, dht_client_mode=True))
        groups = client.fetch_rollouts(1, timeout=10, peers=peer_ids)
        assert sorted(groups) == peer_ids and all(len(g) == 2 for g in groups.values())
        # What the dashboard reads: the round record names the game; heartbeats carry SAPO stats.
        assert client.fetch_round_state(timeout=10).game == "sapo"

        def stats_seen() -> bool:
            seen = {p.peer_id: p.sapo for p in client.list_peers(timeout=10)}
            return all(seen.get(p) is not None and seen[p].round >= 1 for p in peer_ids)

        wait_for(stats_seen, 120, "SAPO stats in every peer's heartbeat", [proc], all_logs)
        for info in client.list_peers(timeout=10):
            if info.peer_id in peer_ids and info.sapo.round == 1:
                e = [x for x in by_peer[info.peer_id] if x["round"] == 1][0]
                assert (info.sapo.shared, info.sapo.taken) == (e["local_groups"], e["external_taken"])

        reader = ChainReader(f"http://127.0.0.1:{anvil_port}", load_deployment_address(run_dir / "deployment.json"))
        wait_for(lambda: all(reader.reward_on_chain(0, 0, p) for p in peer_ids), 120, "round-0 rewards on chain",
                 [proc], all_logs)
        eoas = [reader.eoa_of(p) for p in peer_ids]
        r0 = {p: [e for e in by_peer[p] if e["round"] == 0][0]["mean_reward"] for p in peer_ids}
        on_chain = reader.round_stage_rewards(0, 0, eoas)
        assert on_chain == [points_to_chain(r0[p]) for p in peer_ids], (on_chain, r0)
        assert reader.current_round() >= 1  # the coordinator moved the contract a whole round at a time
    finally:
        if client is not None:
            client.close()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        finally:
            fh.close()
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
