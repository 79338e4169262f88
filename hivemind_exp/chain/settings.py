"""Typed settings for talking to the chain (`ChainSettings`) and for running a local one
(`LocalChainSettings`, used by `rl-swarm chain`). Env prefix RLSWARM_, see `settings_base`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from hivemind_exp.swarm.multiaddrs import as_list, check_maddr
from hivemind_exp.common.settings_base import ServiceSettings

ChainMode = Literal["off", "wallet", "relay"]

_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
_KEY_RE = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")

# anvil's first dev account (public, well-known test key): deploys the local contract.
ANVIL_DEPLOYER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def check_address(value: str | None, what: str) -> str | None:
    """'0x' + 40 hex digits (checksum not enforced: mixed-case typos are caught by the RPC)."""
    if value is None or value == "":
        return None
    v = value.strip()
    if not _ADDRESS_RE.match(v):
        raise ValueError(f"{what} must be 0x followed by 40 hex digits (an EVM address), e.g. 0x5FbDB2315678afecb367f032d93F642f64180aa3")
    return v


def check_http_url(value: str, what: str) -> str:
    v = value.strip().rstrip("/")
    if not re.match(r"^https?://[^\s/]+", v):
        raise ValueError(f"{what} must be an http:// or https:// URL, e.g. http://127.0.0.1:8545")
    return v


def read_private_key(path: Path) -> str:
    """A key file holds one hex private key (optionally 0x-prefixed); say what is wrong without echoing it."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ValueError(f"wallet key file {path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"cannot read wallet key file {path}: {exc.strerror}") from None
    if not _KEY_RE.match(text):
        raise ValueError(f"wallet key file {path} must contain one private key: 64 hex digits, optionally 0x-prefixed")
    return text if text.startswith("0x") else "0x" + text


