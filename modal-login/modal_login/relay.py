"""The contract relay: sends the trainer's calls from the user's wallet via `hivemind_exp.chain`.

Each write builds a `WalletChainClient` around the freshly unlocked key, holds a
per-wallet lock while it sends and waits for the receipt (so two requests of one
wallet never race for a nonce), then drops the client. Reads share one `ChainReader`.

Error mapping (to HTTP in `app`): `ChainRevert` -> `ContractRejected` with 409 for
"already done" refusals and 400 for the rest; `ChainUnavailable` -> 503 + Retry-After;
a missing deployment / no contract -> 503 `ChainNotConfigured`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hivemind_exp.chain.errors import ChainConfigError, ChainError, ChainRevert, ChainUnavailable

from . import metrics
from .settings import LOCAL_CHAIN_ID, LoginSettings

__all__ = ["ChainUnavailable", "ContractRejected", "Relay", "TxOutcome"]


class ContractRejected(Exception):
    """The contract (or the chain) refused a call for a reason the caller must act on."""

    def __init__(self, status: int, name: str, detail: str):
        super().__init__(f"{name}: {detail}")
        self.status = status
        self.name = name
        self.detail = detail


@dataclass(frozen=True)
class TxOutcome:
    tx_hash: str
    block_number: int | None


def _rejected(exc: ChainRevert) -> ContractRejected:
    return ContractRejected(409 if exc.already_done else 400, exc.error_name, exc.message)


class Relay:
    def __init__(self, settings: LoginSettings):
        self.settings = settings
        self._reader: Any = None
        self._reader_address: str | None = None
        self._lock = threading.Lock()
        self._wallet_locks: dict[str, threading.Lock] = {}
        self._faucet_lock = threading.Lock()
        self._chain_id: int | None = None

    # -- plumbing ------------------------------------------------------------------
    def contract_address(self) -> str:
        if self.settings.contract_address:
            return self.settings.contract_address
        from hivemind_exp.chain.client import load_deployment_address

        try:
            return load_deployment_address(Path(self.settings.deployment_file))
        except ChainConfigError as e:
            raise ContractRejected(503, "ChainNotConfigured", f"{e} (or set RLSWARM_LOGIN_CONTRACT_ADDRESS)") from None

    def reader(self) -> Any:
        """Shared read client; rebuilt when the deployment file names a new address (chain restarted)."""
        from hivemind_exp.chain.client import ChainReader

        address = self.contract_address()
        with self._lock:
            if self._reader is None or self._reader_address != address:
                self._reader = ChainReader(self.settings.rpc_url, address, timeout=min(10.0, self.settings.chain_timeout_s))
                self._reader_address = address
            return self._reader

    def _wallet_lock(self, address: str) -> threading.Lock:
        with self._lock:
            return self._wallet_locks.setdefault(address.lower(), threading.Lock())

    def _rpc_chain_id(self) -> int:
        from hivemind_exp.chain.anvil import rpc_request

        try:
            return int(rpc_request(self.settings.rpc_url, "eth_chainId", timeout=min(5.0, self.settings.chain_timeout_s)), 16)
        except Exception as e:  # urllib errors, timeouts, a non-JSON answer: all mean "not reachable"
            raise ChainUnavailable(f"eth_chainId at {self.settings.rpc_url}: {type(e).__name__}: {e}") from None

    # -- chain facts ---------------------------------------------------------------
    def chain_id(self) -> int:
        # Asked every time until it answers once, then cached: a chain id never changes under one URL.
        if self._chain_id is None:
            self._chain_id = self._rpc_chain_id()
        return self._chain_id

    def chain_id_or_none(self) -> int | None:
        """For health: the chain id if the RPC answers now, else None."""
        try:
            cid = self._rpc_chain_id()
        except ChainUnavailable:
            return None
        self._chain_id = cid
        return cid

    def is_local_chain(self) -> bool:
        return self.chain_id() == LOCAL_CHAIN_ID

    def chain_known(self) -> bool:
        return self._chain_id is not None

    def is_local_chain_cached(self) -> bool:
        return self._chain_id == LOCAL_CHAIN_ID

    def peer_ids(self, address: str) -> list[str]:
        try:
            return list(self.reader().peer_ids_of(address))
        except ContractRejected as e:
            raise ChainUnavailable(e.detail) from None
        except ChainConfigError as e:
            raise ChainUnavailable(str(e)) from None
        except ChainError as e:
            if isinstance(e, ChainUnavailable):
                raise
            raise ChainUnavailable(str(e)) from None

    # -- local faucet --------------------------------------------------------------
    def fund(self, address: str, wei: int) -> str | None:
        """Send `wei` from the faucet (anvil dev) account; only on chain 31337. Returns the tx hash."""
        if wei <= 0:
            return None
        if not self.is_local_chain():
            raise ContractRejected(400, "NotLocalChain", "funding only happens on the local chain (31337)")
        from eth_account import Account
        from web3 import Web3

        from hivemind_exp.chain.client import map_web3_error

        faucet = Account.from_key(self.settings.faucet_key.get_secret_value())
        w3 = Web3(Web3.HTTPProvider(self.settings.rpc_url, request_kwargs={"timeout": self.settings.chain_timeout_s},
                                    exception_retry_configuration=None))
        try:
            with self._faucet_lock:
                tx = {"to": Web3.to_checksum_address(address), "value": int(wei), "gas": 21_000,
                      "nonce": w3.eth.get_transaction_count(faucet.address, "pending"),
                      "chainId": LOCAL_CHAIN_ID, "gasPrice": w3.eth.gas_price}
                tx_hash = w3.eth.send_raw_transaction(faucet.sign_transaction(tx).raw_transaction)
            receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.settings.chain_timeout_s, poll_latency=0.1)
        except Exception as e:
            err = map_web3_error(e, [], "funding the new wallet")
            raise ChainUnavailable(str(err)) from None
        if receipt["status"] != 1:
            raise ChainUnavailable(f"funding transaction {tx_hash.to_0x_hex()} failed")
        return str(tx_hash.to_0x_hex())

    # -- writes --------------------------------------------------------------------
    def _transact(self, account: Any, call: str, args: Sequence[Any]) -> TxOutcome:
        try:
            out = self._transact_once(account, call, args)
        except Exception as e:
            metrics.transaction_failed(call, getattr(e, "name", None) or type(e).__name__)
            raise
        metrics.transaction_sent(call)
        return out

    def _transact_once(self, account: Any, call: str, args: Sequence[Any]) -> TxOutcome:
        from hivemind_exp.chain.wallet import WalletChainClient

        address = self.contract_address()
        with self._wallet_lock(account.address):
            try:
                client = WalletChainClient(self.settings.rpc_url, address, account.key.to_0x_hex(),
                                           timeout=min(10.0, self.settings.chain_timeout_s),
                                           receipt_timeout=self.settings.chain_timeout_s)
                result = getattr(client, call)(*args)
            except ChainRevert as e:
                raise _rejected(e) from None
            except ChainUnavailable as e:
                if "insufficient funds" in str(e).lower():
                    raise ContractRejected(
                        503, "WalletNotFunded",
                        f"the wallet {account.address} has no gas money on this chain: send some to it, then retry") from None
                raise
            except ChainConfigError as e:
                raise ContractRejected(503, "ChainNotConfigured", str(e)) from None
            except ChainError as e:
                raise ContractRejected(502, "ChainError", str(e)) from None
        return TxOutcome(result.tx_hash, result.block_number)

    def register_peer(self, account: Any, peer_id: str, public_key: bytes, signature: bytes) -> TxOutcome:
        """Send the trainer's key proof; the contract checks it (InvalidPeerProof -> 400)."""
        from hivemind_exp.chain.proof import PeerProof

        return self._transact(account, "register_peer_with_proof", [PeerProof(peer_id, public_key, signature)])

    def submit_reward(self, account: Any, round_number: int, stage_number: int, reward: int, peer_id: str) -> TxOutcome:
        return self._transact(account, "submit_reward", [round_number, stage_number, reward, peer_id])

    def submit_winners(self, account: Any, round_number: int, winners: list[str], peer_id: str) -> TxOutcome:
        return self._transact(account, "submit_winners", [round_number, winners, peer_id])
