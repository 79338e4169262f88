"""Outbox storage: dedup on enqueue, counts, state changes, persistence, single-sender lock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hivemind_exp.chain.outbox import Outbox, OutboxBusy, OutboxWorker, default_outbox_path


def test_enqueue_is_idempotent_per_submission(tmp_path: Path) -> None:
    box = Outbox(default_outbox_path(tmp_path))
    assert box.enqueue_reward(0, 1, 1500, "QmA")
    assert not box.enqueue_reward(0, 1, 9999, "QmA"), "same round/stage/peer must not queue twice"
    assert box.enqueue_reward(0, 2, 1500, "QmA")
    assert box.enqueue_winners(0, ["QmA", "QmB"], "QmA")
    assert not box.enqueue_winners(0, ["QmC"], "QmA")
    assert box.counts().as_dict() == {"pending": 3, "confirmed": 0, "failed": 0}
    first = box.entries()[0]
    assert first.kind == "reward" and first.payload == {"round": 0, "stage": 1, "reward": 1500, "peer_id": "QmA"}


def test_bad_input_is_refused(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    with pytest.raises(ValueError, match="round and stage"):
        box.enqueue_reward(-1, 0, 1, "QmA")
    with pytest.raises(ValueError, match="at least one"):
        box.enqueue_winners(0, [], "QmA")


def test_state_changes_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "data" / "outbox.sqlite"
    box = Outbox(path)
    for stage in range(3):
        box.enqueue_reward(2, stage, stage * 10, "QmA")
    a, b, c = box.entries()
    box.record_sent(a.id, "0x" + "ab" * 32)
    box.mark_confirmed(a.id, None)
    box.mark_failed(b.id, "InvalidVote: bad")
    box.reschedule(c.id, time.time() + 3600, "unavailable")
    reopened = Outbox(path)  # a restart sees the same queue
    assert reopened.counts().as_dict() == {"pending": 1, "confirmed": 1, "failed": 1}
    assert reopened.entries("confirmed")[0].tx_hash == "0x" + "ab" * 32, "confirm keeps the recorded hash"
    assert reopened.due() == [], "rescheduled entry is not due yet"
    assert reopened.entries("pending")[0].attempts == 1
    assert reopened.next_due_at() is not None and reopened.next_due_at() > time.time() + 3000
    assert reopened.retry_failed() == 1
    assert [e.id for e in reopened.due()] == [b.id]
    later = time.time() + 60
    assert reopened.postpone_pending(later) == 1, "only entries due before `later` move"
    assert reopened.due() == [] and reopened.next_due_at() == later


def test_only_one_sender_per_outbox(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    first = OutboxWorker(box, client=None)  # type: ignore[arg-type]  # lock only; never sends
    first._acquire_file_lock()
    try:
        with pytest.raises(OutboxBusy, match="already sending"):
            OutboxWorker(Outbox(tmp_path / "o.sqlite"), client=None).start()  # type: ignore[arg-type]
    finally:
        first._release_file_lock()


def test_backoff_grows_and_caps(tmp_path: Path) -> None:
    w = OutboxWorker(Outbox(tmp_path / "o.sqlite"), client=None, base_delay=0.5, max_delay=8.0)  # type: ignore[arg-type]
    delays = [w._backoff(n) for n in range(8)]
    assert 0.4 <= delays[0] <= 0.6
    assert delays[3] > delays[1] > delays[0]
    assert max(delays) <= 8.0 * 1.2
    with pytest.raises(ValueError):
        OutboxWorker(Outbox(tmp_path / "o.sqlite"), client=None, base_delay=2, max_delay=1)  # type: ignore[arg-type]
