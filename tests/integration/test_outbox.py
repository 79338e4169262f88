"""Outbox worker on a real chain: sends, confirms by receipt, never doubles, sorts refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account

from hivemind_exp.chain.anvil import ANVIL_DEV_KEYS
from hivemind_exp.chain.outbox import Outbox, OutboxCounts, OutboxWorker
from tests.fixtures.chain import DeployedContract, event_log, nonce_of, register
from tests.fixtures.procs import wait_for

pytestmark = pytest.mark.chain




def test_worker_confirms_skips_already_done_and_sorts_refusals(deployed_contract: DeployedContract,
                                                                tmp_path: Path) -> None:
    dc = deployed_contract
    owner, peer = dc.client(0), dc.client(5)
    address = Account.from_key(ANVIL_DEV_KEYS[5]).address
    out = register(peer, "out")
    a, b = register(dc.client(4), "A"), register(dc.client(4), "B")
    peer.submit_reward(0, 0, 111, out)  # already on chain before the outbox sees it
    sent_before = nonce_of(dc.rpc_url, address)

    box = Outbox(tmp_path / "outbox.sqlite")
    box.enqueue_reward(0, 0, 111, out)        # -> confirmed without sending
    box.enqueue_winners(0, [a, b], out)       # -> sent
    box.enqueue_winners(1, [a, a], out)       # round 1 not reached: "not yet"; then no reward yet: "not yet"...
    box.enqueue_reward(1, 0, 2500, out)       # round 1 not reached: "not yet"
    box.enqueue_winners(0, [a], "QmSomeoneElse")  # not this wallet's peer -> failed, not retried
    changes: list[OutboxCounts] = []
    worker = OutboxWorker(box, peer, base_delay=0.2, max_delay=1.0, poll_interval=0.2, on_change=changes.append)
    worker.start()
    try:
        wait_for(lambda: box.counts().confirmed == 2 and box.counts().failed == 1, 30, "first pass")
        notes = {e.id: e.note or "" for e in box.entries()}
        pending = box.entries("pending")
        assert len(pending) == 2 and all("not yet" in notes[e.id] for e in pending)
        assert "InvalidVoterPeerId" in (box.entries("failed")[0].note or "")
        assert nonce_of(dc.rpc_url, address) == sent_before + 1, "only the vote was sent"
        for _ in range(3):
            owner.update_stage_and_round()  # chain reaches round 1: the waiting entries can land
        wait_for(lambda: box.counts().pending == 0, 30, "round-1 entries")
    finally:
        worker.stop()
    assert not worker.running
    counts = box.counts()
    assert (counts.confirmed, counts.failed) == (3, 2), box.entries()
    failed_notes = sorted(e.note or "" for e in box.entries("failed"))
    assert "InvalidVote" in failed_notes[0] + failed_notes[1], "duplicate winners are refused for good"
    rewards = event_log(dc, "RewardSubmitted", account=address)
    assert sorted((e["roundNumber"], e["stageNumber"], e["reward"]) for e in rewards) == [(0, 0, 111), (1, 0, 2500)]
    assert len(event_log(dc, "WinnerSubmitted", account=address)) == 1
    assert changes and changes[-1] == counts
    by_key = {(e.kind, e.payload["round"]): e for e in box.entries("confirmed")}
    assert by_key[("reward", 0)].tx_hash is None and by_key[("reward", 0)].note == "already on chain"
    assert by_key[("winners", 0)].tx_hash and by_key[("reward", 1)].tx_hash, "sent entries keep their tx hash"


def test_restart_resumes_where_it_stopped(deployed_contract: DeployedContract, tmp_path: Path) -> None:
    dc = deployed_contract
    owner, peer = dc.client(0), dc.client(6)
    resume = register(peer, "resume")
    for _ in range(2):
        owner.update_stage_and_round()
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path)
    for stage in range(3):
        box.enqueue_reward(0, stage, 10 * (stage + 1), resume)
    # First worker sends until stopped; a second one (a "restart") finishes the queue.
    first = OutboxWorker(box, peer, base_delay=0.2, max_delay=1.0, poll_interval=0.2)
    first.start()
    wait_for(lambda: box.counts().confirmed >= 1, 30, "first confirmation")
    first.stop()
    assert box.enqueue_reward(0, 0, 10, resume) is False, "re-enqueue after restart is a no-op"
    second = OutboxWorker(Outbox(path), dc.client(6), base_delay=0.2, max_delay=1.0, poll_interval=0.2).start()
    try:
        wait_for(lambda: box.counts().confirmed == 3, 30, "all confirmed after restart")
    finally:
        second.stop()
    assert peer.total_rewards([resume]) == [60]
    assert len(event_log(dc, "RewardSubmitted", account=peer.address)) == 3


def test_vote_drops_unregistered_winners_instead_of_failing(deployed_contract: DeployedContract,
                                                            tmp_path: Path) -> None:
    """A winner seen on the DHT may run with the chain off: the vote still counts for the others."""
    dc = deployed_contract
    peer = dc.client(3)
    voter, winner = register(peer, "voter"), register(dc.client(4), "winner")
    peer.submit_reward(0, 0, 5, voter)
    box = Outbox(tmp_path / "outbox.sqlite")
    second = register(peer, "voter2")
    peer.submit_reward(0, 0, 5, second)
    box.enqueue_winners(0, ["QmOffChainPeer", winner], voter)
    box.enqueue_winners(0, ["QmOffChainPeer"], second)
    worker = OutboxWorker(box, peer, base_delay=0.2, max_delay=1.0, poll_interval=0.2).start()
    try:
        wait_for(lambda: box.counts().confirmed == 1 and box.counts().failed == 1, 30, "both votes to settle")
    finally:
        worker.stop()
    assert peer.voter_votes(0, voter) == [winner]
    (failed,) = box.entries("failed")
    assert "none of the winners" in (failed.note or "") and peer.voter_votes(0, second) == []
