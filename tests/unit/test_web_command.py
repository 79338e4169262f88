"""`rl-swarm dashboard`: instant --help, readable errors for a taken port and bad settings."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLSWARM_")}
    return subprocess.run([sys.executable, "-m", "hivemind_exp.cli", "dashboard", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_help_lists_the_settings_without_heavy_imports(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    r = run_cli("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "--dht-poll-interval" in r.stdout and "--coordinator-peer-id" in r.stdout
    assert time.perf_counter() - t0 < 20
    probe = subprocess.run([sys.executable, "-c", "import sys; sys.argv=['rl-swarm','dashboard','--help'];"
                            "from hivemind_exp import cli\ntry: cli.main()\nexcept SystemExit: pass\n"
                            "print(sorted(m for m in ('torch','hivemind','web3','fastapi') if m in sys.modules))"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip().splitlines()[-1] == "[]", probe.stdout


def test_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = run_cli("--port", str(port), "--chain", "off", cwd=tmp_path)
    assert r.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in r.stderr and "--port" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_setting_names_flag_and_env(tmp_path: Path) -> None:
    r = run_cli("--dht-poll-interval", "-1", cwd=tmp_path)
    assert r.returncode == 2
    assert "--dht-poll-interval" in r.stderr and "RLSWARM_DHT_POLL_INTERVAL" in r.stderr
    assert "Traceback" not in r.stderr
