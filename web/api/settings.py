"""`DashboardSettings`: every knob of the dashboard service (env prefix RLSWARM_, flags via
`rl-swarm dashboard --help`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from hivemind_exp.chain.settings import check_http_url
from hivemind_exp.swarm.client_settings import SwarmClientSettings
from hivemind_exp.swarm.multiaddrs import check_peer_id


def _default_ui_dist() -> Path:
    return Path(__file__).resolve().parent.parent / "ui" / "dist"


class DashboardSettings(SwarmClientSettings):
    """The dashboard API on port 8080: where it reads the swarm and the chain, how often, what it serves.

    Where it joins the DHT (when no --swarm-reader-url is given), whom it trusts and where the chain
    is: `SwarmClientSettings`, shared with `rl-swarm swarm-reader`.
    """

    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 inside Docker Compose)")
    port: int = Field(8080, ge=1, le=65535, description="HTTP port of the dashboard (API + UI)")

    # --- swarm (Hivemind DHT, joined as a client: nothing listens)
    swarm_reader_url: str | None = Field(
        None, description="read the swarm through `rl-swarm swarm-reader` at this URL (e.g. http://swarm-reader:8090) "
        "instead of joining the DHT in this process, which then needs neither hivemind nor torch; that service's own "
        "settings say where to join, so --initial-peers and --bootnode-file must stay unset")
    swarm_reader_max_bytes: int = Field(
        16 * 1024 * 1024, ge=64 * 1024, le=512 * 1024 * 1024,
        description="largest snapshot (bytes) accepted from --swarm-reader-url; a bigger answer is a failed poll")
    dht_poll_interval: float = Field(2.0, gt=0, le=300, description="seconds between two reads of the DHT")
    dht_timeout: float = Field(10.0, gt=0, le=300, description="seconds one DHT poll may take before it counts "
                               "as failed")
    dht_stale_after: float = Field(60.0, gt=0, le=86400, description="/api/healthz answers 503 when the DHT has not "
                                   "been read successfully for this many seconds")

    # --- chain (optional: without a contract the dashboard shows the DHT only)
    chain: Literal["auto", "on", "off"] = Field(
        "auto", description="read the SwarmCoordinator contract: on, off, or auto (on when --contract-address is "
        "given or --deployment-file exists)")
    chain_poll_interval: float = Field(5.0, gt=0, le=3600, description="seconds between two reads of the chain")
    chain_stale_after: float = Field(120.0, gt=0, le=86400, description="/api/healthz answers 503 when a configured "
                                     "chain has not been read successfully for this many seconds")

    # --- the local trainer ("your node" card)
    local_peer_id: str | None = Field(None, description="peer ID of the trainer on this machine (default: read "
                                      "from --identity-file when it exists)")
    identity_file: Path = Field(Path("swarm.pem"), description="the local trainer's libp2p key file (swarm.pem)")
    data_dir: Path = Field(Path(".rlswarm"), description="the local trainer's data directory (its "
                           "chain-outbox.sqlite gives the pending submissions)")
    login_origin: str = Field("http://127.0.0.1:3000", description="URL of the login service, linked from the UI")

    # --- bounds (memory, request size)
    history_rounds: int = Field(50, ge=1, le=10000, description="rounds of per-peer reward history kept in memory")
    max_peers: int = Field(2000, ge=1, le=100000, description="most peers tracked (least recently seen dropped)")
    gossip_size: int = Field(100, ge=1, le=5000, description="most recent answers/critiques kept for /api/gossip")
    id_to_name_max_ids: int = Field(1000, ge=1, le=100000, description="most peer IDs one POST /api/id-to-name "
                                    "may ask about")
    id_to_name_max_bytes: int = Field(65536, ge=256, le=16 * 1024 * 1024, description="largest body (bytes) "
                                      "POST /api/id-to-name accepts")
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="reverse proxies whose X-Forwarded-For is believed (IPs/CIDRs, "
        "comma-separated); default none: the socket's peer is the client, so per-client caps hold")
    events_max_clients: int = Field(500, ge=1, le=100000, description="most /api/events live streams open at "
                                    "once, all clients together (more get 503)")
    events_max_per_client: int = Field(8, ge=1, le=10000, description="most /api/events live streams one client "
                                       "address may hold open (more get 429), so one client cannot take every slot")
    ui_dist: Path = Field(default_factory=_default_ui_dist, description="the built UI (npm run build in web/ui) "
                          "served at /")

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _split_proxies(cls, v: object) -> object:
        return [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else v

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        import ipaddress

        for ip in v:
            try:
                ipaddress.ip_network(ip, strict=False)
            except ValueError:
                raise ValueError(f"{ip!r} is not an IP or CIDR; list the reverse proxy's address (not '*')") from None
        return v

    @field_validator("login_origin")
    @classmethod
    def _login_url(cls, v: str) -> str:
        return check_http_url(v, "login_origin")

    @field_validator("swarm_reader_url")
    @classmethod
    def _reader_url(cls, v: str | None) -> str | None:
        return None if v is None or not v.strip() else check_http_url(v.strip(), "swarm_reader_url")

    @field_validator("local_peer_id")
    @classmethod
    def _local_peer(cls, v: str | None) -> str | None:
        return check_peer_id(v, "the trainer prints its own at start")

    @model_validator(mode="after")
    def _one_way_to_the_swarm(self) -> "DashboardSettings":
        if self.swarm_reader_url is not None:
            given = [n for n, v in (("initial_peers", self.initial_peers), ("bootnode_file", self.bootnode_file)) if v]
            if given:
                raise ValueError(f"{' and '.join(given)} set together with swarm_reader_url: with a swarm reader the "
                                 "dashboard joins no DHT itself; give those to `rl-swarm swarm-reader` and unset them "
                                 "here (or unset RLSWARM_SWARM_READER_URL to join in this process)")
        return self

    @model_validator(mode="after")
    def _chain_on_needs_address(self) -> "DashboardSettings":
        if self.chain == "on" and self.contract_address is None and not self.deployment_file.exists():
            raise ValueError(f"chain=on needs --contract-address or an existing --deployment-file "
                             f"(no file at {self.deployment_file}); start the chain with `rl-swarm chain` or use "
                             "chain=auto")
        return self

    def chain_configured(self) -> bool:
        """Is there a contract to read right now? (auto: the deployment file may appear later.)"""
        if self.chain == "off":
            return False
        return self.contract_address is not None or self.deployment_file.exists()
