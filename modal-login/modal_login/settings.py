"""`LoginSettings`: the login service's one settings object.

Every field reads env `RLSWARM_LOGIN_<NAME>` (e.g. `RLSWARM_LOGIN_HOST=0.0.0.0` in
Compose), a `.env` file, or the matching `--flag` of `rl-swarm login-server`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from hivemind_exp.common.paths import repo_root
from hivemind_exp.common.settings_base import ServiceSettings

ENV_PREFIX = "RLSWARM_LOGIN_"
DEFAULT_PORT = 3000
# anvil's first dev account: public knowledge, only ever used when the chain id is 31337.
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
LOCAL_CHAIN_ID = 31337


def default_data_dir() -> Path:
    return repo_root() / "modal-login" / "temp-data"


class LoginSettings(ServiceSettings):
    """Settings of the login service (env prefix RLSWARM_LOGIN_)."""

    model_config = SettingsConfigDict(**{**ServiceSettings.model_config, "env_prefix": ENV_PREFIX})

    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 only inside a container (Compose)")
    port: int = Field(DEFAULT_PORT, ge=1, le=65535, description="TCP port; if the default 3000 is taken, 3001/3002 are tried")
    data_dir: Path = Field(Path("modal-login/temp-data"),
                           description="folder for the SQLite database, the server secret and userData.json; relative paths are under the repository root")
    user_data_path: Path | None = Field(None, description="where the machine owner's userData.json is written [default: <data_dir>/userData.json]")
    owner_email: str | None = Field(
        None, description="the account whose identity goes into userData.json for this machine's trainer; unset: the first account that signs in claims it (kept in the database)")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        ["localhost", "127.0.0.1", "[::1]", "modal-login"],
        description="Host header values (without port) the service answers; anything else gets 421, which stops DNS-rebinding pages. Add the name users open, e.g. login.example.org")
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(
        [], description="proxies whose X-Forwarded-For/-Proto are believed (IPs or CIDRs); default none: the socket's peer is the client, so rate limits cannot be dodged with a header")
    chain_workers: int = Field(4, ge=1, le=64, description="threads that talk to the chain; a slow chain ties up only these, never the request threads")
    chain_queue: int = Field(16, ge=0, le=1024, description="chain calls allowed to wait for a chain thread; beyond that a call gets 503 at once")
    health_interval_s: float = Field(5.0, gt=0, le=300, description="seconds between background chain probes; /health answers from the latest one")
    server_secret: SecretStr | None = Field(
        None, description="secret that encrypts wallet keystores and signs tokens (32+ chars); unset: generated once into <data_dir>/server-secret (mode 0600)")
    rpc_url: str = Field("http://127.0.0.1:8545", description="JSON-RPC URL of the chain (anvil locally, or a public testnet)")
    contract_address: str | None = Field(
        None, description="SwarmCoordinator address; unset: read from the local deployment record written by `rl-swarm chain`")
    deployment_file: Path = Field(Path(".rlswarm/deployment.json"),
                                  description="deployment JSON written by `rl-swarm chain`, read when no contract_address is set (re-read on every call, so a redeployed chain is picked up)")
    fund_wei: int = Field(10 * 10**18, ge=0, description="wei sent to a new wallet from anvil's dev account (chain id 31337 only)")
    faucet_key: SecretStr = Field(SecretStr(ANVIL_DEV_KEY), description="key that funds new wallets on the local chain (31337 only); default: anvil's dev account 0")
    chain_timeout_s: float = Field(30.0, gt=0, le=600, description="seconds to wait for the chain to answer or mine a transaction")
    retry_after_s: int = Field(5, ge=1, le=3600, description="Retry-After seconds sent with a 503 when the chain is down")
    cookie_secure: Literal["auto", "always", "never"] = Field(
        "auto", description="Secure flag on cookies: auto = when the request came over https (also via X-Forwarded-Proto from a trusted proxy)")
    session_ttl_s: int = Field(7 * 24 * 3600, ge=60, description="how long a sign-in lasts, in seconds")
    cors_origins: list[str] = Field(["http://127.0.0.1:8080", "http://localhost:8080"],
                                    description="origins (the dashboard) allowed to call the JSON API from a browser")
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024, description="largest request body accepted; bigger gets 413")
    signin_per_minute: float = Field(10.0, gt=0, description="sign-in/sign-up attempts allowed per client IP per minute (burst = signin_burst)")
    signin_burst: int = Field(5, ge=1, description="sign-in/sign-up attempts a client IP may make at once before the per-minute rate applies")
    writes_per_second: float = Field(5.0, gt=0, description="trainer write calls allowed per org per second (burst = writes_burst)")
    writes_burst: int = Field(20, ge=1, description="trainer write calls an org may make at once before the per-second rate applies")
    min_password_length: int = Field(8, ge=6, le=128, description="shortest password accepted at sign-up")
    public_url: str | None = Field(None, description="URL users open to sign in, shown by the trainer [default: http://<host>:<port>]")

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for o in v:
            if o == "*":
                raise ValueError("'*' would let any web page call the API with the user's cookies; list the dashboard's origin(s), e.g. http://127.0.0.1:8080")
            if not o.startswith(("http://", "https://")) or o.endswith("/"):
                raise ValueError(f"origin {o!r} must look like http://host:port (scheme, host, optional port, no trailing slash)")
        return v

    @field_validator("allowed_hosts", "forwarded_allow_ips", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        # env: a JSON list or comma-separated ("[::1],localhost" is not JSON, so fall back to commas)
        if isinstance(v, str):
            try:
                parsed = json.loads(v)
            except ValueError:
                parsed = None
            return parsed if isinstance(parsed, list) else [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, v: list[str]) -> list[str]:
        import ipaddress

        for ip in v:
            try:
                ipaddress.ip_network(ip, strict=False)
            except ValueError:
                raise ValueError(f"{ip!r} is not an IP or CIDR; list the reverse proxy's address, e.g. 172.18.0.1 (not '*')") from None
        return v

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        out = []
        for h in v:
            h = h.strip().lower()
            if not h or h == "*" or "/" in h or " " in h:
                raise ValueError(f"host {h!r}: list host names or IPs without scheme or port, e.g. localhost,127.0.0.1,login.example.org ('*' would re-open DNS rebinding)")
            out.append(h)
        return out

    @field_validator("owner_email")
    @classmethod
    def _owner(cls, v: str | None) -> str | None:
        return v.strip().lower() or None if v else None

    @field_validator("contract_address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if not (v.startswith("0x") and len(v) == 42):
            raise ValueError("a contract address is 0x followed by 40 hex digits; unset it to use the local deployment")
        try:
            int(v[2:], 16)
        except ValueError:
            raise ValueError("a contract address is 0x followed by 40 hex digits") from None
        return v

    @field_validator("server_secret")
    @classmethod
    def _secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 32:
            raise ValueError("use at least 32 random characters, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`, or unset it to have one generated")
        return v

    @field_validator("rpc_url")
    @classmethod
    def _rpc(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("the RPC URL must start with http:// or https://, e.g. http://127.0.0.1:8545")
        return v

    @model_validator(mode="after")
    def _paths(self) -> "LoginSettings":
        self.data_dir = self.data_dir.expanduser()
        if not self.data_dir.is_absolute():
            # Relative to the checkout, not the cwd: the trainer looks for userData.json there.
            self.data_dir = repo_root() / self.data_dir
        if self.user_data_path is None:
            self.user_data_path = self.data_dir / "userData.json"
        return self

    @property
    def db_path(self) -> Path:
        return self.data_dir / "login.sqlite3"

    @property
    def secret_path(self) -> Path:
        return self.data_dir / "server-secret"

    def url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"
