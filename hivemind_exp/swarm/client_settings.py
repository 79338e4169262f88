"""`SwarmClientSettings`: how a read-only DHT client finds the swarm and whose round record it trusts.

Shared by the two services that read the swarm without playing in it, the swarm reader
(`rl-swarm swarm-reader`) and the dashboard when it joins the DHT itself, so both take the
same flags and env vars and look for peers in the same order: --initial-peers, else the
coordinator's --bootnode-file, else the bootnodes listed on chain. Light on purpose: the
dashboard image imports it, so it imports neither hivemind nor web3.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from hivemind_exp.chain.settings import check_address, check_http_url
from hivemind_exp.common.settings_base import ServiceSettings
from hivemind_exp.swarm.multiaddrs import as_list, check_maddr, check_namespace, check_peer_id


class SwarmClientSettings(ServiceSettings):
    """Where to join (flags, else the bootnode file, else the chain), whom to trust, which namespace."""

    initial_peers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="multiaddrs of DHT peers to join, e.g. /ip4/127.0.0.1/tcp/38331/p2p/Qm... "
        "(comma-separated or a JSON list from env); empty = --bootnode-file, else the chain's bootnodes")
    bootnode_file: Path | None = Field(
        None, description="when --initial-peers is empty: the coordinator's address from this file (written by "
        "`rl-swarm coordinator --bootnode-file`, e.g. on a shared Docker volume), before the chain's bootnodes")
    coordinator_peer_id: str | None = Field(
        None, description="peer ID of the coordinator, the only peer whose round/stage record is trusted "
        "(default: the peer ID in the first initial peer's multiaddr, since the coordinator is the bootstrap peer)")
    dht_namespace: str = Field("rl_swarm", description="prefix of every DHT key; must match the swarm's")
    dht_identity_file: Path | None = Field(
        None, description="key file of this client's own DHT identity (default: a throwaway key in a temporary "
        "folder; never a trainer's swarm.pem, which would clash with that trainer)")

    # The chain: its bootnodes when neither of the above gives peers (the dashboard also reads rewards there).
    rpc_url: str = Field("http://127.0.0.1:8545", description="JSON-RPC URL of the chain")
    contract_address: str | None = Field(None, description="SwarmCoordinator (proxy) address; default: from "
                                         "--deployment-file when it exists")
    deployment_file: Path = Field(Path(".rlswarm/deployment.json"),
                                  description="deployment JSON written by `rl-swarm chain`")
    rpc_timeout: float = Field(10.0, gt=0, le=300, description="seconds before one RPC request gives up")

    # Validator names carry a `_client_` prefix: a subclass's own `_url` or `_peer` would
    # otherwise replace these silently (pydantic overrides validators by name).
    @field_validator("initial_peers", mode="before")
    @classmethod
    def _client_split_peers(cls, v: object) -> object:
        return as_list(v)

    @field_validator("initial_peers")
    @classmethod
    def _client_multiaddrs(cls, v: list[str]) -> list[str]:
        return [check_maddr(addr, "initial peer") for addr in v]

    @field_validator("coordinator_peer_id")
    @classmethod
    def _client_coordinator(cls, v: str | None) -> str | None:
        return check_peer_id(v, "the coordinator prints its own at start")

    @field_validator("dht_namespace")
    @classmethod
    def _client_namespace(cls, v: str) -> str:
        return check_namespace(v)

    @field_validator("rpc_url")
    @classmethod
    def _client_rpc_url(cls, v: str) -> str:
        return check_http_url(v, "rpc_url")

    @field_validator("contract_address")
    @classmethod
    def _client_address(cls, v: str | None) -> str | None:
        return check_address(v, "contract_address")

    def trusted_coordinator(self, initial_peers: list[str]) -> str | None:
        """The coordinator peer ID: the setting, else the /p2p/ part of the first initial peer."""
        if self.coordinator_peer_id:
            return self.coordinator_peer_id
        for addr in initial_peers[:1]:
            m = re.search(r"/p2p/([1-9A-HJ-NP-Za-km-z]+)", addr)
            if m:
                return m.group(1)
        return None
