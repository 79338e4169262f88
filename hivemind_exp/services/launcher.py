"""Process supervisor behind `rl-swarm up`.

Starts each service as its own process (own session, own log file under `logs/`), in
dependency order, waiting for each dependency's readiness check with a bounded timeout
and a message naming what it waits for. Then it watches: if a service exits, the
launcher names it, prints the tail of its log and stops everything (or restarts it
under the `on-failure` policy, up to a limit). Ctrl-C / SIGTERM set an event; the
`finally:` block stops every process group (SIGTERM, then SIGKILL after a grace
period) so nothing is left running.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hivemind_exp.common.net import port_free

log = logging.getLogger(__name__)

RestartPolicy = Literal["never", "on-failure"]


class LaunchError(RuntimeError):
    """A service could not be started or became unhealthy; the message names it."""


@dataclass
class ServiceSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] | None = None  # None: ready as soon as it runs
    ready_what: str = ""  # shown while waiting, e.g. "http://127.0.0.1:3000/api/healthz"
    ready_timeout: float = 120.0
    depends_on: list[str] = field(default_factory=list)
    cwd: Path | None = None
    finishes: bool = False  # exiting 0 is success (e.g. a trainer with --max-rounds), not a failure


@dataclass
class _Running:
    spec: ServiceSpec
    proc: subprocess.Popen
    log_path: Path
    restarts: int = 0


def check_ports(ports: dict[str, tuple[int, str]]) -> None:
    """ports: service -> (port, setting that moves it). Raise one error naming every clash."""
    clashes = [
        f"  - port {port} ({service}) is already in use: stop what holds it (`ss -ltnp | grep :{port}`) "
        f"or move it with {setting}"
        for service, (port, setting) in ports.items()
        if not port_free(port)
    ]
    if clashes:
        raise LaunchError("Cannot start: ports in use\n" + "\n".join(clashes))


def tcp_ready(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            return False

    return check


def http_ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2.0) as resp:  # noqa: S310 - loopback URL we built
                return 200 <= resp.status < 300
        except OSError:
            return False

    return check


def log_ready(path: Path, text: str) -> Callable[[], bool]:
    """Ready once `text` appears in the log after the point where it ends now (logs are appended)."""
    start = path.stat().st_size if path.exists() else 0

    def check() -> bool:
        try:
            with path.open("rb") as fh:
                fh.seek(start)
                return text.encode() in fh.read()
        except OSError:
            return False

    return check


def tail(path: Path, lines: int = 30) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            data = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(data.splitlines()[-lines:])


class Supervisor:
    def __init__(self, logs_dir: Path, restart_policy: RestartPolicy = "never", max_restarts: int = 3,
                 stop_grace: float = 10.0, out=None):
        self.logs_dir = Path(logs_dir)
        self.restart_policy = restart_policy
        self.max_restarts = max_restarts
        self.stop_grace = stop_grace
        self.stop_event = threading.Event()
        self.running: dict[str, _Running] = {}
        self.finished: set[str] = set()
        self.out = out or sys.stdout

    # -- output -----------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        print(f"[rl-swarm] {msg}", file=self.out, flush=True)

    # -- start ------------------------------------------------------------------------------
    def _spawn(self, spec: ServiceSpec) -> _Running:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.logs_dir / f"{spec.name}.log"
        fh = log_path.open("ab", buffering=0)
        fh.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {spec.name}: {' '.join(spec.argv)}\n".encode())
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
        proc = subprocess.Popen(  # noqa: S603 - argv built by us
            spec.argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            cwd=str(spec.cwd) if spec.cwd else None, start_new_session=True,
        )
        fh.close()
        return _Running(spec, proc, log_path)

    def _wait_ready(self, run: _Running) -> None:
        spec = run.spec
        if spec.ready is None:
            return
        deadline = time.monotonic() + spec.ready_timeout
        last_note = 0.0
        delay = 0.2
        while not self.stop_event.is_set():
            if run.proc.poll() is not None:
                raise LaunchError(
                    f"{spec.name} exited with code {run.proc.returncode} before it was ready.\n"
                    f"--- last lines of {run.log_path} ---\n{tail(run.log_path)}"
                )
            if spec.ready():
                return
            now = time.monotonic()
            if now > deadline:
                raise LaunchError(
                    f"{spec.name} was not ready after {spec.ready_timeout:.0f} s (waited for {spec.ready_what}).\n"
                    f"--- last lines of {run.log_path} ---\n{tail(run.log_path)}"
                )
            if now - last_note > 10:
                self.say(f"waiting for {spec.name}: {spec.ready_what} ({deadline - now:.0f} s left)")
                last_note = now
            self.stop_event.wait(delay)
            delay = min(delay * 1.5, 2.0)

    def start(self, specs: list[ServiceSpec]) -> None:
        names = {s.name for s in specs} | set(self.running)
        for s in specs:
            missing = [d for d in s.depends_on if d not in names]
            if missing:
                raise LaunchError(f"{s.name} depends on unknown service(s) {missing}")
        started: set[str] = set(self.running)
        pending = list(specs)
        while pending and not self.stop_event.is_set():
            progressed = False
            for spec in list(pending):
                if all(d in started for d in spec.depends_on):
                    run = self._spawn(spec)
                    self.running[spec.name] = run
                    self.say(f"started {spec.name} (pid {run.proc.pid}, log {run.log_path})")
                    self._wait_ready(run)
                    started.add(spec.name)
                    pending.remove(spec)
                    progressed = True
            if not progressed:
                raise LaunchError(f"dependency cycle among {[s.name for s in pending]}")

    # -- watch ------------------------------------------------------------------------------
    def watch(self, on_tick: Callable[[], None] | None = None, tick: float = 1.0) -> int:
        """Block until stop is requested (0) or a service fails beyond its policy (1)."""
        while not self.stop_event.wait(tick):
            for name, run in list(self.running.items()):
                code = run.proc.poll()
                if code is None:
                    continue
                if code == 0 and run.spec.finishes:
                    self.say(f"{name} finished")
                    try:  # reap helpers the finished leader may have left in its group
                        os.killpg(run.proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                    self.finished.add(name)
                    del self.running[name]
                    if not any(r.spec.finishes for r in self.running.values()):
                        self.say("every finishing service is done; stopping the rest")
                        return 0
                    continue
                self.say(f"{name} exited with code {code}\n--- last lines of {run.log_path} ---\n{tail(run.log_path)}\n---")
                if self.restart_policy == "on-failure" and code != 0 and run.restarts < self.max_restarts:
                    self.say(f"restarting {name} ({run.restarts + 1}/{self.max_restarts}, policy on-failure)")
                    new = self._spawn(run.spec)
                    new.restarts = run.restarts + 1
                    self.running[name] = new
                    continue
                self.say(f"stopping everything because {name} stopped")
                return 1
            if on_tick:
                on_tick()
        return 0

    # -- stop -------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """SIGTERM every process group, wait up to the grace period, then SIGKILL what is left."""
        runs = list(self.running.values())
        for run in reversed(runs):
            if run.proc.poll() is None:
                try:
                    os.killpg(run.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + self.stop_grace
        for run in runs:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                run.proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                self.say(f"{run.spec.name} did not stop in {self.stop_grace:.0f} s; killing it")
        for run in runs:
            # The group may hold children (e.g. hivemind's p2pd) even after the leader exits.
            try:
                os.killpg(run.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                run.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        self.running.clear()

    def install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            self.say(f"received {signal.Signals(signum).name}; stopping all services")
            self.stop_event.set()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
