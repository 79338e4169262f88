"""The README's main command, as a user runs it: the whole local swarm with the real model.

Within 3 minutes of the command (model already cached, as after the test set-up) every
peer's log shows a completed GRPO step; the login service and dashboard answer; Ctrl-C
stops everything.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request

import pytest

from hivemind_exp.common.paths import repo_root
from tests.fixtures.procs import free_block, free_port, group_alive

pytestmark = [pytest.mark.slow]

BUDGET_S = 180


def test_readme_main_command_trains_on_every_peer(tmp_path):
    readme = (repo_root() / "README.md").read_text()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", readme, re.S)
    assert block, "README has no Quick start code block"
    commands = [ln.strip() for ln in block.group(1).splitlines() if ln.strip()]
    assert len(commands) == 2 and commands[0] == "./run_rl_swarm.sh" and commands[1] == "./run_tests.sh"

    base = free_block(3)
    ports = {"anvil": free_port(), "login": free_port(), "dashboard": free_port()}
    run_dir, logs = tmp_path / "run", tmp_path / "logs"
    argv = [str(repo_root() / "run_rl_swarm.sh"), "--run-dir", str(run_dir), "--logs-dir", str(logs),
            "--anvil-port", str(ports["anvil"]), "--login-port", str(ports["login"]),
            "--dashboard-port", str(ports["dashboard"]), "--coordinator-port", str(base),
            "--peer-base-port", str(base + 1), "--metrics-base-port", "0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "main.out"
    t0 = time.monotonic()
    with out.open("wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=tmp_path, start_new_session=True)
    try:
        done: dict[int, float] = {}
        while time.monotonic() - t0 < BUDGET_S and len(done) < 2:
            assert proc.poll() is None, out.read_text()[-5000:]
            for i in range(2):
                log = logs / f"peer{i}.log"
                if i not in done and log.exists() and "GRPO step done" in log.read_text(errors="replace"):
                    done[i] = time.monotonic() - t0
            time.sleep(2)
        tails = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in sorted(logs.glob("*.log")))
        assert len(done) == 2, f"not every peer finished a GRPO step within {BUDGET_S} s:\n{out.read_text()[-3000:]}{tails}"
        print(f"first GRPO step done on each peer after {done} s")
        for url in (f"http://127.0.0.1:{ports['login']}/api/healthz", f"http://127.0.0.1:{ports['dashboard']}/"):
            with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback
                assert resp.status == 200
    finally:
        t1 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        finally:
            if group_alive(proc.pid):
                os.killpg(proc.pid, signal.SIGKILL)
    assert time.monotonic() - t1 < 20
    pids = [int(m) for m in re.findall(r"\(pid (\d+),", out.read_text())]
    deadline = time.monotonic() + 10
    while [p for p in pids if group_alive(p)] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not [p for p in pids if group_alive(p)], "processes left running after Ctrl-C"
