"""`SwarmSettings`: where the node's DHT listens, whom it joins, and its record limits.

The node and coordinator settings extend this class, so every field here is also a
flag (``--host-maddrs``) and an env var (``RLSWARM_HOST_MADDRS``). Generic names carry a
``dht_`` prefix so they do not clash with the chain or model settings beside them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from hivemind_exp.swarm.multiaddrs import PEER_ID_RE, as_list, check_maddr, check_namespace, check_peer_id
from hivemind_exp.swarm.read_set import DEFAULT_MAX_PEERS_PER_READ, check_cap
from hivemind_exp.common.settings_base import ServiceSettings

# Largest stored value (our payload plus hivemind's signature suffix) any peer accepts.
# Swarm-wide on purpose: a peer rejects a whole dictionary when one entry fails, so
# peers must agree on it; the per-node `dht_max_record_bytes` only lowers what we write.
# It also keeps every message to the DHT process below 16 KiB, which Python writes to
# its pipe in one piece (see hivemind_transport for why that matters).
PROTOCOL_MAX_RECORD_BYTES = 12 * 1024
SIGNATURE_OVERHEAD_BYTES = 1024


def _is_loopback(maddr: str) -> bool:
    return bool(re.match(r"^/(ip4/127\.|ip6/::1(/|$)|dns4?/localhost/)", maddr))


class SwarmSettings(ServiceSettings):
    """The swarm transport over a Hivemind DHT."""

    host_maddrs: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["/ip4/0.0.0.0/tcp/38331"],
        description="multiaddrs the DHT listens on, e.g. /ip4/0.0.0.0/tcp/38331 (tcp/0 picks a free port); "
        "change the port when it is taken")
    announce_maddrs: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="multiaddrs other peers should dial to reach this node (public IP and port behind NAT or "
        "in Docker); empty: announce the listen addresses")
    initial_peers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="bootnodes to join through, each /ip4/HOST/tcp/PORT/p2p/PEER_ID (comma-separated or "
        "repeated); empty: start a new swarm (the coordinator does this)")
    identity_path: Path = Field(
        Path("swarm.pem"),
        description="the node's private key file (created once, mode 0600); it fixes the peer ID, so keep it")
    coordinator_peer_id: str | None = Field(
        None,
        description="peer ID of the coordinator: the only peer whose round/stage record is trusted; unset: "
        "round state from the DHT is ignored")
    dht_namespace: str = Field(
        "rl_swarm", description="prefix of every DHT key; swarms with different namespaces ignore each other")
    dht_startup_timeout: float = Field(
        30.0, gt=0, le=600, description="seconds one DHT start may take (p2p daemon start plus bootstrap)")
    dht_startup_retries: int = Field(
        3, ge=0, le=20, description="extra DHT start attempts after a failed one (at start and after a crash)")
    dht_startup_backoff: float = Field(
        2.0, ge=0, le=120, description="seconds before the first retry; doubles on each further retry")
    dht_bootnode_probe_timeout: float = Field(
        5.0, ge=0, le=120,
        description="before starting the DHT, seconds to wait for a TCP connection to a bootnode (each attempt; "
        "retried dht_startup_retries times with backoff); 0: no probe")
    dht_remeet_seconds: float = Field(
        30.0, ge=0, le=3600,
        description="how often to re-dial known peers that dropped out of the routing table (after a network "
        "partition heals hivemind does not find them again by itself); 0: never")
    dht_check_identity_free: bool = Field(
        True, description="at start, check that no live peer already uses this identity (slower start; "
        "restarts after a crash skip it)")
    dht_client_mode: bool = Field(
        False, description="join as a DHT client only (stores nothing for others): for nodes that other peers "
        "cannot dial")
    dht_max_record_bytes: int = Field(
        8192, ge=2048, le=PROTOCOL_MAX_RECORD_BYTES - SIGNATURE_OVERHEAD_BYTES,
        description="largest value this node stores per DHT record, in bytes; bigger payloads are split into "
        f"chunks (at most {PROTOCOL_MAX_RECORD_BYTES - SIGNATURE_OVERHEAD_BYTES}: larger values have crashed "
        "hivemind's DHT process)")
    dht_max_payload_bytes: int = Field(
        262144, ge=4096, le=16 * 1024 * 1024,
        description="largest logical record (e.g. one completion) after chunking; bigger ones are refused on "
        "publish and dropped on fetch")
    dht_fetch_timeout: float = Field(
        10.0, gt=0, le=600, description="default seconds a fetch waits; it returns whatever arrived by then")
    dht_max_peers_per_read: int = Field(
        DEFAULT_MAX_PEERS_PER_READ,
        description="most peers whose records one stage read asks for (this node and the peers after it on a "
        "ring hashed from the round, so every peer is read by someone and no node picks whom); swarms up to "
        "this size read every peer; 0: no cap")
    dht_publish_timeout: float = Field(
        30.0, gt=0, le=600, description="seconds a publish waits for the DHT to confirm the stores")
    dht_record_ttl: float = Field(
        3600.0, ge=10, le=7 * 86400, description="seconds published outputs, rewards and winners stay in the DHT")
    dht_peer_ttl: float = Field(
        180.0, ge=5, le=86400,
        description="seconds a heartbeat keeps a peer listed; heartbeat more often than this")
    dht_rpc_timeout: float = Field(
        3.0, gt=0, le=60, description="seconds the DHT waits for one peer's reply before treating it as gone")
    dht_stall_timeout: float = Field(
        120.0, ge=5, le=3600,
        description="a DHT process that completes no request for this long while some are pending is restarted")

    @field_validator("host_maddrs", "announce_maddrs", "initial_peers", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return as_list(value)

    @field_validator("host_maddrs")
    @classmethod
    def _check_host(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one listen address, e.g. /ip4/0.0.0.0/tcp/38331")
        out = [check_maddr(v, "listen address") for v in value]
        for v in out:
            if "/tcp/" not in v and "/udp/" not in v:
                raise ValueError(f"listen address {v!r} has no /tcp/PORT or /udp/PORT part")
        return out

    @field_validator("announce_maddrs")
    @classmethod
    def _check_announce(cls, value: list[str]) -> list[str]:
        out = [check_maddr(v, "announce address") for v in value]
        for v in out:
            if re.search(r"/(tcp|udp)/0(/|$)", v):
                raise ValueError(f"announce address {v!r} uses port 0; announce the real port other peers dial")
        return out

    @field_validator("initial_peers")
    @classmethod
    def _check_peers(cls, value: list[str]) -> list[str]:
        out = []
        for v in value:
            v = check_maddr(v, "initial peer")
            m = re.search(r"/p2p/([^/]+)$", v)
            if not m or not PEER_ID_RE.match(m.group(1)):
                raise ValueError(f"initial peer {v!r} must end with /p2p/PEER_ID (the bootnode prints its full "
                                 f"address at start)")
            out.append(v)
        return out

    @field_validator("coordinator_peer_id")
    @classmethod
    def _check_coordinator(cls, value: str | None) -> str | None:
        return check_peer_id(value, "the coordinator prints its peer ID at start")

    @field_validator("dht_max_peers_per_read")
    @classmethod
    def _check_read_cap(cls, value: int) -> int:
        try:
            return check_cap(value)
        except ValueError as err:
            raise ValueError(f"{err}; set --dht-max-peers-per-read / RLSWARM_DHT_MAX_PEERS_PER_READ to e.g. "
                             f"{DEFAULT_MAX_PEERS_PER_READ} (the default), or 0 to read every peer") from None

    @field_validator("dht_namespace")
    @classmethod
    def _check_namespace(cls, value: str) -> str:
        return check_namespace(value)

    @model_validator(mode="after")
    def _announce_reachable(self) -> "SwarmSettings":
        # A loopback announce address is dialable from this machine only: remote peers would try their own host.
        remote = [p for p in self.initial_peers if not _is_loopback(p)]
        loop = [a for a in self.announce_maddrs if _is_loopback(a)]
        if remote and loop:
            raise ValueError(f"announce_maddrs {loop} are loopback addresses, but the bootnodes {remote} are on "
                             f"other machines and could never dial them back; set announce_maddrs (flag "
                             f"--announce-maddrs, env RLSWARM_ANNOUNCE_MADDRS) to an address they reach, e.g. "
                             f"/ip4/<this machine's LAN or public IP>/tcp/PORT, or leave it empty")
        if remote and not self.dht_client_mode and not self.announce_maddrs and all(map(_is_loopback, self.host_maddrs)):
            raise ValueError(f"host_maddrs {self.host_maddrs} listen on loopback only, but the bootnodes {remote} are "
                             f"on other machines and could never reach this node; listen on an address they reach "
                             f"(flag --host-maddrs, env RLSWARM_HOST_MADDRS), e.g. /ip4/0.0.0.0/tcp/38331, or join "
                             f"as a client with --dht-client-mode (behind NAT)")
        return self

    @model_validator(mode="after")
    def _payload_vs_record(self) -> "SwarmSettings":
        if self.dht_max_payload_bytes < self.dht_max_record_bytes:
            raise ValueError("dht_max_payload_bytes must be at least dht_max_record_bytes")
        return self
