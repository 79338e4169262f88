"""Durable outbox for contract calls that must happen: rewards and winner votes.

Entries live in SQLite (one file in the node's data dir, WAL mode so `rl-swarm status`
can read while the node writes). `OutboxWorker` is a thread that sends due entries one at
a time:

1. If an earlier attempt recorded a tx hash, look it up: mined OK -> confirmed; still
   pending -> check again later; pending for longer than the client's `replace_after`
   (e.g. sent before a restart) -> the wallet client re-sends it with the same nonce and
   higher fees, at most `max_replacements` times per worker, and the new hash is recorded.
   Whichever version is mined, the chain check below confirms the entry once.
2. Ask the chain whether the submission is already there (`reward_on_chain` /
   `winners_on_chain`): yes -> confirmed, nothing sent. This is what makes a retry after a
   crash (or a lost response) never double a submission.
3. Send, record the tx hash as soon as the node accepts it, wait for the receipt.

RPC down / timeouts -> retry with exponential backoff (base x 2^n, capped, +-20% jitter)
for as long as it takes; the whole queue pauses meanwhile. Refusals that say "already
done" count as confirmed; "not yet" refusals (round/stage ahead of the chain) retry up to
`max_not_yet_attempts`; any other refusal marks the entry failed with the reason.

Entries are keyed by what they submit (kind, round, stage, peer), so enqueueing the same
submission twice (e.g. after a node restart) is a no-op.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import random
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

from hivemind_exp.chain.client import ChainClient
from hivemind_exp.chain.errors import ChainError, ChainRevert, ChainUnavailable

log = logging.getLogger(__name__)

EntryKind = Literal["reward", "winners"]
EntryStatus = Literal["pending", "confirmed", "failed"]
OUTBOX_FILENAME = "chain-outbox.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT NOT NULL CHECK (kind IN ('reward', 'winners')),
    dedup_key       TEXT NOT NULL UNIQUE,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    tx_hash         TEXT,
    note            TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_at);
"""


def default_outbox_path(data_dir: Path) -> Path:
    return Path(data_dir) / OUTBOX_FILENAME


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    kind: EntryKind
    payload: dict[str, Any]
    status: EntryStatus
    attempts: int
    next_attempt_at: float
    tx_hash: str | None
    note: str | None


@dataclass(frozen=True)
class OutboxCounts:
    pending: int
    confirmed: int
    failed: int

    def as_dict(self) -> dict[str, int]:
        return {"pending": self.pending, "confirmed": self.confirmed, "failed": self.failed}


