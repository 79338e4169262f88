"""SQLite storage: users, sessions, wallets (encrypted keystores only), API keys.

One short-lived connection per operation keeps it safe under FastAPI's thread pool;
WAL mode lets the page read while the relay writes. The database file is 0600.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    org_id TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS wallets (
    user_id TEXT PRIMARY KEY REFERENCES users(id),
    address TEXT NOT NULL UNIQUE,
    keystore TEXT NOT NULL,
    funded INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('activated', 'revoked')),
    created_at REAL NOT NULL,
    revoked_at REAL
);
-- The machine owner: the one account whose identity goes into userData.json for the trainer.
CREATE TABLE IF NOT EXISTS owner (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    user_id TEXT NOT NULL REFERENCES users(id),
    claimed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS api_keys_org ON api_keys(org_id, created_at);
"""


class EmailTaken(ValueError):
    pass


@dataclass(frozen=True)
class User:
    id: str
    email: str
    password_hash: str
    org_id: str


@dataclass(frozen=True)
class Wallet:
    user_id: str
    address: str
    keystore: str
    funded: bool


class Storage:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            # Create it 0600 before SQLite writes anything into it.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        conn = sqlite3.connect(self.path, timeout=10.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            conn.commit()
        finally:
            conn.close()

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    def ping(self) -> None:
        with self._conn() as c:
            c.execute("SELECT 1").fetchone()

    # -- users ---------------------------------------------------------------------
    def create_user(self, email: str, password_hash: str) -> User:
        user = User(id=str(uuid.uuid4()), email=email, password_hash=password_hash, org_id=str(uuid.uuid4()))
        try:
            with self._conn() as c:
                c.execute("INSERT INTO users (id, email, password_hash, org_id, created_at) VALUES (?, ?, ?, ?, ?)",
                          (user.id, user.email, user.password_hash, user.org_id, time.time()))
        except sqlite3.IntegrityError:
            raise EmailTaken(email) from None
        return user

    def _user(self, where: str, value: str) -> User | None:
        with self._conn() as c:
            row = c.execute(f"SELECT id, email, password_hash, org_id FROM users WHERE {where} = ?", (value,)).fetchone()
        return User(**dict(row)) if row else None

    def user_by_email(self, email: str) -> User | None:
        return self._user("email", email)

    def user_by_id(self, user_id: str) -> User | None:
        return self._user("id", user_id)

    def user_by_org(self, org_id: str) -> User | None:
        return self._user("org_id", org_id)

    # -- owner ---------------------------------------------------------------------
    def claim_owner(self, user_id: str) -> str:
        """First claim wins, atomically; returns the owner's user id (this one or the earlier claimant)."""
        with self._conn() as c:
            c.execute("INSERT OR IGNORE INTO owner (id, user_id, claimed_at) VALUES (1, ?, ?)", (user_id, time.time()))
            return str(c.execute("SELECT user_id FROM owner WHERE id = 1").fetchone()["user_id"])

    # -- wallets -------------------------------------------------------------------
    def wallet(self, user_id: str) -> Wallet | None:
        with self._conn() as c:
            row = c.execute("SELECT user_id, address, keystore, funded FROM wallets WHERE user_id = ?", (user_id,)).fetchone()
        return Wallet(row["user_id"], row["address"], row["keystore"], bool(row["funded"])) if row else None

    def add_wallet(self, user_id: str, address: str, keystore: str) -> Wallet:
        """Insert unless one exists (two sign-ins racing); return the stored one either way."""
        with self._conn() as c:
            c.execute("INSERT OR IGNORE INTO wallets (user_id, address, keystore, funded, created_at) VALUES (?, ?, ?, 0, ?)",
                      (user_id, address, keystore, time.time()))
        w = self.wallet(user_id)
        assert w is not None
        return w

    def mark_funded(self, user_id: str) -> None:
        with self._conn() as c:
            c.execute("UPDATE wallets SET funded = 1 WHERE user_id = ?", (user_id,))

    # -- sessions ------------------------------------------------------------------
    def add_session(self, token_hash: str, user_id: str, ttl_s: float) -> None:
        now = time.time()
        with self._conn() as c:
            c.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
            c.execute("INSERT INTO sessions (token_hash, user_id, expires_at) VALUES (?, ?, ?)", (token_hash, user_id, now + ttl_s))

    def session_user(self, token_hash: str) -> User | None:
        with self._conn() as c:
            row = c.execute(
                "SELECT u.id, u.email, u.password_hash, u.org_id FROM sessions s JOIN users u ON u.id = s.user_id "
                "WHERE s.token_hash = ? AND s.expires_at >= ?", (token_hash, time.time())).fetchone()
        return User(**dict(row)) if row else None

    def drop_session(self, token_hash: str) -> None:
        with self._conn() as c:
            c.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    # -- API keys ------------------------------------------------------------------
    def key_status(self, org_id: str) -> str:
        """'activated' / 'revoked' from the newest key, 'pending' when none was ever activated."""
        with self._conn() as c:
            row = c.execute("SELECT status FROM api_keys WHERE org_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
                            (org_id,)).fetchone()
        return str(row["status"]) if row else "pending"

    def activate_key(self, org_id: str, key_hash: str) -> None:
        """The new key replaces (revokes) any earlier one of the org, atomically."""
        now = time.time()
        with self._conn() as c:
            c.execute("UPDATE api_keys SET status = 'revoked', revoked_at = ? WHERE org_id = ? AND status = 'activated'", (now, org_id))
            c.execute("INSERT INTO api_keys (key_hash, org_id, status, created_at) VALUES (?, ?, 'activated', ?)", (key_hash, org_id, now))

    def revoke_keys(self, org_id: str) -> int:
        with self._conn() as c:
            cur = c.execute("UPDATE api_keys SET status = 'revoked', revoked_at = ? WHERE org_id = ? AND status = 'activated'",
                            (time.time(), org_id))
            return cur.rowcount

    def key_lookup(self, key_hash: str) -> tuple[str, str] | None:
        """(org_id, status) of a key, or None if it was never issued."""
        with self._conn() as c:
            row = c.execute("SELECT org_id, status FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone()
        return (str(row["org_id"]), str(row["status"])) if row else None
