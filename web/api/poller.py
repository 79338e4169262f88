"""Background polling of the DHT and the chain into `DashboardState`.

One asyncio task per source. Each poll runs the blocking reader in that source's own
worker thread (so a slow RPC never delays the DHT, and neither ever runs inside a request),
with a time limit. A failed poll is logged, counted and retried on the next tick; it never
stops the loop. A poll that hangs past its limit is not started twice: the loop reports it
as failed and waits for the stuck call to return before trying again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from typing import Any

from api.settings import DashboardSettings
from api.sources import ChainReader, SwarmReader, read_local_peer_id
from api.state import DashboardState, LocalNode

log = logging.getLogger(__name__)

GOSSIP_PEERS_PER_POLL = 6
REJOIN_AFTER = 5
STOP_TIMEOUT_S = 10.0
JOIN_TIMEOUT_S = 90.0

SwarmFactory = Callable[[list[str]], SwarmReader]
ChainFactory = Callable[[], ChainReader]


def _metrics() -> Any:
    from hivemind_exp.common.telemetry import get_telemetry

    telemetry = get_telemetry("dashboard")
    return telemetry.dashboard_metrics() if telemetry is not None else None


def read_local_node(settings: DashboardSettings) -> LocalNode:
    """Who the local trainer is and how many of its submissions wait (blocking: file + sqlite reads)."""
    peer_id = settings.local_peer_id
    if peer_id is None:
        try:
            peer_id = read_local_peer_id(settings.identity_file)
        except Exception as exc:  # a broken key file must not stop the dashboard
            return LocalNode(reason=f"cannot read the trainer identity {settings.identity_file}: {exc}")
        if peer_id is None:
            return LocalNode(reason=f"no local trainer found: {settings.identity_file} does not exist "
                             "(start a trainer here, or set RLSWARM_LOCAL_PEER_ID)")
    from hivemind_exp.chain.outbox import Outbox, default_outbox_path

    path = default_outbox_path(settings.data_dir)
    if not path.exists():  # unknown, not zero: the trainer's data may live elsewhere
        return LocalNode(peer_id=peer_id, reason=None)
    try:
        counts = Outbox(path).counts()
    except Exception as exc:  # unreadable outbox: still show the node
        log.debug("cannot read the outbox %s: %s", path, exc)
        return LocalNode(peer_id=peer_id, reason=None)
    return LocalNode(peer_id=peer_id, reason=None, pending=counts.pending, failed=counts.failed)


class Poller:
    """Owns the readers and the two polling tasks; `changed` wakes /api/events listeners."""

    def __init__(self, settings: DashboardSettings, state: DashboardState, swarm_factory: SwarmFactory,
                 chain_factory: ChainFactory | None):
        self.settings = settings
        self.state = state
        self._swarm_factory = swarm_factory
        self._chain_factory = chain_factory
        self.swarm: SwarmReader | None = None
        self.chain: ChainReader | None = None
        self.changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._pools = {name: concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"poll-{name}")
                       for name in ("dht", "chain")}
        self._inflight: dict[str, tuple[concurrent.futures.Future[Any], float]] = {}
        self._bootnodes: list[str] = []
        self._tick = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop("dht", self.settings.dht_poll_interval, self._poll_dht),
                                           name="poll-dht")]
        if self.settings.chain != "off" and self._chain_factory is not None:
            self._tasks.append(asyncio.create_task(
                self._loop("chain", self.settings.chain_poll_interval, self._poll_chain), name="poll-chain"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            # Bounded: shutting down must never hang on a poll stuck in a worker thread.
            _, pending = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_S)
            if pending:
                log.warning("%d polling task(s) did not stop within %.0fs", len(pending), STOP_TIMEOUT_S)
        self._tasks = []
        for reader in (self.swarm, self.chain):
            if reader is not None:
                closing = asyncio.get_running_loop().run_in_executor(None, reader.close)
                try:
                    await asyncio.wait_for(closing, STOP_TIMEOUT_S)
                except Exception:
                    log.exception("closing %s failed", type(reader).__name__)
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    # ------------------------------------------------------------------ loop

    async def _run_blocking(self, source: str, fn: Callable[[], Any], timeout: float) -> Any:
        held = self._inflight.get(source)
        if held is not None and not held[0].done():
            raise TimeoutError(f"the previous {source} poll is still running after {time.time() - held[1]:.0f}s")
        fut = self._pools[source].submit(fn)
        self._inflight[source] = (fut, time.time())
        wrapped = asyncio.wrap_future(fut)
        # Retrieve the outcome even if nobody awaits it any more (no "never retrieved" noise).
        wrapped.add_done_callback(lambda f: f.cancelled() or f.exception())
        # asyncio.wait, not wait_for: a timeout or a cancellation leaves the worker thread's
        # call alone instead of waiting on it (it cannot be interrupted anyway).
        done, _ = await asyncio.wait({wrapped}, timeout=timeout)
        if not done:
            raise TimeoutError(f"{source} poll took longer than {timeout:.0f}s")
        return wrapped.result()

    async def _loop(self, source: str, interval: float, poll: Callable[[], Any]) -> None:
        while True:
            started = time.monotonic()
            try:
                await poll()
                metrics = _metrics()
                if metrics is not None:
                    metrics.mark_refreshed(source)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                msg = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                # Repeats at DEBUG: a chain that is down for an hour must not flood the log.
                level = logging.WARNING if self._status(source).consecutive_failures == 0 else logging.DEBUG
                log.log(level, "%s poll failed (will retry every %.1fs): %s", source, interval, msg)
                self.state.poll_failed(source, msg)
                metrics = _metrics()
                if metrics is not None:
                    metrics.record_poll_error(source)
            await self._notify()
            await asyncio.sleep(max(0.05, interval - (time.monotonic() - started)))

    def _status(self, source: str) -> Any:
        return self.state.dht if source == "dht" else self.state.chain_status

    # ------------------------------------------------------------------ sources

    def _initial_peers(self) -> list[str]:
        return list(self.settings.initial_peers) or self._bootnode_file_peers() or list(self._bootnodes)

    def _bootnode_file_peers(self) -> list[str]:
        """The coordinator's multiaddrs from --bootnode-file (Docker Compose: its shared volume), or []."""
        from hivemind_exp.swarm.multiaddrs import read_bootnode_file

        return read_bootnode_file(self.settings.bootnode_file)

    async def _poll_dht(self) -> None:
        peers = self._initial_peers()
        rounds = self.state.rounds_wanted()
        self._tick += 1
        sample = self.state.gossip_peers(GOSSIP_PEERS_PER_POLL, self._tick * GOSSIP_PEERS_PER_POLL)

        # The local trainer (key file, outbox) is read even while the DHT is unreachable.
        try:
            local = await self._run_blocking("dht", lambda: read_local_node(self.settings), self.settings.dht_timeout)
        except Exception as exc:
            local = LocalNode(reason=f"cannot read the local trainer's data: {type(exc).__name__}: {exc}")
        self.state.set_local(local)

        remote = self.settings.swarm_reader_url
        if self.swarm is None:
            # A swarm reader service knows its own peers; only an in-process DHT client needs them here.
            if not peers and remote is None:
                where = f", wait for the coordinator to write {self.settings.bootnode_file}" \
                    if self.settings.bootnode_file else ""
                raise RuntimeError(f"no DHT peers to join: set RLSWARM_INITIAL_PEERS (multiaddrs){where} or configure "
                                   "the chain so its bootnodes can be read")
            # Joining starts a DHT process (seconds, more on a busy machine): its own, longer limit.
            try:
                self.swarm = await self._run_blocking("dht", lambda: self._swarm_factory(peers),
                                                      max(JOIN_TIMEOUT_S, 3 * self.settings.dht_timeout))
            except TimeoutError:
                # The join goes on in its thread; a client it makes that late is closed, not leaked.
                late = self._inflight["dht"][0]
                late.add_done_callback(lambda f: None if f.cancelled() or f.exception() is not None
                                       else f.result().close())
                raise
            if remote is None:
                log.info("joined the swarm DHT via %s", ", ".join(peers))
            else:
                log.info("reading the swarm through the swarm reader at %s", remote)

        def work() -> Any:
            assert self.swarm is not None
            return self.swarm.poll(rounds, sample)

        try:
            snap = await self._run_blocking("dht", work, self.settings.dht_timeout)
        except Exception:
            await self._maybe_rejoin()
            raise
        self.state.apply_swarm(snap)
        if snap.round is not None and not rounds:
            # First sight of the round: read its rewards now rather than one interval later.
            rounds = self.state.rounds_wanted()
            snap = await self._run_blocking("dht", lambda: self.swarm.poll(rounds, []),  # type: ignore[union-attr]
                                            self.settings.dht_timeout)
            self.state.apply_swarm(snap)

    async def _maybe_rejoin(self) -> None:
        """After every REJOIN_AFTER failed polls in a row, drop the DHT client and join afresh next time.

        The transport restarts a dead DHT process itself; this covers what it cannot fix
        (e.g. every bootnode it knew is gone and new ones come from the chain). Every
        REJOIN_AFTER failures, not every failure past it: a join is costly, and an outage of
        an hour must neither churn DHT processes each poll nor repeat the warning.
        """
        # Derived from the failure count, which a good poll resets: the next outage warns again.
        failures = self.state.dht.consecutive_failures + 1  # counting the one being handled
        if self.swarm is None or failures % REJOIN_AFTER:
            return
        held = self._inflight.get("dht")
        if held is not None and not held[0].done():
            return  # a stuck call still uses the reader; try again REJOIN_AFTER failures later
        reader, self.swarm = self.swarm, None
        log.log(logging.WARNING if failures == REJOIN_AFTER else logging.DEBUG,
                "DHT polls failed %d times in a row; rejoining the swarm", failures)
        try:
            await asyncio.get_running_loop().run_in_executor(self._pools["dht"], reader.close)
        except Exception as exc:
            log.debug("closing the old DHT client failed: %s", exc)

    async def _poll_chain(self) -> None:
        configured = self.settings.chain_configured()
        self.state.set_chain_configured(configured)
        if not configured:
            return
        ids = self.state.known_peer_ids()
        me = self.state.local.peer_id

        def work() -> Any:
            if self.chain is None:
                assert self._chain_factory is not None
                self.chain = self._chain_factory()
            return self.chain.poll(ids, me)

        snap = await self._run_blocking("chain", work, self.settings.rpc_timeout * 3)
        self._bootnodes = list(snap.bootnodes)
        self.state.apply_chain(snap)
