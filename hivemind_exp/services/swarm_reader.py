"""`rl-swarm swarm-reader`: one DHT client serving read-only swarm snapshots over HTTP.

The dashboard's image carries neither hivemind nor torch: under Docker Compose it reads the
swarm through this service (`api.sources.HttpSwarmReader`), which runs from the trainer
image. It joins the DHT exactly as the dashboard's in-process reader does
(`hivemind_exp.swarm.reader.DhtSwarmReader`: client mode, a throwaway identity, only signed
and schema-checked records) and answers

- ``GET /api/snapshot?rounds=R&rounds=R2&gossip_peers=PEER...``: `DhtSwarmReader.poll(rounds,
  gossip_peers)` as the JSON of `SnapshotWire`; 422 for a request over the bounds or with
  malformed IDs, 503 while the DHT is not joined (or too many reads run), 502 when the read
  failed, 504 when it took longer than --dht-timeout.
- ``GET /api/healthz``: 200 once joined and reading, else 503 with the reason.

Joining runs in a background thread (retried every --join-retry-seconds), so the HTTP side is
up at once and says why it is not ready; after --rejoin-after failed reads in a row the client
is dropped and the swarm joined afresh.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from hivemind_exp.services.settings import SwarmReaderSettings
from hivemind_exp.swarm.multiaddrs import read_bootnode_file
from hivemind_exp.swarm.reader import SwarmReader, snapshot_to_json

log = logging.getLogger(__name__)

PEER_ID_RE = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{32,128}$")
MAX_ROUND = 2**53  # records.Round
QUERY_PARAMS = ("rounds", "gossip_peers")
STOP_TIMEOUT_S = 10.0

ReaderFactory = Callable[[list[str]], SwarmReader]


class ReadRefused(Exception):
    """A snapshot that cannot be served now: `status` and a message saying why."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def default_reader_factory(settings: SwarmReaderSettings) -> ReaderFactory:
    def build(initial_peers: list[str]) -> SwarmReader:
        from hivemind_exp.swarm.reader import DhtSwarmReader

        return DhtSwarmReader.connect(
            initial_peers, dht_namespace=settings.dht_namespace,
            coordinator_peer_id=settings.trusted_coordinator(initial_peers),
            dht_identity_file=settings.dht_identity_file, dht_timeout=settings.dht_timeout)

    return build