class Outbox:
    """The SQLite queue. Every method opens its own connection, so any thread may call it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise ChainError(f"cannot open the chain outbox {self.path}: {exc}") from exc
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a confirmed/sent mark must survive power loss
            yield db
        finally:
            db.close()

    # -- enqueue

    def enqueue_reward(self, round_number: int, stage_number: int, reward: int, peer_id: str) -> bool:
        """Queue a reward (int256 on the contract's scale, see `rewards`). False if already queued."""
        if round_number < 0 or stage_number < 0:
            raise ValueError(f"round and stage must be >= 0, got round {round_number}, stage {stage_number}")
        payload = {"round": int(round_number), "stage": int(stage_number), "reward": int(reward), "peer_id": peer_id}
        return self._insert("reward", f"reward:{round_number}:{stage_number}:{peer_id}", payload)

    def enqueue_winners(self, round_number: int, winners: Sequence[str], peer_id: str) -> bool:
        """Queue this peer's vote for the round's winners. False if a vote for that round is queued."""
        if round_number < 0:
            raise ValueError(f"round must be >= 0, got {round_number}")
        if not winners:
            raise ValueError("winners must name at least one peer")
        payload = {"round": int(round_number), "winners": list(winners), "peer_id": peer_id}
        return self._insert("winners", f"winners:{round_number}:{peer_id}", payload)

    def _insert(self, kind: EntryKind, key: str, payload: dict[str, Any]) -> bool:
        now = time.time()
        with self._connect() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO outbox (kind, dedup_key, payload, status, next_attempt_at, created_at, "
                "updated_at) VALUES (?, ?, ?, 'pending', ?, ?, ?)",
                (kind, key, json.dumps(payload, sort_keys=True), now, now, now))
            return cur.rowcount == 1

    # -- queries

    def counts(self) -> OutboxCounts:
        with self._connect() as db:
            rows = dict(db.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall())
        return OutboxCounts(int(rows.get("pending", 0)), int(rows.get("confirmed", 0)), int(rows.get("failed", 0)))

    def entries(self, status: EntryStatus | None = None) -> list[OutboxEntry]:
        query = "SELECT id, kind, payload, status, attempts, next_attempt_at, tx_hash, note FROM outbox"
        args: tuple[Any, ...] = ()
        if status is not None:
            query += " WHERE status = ?"
            args = (status,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY id", args).fetchall()
        return [self._entry(r) for r in rows]

    def due(self, now: float | None = None, limit: int = 50) -> list[OutboxEntry]:
        now = time.time() if now is None else now
        with self._connect() as db:
            rows = db.execute(
                "SELECT id, kind, payload, status, attempts, next_attempt_at, tx_hash, note FROM outbox "
                "WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY id LIMIT ?", (now, limit)).fetchall()
        return [self._entry(r) for r in rows]

    def next_due_at(self) -> float | None:
        with self._connect() as db:
            row = db.execute("SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending'").fetchone()
        return None if row is None or row[0] is None else float(row[0])

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> OutboxEntry:
        return OutboxEntry(id=row[0], kind=row[1], payload=json.loads(row[2]), status=row[3], attempts=row[4],
                           next_attempt_at=row[5], tx_hash=row[6], note=row[7])

    # -- state changes (used by the worker)

    def record_sent(self, entry_id: int, tx_hash: str) -> None:
        self._update(entry_id, "tx_hash = ?", (tx_hash,))

    def mark_confirmed(self, entry_id: int, tx_hash: str | None, note: str | None = None) -> None:
        self._update(entry_id, "status = 'confirmed', tx_hash = COALESCE(?, tx_hash), note = ?", (tx_hash, note))

    def mark_failed(self, entry_id: int, note: str) -> None:
        self._update(entry_id, "status = 'failed', note = ?", (note,))

    def reschedule(self, entry_id: int, at: float, note: str, count_attempt: bool = True) -> None:
        inc = 1 if count_attempt else 0
        self._update(entry_id, "next_attempt_at = ?, attempts = attempts + ?, note = ?", (at, inc, note))

    def postpone_pending(self, at: float) -> int:
        """Move every pending entry due before `at` to `at` (the chain is down: one probe, not a burst)."""
        with self._connect() as db:
            cur = db.execute("UPDATE outbox SET next_attempt_at = ?, updated_at = ? "
                             "WHERE status = 'pending' AND next_attempt_at < ?", (at, time.time(), at))
            return cur.rowcount

    def retry_failed(self) -> int:
        """Put failed entries back in the queue (after fixing their cause); returns how many."""
        now = time.time()
        with self._connect() as db:
            cur = db.execute("UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, updated_at = ? "
                             "WHERE status = 'failed'", (now, now))
            return cur.rowcount

    def _update(self, entry_id: int, assignments: str, args: tuple[Any, ...]) -> None:
        with self._connect() as db:
            db.execute(f"UPDATE outbox SET {assignments}, updated_at = ? WHERE id = ?", (*args, time.time(), entry_id))


class OutboxBusy(ChainError):
    """Another process already sends from this outbox file."""


class OutboxWorker:
    """Background thread that drains an `Outbox` through a `ChainClient`. `start()` / `stop()`."""

    def __init__(self, outbox: Outbox, client: ChainClient, *, base_delay: float = 1.0, max_delay: float = 60.0,
                 poll_interval: float = 1.0, max_not_yet_attempts: int = 30,
                 on_change: Callable[[OutboxCounts], None] | None = None,
                 on_failure: Callable[[str, str], None] | None = None):
        if base_delay <= 0 or max_delay < base_delay:
            raise ValueError("need 0 < base_delay <= max_delay")
        self.outbox = outbox
        self.client = client
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.poll_interval = poll_interval
        self.max_not_yet_attempts = max_not_yet_attempts
        self.on_change = on_change
        self.on_failure = on_failure  # (method, reason) per failed send: the submission-failure metric
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._down_streak = 0  # consecutive "chain unavailable" results: drives the queue-wide backoff
        self._rng = random.Random()
        # entry id -> (tx hash, when first seen pending, replacements made) for stuck transactions
        self._pending: dict[int, tuple[str, float, int]] = {}

    # -- lifecycle

    def start(self) -> "OutboxWorker":
        if self._thread is not None:
            raise RuntimeError("OutboxWorker already started")
        self._acquire_file_lock()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="chain-outbox", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the thread to stop after the entry in hand, and wait for it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                # Keep the file lock: the thread may still send, and a second sender must not start.
                log.warning("chain outbox worker still busy after %.0fs (waiting on a receipt?); it stops after "
                            "the entry in hand", timeout)
                return
            self._thread = None
        self._release_file_lock()

    def wake(self) -> None:
        """Process due entries now (call after enqueueing)."""
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _acquire_file_lock(self) -> None:
        # Two senders on one outbox would race each other's pre-checks; a kernel lock dies with its process.
        lock_path = str(self.outbox.path) + ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutboxBusy(f"another process is already sending from {self.outbox.path}; stop it first") from None
        self._lock_fd = fd

    def _release_file_lock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- loop

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.drain_once()
            except Exception:  # keep the thread alive: a bug in one pass must not end durable delivery
                log.exception("chain outbox pass failed; retrying in %.0fs", self.max_delay)
                self._sleep(self.max_delay)
                continue
            next_at = self.outbox.next_due_at()
            wait = self.poll_interval if next_at is None else max(0.0, min(self.poll_interval, next_at - time.time()))
            self._sleep(wait)

    def _sleep(self, seconds: float) -> None:
        self._wake.wait(seconds)
        self._wake.clear()

    def drain_once(self) -> int:
        """Process every due entry once; returns how many were settled (confirmed or failed)."""
        settled = 0
        for entry in self.outbox.due():
            if self._stop.is_set():
                break
            outcome = self._process(entry)
            if outcome == "down":
                break  # the chain is down for everyone: do not hammer it with the rest of the queue
            if outcome == "settled":
                settled += 1
        if settled and self.on_change is not None:
            self.on_change(self.outbox.counts())
        return settled

    def _backoff(self, attempts: int) -> float:
        delay = min(self.max_delay, self.base_delay * (2 ** max(0, attempts)))
        return delay * self._rng.uniform(0.8, 1.2)

    def _failed(self, entry: OutboxEntry, reason: str) -> None:
        if self.on_failure is not None:
            try:
                self.on_failure("submit_reward" if entry.kind == "reward" else "submit_winners", reason)
            except Exception as err:  # noqa: BLE001 - a metrics hook must not stop delivery
                log.debug("outbox on_failure hook: %s", err)

    def _process(self, entry: OutboxEntry) -> Literal["settled", "later", "down"]:
        try:
            return self._send(entry)
        except ChainUnavailable as exc:
            self._failed(entry, "unavailable")
            delay = self._backoff(self._down_streak)
            self._down_streak += 1
            log.warning("chain outbox: %s (entry %d); retrying in %.1fs", exc, entry.id, delay)
            at = time.time() + delay
            self.outbox.reschedule(entry.id, at, f"unavailable: {exc}")
            self.outbox.postpone_pending(at)
            return "down"
        except ChainRevert as exc:
            if exc.already_done:
                self.outbox.mark_confirmed(entry.id, None, f"already on chain ({exc.error_name})")
                return "settled"
            self._failed(entry, exc.error_name or "reverted")
            if exc.retryable and entry.attempts + 1 < self.max_not_yet_attempts:
                delay = self._backoff(entry.attempts)
                log.info("chain outbox: entry %d refused for now (%s); retrying in %.1fs", entry.id, exc, delay)
                self.outbox.reschedule(entry.id, time.time() + delay, f"not yet: {exc}")
                return "later"
            log.error("chain outbox: entry %d (%s %s) refused: %s", entry.id, entry.kind, entry.payload, exc)
            self.outbox.mark_failed(entry.id, str(exc))
            return "settled"
        except ChainError as exc:
            self._failed(entry, type(exc).__name__)
            if exc.retryable:
                delay = self._backoff(entry.attempts)
                log.warning("chain outbox: entry %d: %s; retrying in %.1fs", entry.id, exc, delay)
                self.outbox.reschedule(entry.id, time.time() + delay, str(exc))
                return "later"
            log.error("chain outbox: entry %d (%s) failed: %s", entry.id, entry.kind, exc)
            self.outbox.mark_failed(entry.id, str(exc))
            return "settled"


    def _maybe_replace(self, entry: OutboxEntry) -> str:
        """Fee-bump a transaction pending too long, if the client can (the wallet back-end; the relay's
        login service replaces its own). Returns the entry's note."""
        assert entry.tx_hash is not None
        replace = getattr(self.client, "replace_pending", None)
        after = float(getattr(self.client, "replace_after", 0) or 0)
        limit = int(getattr(self.client, "max_replacements", 0) or 0)
        tx_hash, since, done = self._pending.get(entry.id, (entry.tx_hash, time.monotonic(), 0))
        if tx_hash != entry.tx_hash:  # replaced elsewhere (or by the send path): restart the clock
            tx_hash, since = entry.tx_hash, time.monotonic()
        self._pending[entry.id] = (tx_hash, since, done)
        if replace is None or done >= limit or time.monotonic() - since < after:
            return "sent; waiting to be mined"
        new_hash = replace(entry.tx_hash)
        if new_hash is None:
            return "sent; no longer pending, checking again"
        self.outbox.record_sent(entry.id, new_hash)
        self._pending[entry.id] = (new_hash, time.monotonic(), done + 1)
        return f"sent; still pending after {after:.0f}s, replaced with higher fees ({done + 1}/{limit})"

    def _send(self, entry: OutboxEntry) -> Literal["settled", "later"]:
        p = entry.payload
        if entry.tx_hash:
            status = self.client.transaction_status(entry.tx_hash)
            if status == "success":
                self._down_streak = 0
                self._pending.pop(entry.id, None)
                self.outbox.mark_confirmed(entry.id, entry.tx_hash)
                return "settled"
            if status == "pending":
                note = self._maybe_replace(entry)
                delay = self._backoff(0)
                self.outbox.reschedule(entry.id, time.time() + delay, note, count_attempt=False)
                return "later"
            # reverted or dropped: fall through to the on-chain check and a fresh send.
        self._pending.pop(entry.id, None)
        if entry.kind == "reward":
            done = self.client.reward_on_chain(p["round"], p["stage"], p["peer_id"])
        else:
            done = self.client.winners_on_chain(p["round"], p["peer_id"])
        self._down_streak = 0
        if done:
            self.outbox.mark_confirmed(entry.id, None, "already on chain")
            return "settled"

        def on_sent(tx_hash: str) -> None:
            self.outbox.record_sent(entry.id, tx_hash)

        if entry.kind == "reward":
            result = self.client.submit_reward(p["round"], p["stage"], p["reward"], p["peer_id"], on_sent=on_sent)
        else:
            # The contract refuses a vote naming an unregistered peer (e.g. one running with the chain
            # off): vote for the registered ones rather than lose the whole vote.
            winners = self.client.registered_peers(p["winners"])
            if not winners:
                self.outbox.mark_failed(entry.id, f"none of the winners {p['winners']} is registered on chain; "
                                                  "nothing to vote for")
                return "settled"
            if len(winners) < len(p["winners"]):
                log.info("chain outbox: vote of round %d drops unregistered winners %s", p["round"],
                         sorted(set(p["winners"]) - set(winners)))
            result = self.client.submit_winners(p["round"], winners, p["peer_id"], on_sent=on_sent)
        self.outbox.mark_confirmed(entry.id, result.tx_hash)
        log.info("chain outbox: %s %s confirmed in block %d (%s)", entry.kind, p, result.block_number, result.tx_hash)
        return "settled"
