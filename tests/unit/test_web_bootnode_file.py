"""The dashboard finds the swarm from the coordinator's bootnode file (Docker Compose's shared
volume) when no initial peers are given, before falling back to the chain's bootnodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.poller import Poller
from api.settings import DashboardSettings
from api.state import DashboardState
from hivemind_exp.common.settings_base import load_settings

COORD = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
MADDR = f"/dns4/coordinator/tcp/38331/p2p/{COORD}"


def poller(tmp_path: Path, **kw: object) -> Poller:
    base: dict[str, object] = dict(chain="off", initial_peers=[], identity_file=tmp_path / "none.pem",
                                   data_dir=tmp_path, ui_dist=tmp_path / "dist")
    base.update(kw)
    settings = load_settings(DashboardSettings, **base)
    return Poller(settings, DashboardState(), swarm_factory=lambda peers: None, chain_factory=None)


def test_bootnode_file_gives_the_coordinator(tmp_path: Path) -> None:
    f = tmp_path / "bootnode.json"
    f.write_text(json.dumps({"peer_id": COORD, "maddrs": [MADDR]}))
    p = poller(tmp_path, bootnode_file=f)
    assert p._initial_peers() == [MADDR]
    assert p.settings.trusted_coordinator(p._initial_peers()) == COORD


def test_initial_peers_win_and_chain_bootnodes_are_the_fallback(tmp_path: Path) -> None:
    f = tmp_path / "bootnode.json"
    f.write_text(json.dumps({"peer_id": COORD, "maddrs": [MADDR]}))
    given = f"/ip4/10.0.0.1/tcp/1/p2p/{COORD}"
    assert poller(tmp_path, bootnode_file=f, initial_peers=[given])._initial_peers() == [given]
    p = poller(tmp_path, bootnode_file=tmp_path / "not-yet.json")
    assert p._initial_peers() == []
    p._bootnodes = [given]
    assert p._initial_peers() == [given]


@pytest.mark.parametrize("content", ["{", json.dumps({"peer_id": COORD}), json.dumps({"maddrs": "x"})])
def test_unreadable_bootnode_file_says_which(tmp_path: Path, content: str) -> None:
    f = tmp_path / "bootnode.json"
    f.write_text(content)
    with pytest.raises(RuntimeError, match="bootnode file .*bootnode.json is unreadable"):
        poller(tmp_path, bootnode_file=f)._initial_peers()