class SwarmReaderService:
    """The joined reader (or why there is none), the join thread and bounded, timed reads."""

    def __init__(self, settings: SwarmReaderSettings, reader_factory: ReaderFactory | None = None):
        self.settings = settings
        self._factory = reader_factory or default_reader_factory(settings)
        self._lock = threading.Lock()
        self._reader: SwarmReader | None = None
        self._joined_via: list[str] = []
        self._reason = "joining the swarm DHT"
        self._failures = 0
        self._last_success: float | None = None
        self._last_error: str | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(settings.max_concurrent)
        self._pool = concurrent.futures.ThreadPoolExecutor(settings.max_concurrent, thread_name_prefix="snapshot")

    # ------------------------------------------------------------------ joining

    def initial_peers(self) -> list[str]:
        """--initial-peers, else the coordinator's bootnode file, else the chain's bootnodes ([] if none yet)."""
        s = self.settings
        if s.initial_peers:
            return list(s.initial_peers)
        maddrs = read_bootnode_file(s.bootnode_file)
        if maddrs:
            return maddrs
        if s.contract_address is not None or s.deployment_file.exists():
            from hivemind_exp.chain.client import ChainReader, load_deployment_address

            address = s.contract_address or load_deployment_address(s.deployment_file)
            return ChainReader(s.rpc_url, address, timeout=s.rpc_timeout).bootnodes()
        return []

    def _join_once(self) -> None:
        try:
            peers = self.initial_peers()
        except Exception as exc:  # unreadable file, chain down: say so and retry
            self._set_reason(f"cannot find DHT peers to join: {type(exc).__name__}: {exc}")
            return
        if not peers:
            where = f", wait for the coordinator to write {self.settings.bootnode_file}" \
                if self.settings.bootnode_file else ""
            self._set_reason(f"no DHT peers to join: set RLSWARM_INITIAL_PEERS (multiaddrs){where} or give the "
                             "chain (RLSWARM_DEPLOYMENT_FILE / RLSWARM_CONTRACT_ADDRESS) so its bootnodes can be read")
            return
        try:
            reader = self._factory(peers)
        except Exception as exc:
            msg = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self._set_reason(f"cannot join the swarm DHT via {', '.join(peers)}: {msg}")
            return
        with self._lock:
            self._reader, self._joined_via, self._failures = reader, peers, 0
            self._reason = ""
        log.info("joined the swarm DHT via %s; serving snapshots on http://%s:%d/api/snapshot",
                 ", ".join(peers), self.settings.host, self.settings.port)

    def _set_reason(self, reason: str) -> None:
        with self._lock:
            changed = reason != self._reason
            self._reason = reason
        # Repeats at DEBUG: a coordinator that is down for an hour must not flood the log.
        log.log(logging.WARNING if changed else logging.DEBUG, "%s (retrying every %.0fs)", reason,
                self.settings.join_retry_seconds)

    def _join_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                joined = self._reader is not None
            if not joined:
                self._join_once()
            self._wake.wait(self.settings.join_retry_seconds)
            self._wake.clear()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._join_loop, name="swarm-join", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
        with self._lock:
            reader, self._reader = self._reader, None
        if reader is not None:
            try:
                reader.close()
            except Exception:
                log.exception("closing the DHT client failed")
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ reads

    def _record(self, reader: SwarmReader, ok: bool, error: str | None = None) -> None:
        drop = None
        with self._lock:
            if reader is not self._reader:
                return  # a read on a client already dropped
            if ok:
                self._failures, self._last_success, self._last_error = 0, time.time(), None
                return
            self._failures += 1
            self._last_error = error
            if self._failures >= self.settings.rejoin_after:
                drop, self._reader = self._reader, None
                self._reason = f"rejoining the swarm DHT after {self._failures} failed reads in a row " \
                               f"(last: {error})"
        if drop is not None:
            log.warning("%s", self._reason)
            self._pool.submit(drop.close)
            self._wake.set()

    async def read(self, rounds: Sequence[int], gossip_peers: Sequence[str]) -> bytes:
        """One snapshot as JSON, or ReadRefused."""
        with self._lock:
            reader, reason = self._reader, self._reason
        if reader is None:
            raise ReadRefused(503, f"not joined to the swarm DHT yet: {reason}")
        if not self._slots.acquire(blocking=False):
            raise ReadRefused(503, f"{self.settings.max_concurrent} snapshots are being read already; retry shortly "
                              "(RLSWARM_MAX_CONCURRENT of the reader)")

        def work() -> bytes:
            try:
                return snapshot_to_json(reader.poll(list(rounds), list(gossip_peers)))
            finally:
                self._slots.release()  # when the read really ends, not when the request gives up

        try:
            fut = self._pool.submit(work)
        except RuntimeError:
            self._slots.release()
            raise ReadRefused(503, "the swarm reader is shutting down") from None
        wrapped = asyncio.wrap_future(fut)
        wrapped.add_done_callback(lambda f: f.cancelled() or f.exception())
        done, _ = await asyncio.wait({wrapped}, timeout=self.settings.dht_timeout)
        if not done:
            msg = f"the DHT reads took longer than {self.settings.dht_timeout:.0f}s (RLSWARM_DHT_TIMEOUT)"
            self._record(reader, False, msg)
            raise ReadRefused(504, msg)
        exc = wrapped.exception()
        if exc is not None:
            msg = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self._record(reader, False, msg)
            raise ReadRefused(502, f"reading the swarm DHT failed: {msg}")
        self._record(reader, True)
        return wrapped.result()

    def health(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            joined = self._reader is not None
            body = {"status": "ok" if joined else "unhealthy", "joined": joined,
                    "reason": None if joined else self._reason,
                    "joined_via": list(self._joined_via) if joined else [],
                    "peer_id": getattr(self._reader, "peer_id", None) if joined else None,
                    "last_success": self._last_success, "last_error": self._last_error,
                    "consecutive_failures": self._failures}
        return joined, body


def check_query(settings: SwarmReaderSettings, params: list[tuple[str, str]]) -> tuple[list[int], list[str]]:
    """Parse and bound GET /api/snapshot's query; ValueError with a message saying what to fix."""
    rounds: list[int] = []
    peers: list[str] = []
    for key, value in params:
        if key == "rounds":
            if not value.isdigit() or int(value) > MAX_ROUND:
                raise ValueError(f"rounds: {value[:40]!r} is not a round number (an integer 0..2^53)")
            rounds.append(int(value))
        elif key == "gossip_peers":
            if not PEER_ID_RE.match(value):
                raise ValueError(f"gossip_peers: {value[:40]!r} is not a peer ID (base58, 32-128 characters, "
                                 "e.g. QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N)")
            peers.append(value)
        else:
            raise ValueError(f"unknown parameter {key[:40]!r}; use rounds=N (repeat it) and gossip_peers=PEER_ID "
                             "(repeat it)")
    if len(rounds) > settings.max_rounds:
        raise ValueError(f"rounds: {len(rounds)} asked; at most {settings.max_rounds} per request "
                         "(RLSWARM_MAX_ROUNDS of the reader)")
    if len(peers) > settings.max_gossip_peers:
        raise ValueError(f"gossip_peers: {len(peers)} asked; at most {settings.max_gossip_peers} per request "
                         "(RLSWARM_MAX_GOSSIP_PEERS of the reader)")
    return rounds, peers


def create_app(settings: SwarmReaderSettings | None = None, *, reader_factory: ReaderFactory | None = None) -> FastAPI:
    """The reader's FastAPI app; joining starts with the app's lifespan, not here."""
    from hivemind_exp.common.settings_base import load_settings

    cfg = settings if settings is not None else load_settings(SwarmReaderSettings)
    service = SwarmReaderService(cfg, reader_factory)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        from hivemind_exp.common.telemetry import setup_telemetry

        try:
            setup_telemetry("swarm-reader")
        except Exception as exc:  # metrics are optional; the reader is not
            log.warning("telemetry not started: %s", exc)
        service.start()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, service.stop)

    app = FastAPI(title="RL Swarm swarm reader", version="0.1.0", lifespan=lifespan,
                  description="Read-only snapshots of the swarm's DHT (round/stage, peers, rewards, winners, "
                  "gossip), read by one DHT client on behalf of dashboards.")
    app.state.service = service

    @app.get("/api/healthz", tags=["health"], summary="200 once the DHT is joined, else 503 with the reason")
    async def health() -> JSONResponse:
        ok, body = service.health()
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/api/snapshot", tags=["swarm"], summary="One read: rewards of `rounds`, outputs of `gossip_peers`")
    async def snapshot(request: Request) -> Response:
        try:
            rounds, peers = check_query(cfg, list(request.query_params.multi_items()))
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        try:
            body = await service.read(rounds, peers)
        except ReadRefused as refused:
            return JSONResponse({"detail": refused.detail}, status_code=refused.status)
        return Response(body, media_type="application/json", headers={"cache-control": "no-store"})

    return app
