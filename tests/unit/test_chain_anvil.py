"""Anvil helper: a taken port gives a clear error before anything starts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hivemind_exp.chain.anvil import AnvilError, AnvilProcess, anvil_binary, port_in_use


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        with pytest.raises(AnvilError, match=f"port {port} .* already in use"):
            AnvilProcess(port).start(timeout=5)


def test_command_line() -> None:
    p = AnvilProcess(8600, "0.0.0.0", chain_id=7, state_file=None, block_time=2)
    cmd = p.command()
    assert cmd[0] == str(anvil_binary())
    assert cmd[1:] == ["--host", "0.0.0.0", "--port", "8600", "--accounts", "10", "--chain-id", "7",
                       "--block-time", "2", "--silent"]
    assert AnvilProcess(8600, quiet=False, state_file=Path("s.json")).command()[-2:] == ["--state", "s.json"]
    assert p.rpc_url == "http://127.0.0.1:8600", "a 0.0.0.0 listener is reached over loopback"
