"""`HivemindTransport`: the swarm transport over a hivemind 1.1.12 DHT.

hivemind runs the DHT in a forked child process and talks to it over a one-way pipe.
Three facts about that pipe shape this module:

1. The child reads the pipe non-blocking (uvloop), and Python writes a message over
   16 KiB in two ``write`` calls, or in pieces once the 64 KiB pipe buffer is full;
   when the child catches half a message it raises ``BlockingIOError: [Errno 11]``,
   loses its place in the stream and dies. So payloads never cross the pipe: records
   to store go into a hand-over file that a small ``run_coroutine`` request names
   (`validator.store_batch`, one ``store_many`` per file), and the bytes of requests
   sent but not yet answered stay under `_INFLIGHT_BUDGET`, well inside the buffer.
   (Stored values are also capped and chunked, `records`: the swarm-wide record limit.)
2. The parent keeps its own copy of the pipe's read end, so after the child dies a
   write into a full pipe blocks forever. We close that copy right after the fork:
   writes to a dead child then fail at once with ``BrokenPipeError``.
3. A request whose child died never completes. Waits are sliced and re-check that
   the child is alive; a dead (or stalled) child is replaced by a new one with the
   same identity, DHT node ID, listen port and validators, and unfinished requests
   are re-sent.

Round state lives with the caller, so a restart loses nothing but in-flight requests.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from hivemind_exp.swarm.identity import IdentityError, NodeIdentity, ensure_identity, load_identity
from hivemind_exp.swarm import keys
from hivemind_exp.swarm.records import (
    ChunkWire,
    DropCounter,
    EvalSummary,
    HeartbeatWire,
    ManifestWire,
    OutputRecord,
    OutputWire,
    PeerInfo,
    RecordRejected,
    RewardWire,
    RolloutGroup,
    RolloutsWire,
    RoundState,
    RoundStateWire,
    SapoStats,
    WinnersWire,
    WireRecord,
    decode_wire,
    encode_for_store,
    encode_wire,
    reassemble,
)
from hivemind_exp.swarm.read_set import read_set
from hivemind_exp.swarm.settings import PROTOCOL_MAX_RECORD_BYTES, SIGNATURE_OVERHEAD_BYTES, SwarmSettings, _is_loopback
from hivemind_exp.swarm.transport import SwarmClosedError, SwarmStartupError

log = logging.getLogger(__name__)

_INFLIGHT_BUDGET = 40 * 1024  # bytes of unanswered requests (pipe buffer is 64 KiB)
_MESSAGE_OVERHEAD = 512  # pickle framing, method name, future handle
_WAIT_SLICE = 0.2
_MAX_RESTARTS_PER_CALL = 2
_MAX_KNOWN_MADDRS = 16
# Records per hand-over file: several files go in parallel; each is one store_many in the DHT.
_BATCH_RECORDS = 64
_BATCH_BYTES = 1 << 20
_BLOB_ATTEMPTS = 4
_BLOB_RETRY_PAUSE = 0.25
_READ_MAX = PROTOCOL_MAX_RECORD_BYTES - SIGNATURE_OVERHEAD_BYTES


@dataclass
class _Call:
    method: str  # a DHT method: "get" or "run_coroutine"
    kwargs: dict[str, Any]
    size: int


@dataclass
class _Entry:
    """One checked record read from a dictionary key (manifests already resolved)."""

    key: str
    tag: str
    owner: str
    wire: WireRecord


@dataclass
class _Inflight:
    count: int = 0
    bytes: int = 0
    last_progress: float = field(default_factory=time.monotonic)


def _explain_startup(exc: BaseException, s: SwarmSettings, hosts: Sequence[str], peers: Sequence[str]) -> str:
    text = f"{type(exc).__name__}: {exc}"
    low = text.lower()
    if "address already in use" in low:
        return (f"a listen address is already in use (host_maddrs={list(hosts)}). Another program, maybe another "
                f"node, holds that port: stop it, or set another port in host_maddrs (flag --host-maddrs, env "
                f"RLSWARM_HOST_MADDRS), e.g. /ip4/0.0.0.0/tcp/38332, or tcp/0 for any free port")
    if "cannot assign requested address" in low:
        return (f"a listen address is not an address of this machine (host_maddrs={list(hosts)}): use "
                f"/ip4/0.0.0.0/tcp/PORT or one of this machine's IPs in host_maddrs (flag --host-maddrs)")
    if "already taken by another peer" in low:
        return (f"another running node already uses the identity {s.identity_path} (same peer ID): stop it, or give "
                f"this node its own identity_path (flag --identity-path, env RLSWARM_IDENTITY_PATH)")
    if "bootstrap" in low:
        return (f"none of the bootnodes answered (initial_peers={list(peers)}). Check that they run and that this "
                f"machine can reach their address and port, that the peer ID after /p2p/ is right, or fix "
                f"initial_peers (flag --initial-peers, env RLSWARM_INITIAL_PEERS)")
    if "failed to start in" in low or isinstance(exc, TimeoutError):
        return (f"the p2p daemon did not come up within dht_startup_timeout={s.dht_startup_timeout}s (an overloaded "
                f"machine, or a firewall stalling the bootstrap); raise --dht-startup-timeout "
                f"(env RLSWARM_DHT_STARTUP_TIMEOUT)")
    if "p2pd binary" in low or "exec format" in low:
        return f"hivemind's p2pd daemon cannot run here ({exc}); reinstall hivemind==1.1.12 for this platform"
    return f"unexpected error from the DHT: {text}"


def _tcp_target(maddr: str) -> tuple[str, int] | None:
    m = re.match(r"^/(ip4|ip6|dns|dns4|dns6)/([^/]+)/tcp/(\d+)", maddr)
    return (m.group(2), int(m.group(3))) if m else None


def probe_bootnodes(s: SwarmSettings) -> str:
    """Wait, with bounded retries and backoff, until one bootnode accepts a TCP connection.

    hivemind's own bootstrap can sit in a dial for its whole startup timeout and then fail with
    a vague message; this probe fails fast, logs one line per attempt, and ends in a
    `SwarmStartupError` naming initial_peers. Returns the bootnode that answered. Bootnodes
    with no TCP address (e.g. QUIC only) are left to hivemind.
    """
    import socket

    targets = [(m, t) for m in s.initial_peers if (t := _tcp_target(m)) is not None]
    if not targets:
        return ""
    delay = s.dht_startup_backoff
    attempts = s.dht_startup_retries + 1
    errors: dict[str, str] = {}
    for attempt in range(1, attempts + 1):
        for maddr, (host, port) in targets:
            try:
                socket.create_connection((host, port), timeout=s.dht_bootnode_probe_timeout).close()
                if attempt > 1:
                    log.info("swarm bootnode probe: attempt %d/%d: %s accepts connections", attempt, attempts, maddr)
                return maddr
            except OSError as exc:
                errors[maddr] = str(exc) or type(exc).__name__
        last = attempt == attempts
        # One structured line per attempt (event=bootnode_probe), for people and for log scrapers.
        log.warning("event=bootnode_probe attempt=%d/%d reachable=0/%d next_retry_s=%s: no bootnode accepted a TCP "
                    "connection within %.1fs (%s)", attempt, attempts, len(targets),
                    "none" if last else f"{delay:.1f}", s.dht_bootnode_probe_timeout,
                    "; ".join(f"{m}: {e}" for m, e in errors.items()))
        if not last:
            time.sleep(delay)
            delay *= 2
    raise SwarmStartupError(
        f"Could not reach any bootnode after {attempts} attempt(s): none of the bootnodes accepted a TCP connection "
        f"(initial_peers={[m for m, _ in targets]}: "
        f"{'; '.join(f'{m}: {e}' for m, e in errors.items())}). Check that the coordinator runs and that this "
        f"machine can reach its address and port (firewall, VPN, a 127.0.0.1 address of another machine), or fix "
        f"initial_peers (flag --initial-peers, env RLSWARM_INITIAL_PEERS); more tries: --dht-startup-retries, "
        f"--dht-startup-backoff; per-try wait: --dht-bootnode-probe-timeout")


class HivemindTransport:
    """The `SwarmTransport` over a real hivemind DHT. Build it with `HivemindTransport.start(settings)`."""

    def __init__(self, settings: SwarmSettings, identity: NodeIdentity):
        self._s = settings
        self._identity = identity
        self._ns = settings.dht_namespace
        self._dht: Any = None  # hivemind.DHT (imported lazily)
        self._p2pd: list[Any] = []  # psutil.Process of the DHT's p2p daemon(s)
        self._p2pd_sockets: list[str] = []
        self._generation = 0
        self._lifecycle = threading.RLock()
        self._send_lock = threading.Lock()
        self._cv = threading.Condition()
        self._inflight = _Inflight()
        self._pending: dict[int, Any] = {}  # strong refs: an unreferenced MPFuture never runs its callback
        self._drops = DropCounter()
        self._child_counts_base: Counter[str] = Counter()
        self._child_counts_last: dict[str, int] = {}
        self._restarts = 0
        self._next_restart_at = 0.0
        self._closed = False
        self._restart_hosts: list[str] = list(settings.host_maddrs)
        self._visible: list[str] = []
        self._known_maddrs: list[str] = []
        self._last_remeet = time.monotonic()
        self._hb_name: str | None = None
        self._hb_wallet: str | None = None
        self._hb_eval: EvalSummary | None = None
        self._hb_sapo: SapoStats | None = None

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def start(cls, settings: SwarmSettings) -> "HivemindTransport":
        """Create or load the identity, start the DHT and join the swarm (bounded retries).

        Raises `SwarmStartupError` naming the cause and the setting to change.
        """
        try:
            identity = load_identity(ensure_identity(settings.identity_path))
        except IdentityError as exc:
            raise SwarmStartupError(f"{exc} (setting identity_path, flag --identity-path)") from None
        self = cls(settings, identity)
        log.info("starting the swarm DHT as peer %s (listen %s; %s)", identity.peer_id, ", ".join(settings.host_maddrs),
                 f"joining via {len(settings.initial_peers)} bootnode(s)" if settings.initial_peers
                 else "no bootnodes: starting a new swarm")
        if settings.initial_peers and settings.dht_bootnode_probe_timeout > 0:
            probe_bootnodes(settings)
        attempts = [(list(settings.host_maddrs), list(settings.initial_peers), settings.dht_check_identity_free)]
        self._dht = self._start_with_retries(attempts, settings.dht_startup_retries)
        self._after_start()
        log.info("swarm DHT up: peer %s listening on %s", self.peer_id, ", ".join(self._visible) or "?")
        return self

    def _start_with_retries(self, attempts: list[tuple[list[str], list[str], bool]], retries: int) -> Any:
        s = self._s
        delay = s.dht_startup_backoff
        last: BaseException | None = None
        explained = ""
        tries = 0
        for round_ in range(retries + 1):
            for hosts, peers, check in attempts:
                tries += 1
                try:
                    return self._create_dht(hosts, peers, check)
                except Exception as exc:
                    last = exc
                    explained = _explain_startup(exc, s, hosts, peers)
                    log.warning("swarm DHT start attempt %d failed: %s", tries, explained)
            if round_ < retries:
                time.sleep(delay)
                delay *= 2
        raise SwarmStartupError(f"Could not start the swarm DHT after {tries} attempt(s): {explained}. "
                                f"(last error: {type(last).__name__}: {last})")

    def _create_dht(self, hosts: list[str], peers: list[str], check_identity: bool) -> Any:
        from hivemind.dht import DHT
        from hivemind.dht.routing import DHTID

        from hivemind_exp.swarm.validator import SwarmRecordValidator

        s = self._s
        kwargs: dict[str, Any] = dict(
            # hivemind picks a random DHT node ID per start; a fixed one (hashed from the peer ID) means
            # a restarted node is the same routing-table entry for everyone, not a stranger to re-meet.
            node_id=DHTID.generate(source=f"rl-swarm-node/{self.peer_id}"),
            host_maddrs=hosts,
            identity_path=str(self._identity.path),
            startup_timeout=s.dht_startup_timeout,
            check_if_identity_free=check_identity,
            wait_timeout=s.dht_rpc_timeout,
            client_mode=s.dht_client_mode,
            # hivemind skips a peer that missed one reply for 5 s, doubling on every further miss
            # without limit: after a busy minute a small swarm stops asking its only peers for
            # minutes. A short, constant ban still spares dead peers and recovers at once.
            blacklist_time=min(2.0, s.dht_rpc_timeout),
            backoff_rate=1.0,
        )
        if s.announce_maddrs:
            kwargs["announce_maddrs"] = list(s.announce_maddrs)
        validator = SwarmRecordValidator(self._identity.hivemind_private_key())
        dht = DHT(initial_peers=peers or None, start=False, record_validators=[validator], **kwargs)
        dht.run_in_background(await_ready=False)
        # Fact 2 in the module docstring: only the child reads this end.
        dht._inner_pipe.close()
        try:
            # The identity check starts a second, short-lived daemon first: allow for both.
            dht.wait_until_ready(timeout=2 * s.dht_startup_timeout + 5)
        except BaseException:
            daemons = self._daemons_of(dht)
            self._stop_dht(dht, daemons, self._sockets_of(daemons))
            raise
        return dht

    def _after_start(self) -> None:
        self._p2pd = self._daemons_of(self._dht)
        self._p2pd_sockets = self._sockets_of(self._p2pd)
        try:
            maddrs = [str(m) for m in self._dht.get_visible_maddrs()]
        except Exception as exc:
            log.warning("could not read this node's visible multiaddrs: %s", exc)
            maddrs = []
        self._visible = maddrs
        self._restart_hosts = self._pin_ports(list(self._s.host_maddrs), maddrs)

    @staticmethod
    def _pin_ports(hosts: list[str], visible: list[str]) -> list[str]:
        """Listen addresses with port 0 replaced by the port we got, so a restart keeps its address."""
        out = []
        for host in hosts:
            family = host.split("/")[1] if host.count("/") > 1 else ""
            m = re.search(r"/(tcp|udp)/0(?=/|$)", host)
            if m:
                proto = m.group(1)
                for v in visible:
                    vm = re.search(rf"^/{family}/[^/]+/{proto}/(\d+)", v)
                    if vm:
                        host = host[: m.start()] + f"/{proto}/{vm.group(1)}" + host[m.end():]
                        break
            out.append(host)
        return out

    @staticmethod
    def _daemons_of(dht: Any) -> list[Any]:
        import psutil

        try:
            return [p for p in psutil.Process(dht.pid).children(recursive=True) if p.name() == "p2pd"]
        except (psutil.Error, TypeError, ValueError):
            return []

    @staticmethod
    def _sockets_of(daemons: list[Any]) -> list[str]:
        """The unix sockets a DHT process and its daemon talk over (to remove after a kill)."""
        import psutil

        out = []
        for proc in daemons:
            try:
                args = proc.cmdline()
            except psutil.Error:
                continue
            for arg in args:
                if arg.startswith("-listen=/unix/tmp/hivemind-p2pd-") and arg.endswith(".sock"):
                    path = arg[len("-listen=/unix"):]
                    # hivemind names the client's socket after the daemon's.
                    out += [path, path.replace("/hivemind-p2pd-", "/hivemind-p2pclient-")]
        return out

    @staticmethod
    def _stop_dht(dht: Any, daemons: list[Any], sockets: Sequence[str] = (), graceful: bool = False) -> None:
        """Stop a DHT process and its daemon(s).

        ``graceful`` asks the child to shut down over the pipe; only safe when no request is
        pending (a stuck child with a full pipe would block that write forever, fact 2).
        """
        import psutil

        if dht is not None:
            try:
                if graceful and dht.is_alive():
                    try:
                        dht.shutdown()
                    except (OSError, EOFError, ValueError):
                        pass  # pipe already broken: fall through to terminate
                if dht.is_alive():
                    dht.terminate()
                    dht.join(3)
                if dht.is_alive():
                    dht.kill()
                    dht.join(3)
            except (AssertionError, ValueError):
                pass  # never started / already closed
        # A daemon outliving its DHT process would keep our port and peer ID busy.
        for proc in daemons:
            try:
                if proc.is_running():
                    proc.terminate()
                    proc.wait(3)
            except psutil.TimeoutExpired:
                proc.kill()
            except psutil.Error:
                pass
        # A killed DHT process leaves its unix sockets in /tmp (a graceful stop removes them itself).
        for path in sockets:
            try:
                os.unlink(path)
            except OSError:
                pass

    def close(self) -> None:
        """Leave the swarm: stop the heartbeat thread, the DHT process and its daemon. Safe to call twice."""
        with self._lifecycle:
            if self._closed:
                return
            self._closed = True
            with self._cv:
                idle = self._inflight.count == 0
            self._stop_dht(self._dht, self._p2pd, self._p2pd_sockets, graceful=idle)
            self._dht = None
            with self._cv:
                self._pending.clear()
                self._cv.notify_all()

    def __enter__(self) -> "HivemindTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ properties

    @property
    def peer_id(self) -> str:
        return self._identity.peer_id

    @property
    def settings(self) -> SwarmSettings:
        return self._s

    @property
    def identity(self) -> NodeIdentity:
        """The node's identity (peer ID, public key for owner markers, key file path)."""
        return self._identity

    @property
    def restart_count(self) -> int:
        """How many times the DHT process was found dead or stalled and replaced."""
        return self._restarts

    @property
    def dht_pid(self) -> int | None:
        """PID of the current DHT child process (for diagnostics and tests)."""
        dht = self._dht
        return dht.pid if dht is not None else None

    def visible_maddrs(self) -> list[str]:
        return list(self._visible)

    def dialable_maddrs(self) -> list[str]:
        """What this node tells other peers to dial: its visible addresses, loopback ones dropped when there are
        others (127.0.0.1 in a directory entry would send a remote peer to its own machine)."""
        if self._s.dht_client_mode:
            return []  # a client-mode node is one others cannot dial (behind NAT): it makes every connection itself
        outside = [m for m in self._visible if not _is_loopback(m)]
        return outside or list(self._visible)

    def is_alive(self) -> bool:
        dht = self._dht
        return dht is not None and dht.is_alive()

    # ------------------------------------------------------------ health / restart

    def _acquire_dht(self) -> tuple[Any, int]:
        with self._lifecycle:
            if self._closed:
                raise SwarmClosedError("the swarm transport is closed")
            dht = self._dht
            reason = None
            if dht is None:
                reason = "is not running"
            elif not dht.is_alive():
                reason = f"died (exit code {dht.exitcode})"
            else:
                with self._cv:
                    stalled = (self._inflight.count > 0
                               and time.monotonic() - self._inflight.last_progress > self._s.dht_stall_timeout)
                if stalled:
                    reason = f"answered nothing for {self._s.dht_stall_timeout:.0f}s"
            if reason is not None:
                if time.monotonic() < self._next_restart_at:
                    return None, self._generation
                self._restart_locked(reason)
            return self._dht, self._generation

    def _restart(self, generation: int, reason: str) -> None:
        with self._lifecycle:
            if self._closed or generation != self._generation:
                return  # someone else already replaced it
            if time.monotonic() < self._next_restart_at:
                return
            self._restart_locked(reason)

    def _restart_locked(self, reason: str) -> None:
        log.warning("swarm DHT process %s; starting a new one with the same identity", reason)
        self._child_counts_base.update(self._child_counts_last)
        self._child_counts_last = {}
        self._stop_dht(self._dht, self._p2pd, self._p2pd_sockets)
        self._dht = None
        self._generation += 1
        with self._cv:
            self._inflight = _Inflight()
            self._pending.clear()
            self._cv.notify_all()
        own = f"/p2p/{self.peer_id}"
        peers = [p for p in dict.fromkeys(list(self._s.initial_peers) + self._known_maddrs) if not p.endswith(own)]
        hosts = self._restart_hosts
        # Same port and peers first; then any port; then alone (others find us again by our peer ID).
        attempts = [(hosts, peers, False), (list(self._s.host_maddrs), peers, False)]
        if peers:
            attempts.append((hosts, [], False))
        try:
            self._dht = self._start_with_retries(attempts, retries=0)
        except SwarmStartupError as exc:
            self._next_restart_at = time.monotonic() + max(self._s.dht_startup_backoff, 1.0)
            log.error("swarm DHT restart failed, will retry on the next call: %s", exc)
            return
        self._restarts += 1
        self._after_start()
        log.warning("swarm DHT restarted (%d restart(s) so far), listening on %s", self._restarts,
                    ", ".join(self._visible))

    # ------------------------------------------------------------ request plumbing

    def _release(self, generation: int, size: int, token: int) -> None:
        with self._cv:
            if generation == self._generation and self._pending.pop(token, None) is not None:
                self._inflight.count -= 1
                self._inflight.bytes -= size
                self._inflight.last_progress = time.monotonic()
                self._cv.notify_all()

    def _submit(self, dht: Any, generation: int, call: _Call, deadline: float) -> Any:
        """Send one request; None if the deadline passed first or the child is gone."""
        with self._cv:
            while self._inflight.count > 0 and self._inflight.bytes + call.size > _INFLIGHT_BUDGET:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or generation != self._generation or not dht.is_alive():
                    return None
                self._cv.wait(min(remaining, _WAIT_SLICE))
            if generation != self._generation:
                return None
            if self._inflight.count == 0:
                self._inflight.last_progress = time.monotonic()
            self._inflight.count += 1
            self._inflight.bytes += call.size
        try:
            with self._send_lock:
                future = getattr(dht, call.method)(**call.kwargs, return_future=True)
        except (OSError, EOFError, ValueError) as exc:
            # BrokenPipeError / BlockingIOError: the child is gone or its pipe is broken.
            log.debug("swarm DHT request failed to send: %r", exc)
            with self._cv:
                if generation == self._generation:
                    self._inflight.count -= 1
                    self._inflight.bytes -= call.size
            return None
        token = id(future)
        with self._cv:
            self._pending[token] = future
        future.add_done_callback(lambda _f, g=generation, n=call.size, t=token: self._release(g, n, t))
        return future

    def _wait(self, dht: Any, future: Any, deadline: float) -> tuple[str, Any]:
        """("ok", result) | ("error", exc) | ("timeout", None) | ("dead", None)."""
        while True:
            remaining = deadline - time.monotonic()
            try:
                return "ok", future.result(timeout=max(0.0, min(remaining, _WAIT_SLICE)))
            except FutureTimeout:
                if not dht.is_alive():
                    return "dead", None
                if remaining <= 0:
                    return "timeout", None
            except Exception as exc:  # the request itself failed inside the DHT
                return "error", exc

    def _run(self, calls: list[_Call], deadline: float) -> list[Any]:
        """Run requests pipelined under the byte budget; re-send after a restart; results or None."""
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        restarts = 0
        while todo and time.monotonic() < deadline:
            dht, generation = self._acquire_dht()
            if dht is None:
                break
            died = False
            sent: list[tuple[int, Any]] = []
            for i in todo:
                future = self._submit(dht, generation, calls[i], deadline)
                if future is None:
                    died = not dht.is_alive() or generation != self._generation
                    break
                sent.append((i, future))
            finished = set()
            for i, future in sent:
                status, value = self._wait(dht, future, deadline)
                if status == "ok":
                    results[i] = value
                    finished.add(i)
                elif status == "error":
                    log.debug("swarm DHT %s failed: %r", calls[i].method, value)
                    finished.add(i)
                elif status == "dead":
                    died = True
                    break
            todo = [i for i in todo if i not in finished]
            if not died or restarts >= _MAX_RESTARTS_PER_CALL:
                break
            restarts += 1
            self._restart(generation, f"died (exit code {dht.exitcode})" if not dht.is_alive() else "failed")
        return results

    def _deadline(self, timeout: float | None, default: float) -> float:
        return time.monotonic() + (default if timeout is None else max(0.0, timeout))

    # ------------------------------------------------------------ store / read

    def _store_wires(self, items: list[tuple[str, str, Any]], ttl: float, timeout: float) -> bool:
        """Store ``(key, tag, wire)`` records, chunking the big ones; True if every store was confirmed."""
        s = self._s
        deadline = self._deadline(timeout, timeout)
        ssh = self._identity.public_key_ssh
        chunk_items: list[tuple[str, bytes, bytes]] = []
        main_items: list[tuple[str, bytes, bytes]] = []
        for key, tag, wire in items:
            value, chunks, manifest = encode_for_store(
                wire, max_record_bytes=s.dht_max_record_bytes, max_payload_bytes=s.dht_max_payload_bytes)
            if manifest is not None:
                bkey = keys.blob_key(self._ns, self.peer_id, manifest.sha256)
                chunk_items.extend((bkey, keys.make_subkey(str(c.index), ssh), encode_wire(c)) for c in chunks)
            main_items.append((key, keys.make_subkey(tag, ssh), value))
        # Chunks first: a reader that sees a manifest should find its chunks.
        ok = self._store_items(chunk_items, deadline, ttl) if chunk_items else True
        return self._store_items(main_items, deadline, ttl) and ok

    def _store_items(self, items: list[tuple[str, bytes, bytes]], deadline: float, ttl: float) -> bool:
        """Store records, with one retry of those the DHT did not confirm.

        hivemind reports the LAST replica's answer, and a replica answers False when it
        already holds that exact record: peers forward their records to a node they
        just met (a join, a restart), and that copy can land before ours. A retry with a
        fresh expiration time is newer than any such copy, so it is accepted.
        """
        from hivemind.utils.timed_storage import get_dht_time

        statuses = self._store_batches(items, get_dht_time() + ttl, deadline)
        retry = [i for i, ok in enumerate(statuses) if ok is not True]
        if retry and time.monotonic() < deadline:
            again = self._store_batches([items[i] for i in retry], get_dht_time() + ttl, deadline)
            for i, ok in zip(retry, again):
                statuses[i] = ok
        failed = sum(1 for ok in statuses if ok is not True)
        if failed:
            log.info("swarm DHT did not confirm %d of %d stores", failed, len(statuses))
        return failed == 0

    def _store_batches(self, items: list[tuple[str, bytes, bytes]], expiration: float,
                       deadline: float) -> list[bool | None]:
        """Hand records to the DHT process through files (fact 1: payloads stay off the pipe)."""
        import tempfile
        from functools import partial

        import msgpack

        from hivemind_exp.swarm.validator import store_batch

        groups: list[list[tuple[str, bytes, bytes]]] = [[]]
        size = 0
        for item in items:
            if groups[-1] and (len(groups[-1]) >= _BATCH_RECORDS or size + len(item[2]) > _BATCH_BYTES):
                groups.append([])
                size = 0
            groups[-1].append(item)
            size += len(item[2])
        paths: list[str] = []
        try:
            calls = []
            for group in groups:
                fd, path = tempfile.mkstemp(prefix="rlswarm-store-", suffix=".msgpack")
                paths.append(path)
                with open(fd, "wb") as f:
                    f.write(msgpack.packb([list(item) for item in group], use_bin_type=True))
                # Weighted as half the budget: at most two batches at once, so the DHT process (one
                # event loop) keeps time to answer its peers while it stores.
                calls.append(_Call("run_coroutine", dict(coro=partial(store_batch, path=path, expiration=expiration)),
                                   _INFLIGHT_BUDGET // 2))
            results = self._run(calls, deadline)
        finally:
            for path in paths:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        statuses: list[bool | None] = []
        for group, result in zip(groups, results):
            if isinstance(result, list) and len(result) == len(group):
                statuses.extend(bool(ok) for ok in result)
            else:
                statuses.extend([None] * len(group))
        return statuses

    @staticmethod
    def _get_call(key: str, latest: bool = True) -> _Call:
        return _Call("get", dict(key=key, latest=latest), len(key) + _MESSAGE_OVERHEAD)

    def _read_entries(self, key_list: list[str], deadline: float) -> list[_Entry]:
        """Every checked record under the given dictionary keys; big ones reassembled from chunks."""
        entries: list[_Entry] = []
        manifests: list[_Entry] = []
        for key, found in zip(key_list, self._run([self._get_call(k) for k in key_list], deadline)):
            for tag, owner, wire in self._checked_items(key, found):
                entry = _Entry(key, tag, owner, wire)
                (manifests if isinstance(wire, ManifestWire) else entries).append(entry)
        if manifests:
            entries.extend(self._resolve_manifests(manifests, deadline))
        return entries

    def _checked_items(self, key: str, found: Any) -> Iterable[tuple[str, str, WireRecord]]:
        if found is None:
            return
        value = found.value
        if not isinstance(value, dict):
            self._drops.drop("malformed", f"{type(value).__name__} instead of a dictionary", key)
            return
        for subkey, item in value.items():
            try:
                parsed = keys.parse_subkey(subkey)
                wire = decode_wire(item.value, max_bytes=_READ_MAX, owner_peer_id=parsed.owner_peer_id)
            except RecordRejected as exc:
                self._drops.rejected(exc, key)
                continue
            except ValueError as exc:
                self._drops.drop("unsigned", str(exc), key)
                continue
            yield parsed.tag, parsed.owner_peer_id, wire

    def _resolve_manifests(self, manifests: list[_Entry], deadline: float) -> list[_Entry]:
        s = self._s
        blob_keys: dict[str, _Entry] = {}
        need: dict[str, int] = {}
        for entry in manifests:
            m = entry.wire
            assert isinstance(m, ManifestWire)
            bkey = keys.blob_key(self._ns, m.peer_id, m.sha256)
            blob_keys.setdefault(bkey, entry)
            need[bkey] = m.n_chunks
        chunks_by_key: dict[str, dict[int, ChunkWire]] = {k: {} for k in blob_keys}
        missing = list(blob_keys)
        pause = _BLOB_RETRY_PAUSE
        for attempt in range(_BLOB_ATTEMPTS):
            # Blobs never change (the key holds their hash), so any copy will do: the first try takes
            # the nearest one (often our own replica, no network); retries search every peer.
            calls = [self._get_call(k, latest=attempt > 0) for k in missing]
            for key, found in zip(missing, self._run(calls, deadline)):
                for tag, owner, wire in self._checked_items(key, found):
                    if not isinstance(wire, ChunkWire) or tag != str(wire.index) or owner != blob_keys[key].owner:
                        self._drops.drop("wrong_key", f"{wire.kind} record under chunk subkey {tag!r}", key)
                        continue
                    chunks_by_key[key][wire.index] = wire
            missing = [k for k in missing if len(chunks_by_key[k]) < need[k]]
            # A loaded DHT briefly skips peers that answered late, so a lookup can come back short:
            # ask again a few times (not until the deadline: a lying manifest must not stall every fetch).
            if not missing or deadline - time.monotonic() < 2 * pause or attempt == _BLOB_ATTEMPTS - 1:
                break
            time.sleep(pause)
            pause *= 2
        out = []
        for entry in manifests:
            m = entry.wire
            assert isinstance(m, ManifestWire)
            bkey = keys.blob_key(self._ns, m.peer_id, m.sha256)
            try:
                inner = reassemble(m, chunks_by_key.get(bkey, {}), max_payload_bytes=s.dht_max_payload_bytes,
                                   max_record_bytes=s.dht_max_record_bytes)
            except RecordRejected as exc:
                self._drops.rejected(exc, entry.key)
                continue
            out.append(_Entry(entry.key, entry.tag, entry.owner, inner))
        return out

    def _wrong(self, entry: _Entry, why: str) -> None:
        self._drops.drop("wrong_key", f"{entry.wire.kind} record from {entry.owner}: {why}", entry.key)

    # ------------------------------------------------------------ outputs

    def publish_outputs(self, round_num: int, stage: int, outputs: Mapping[str, OutputRecord]) -> bool:
        key = keys.outputs_key(self._ns, round_num, stage, self.peer_id)
        items = [(key, qhash, OutputWire(peer_id=self.peer_id, round=round_num, stage=stage, qhash=qhash,
                                         record=record)) for qhash, record in outputs.items()]
        if not items:
            return True
        return self._store_wires(items, self._s.dht_record_ttl, self._s.dht_publish_timeout)

    def fetch_outputs(self, round_num: int, stage: int, timeout: float | None = None,
                      peers: Iterable[str] | None = None) -> dict[str, dict[str, OutputRecord]]:
        deadline = self._deadline(timeout, self._s.dht_fetch_timeout)
        key_to_peer = {keys.outputs_key(self._ns, round_num, stage, p): p
                       for p in self._peer_ids(peers, round_num, deadline)}
        out: dict[str, dict[str, OutputRecord]] = {}
        for entry in self._read_entries(list(key_to_peer), deadline):
            wire = entry.wire
            if not isinstance(wire, OutputWire):
                self._wrong(entry, "not an output")
            elif entry.owner != key_to_peer[entry.key]:
                self._wrong(entry, f"written under {key_to_peer[entry.key]}'s key")
            elif (wire.round, wire.stage, wire.qhash) != (round_num, stage, entry.tag):
                self._wrong(entry, f"belongs to round {wire.round} stage {wire.stage} question {wire.qhash}")
            else:
                out.setdefault(entry.owner, {})[wire.qhash] = wire.record
        return out

    def _peer_ids(self, peers: Iterable[str] | None, round_num: int, deadline: float) -> list[str]:
        if peers is not None:  # an explicit list is read whole (the coordinator checks everyone)
            return sorted(set(peers))
        # The directory, plus the peers our daemon is connected to: a directory read on a
        # loaded DHT can come back short, and a connected peer is likely a publishing one.
        listed = {p.peer_id for p in self._list_peers_until(deadline)}
        # Capped like MemoryTransport: the same rule, so both transports read the same peers.
        return read_set(listed | self._connected_peer_ids(), self.peer_id, round_num,
                        self._s.dht_max_peers_per_read, namespace=self._ns)

    # ------------------------------------------------------------ rollouts (SAPO)

    def publish_rollouts(self, round_num: int, groups: Mapping[str, RolloutGroup]) -> bool:
        key = keys.rollouts_key(self._ns, round_num, self.peer_id)
        items = [(key, gkey, RolloutsWire(peer_id=self.peer_id, round=round_num, key=gkey, group=group))
                 for gkey, group in groups.items()]
        if not items:
            return True
        return self._store_wires(items, self._s.dht_record_ttl, self._s.dht_publish_timeout)

    def fetch_rollouts(self, round_num: int, timeout: float | None = None,
                       peers: Iterable[str] | None = None) -> dict[str, dict[str, RolloutGroup]]:
        deadline = self._deadline(timeout, self._s.dht_fetch_timeout)
        key_to_peer = {keys.rollouts_key(self._ns, round_num, p): p for p in self._peer_ids(peers, round_num, deadline)}
        out: dict[str, dict[str, RolloutGroup]] = {}
        for entry in self._read_entries(list(key_to_peer), deadline):
            wire = entry.wire
            if not isinstance(wire, RolloutsWire):
                self._wrong(entry, "not a rollout group")
            elif entry.owner != key_to_peer[entry.key]:
                self._wrong(entry, f"written under {key_to_peer[entry.key]}'s key")
            elif (wire.round, wire.key) != (round_num, entry.tag):
                self._wrong(entry, f"belongs to round {wire.round} group {wire.key}")
            else:
                out.setdefault(entry.owner, {})[wire.key] = wire.group
        return out

    # ------------------------------------------------------------ rewards / winners

    def publish_reward(self, round_num: int, stage: int, reward: float) -> bool:
        wire = RewardWire(peer_id=self.peer_id, round=round_num, stage=stage, reward=float(reward))
        return self._store_wires([(keys.rewards_key(self._ns, round_num, stage), "", wire)],
                                 self._s.dht_record_ttl, self._s.dht_publish_timeout)

    def fetch_rewards(self, round_num: int, stage: int, timeout: float | None = None) -> dict[str, float]:
        deadline = self._deadline(timeout, self._s.dht_fetch_timeout)
        out: dict[str, float] = {}
        for entry in self._read_entries([keys.rewards_key(self._ns, round_num, stage)], deadline):
            wire = entry.wire
            if not isinstance(wire, RewardWire) or entry.tag or (wire.round, wire.stage) != (round_num, stage):
                self._wrong(entry, "not this round/stage's reward")
            else:
                out[entry.owner] = wire.reward
        return out

    def publish_winners(self, round_num: int, winners: Sequence[str]) -> bool:
        wire = WinnersWire(peer_id=self.peer_id, round=round_num, winners=list(winners))
        return self._store_wires([(keys.winners_key(self._ns, round_num), "", wire)],
                                 self._s.dht_record_ttl, self._s.dht_publish_timeout)

    def fetch_winners(self, round_num: int, timeout: float | None = None) -> dict[str, list[str]]:
        deadline = self._deadline(timeout, self._s.dht_fetch_timeout)
        out: dict[str, list[str]] = {}
        for entry in self._read_entries([keys.winners_key(self._ns, round_num)], deadline):
            wire = entry.wire
            if not isinstance(wire, WinnersWire) or entry.tag or wire.round != round_num:
                self._wrong(entry, "not this round's winners")
            else:
                out[entry.owner] = list(wire.winners)
        return out

    # ------------------------------------------------------------ round state

    def publish_round_state(self, round_num: int, stage: int, stage_deadline_unix: float,
                            game: str = "three-stage") -> bool:
        state = RoundState(round=round_num, stage=stage, stage_deadline_unix=float(stage_deadline_unix),
                           published_at=time.time(), game=game)
        wire = RoundStateWire(peer_id=self.peer_id, state=state)
        return self._store_wires([(keys.round_state_key(self._ns), "", wire)],
                                 self._s.dht_record_ttl, self._s.dht_publish_timeout)

    def fetch_round_state(self, timeout: float | None = None) -> RoundState | None:
        """The coordinator's latest round/stage; None if unknown or no coordinator_peer_id is configured."""
        deadline = self._deadline(timeout, self._s.dht_fetch_timeout)
        trusted = self._s.coordinator_peer_id
        best: RoundState | None = None
        for entry in self._read_entries([keys.round_state_key(self._ns)], deadline):
            wire = entry.wire
            if not isinstance(wire, RoundStateWire) or entry.tag:
                self._wrong(entry, "not a round state")
            elif entry.owner != trusted:
                self._drops.drop("untrusted", f"round state from {entry.owner}, not the coordinator {trusted}",
                                 entry.key)
            elif best is None or wire.state.published_at > best.published_at:
                best = wire.state
        return best

    # ------------------------------------------------------------ peers

    def heartbeat(self, name: str | None = None, wallet: str | None = None,
                  evaluation: EvalSummary | None = None, sapo: SapoStats | None = None) -> bool:
        """Publish this node's directory entry (name/wallet/evaluation/sapo are remembered for later heartbeats)."""
        if name is not None:
            self._hb_name = name
        if wallet is not None:
            self._hb_wallet = wallet
        if evaluation is not None:
            self._hb_eval = evaluation
        if sapo is not None:
            self._hb_sapo = sapo
        self.remeet()
        wire = HeartbeatWire(peer_id=self.peer_id, name=self._hb_name, wallet=self._hb_wallet,
                             last_seen=time.time(), maddrs=self.dialable_maddrs()[:8], evaluation=self._hb_eval,
                             sapo=self._hb_sapo)
        ok = self._store_wires([(keys.peers_key(self._ns), "", wire)], self._s.dht_peer_ttl,
                               self._s.dht_publish_timeout)
        self._refresh_known_maddrs()
        return ok

    def list_peers(self, timeout: float | None = None) -> list[PeerInfo]:
        return self._list_peers_until(self._deadline(timeout, self._s.dht_fetch_timeout))

    def _list_peers_until(self, deadline: float) -> list[PeerInfo]:
        found: dict[str, PeerInfo] = {}
        for entry in self._read_entries([keys.peers_key(self._ns)], deadline):
            wire = entry.wire
            if not isinstance(wire, HeartbeatWire) or entry.tag:
                self._wrong(entry, "not a heartbeat")
                continue
            info = PeerInfo(peer_id=wire.peer_id, name=wire.name, last_seen=wire.last_seen, wallet=wire.wallet,
                            maddrs=wire.maddrs, evaluation=wire.evaluation, sapo=wire.sapo)
            if info.peer_id not in found or info.last_seen > found[info.peer_id].last_seen:
                found[info.peer_id] = info
        peers = sorted(found.values(), key=lambda p: p.peer_id)
        self._remember_maddrs(m for p in peers if p.peer_id != self.peer_id for m in p.maddrs)
        return peers

    def _connected_maddrs(self) -> list[str]:
        from hivemind_exp.swarm.validator import connected_maddrs

        deadline = time.monotonic() + 2.0
        [maddrs] = self._run([_Call("run_coroutine", dict(coro=connected_maddrs), _MESSAGE_OVERHEAD)], deadline)
        return maddrs if isinstance(maddrs, list) else []

    def _connected_peer_ids(self) -> set[str]:
        ids = {m.rsplit("/p2p/", 1)[1] for m in self._connected_maddrs() if "/p2p/" in m}
        return {i for i in ids if keys.PEER_ID_RE.fullmatch(i)}

    def _refresh_known_maddrs(self) -> None:
        maddrs = self._connected_maddrs()
        if maddrs:
            self._remember_maddrs(maddrs)

    def remeet(self, force: bool = False) -> int:
        """Re-dial known peers that are missing from the DHT's routing table; returns how many answered.

        hivemind drops a peer from its routing table after one unanswered request and never looks
        for it again, so after a partition heals both sides stay strangers (and a node whose table
        emptied sees no one). At most every dht_remeet_seconds unless forced.
        """
        from hivemind_exp.swarm.validator import remeet

        every = self._s.dht_remeet_seconds
        now = time.monotonic()
        if not force and (every <= 0 or now - self._last_remeet < every):
            return 0
        self._last_remeet = now
        own = f"/p2p/{self.peer_id}"
        maddrs = [m for m in dict.fromkeys(list(self._s.initial_peers) + self._known_maddrs) if not m.endswith(own)]
        if not maddrs:
            return 0
        timeout = self._s.dht_rpc_timeout
        deadline = time.monotonic() + 2 * timeout + 2
        [met] = self._run([_Call("run_coroutine", dict(coro=partial(remeet, maddrs=maddrs, timeout=timeout)),
                                 _MESSAGE_OVERHEAD + sum(len(m) for m in maddrs))], deadline)
        if isinstance(met, int) and met:
            log.info("event=remeet met=%d: re-joined peer(s) that had dropped out of the routing table", met)
        return met if isinstance(met, int) else 0

    def _remember_maddrs(self, maddrs: Iterable[str]) -> None:
        # Fallback bootnodes for a restart when the configured ones are gone.
        merged = list(dict.fromkeys([m for m in maddrs if "/p2p/" in m] + self._known_maddrs))
        self._known_maddrs = merged[:_MAX_KNOWN_MADDRS]

    # ------------------------------------------------------------ metrics

    def drop_counts(self) -> dict[str, int]:
        """Dropped records by reason: read-side checks here plus the DHT process's validator."""
        from hivemind_exp.swarm.validator import read_counts

        deadline = time.monotonic() + 2.0
        try:
            [child] = self._run([_Call("run_coroutine", dict(coro=read_counts), _MESSAGE_OVERHEAD)], deadline)
        except SwarmClosedError:
            child = None
        if isinstance(child, dict):
            self._child_counts_last = child
        total: Counter[str] = Counter(self._drops.snapshot())
        total.update(self._child_counts_base)
        total.update(self._child_counts_last)
        return dict(total)
