"""The swarm keeps working when the bootnode leaves and when a DHT child process is killed."""

from __future__ import annotations

import os
import signal
import time

import pytest

from hivemind_exp.swarm.records import OutputRecord

pytestmark = pytest.mark.slow  # private multi-process swarms


def _wait_dead(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # A killed child stays a zombie until its parent reaps it; is_alive() inside the transport does that.
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split(") ")[1].startswith("Z"):
                return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} did not die")


def test_bootnode_going_away_leaves_the_others_working(swarm_factory) -> None:
    boot, a, b = swarm_factory(3)
    boot.close()
    rec_a = {"q1": OutputRecord(completion="a's answer", reward=1.0)}
    rec_b = {"q1": OutputRecord(completion="b's answer " + "long " * 4000)}  # chunked
    assert a.publish_outputs(1, 0, rec_a)
    assert b.publish_outputs(1, 0, rec_b)
    assert a.publish_reward(1, 0, 0.75)
    expected = {a.peer_id: rec_a, b.peer_id: rec_b}
    assert a.fetch_outputs(1, 0, timeout=15) == expected
    assert b.fetch_outputs(1, 0, timeout=15) == expected
    assert b.fetch_rewards(1, 0, timeout=10) == {a.peer_id: 0.75}
    assert a.heartbeat() and b.heartbeat()
    assert {a.peer_id, b.peer_id} <= {p.peer_id for p in b.list_peers(timeout=10)}


def test_killed_dht_process_is_restarted_transparently(swarm_factory) -> None:
    import psutil

    boot, a, b = swarm_factory(3)
    old_pid, old_addrs, peer_id = a.dht_pid, a.visible_maddrs(), a.peer_id
    assert old_pid is not None and a.restart_count == 0
    old_daemons = [p for p in psutil.Process(old_pid).children() if p.name() == "p2pd"]
    assert old_daemons
    os.kill(old_pid, signal.SIGKILL)
    _wait_dead(old_pid)

    # The next call notices, restarts with the same identity and listen port, and succeeds.
    rec = {"q": OutputRecord(completion="after the crash " * 3000)}
    assert a.publish_outputs(2, 0, rec)
    assert a.restart_count == 1 and a.dht_pid not in (None, old_pid) and a.is_alive()
    assert a.peer_id == peer_id and a.visible_maddrs() == old_addrs
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in old_daemons), "old p2pd survived"
    assert b.fetch_outputs(2, 0, timeout=15, peers=[a.peer_id]) == {a.peer_id: rec}

    # It also reads what the others publish, and they reach it (round trip both ways).
    assert b.publish_reward(2, 0, 0.5)
    assert a.fetch_rewards(2, 0, timeout=10) == {b.peer_id: 0.5}
    assert a.heartbeat(name="phoenix")
    assert "phoenix" in {p.name for p in boot.list_peers(timeout=10)}

    # A crash in the middle of a fetch: the fetch restarts the DHT and still returns in time.
    os.kill(a.dht_pid, signal.SIGKILL)
    start = time.monotonic()
    got = a.fetch_outputs(2, 0, timeout=20, peers=[a.peer_id])
    assert got == {a.peer_id: rec}
    assert time.monotonic() - start < 20 and a.restart_count == 2
    assert a.drop_counts() == {} or set(a.drop_counts()) <= {"incomplete"}


def test_killed_bootnode_dht_restarts_and_serves_again(swarm_factory) -> None:
    boot, a, b = swarm_factory(3)
    os.kill(boot.dht_pid, signal.SIGKILL)
    _wait_dead(boot.dht_pid)
    assert boot.publish_round_state(5, 1, time.time() + 60)
    assert boot.restart_count == 1
    state = a.fetch_round_state(timeout=10)
    assert state is not None and (state.round, state.stage) == (5, 1)
    assert a.publish_outputs(5, 1, {"q": OutputRecord(completion="x")})
    assert boot.fetch_outputs(5, 1, timeout=10, peers=[a.peer_id]) == {a.peer_id: {"q": OutputRecord(completion="x")}}
