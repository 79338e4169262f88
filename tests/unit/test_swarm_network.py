"""Settings and start-up checks for peers on different machines (no DHT started here)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from hivemind_exp.swarm.identity import ensure_identity, load_identity
from hivemind_exp.swarm.hivemind_transport import HivemindTransport, probe_bootnodes
from hivemind_exp.swarm.settings import SwarmSettings
from hivemind_exp.swarm.transport import SwarmStartupError

PEER = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"


def settings(**kw) -> SwarmSettings:
    return SwarmSettings(_env_file=None, **kw)  # type: ignore[call-arg]


def test_loopback_announce_with_a_remote_bootnode_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValidationError) as err:
        settings(announce_maddrs=["/ip4/127.0.0.1/tcp/38331"], initial_peers=[f"/ip4/10.0.0.5/tcp/38331/p2p/{PEER}"])
    text = str(err.value)
    assert "announce_maddrs" in text and "--announce-maddrs" in text and "RLSWARM_ANNOUNCE_MADDRS" in text
    # all on one machine: fine
    settings(announce_maddrs=["/ip4/127.0.0.1/tcp/38331"], initial_peers=[f"/ip4/127.0.0.1/tcp/38331/p2p/{PEER}"])
    settings(announce_maddrs=["/ip4/10.0.0.7/tcp/38331"], initial_peers=[f"/ip4/10.0.0.5/tcp/38331/p2p/{PEER}"])


def test_loopback_listen_with_a_remote_bootnode_is_refused_unless_client_mode() -> None:
    remote = [f"/ip4/10.0.0.5/tcp/38331/p2p/{PEER}"]
    with pytest.raises(ValidationError) as err:
        settings(host_maddrs=["/ip4/127.0.0.1/tcp/0"], initial_peers=remote)
    assert "host_maddrs" in str(err.value) and "--host-maddrs" in str(err.value) and "--dht-client-mode" in str(err.value)
    settings(host_maddrs=["/ip4/127.0.0.1/tcp/0"], initial_peers=remote, dht_client_mode=True)
    settings(host_maddrs=["/ip4/0.0.0.0/tcp/0"], initial_peers=remote)


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_probe_gives_up_after_bounded_attempts_with_one_line_each(caplog) -> None:
    peer = f"/ip4/127.0.0.1/tcp/{_dead_port()}/p2p/{PEER}"
    s = settings(initial_peers=[peer], dht_startup_retries=2, dht_startup_backoff=0.05, dht_bootnode_probe_timeout=0.5)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(SwarmStartupError) as err:
        probe_bootnodes(s)
    assert time.monotonic() - start < 5
    lines = [r.getMessage() for r in caplog.records if "event=bootnode_probe" in r.getMessage()]
    assert [line.split()[1] for line in lines] == ["attempt=1/3", "attempt=2/3", "attempt=3/3"], lines
    assert "next_retry_s=none" in lines[-1]
    text = str(err.value)
    assert "after 3 attempt(s)" in text and peer in text and "--initial-peers" in text


def test_probe_succeeds_once_the_bootnode_comes_up() -> None:
    port = _dead_port()
    peer = f"/ip4/127.0.0.1/tcp/{port}/p2p/{PEER}"
    s = settings(initial_peers=[peer], dht_startup_retries=5, dht_startup_backoff=0.3, dht_bootnode_probe_timeout=0.5)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def listen_later() -> None:
        time.sleep(0.4)
        server.bind(("127.0.0.1", port))
        server.listen()

    t = threading.Thread(target=listen_later)
    t.start()
    try:
        assert probe_bootnodes(s) == peer
    finally:
        t.join()
        server.close()


def test_directory_entry_drops_loopback_and_client_mode_announces_nothing(tmp_path: Path) -> None:
    identity = load_identity(ensure_identity(tmp_path / "id.pem"))
    t = HivemindTransport(settings(identity_path=tmp_path / "id.pem"), identity)
    t._visible = [f"/ip4/127.0.0.1/tcp/1/p2p/{identity.peer_id}", f"/ip4/10.1.2.3/tcp/1/p2p/{identity.peer_id}"]
    assert t.dialable_maddrs() == [f"/ip4/10.1.2.3/tcp/1/p2p/{identity.peer_id}"]
    t._visible = t._visible[:1]  # a loopback-only swarm keeps its one address
    assert t.dialable_maddrs() == t._visible
    c = HivemindTransport(settings(identity_path=tmp_path / "id.pem", dht_client_mode=True), identity)
    c._visible = [f"/ip4/10.1.2.3/tcp/1/p2p/{identity.peer_id}"]
    assert c.dialable_maddrs() == []
