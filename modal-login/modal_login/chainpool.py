"""Keeping a slow chain away from the request threads.

- `ChainPool`: every chain call takes one of `limit` slots, or fails at once with
  `ChainBusy` (503). Async endpoints run their call on the pool's own threads, so a
  chain that hangs ties up those threads only; sync code paths run it in place, and the
  slot bound keeps them from taking more than `limit` of the server's request threads.
- `ChainProbe`: one background thread asks the chain for its id every `interval` s;
  /health answers from the latest probe instead of making an RPC per request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from hivemind_exp.chain.errors import ChainUnavailable

from .logs import event

T = TypeVar("T")


class ChainBusy(ChainUnavailable):
    """All chain slots are taken (the chain is slow or hanging): refuse now rather than queue."""


class ChainPool:
    def __init__(self, limit: int):
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="chain")

    def _take(self) -> None:
        if not self._slots.acquire(blocking=False):
            raise ChainBusy(f"{self.limit} chain calls are already in flight (the chain is slow)")

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` in this thread under a slot (for sync code paths)."""
        self._take()
        try:
            return fn(*args)
        finally:
            self._slots.release()

    def submit(self, fn: Callable[..., T], *args: Any) -> "Future[T]":
        """Start `fn` on the pool's threads under a slot; the caller may wait on it as long as it likes."""
        self._take()
        try:
            future = self._pool.submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _f: self._slots.release())
        return future

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the pool's threads; the awaiting request holds no server thread meanwhile.

        The slot is released when the call really ends, even if the client went away."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class ProbeResult:
    chain_id: int | None
    storage_ok: bool
    at: float


class ChainProbe:
    def __init__(self, chain_id: Callable[[], int | None], ping_storage: Callable[[], None], interval_s: float):
        self._chain_id = chain_id
        self._ping = ping_storage
        self.interval_s = interval_s
        self.latest: ProbeResult | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def probe_once(self) -> ProbeResult:
        cid = self._chain_id()
        try:
            self._ping()
            ok = True
        except Exception as e:  # any sqlite error: report unhealthy, keep probing
            event("storage_unavailable", logging.WARNING, detail=type(e).__name__)
            ok = False
        self.latest = ProbeResult(cid, ok, time.time())
        return self.latest

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.probe_once()
            except Exception as e:  # never let the probe thread die
                event("probe_failed", logging.WARNING, detail=type(e).__name__)
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def ensure_started(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="chain-probe", daemon=True)
                self._thread.start()

    def chain_down(self) -> bool:
        """True only when the latest probe failed (unknown yet counts as not down)."""
        latest = self.latest
        return latest is not None and latest.chain_id is None

    def poke(self) -> None:
        """Probe again now (a request just saw the chain fail): health catches up within one RPC timeout."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
