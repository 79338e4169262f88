"""Startup failures end in one SwarmStartupError that names the cause and the setting to change."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from hivemind_exp.swarm.identity import ensure_identity, load_peer_id
from hivemind_exp.swarm.hivemind_transport import HivemindTransport
from hivemind_exp.swarm.transport import SwarmStartupError
from tests.fixtures.swarm import swarm_settings

pytestmark = pytest.mark.slow  # starts p2p daemons


def _no_daemons_left(before: set[int]) -> None:
    import psutil

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        extra = {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "p2pd"} - before
        if not extra:
            return
        time.sleep(0.1)
    raise AssertionError(f"p2pd processes left behind: {extra}")


def _daemons() -> set[int]:
    import psutil

    return {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "p2pd"}


def test_port_taken_names_host_maddrs_after_bounded_retries(tmp_path: Path) -> None:
    before = _daemons()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        settings = swarm_settings(tmp_path / "id.pem", host_maddrs=[f"/ip4/127.0.0.1/tcp/{port}"],
                                  dht_startup_retries=1, dht_startup_backoff=0.1)
        start = time.monotonic()
        with pytest.raises(SwarmStartupError) as err:
            HivemindTransport.start(settings)
        elapsed = time.monotonic() - start
    text = str(err.value)
    assert "already in use" in text and "host_maddrs" in text and str(port) in text
    assert "--host-maddrs" in text and "2 attempt(s)" in text
    assert elapsed < 60
    _no_daemons_left(before)


def test_unreachable_bootnode_names_initial_peers(tmp_path: Path) -> None:
    ghost = load_peer_id(ensure_identity(tmp_path / "ghost.pem"))
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    peer = f"/ip4/127.0.0.1/tcp/{dead_port}/p2p/{ghost}"
    with pytest.raises(SwarmStartupError) as err:
        HivemindTransport.start(swarm_settings(tmp_path / "id.pem", [peer]))
    text = str(err.value)
    assert "bootnodes" in text and "initial_peers" in text and peer in text and "--initial-peers" in text


def test_daemon_start_timeout_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(SwarmStartupError) as err:
        HivemindTransport.start(swarm_settings(tmp_path / "id.pem", dht_startup_timeout=0.001))
    assert "dht_startup_timeout" in str(err.value) and "--dht-startup-timeout" in str(err.value)


def test_corrupt_identity_is_reported_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "swarm.pem"
    path.write_bytes(b"\x08\x00\x12\x04junk")
    with pytest.raises(SwarmStartupError) as err:
        HivemindTransport.start(swarm_settings(path))
    assert "corrupt" in str(err.value) and "identity_path" in str(err.value)
    assert path.read_bytes() == b"\x08\x00\x12\x04junk"


def test_identity_in_use_by_a_live_peer_is_refused(tmp_path: Path) -> None:
    first = HivemindTransport.start(swarm_settings(tmp_path / "a.pem"))
    try:
        twin = swarm_settings(tmp_path / "a.pem", first.visible_maddrs(), dht_check_identity_free=True)
        with pytest.raises(SwarmStartupError) as err:
            HivemindTransport.start(twin)
        assert "identity" in str(err.value) and "identity_path" in str(err.value)
    finally:
        first.close()


def test_fresh_identity_file_is_created_and_matches_the_daemon(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "swarm.pem"
    transport = HivemindTransport.start(swarm_settings(path))
    try:
        assert path.stat().st_mode & 0o777 == 0o600
        assert transport.peer_id == load_peer_id(path)
        assert all(m.endswith("/p2p/" + transport.peer_id) for m in transport.visible_maddrs())
    finally:
        transport.close()
    assert not transport.is_alive()
