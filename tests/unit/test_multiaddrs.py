"""Shared parsing of multiaddr lists, peer IDs and namespaces (`hivemind_exp.swarm.multiaddrs`)."""

from __future__ import annotations

import pytest

from hivemind_exp.swarm.multiaddrs import as_list, check_maddr, check_namespace, check_peer_id

PEER = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"


def test_as_list_takes_commas_json_and_nested_lists() -> None:
    assert as_list(" /ip4/1.2.3.4/tcp/1 , ,/ip4/5.6.7.8/tcp/2 ") == ["/ip4/1.2.3.4/tcp/1", "/ip4/5.6.7.8/tcp/2"]
    assert as_list('["/ip4/1.2.3.4/tcp/1", "/dns4/a/tcp/2"]') == ["/ip4/1.2.3.4/tcp/1", "/dns4/a/tcp/2"]
    assert as_list(["/a/1,/b/2", "/c/3"]) == ["/a/1", "/b/2", "/c/3"]  # repeated flags may carry commas too
    assert as_list("") == [] and as_list(None) is None
    with pytest.raises(ValueError, match="JSON list but does not parse"):
        as_list('["/ip4/1.2.3.4/tcp/1"')


def test_check_maddr_names_the_setting_and_the_expected_form() -> None:
    assert check_maddr(" /ip4/1.2.3.4/tcp/38331 ", "bootnode") == "/ip4/1.2.3.4/tcp/38331"
    for bad in ("10.0.0.1:38331", "/ip4", "/ip4/1.2.3.4 /tcp/1"):
        with pytest.raises(ValueError, match=r"bootnode .* is not a multiaddr; write it like /ip4/"):
            check_maddr(bad, "bootnode")


def test_peer_ids_and_namespaces() -> None:
    assert check_peer_id(f" {PEER} ", "hint") == PEER
    assert check_peer_id("", "hint") is None and check_peer_id(None, "hint") is None
    with pytest.raises(ValueError, match="base58 libp2p peer ID.*the coordinator prints"):
        check_peer_id("QmNot0Base58Il" * 3, "the coordinator prints its peer ID at start")
    assert check_namespace("rl-swarm.v1_test") == "rl-swarm.v1_test"
    with pytest.raises(ValueError, match="1-64 letters"):
        check_namespace("has space")
