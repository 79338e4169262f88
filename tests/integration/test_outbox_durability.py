"""Durability: the RPC goes away for 30 s, and the sender is SIGKILLed mid-send. Nothing lost, nothing doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from eth_account import Account

from hivemind_exp.chain.anvil import ANVIL_DEV_KEYS, AnvilProcess
from hivemind_exp.chain.outbox import Outbox, OutboxWorker
from hivemind_exp.chain.wallet import WalletChainClient
from tests.fixtures.chain import TcpProxy, deploy_fresh, event_log, mine, nonce_of, register, set_automine
from tests.fixtures.procs import wait_for

pytestmark = pytest.mark.chain




@pytest.mark.slow
def test_rpc_down_30s_then_all_20_land_exactly_once(anvil: AnvilProcess, tmp_path: Path) -> None:
    dc = deploy_fresh(anvil.rpc_url, tmp_path)
    owner = dc.client(0)
    key = ANVIL_DEV_KEYS[7]
    address = Account.from_key(key).address
    # Five peers of one wallet (rewards are per peer), round 0 stage 2: 5 x 3 rewards + 5 votes.
    peers = [register(dc.client(7), f"down{i}") for i in range(5)]
    for _ in range(2):
        owner.update_stage_and_round()
    sent_before = nonce_of(dc.rpc_url, address)

    proxy = TcpProxy(anvil.port)
    proxy.up()
    try:
        client = WalletChainClient(proxy.url, dc.address, key, timeout=2.0, receipt_timeout=20)
        box = Outbox(tmp_path / "outbox.sqlite")
        worker = OutboxWorker(box, client, base_delay=0.5, max_delay=4.0, poll_interval=0.2).start()
        try:
            proxy.down()
            for i, pid in enumerate(peers):
                for stage in range(3):
                    box.enqueue_reward(0, stage, 1000 * i + stage, pid)
                box.enqueue_winners(0, [pid, peers[(i + 1) % 5]], pid)
            worker.wake()
            time.sleep(30)
            counts = box.counts()
            assert (counts.pending, counts.confirmed, counts.failed) == (20, 0, 0)
            first = box.entries()[0]
            assert first.attempts >= 3 and "unavailable" in (first.note or ""), "it kept trying with backoff"
            assert first.attempts <= 15, f"backoff should space attempts out, saw {first.attempts} in 30 s"
            assert nonce_of(dc.rpc_url, address) == sent_before
            proxy.up()
            wait_for(lambda: box.counts().confirmed == 20, 90, "all 20 confirmed after the RPC came back")
        finally:
            worker.stop()
    finally:
        proxy.close()
    assert box.counts().failed == 0
    rewards = event_log(dc, "RewardSubmitted", account=address)
    assert sorted((e["peerId"], e["stageNumber"]) for e in rewards) == sorted((p, s) for p in peers for s in range(3))
    assert sorted(e["peerId"] for e in event_log(dc, "WinnerSubmitted", account=address)) == sorted(peers)
    assert nonce_of(dc.rpc_url, address) == sent_before + 20, "exactly one transaction per submission"
    assert owner.total_rewards(peers) == [sum(1000 * i + s for s in range(3)) for i in range(5)]


CHILD = textwrap.dedent("""
    import sys, time
    from hivemind_exp.chain.outbox import Outbox, OutboxWorker
    from hivemind_exp.chain.wallet import WalletChainClient

    rpc, address, key, db = sys.argv[1:5]
    box = Outbox(db)
    client = WalletChainClient(rpc, address, key, timeout=5, receipt_timeout=600)
    worker = OutboxWorker(box, client, base_delay=0.2, max_delay=1.0, poll_interval=0.2).start()
    print("started", flush=True)
    while box.counts().pending:
        time.sleep(0.2)
    worker.stop()
    print("done", box.counts().as_dict(), flush=True)
""")


def test_sigkill_mid_send_then_restart_never_doubles(own_anvil: AnvilProcess, tmp_path: Path) -> None:
    rpc = own_anvil.rpc_url
    dc = deploy_fresh(rpc, tmp_path)
    key = ANVIL_DEV_KEYS[3]
    address = Account.from_key(key).address
    kill = register(dc.client(3), "kill")
    for _ in range(3):
        dc.client(0).update_stage_and_round()
    sent_before = nonce_of(rpc, address)
    db = tmp_path / "outbox.sqlite"
    box = Outbox(db)
    for stage in range(3):
        box.enqueue_reward(0, stage, 100 + stage, kill)
    box.enqueue_reward(1, 0, 7, kill)
    box.enqueue_winners(0, [kill], kill)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    args = [sys.executable, str(script), rpc, dc.address, key, str(db)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    set_automine(rpc, False)  # transactions now wait in the pool: the child blocks after sending
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: box.entries()[0].tx_hash is not None, 60, "the first transaction to be sent")
        sent_hash = box.entries()[0].tx_hash
        time.sleep(0.5)
        assert box.counts().confirmed == 0
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    assert dc.client(0).transaction_status(sent_hash) == "pending"

    second = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        # The restarted sender sees the pending hash and must wait on it, not send the entry again.
        wait_for(lambda: nonce_of(rpc, address, "pending") >= sent_before + 2, 60, "the restart to send entry 2")
        time.sleep(1.0)
        pending_nonce = nonce_of(rpc, address, "pending")
        assert pending_nonce == sent_before + 2, "entry 1 re-sent while its first transaction was pending"
        set_automine(rpc, True)
        mine(rpc)
        out, _ = second.communicate(timeout=120)
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(10)
    assert second.returncode == 0, out
    assert "done {'pending': 0, 'confirmed': 5, 'failed': 0}" in out, out
    assert box.entries()[0].tx_hash == sent_hash, "entry 1 confirmed by the transaction sent before the kill"
    rewards = event_log(dc, "RewardSubmitted", account=address)
    assert sorted((e["roundNumber"], e["stageNumber"]) for e in rewards) == [(0, 0), (0, 1), (0, 2), (1, 0)]
    assert len(event_log(dc, "WinnerSubmitted", account=address)) == 1
    assert nonce_of(rpc, address) == sent_before + 5, "one transaction per entry, none repeated (not even reverted)"
