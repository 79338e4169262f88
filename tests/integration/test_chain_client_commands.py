"""`rl-swarm chain` (a real process: start, deploy, signal, restart from state) and `rl-swarm status`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hivemind_exp.chain.anvil import ANVIL_DEV_KEYS, free_port, port_in_use
from hivemind_exp.chain.outbox import Outbox, default_outbox_path
from hivemind_exp.cli import main
from tests.fixtures.chain import DeployedContract, register

pytestmark = pytest.mark.chain


def _start_chain(args: list[str], cwd: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "hivemind_exp.cli", "chain", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    deadline = time.monotonic() + 90
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("chain ready:"):
            return proc, "".join(lines)
    proc.kill()
    proc.wait(10)
    raise AssertionError("rl-swarm chain did not get ready:\n" + "".join(lines))


def test_chain_command_deploys_stops_on_signal_and_reuses_state(tmp_path: Path) -> None:
    port = free_port()
    args = ["--anvil-port", str(port), "--anvil-state-file", str(tmp_path / "state.json"),
            "--coordinator-address", "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "--bootnodes", "/ip4/127.0.0.1/tcp/38331/p2p/QmBoot"]
    proc, out = _start_chain(args, tmp_path)
    try:
        deployment = json.loads((tmp_path / ".rlswarm" / "deployment.json").read_text())
        assert f"address={deployment['address']}" in out and "deployed at" in out
        from hivemind_exp.chain.client import ChainReader

        reader = ChainReader(f"http://127.0.0.1:{port}", deployment["address"])
        assert reader.bootnodes() == ["/ip4/127.0.0.1/tcp/38331/p2p/QmBoot"]
        assert reader.has_role("STAGE_MANAGER_ROLE", "0x70997970C51812dc3A010C7d01b50e0d17dc79C8")
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, rest
    assert not port_in_use("127.0.0.1", port), "anvil stopped with the command"
    assert (tmp_path / ".rlswarm" / "anvil.log").exists()
    assert (tmp_path / "state.json").exists()

    proc, out = _start_chain(args, tmp_path)
    try:
        assert "reused at " + deployment["address"] in out
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0


def test_chain_command_port_in_use(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "hivemind_exp.cli", "chain", "--anvil-port", str(port)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"port {port}" in proc.stderr and "already in use" in proc.stderr


def test_status_reports_chain_and_outbox(deployed_contract: DeployedContract, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    dc = deployed_contract
    peer = dc.client(6)
    status_peer, fan = register(peer, "status"), register(dc.client(5), "fan")
    peer.submit_reward(0, 0, 1250, status_peer)
    dc.client(5).submit_reward(0, 0, 1, fan)  # only peers that took part in the round may vote
    dc.client(5).submit_winners(0, [status_peer], fan)
    dc.client(0).update_stage_and_round()
    box = Outbox(default_outbox_path(tmp_path / "data"))
    box.enqueue_reward(0, 1, 5, status_peer)
    box.enqueue_reward(0, 2, 5, status_peer)
    box.mark_confirmed(box.entries()[0].id, "0x" + "aa" * 32)
    key = tmp_path / "wallet.key"
    key.write_text(ANVIL_DEV_KEYS[6])
    common = ["status", "--peer-id", status_peer, "--rpc-url", dc.rpc_url, "--contract-address", dc.address,
              "--data-dir", str(tmp_path / "data")]

    assert main(common + ["--json", "--chain-mode", "wallet", "--wallet-key-file", str(key)]) == 0
    info = json.loads(capsys.readouterr().out)
    chain = info["chain"]
    assert info["wallet"] == peer.address and chain["registered"] and chain["registered_to"] == peer.address
    assert (chain["round"], chain["stage"], chain["chain_id"]) == (0, 1, 31337)
    assert chain["total_rewards"] == 1250 and chain["total_reward_points"] == 1.25 and chain["total_wins"] == 1
    assert (info["outbox"]["pending"], info["outbox"]["confirmed"], info["outbox"]["failed"]) == (1, 1, 0)

    assert main(common) == 0
    text = capsys.readouterr().out
    assert "registered:    yes" in text and "1.25 points" in text and "1 pending, 1 confirmed, 0 failed" in text

    from hivemind_exp.swarm.identity import ensure_identity, load_peer_id

    pem = ensure_identity(tmp_path / "swarm.pem")
    assert main(["status", "--identity-file", str(pem), "--rpc-url", dc.rpc_url, "--contract-address", dc.address,
                 "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["peer_id"] == load_peer_id(pem) and info["chain"]["registered"] is False
    assert info["outbox"].get("missing") is True

    dead = ["status", "--peer-id", "QmStatus", "--rpc-url", f"http://127.0.0.1:{free_port()}", "--rpc-timeout", "2",
            "--contract-address", dc.address, "--data-dir", str(tmp_path / "nodata")]
    assert main(dead) == 1
    text = capsys.readouterr().out
    assert "unreachable" in text and "outbox:        none yet" in text


def test_chain_command_names_a_broken_state_file(tmp_path: Path) -> None:
    bad = tmp_path / "state.json"
    bad.write_text("not json")
    proc = subprocess.run([sys.executable, "-m", "hivemind_exp.cli", "chain", "--anvil-port", str(free_port()),
                           "--anvil-state-file", str(bad)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "anvil exited" in proc.stderr and "failed to parse json" in proc.stderr, proc.stderr
