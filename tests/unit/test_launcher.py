"""The launcher starts real processes in order, waits for readiness, stops them all."""

from __future__ import annotations

import io
import os
import signal
import socket
import sys
import threading
import time

import pytest

from hivemind_exp.common.net import port_free
from hivemind_exp.services.launcher import LaunchError, ServiceSpec, Supervisor, check_ports, http_ready, tcp_ready
from tests.fixtures.procs import free_port




def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); check its state
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


HTTP_SERVER = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1"]
# A service that spawns a grandchild (like hivemind's p2pd) and ignores SIGTERM in it.
SPAWNER = [sys.executable, "-c", (
    "import subprocess,sys,time,signal;"
    "p=subprocess.Popen([sys.executable,'-c','import signal,time;signal.signal(signal.SIGTERM,signal.SIG_IGN);time.sleep(600)']);"
    "print('CHILD_PID=%d' % p.pid, flush=True); time.sleep(600)")]


def test_start_in_order_and_stop_leaves_nothing(tmp_path):
    port = free_port()
    sup = Supervisor(tmp_path / "logs", stop_grace=3, out=io.StringIO())
    specs = [
        ServiceSpec("web", HTTP_SERVER + [str(port)], ready=http_ready(f"http://127.0.0.1:{port}/"),
                    ready_what="http", ready_timeout=30),
        ServiceSpec("spawner", SPAWNER, depends_on=["web"]),
    ]
    try:
        sup.start(specs)
        assert tcp_ready(port)()
        time.sleep(0.5)
        pids = [r.proc.pid for r in sup.running.values()]
        log_text = (tmp_path / "logs" / "spawner.log").read_text()
        child = int(log_text.split("CHILD_PID=")[-1].split()[0])
        assert all(alive(p) for p in pids + [child])
    finally:
        t0 = time.monotonic()
        sup.shutdown()
        took = time.monotonic() - t0
    assert took < 15
    time.sleep(0.2)
    assert not any(alive(p) for p in pids + [child])
    assert port_free(port)
    assert (tmp_path / "logs" / "web.log").exists()


def test_dead_service_is_named_with_log_tail(tmp_path):
    out = io.StringIO()
    sup = Supervisor(tmp_path / "logs", stop_grace=3, out=out)
    specs = [
        ServiceSpec("steady", [sys.executable, "-c", "import time; time.sleep(600)"]),
        ServiceSpec("flaky", [sys.executable, "-c", "import sys,time; time.sleep(0.5); print('boom: disk on fire'); sys.exit(3)"]),
    ]
    try:
        sup.start(specs)
        code = sup.watch(tick=0.2)
    finally:
        sup.shutdown()
    text = out.getvalue()
    assert code == 1
    assert "flaky exited with code 3" in text and "boom: disk on fire" in text
    assert "stopping everything because flaky stopped" in text


def test_restart_policy_on_failure(tmp_path):
    out = io.StringIO()
    marker = tmp_path / "count"
    script = (f"import pathlib,sys; p=pathlib.Path({str(marker)!r}); n=int(p.read_text()) if p.exists() else 0; "
              "p.write_text(str(n+1)); sys.exit(1)")
    sup = Supervisor(tmp_path / "logs", restart_policy="on-failure", max_restarts=2, stop_grace=2, out=out)
    try:
        sup.start([ServiceSpec("crashy", [sys.executable, "-c", script])])
        assert sup.watch(tick=0.3) == 1
    finally:
        sup.shutdown()
    assert marker.read_text() == "3"  # first run + 2 restarts
    assert "restarting crashy (2/2, policy on-failure)" in out.getvalue()


def test_not_ready_in_time_names_what_it_waited_for(tmp_path):
    port = free_port()
    sup = Supervisor(tmp_path / "logs", stop_grace=2, out=io.StringIO())
    spec = ServiceSpec("sleepy", [sys.executable, "-c", "import time; time.sleep(60)"], ready=tcp_ready(port),
                       ready_what=f"TCP port {port}", ready_timeout=1.5)
    try:
        with pytest.raises(LaunchError, match=f"sleepy was not ready after 2 s \\(waited for TCP port {port}\\)"):
            sup.start([spec])
    finally:
        sup.shutdown()


def test_exit_before_ready(tmp_path):
    sup = Supervisor(tmp_path / "logs", stop_grace=2, out=io.StringIO())
    spec = ServiceSpec("broken", [sys.executable, "-c", "raise SystemExit('bad config: x')"], ready=lambda: False,
                       ready_what="never")
    try:
        with pytest.raises(LaunchError, match="broken exited with code 1 before it was ready"):
            sup.start([spec])
    finally:
        sup.shutdown()


def test_port_in_use_detected_up_front():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(LaunchError) as ei:
            check_ports({"dashboard": (busy, "--dashboard-port / RLSWARM_DASHBOARD_PORT")})
    msg = str(ei.value)
    assert f"port {busy} (dashboard) is already in use" in msg and "--dashboard-port" in msg


def test_sigterm_sets_stop_event(tmp_path):
    sup = Supervisor(tmp_path / "logs", stop_grace=2, out=io.StringIO())
    old_int, old_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        sup.install_signal_handlers()
        sup.start([ServiceSpec("steady", [sys.executable, "-c", "import time; time.sleep(600)"])])
        threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
        assert sup.watch(tick=0.1) == 0
    finally:
        sup.shutdown()
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
