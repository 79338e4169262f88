"""Deploy SwarmCoordinator (logic + ERC-1967 proxy) from the committed artifact, or reuse it.

`deploy_contract(rpc_url, deployer_key, ...)`:
1. If the deployment JSON exists and still describes this chain (same chain ID, code at the
   address, proxy pointing at the recorded implementation, same artifact), reuse it.
2. Otherwise deploy the logic contract, then the proxy whose constructor calls
   `initialize(deployer)` (the deployer gets every role), in one go so nobody can initialize
   it first.
3. Grant STAGE_MANAGER_ROLE and BOOTNODE_MANAGER_ROLE to the coordinator account, make the
   on-chain bootnode list equal the given multiaddrs, and write the deployment JSON
   (atomically).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from hivemind_exp.chain.artifact import ContractArtifact, load_artifact
from hivemind_exp.chain.client import map_web3_error
from hivemind_exp.chain.errors import ChainConfigError, ChainError

log = logging.getLogger(__name__)

IMPLEMENTATION_SLOT = 0x360894A13BA1A3210667C828492DB98DCA3E2076CC3735A920A3CA505D382BBC


@dataclass(frozen=True)
class Deployment:
    """What `rl-swarm chain` writes and every other service reads to find the contract."""

    address: str  # the proxy: the address everyone calls
    implementation: str
    chain_id: int
    deployer: str
    coordinator: str | None
    artifact_sha256: str
    source_sha256: str
    compiler_version: str
    block_number: int
    rpc_url: str
    deployed_at: str

    def save(self, path: Path) -> None:
        from hivemind_exp.common.fileio import atomic_write_text

        atomic_write_text(path, json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Deployment":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except FileNotFoundError:
            raise ChainConfigError(f"deployment file {path} does not exist; run `rl-swarm chain`") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ChainConfigError(f"deployment file {path} is not a deployment JSON ({exc!r}); delete it and "
                                   "re-run `rl-swarm chain`") from None


def _reusable(w3: Any, dep: Deployment, chain_id: int, artifact: ContractArtifact) -> str | None:
    """None if `dep` is live on this chain and current; else why not."""
    if dep.chain_id != chain_id:
        return f"it is for chain {dep.chain_id}, the RPC is chain {chain_id}"
    if not w3.eth.get_code(w3.to_checksum_address(dep.address)):
        return f"no code at {dep.address} (a fresh chain?)"
    slot = w3.eth.get_storage_at(w3.to_checksum_address(dep.address), IMPLEMENTATION_SLOT)
    impl = "0x" + bytes(slot)[-20:].hex()
    if impl.lower() != dep.implementation.lower():
        return f"the proxy points at {impl}, not the recorded implementation {dep.implementation}"
    if dep.artifact_sha256 != artifact.sha256:
        return "the contract artifact changed since"
    return None


def _send(w3: Any, account: Any, tx: dict[str, Any], what: str, timeout: float) -> Any:
    tx = dict(tx)
    tx["nonce"] = w3.eth.get_transaction_count(account.address, "pending")
    tx.setdefault("chainId", w3.eth.chain_id)
    signed = account.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.1)
    if receipt["status"] != 1:
        raise ChainError(f"{what} reverted (tx {tx_hash.to_0x_hex()})")
    return receipt


def deploy_contract(rpc_url: str, deployer_key: str, *, coordinator_address: str | None = None,
                    bootnodes: Sequence[str] | None = None, deployment_path: Path | None = None,
                    reuse: bool = True, timeout: float = 10.0, receipt_timeout: float = 60.0,
                    artifact: ContractArtifact | None = None) -> tuple[Deployment, bool]:
    """Deploy (or reuse) and configure the contract. Returns (deployment, reused).

    `bootnodes=None` leaves the on-chain list alone; a sequence (even empty) replaces it.
    """
    from eth_account import Account
    from web3 import Web3

    from hivemind_exp.chain.wallet import WalletChainClient

    artifact = artifact or load_artifact()
    try:
        account = Account.from_key(deployer_key)
    except Exception:
        raise ChainConfigError("deployer key is not a valid private key (64 hex digits)") from None
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None))
    try:
        chain_id = int(w3.eth.chain_id)
        deployment: Deployment | None = None
        if reuse and deployment_path is not None and Path(deployment_path).exists():
            try:
                previous = Deployment.load(deployment_path)
            except ChainConfigError as exc:
                log.warning("ignoring deployment file: %s", exc)
            else:
                why_not = _reusable(w3, previous, chain_id, artifact)
                if why_not is None:
                    deployment = replace(previous, rpc_url=rpc_url)
                    log.info("reusing SwarmCoordinator at %s (chain %d)", previous.address, chain_id)
                else:
                    log.info("not reusing %s: %s; deploying a new contract", deployment_path, why_not)
        reused = deployment is not None
        if deployment is None:
            logic = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
            receipt = _send(w3, account, logic.constructor().build_transaction({"from": account.address}),
                            "deploying the SwarmCoordinator logic contract", receipt_timeout)
            implementation = receipt["contractAddress"]
            init_data = w3.eth.contract(abi=artifact.abi).encode_abi("initialize", [account.address])
            proxy = w3.eth.contract(abi=artifact.proxy_abi, bytecode=artifact.proxy_bytecode)
            receipt = _send(w3, account,
                            proxy.constructor(implementation, init_data).build_transaction({"from": account.address}),
                            "deploying the SwarmCoordinator proxy", receipt_timeout)
            deployment = Deployment(
                address=str(receipt["contractAddress"]), implementation=str(implementation), chain_id=chain_id,
                deployer=str(account.address), coordinator=None, artifact_sha256=artifact.sha256,
                source_sha256=artifact.source_sha256, compiler_version=artifact.compiler_version,
                block_number=int(receipt["blockNumber"]), rpc_url=rpc_url,
                deployed_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            log.info("deployed SwarmCoordinator at %s (implementation %s, chain %d)", deployment.address,
                     implementation, chain_id)
    except ChainError:
        raise
    except Exception as exc:
        raise map_web3_error(exc, artifact.abi, f"deploying to {rpc_url}") from exc

    client = WalletChainClient(rpc_url, deployment.address, deployer_key, timeout=timeout,
                               receipt_timeout=receipt_timeout, artifact=artifact)
    if coordinator_address:
        coordinator = Web3.to_checksum_address(coordinator_address)
        for role in ("STAGE_MANAGER_ROLE", "BOOTNODE_MANAGER_ROLE"):
            if not client.has_role(role, coordinator):
                client.grant_role(role, coordinator)
        deployment = replace(deployment, coordinator=coordinator)
    if bootnodes is not None:
        wanted = list(bootnodes)
        if client.bootnodes() != wanted:
            client.clear_bootnodes()
            if wanted:
                client.add_bootnodes(wanted)
            log.info("bootnodes on chain: %s", wanted)
    if deployment_path is not None:
        deployment.save(Path(deployment_path))
    return deployment, reused