class ChainSettings(ServiceSettings):
    """How a node (or `rl-swarm status`) reaches the SwarmCoordinator contract."""

    chain_mode: ChainMode = Field(
        "off", description="how to send contract calls: off (no chain), wallet (sign with a local key file) or relay "
        "(through the login service, which holds the wallet)")
    rpc_url: str = Field("http://127.0.0.1:8545", description="JSON-RPC URL of the chain (reads in every mode; "
                         "writes in wallet mode)")
    contract_address: str | None = Field(None, description="SwarmCoordinator (proxy) address; default: read from "
                                         "--deployment-file")
    deployment_file: Path = Field(Path(".rlswarm/deployment.json"),
                                  description="deployment JSON written by `rl-swarm chain` (used when no "
                                  "--contract-address is given)")
    wallet_key_file: Path | None = Field(None, description="wallet mode: file holding the hex private key that signs "
                                         "transactions")
    login_url: str = Field("http://127.0.0.1:3000", description="relay mode: base URL of the login service")
    org_id: str | None = Field(None, description="relay mode: the user's org ID (from the login service's userData.json)")
    api_key: SecretStr | None = Field(None, description="relay mode: the trainer's API key issued by the login service")
    relay_wallet_address: str | None = Field(None, description="relay mode: the user's wallet address in the login "
                                             "service (userData.json 'address'); lets the node spot a peer ID "
                                             "registered to another wallet")
    rpc_timeout: float = Field(10.0, gt=0, le=300, description="seconds before one RPC request gives up")
    receipt_timeout: float = Field(120.0, gt=0, le=3600, description="seconds to wait for a transaction to be mined")
    relay_timeout: float = Field(60.0, gt=0, le=600, description="seconds before one login-service request gives up")
    expected_chain_id: int | None = Field(None, ge=1, description="refuse to send if the RPC's chain ID differs "
                                          "(guards against a wrong network)")
    outbox_base_delay: float = Field(1.0, gt=0, le=600, description="first retry delay (s) of a failed submission; "
                                     "doubles per attempt")
    outbox_max_delay: float = Field(60.0, gt=0, le=3600, description="longest retry delay (s) of a failed submission")
    tx_replace_after: float = Field(30.0, gt=0, le=3600, description="wallet mode: seconds a sent transaction may stay "
                                    "unmined before it is re-sent with the same nonce and higher fees")
    tx_max_replacements: int = Field(3, ge=0, le=20, description="wallet mode: how many times one transaction may be "
                                     "replaced (0: never)")
    tx_fee_bump: float = Field(1.25, ge=1.125, le=4.0, description="wallet mode: fee multiplier of each replacement "
                               "(nodes refuse a replacement below x1.1, so at least 1.125)")

    @field_validator("contract_address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        return check_address(v, "contract_address")

    @field_validator("relay_wallet_address")
    @classmethod
    def _relay_wallet(cls, v: str | None) -> str | None:
        return check_address(v, "relay_wallet_address")

    @field_validator("rpc_url")
    @classmethod
    def _rpc(cls, v: str) -> str:
        return check_http_url(v, "rpc_url")

    @field_validator("login_url")
    @classmethod
    def _login(cls, v: str) -> str:
        return check_http_url(v, "login_url")

    @model_validator(mode="after")
    def _mode_needs(self) -> "ChainSettings":
        if self.chain_mode == "wallet":
            if self.wallet_key_file is None:
                raise ValueError("chain_mode=wallet needs --wallet-key-file (a file with the hex private key); "
                                 "or use chain_mode=relay / off")
            read_private_key(self.wallet_key_file)
        if self.chain_mode == "relay":
            missing = [n for n in ("org_id", "api_key") if not getattr(self, n)]
            if missing:
                raise ValueError(f"chain_mode=relay needs {' and '.join('--' + m.replace('_', '-') for m in missing)} "
                                 "(log in with `rl-swarm login` to get them); or use chain_mode=wallet / off")
        if self.outbox_max_delay < self.outbox_base_delay:
            raise ValueError("outbox_max_delay must be >= outbox_base_delay")
        if self.chain_mode == "wallet" and self.tx_max_replacements > 0 and self.tx_replace_after >= self.receipt_timeout:
            raise ValueError(f"tx_replace_after ({self.tx_replace_after:g}s) must be below receipt_timeout "
                             f"({self.receipt_timeout:g}s), or a stuck transaction is never replaced; lower it, "
                             "raise receipt_timeout, or set tx_max_replacements=0")
        return self


class LocalChainSettings(ServiceSettings):
    """`rl-swarm chain`: a local anvil chain with the contract deployed."""

    anvil_host: str = Field("127.0.0.1", description="address anvil listens on (0.0.0.0 inside Docker Compose)")
    anvil_port: int = Field(8545, ge=1, le=65535, description="port of the local chain (anvil)")
    anvil_state_file: Path | None = Field(None, description="keep the chain in this file across restarts "
                                          "(anvil --state); default: a fresh chain each start")
    anvil_chain_id: int = Field(31337, ge=1, description="chain ID of the local chain")
    deployment_file: Path = Field(Path(".rlswarm/deployment.json"),
                                  description="where to write the deployment JSON (address, chain id, deployer, "
                                  "artifact sha)")
    deployer_key: SecretStr = Field(SecretStr(ANVIL_DEPLOYER_KEY),
                                    description="private key that deploys the contract (default: anvil's first dev "
                                    "account; set it from env, not a flag, for anything but a local chain)")
    coordinator_address: str | None = Field(None, description="account that gets STAGE_MANAGER_ROLE and "
                                            "BOOTNODE_MANAGER_ROLE (default: only the deployer has them)")
    coordinator_key_file: Path | None = Field(None, description="local dev chain: write anvil's dev account 1 "
                                              "key here (mode 0600) and give that account the coordinator's roles, "
                                              "so a coordinator started with --wallet-key-file on it moves the "
                                              "contract's stages (what Compose does); instead of "
                                              "--coordinator-address")
    bootnodes: Annotated[list[str], NoDecode] = Field(default_factory=list, description="bootnode multiaddrs to register on the contract")
    rpc_timeout: float = Field(10.0, gt=0, le=300, description="seconds before one RPC request gives up")
    ready_timeout: float = Field(30.0, gt=0, le=600, description="seconds to wait for anvil to answer after start")

    @field_validator("coordinator_address")
    @classmethod
    def _coordinator(cls, v: str | None) -> str | None:
        return check_address(v, "coordinator_address")

    @model_validator(mode="after")
    def _one_coordinator(self) -> "LocalChainSettings":
        if self.coordinator_key_file is not None and self.coordinator_address is not None:
            raise ValueError("set coordinator_address or coordinator_key_file, not both: the key file names its "
                             "own account (anvil's dev account 1)")
        return self

    @field_validator("deployer_key")
    @classmethod
    def _key(cls, v: SecretStr) -> SecretStr:
        if not _KEY_RE.match(v.get_secret_value().strip()):
            raise ValueError("deployer_key must be a private key: 64 hex digits, optionally 0x-prefixed")
        return v

    @field_validator("bootnodes", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        return as_list(v)

    @field_validator("bootnodes")
    @classmethod
    def _multiaddrs(cls, v: list[str]) -> list[str]:
        return [check_maddr(addr, "bootnode") for addr in v]
