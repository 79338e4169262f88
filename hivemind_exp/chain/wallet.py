"""Wallet back-end: signs SwarmCoordinator transactions with a local private key (web3.py).

Nonces: each send takes the account's *pending* transaction count under a lock, so threads
of one process never reuse a nonce; a "nonce too low" from a concurrent sender is retried
once with a fresh count. Gas is estimated first, which is also where refusals surface with
their custom error (nothing is sent for a call the contract would refuse).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Sequence

from hivemind_exp.chain.artifact import ContractArtifact
from hivemind_exp.chain.client import ROLE_NAMES, ChainReader, OnSent, TxResult, map_web3_error
from hivemind_exp.chain.errors import ChainConfigError, ChainUnavailable

log = logging.getLogger(__name__)


class WalletChainClient(ChainReader):
    """ChainClient that signs with `private_key`; also the coordinator's stage/bootnode calls."""

    mode = "wallet"

    def __init__(self, rpc_url: str, contract_address: str, private_key: str, *, timeout: float = 10.0,
                 receipt_timeout: float = 120.0, expected_chain_id: int | None = None,
                 artifact: ContractArtifact | None = None):
        super().__init__(rpc_url, contract_address, timeout=timeout, artifact=artifact)
        from eth_account import Account

        try:
            self._account = Account.from_key(private_key)
        except Exception:
            # Never echo the key: name the problem only.
            raise ChainConfigError("wallet private key is not a valid secp256k1 key (64 hex digits)") from None
        self.receipt_timeout = receipt_timeout
        self.expected_chain_id = expected_chain_id
        self._send_lock = threading.Lock()

    @property
    def address(self) -> str:
        return str(self._account.address)

    def account_address(self, peer_id: str | None = None) -> str | None:
        return self.address

    # -- writes of every node

    def register_peer(self, peer_id: str, *, on_sent: OnSent | None = None) -> TxResult:
        return self._transact("registerPeer", [peer_id], on_sent)

    def submit_reward(self, round_number: int, stage_number: int, reward: int, peer_id: str, *,
                      on_sent: OnSent | None = None) -> TxResult:
        return self._transact("submitReward", [round_number, stage_number, int(reward), peer_id], on_sent)

    def submit_winners(self, round_number: int, winners: Sequence[str], peer_id: str, *,
                       on_sent: OnSent | None = None) -> TxResult:
        return self._transact("submitWinners", [round_number, list(winners), peer_id], on_sent)

    # -- writes of the coordinator / operator (need roles)

    def update_stage_and_round(self) -> tuple[TxResult, tuple[int, int]]:
        """Advance the game clock; returns the tx and the new (round, stage)."""
        result = self._transact("updateStageAndRound", [], None)
        return result, self.round_and_stage()

    def add_bootnodes(self, multiaddrs: Sequence[str]) -> TxResult:
        return self._transact("addBootnodes", [list(multiaddrs)], None)

    def remove_bootnode(self, index: int) -> TxResult:
        return self._transact("removeBootnode", [index], None)

    def clear_bootnodes(self) -> TxResult:
        return self._transact("clearBootnodes", [], None)

    def grant_role(self, role_name: str, account: str) -> TxResult:
        return self._role_tx("grantRole", role_name, account)

    def revoke_role(self, role_name: str, account: str) -> TxResult:
        return self._role_tx("revokeRole", role_name, account)

    def _role_tx(self, fn: str, role_name: str, account: str) -> TxResult:
        from web3 import Web3

        if role_name not in ROLE_NAMES:
            raise ValueError(f"unknown role {role_name!r}; one of {', '.join(ROLE_NAMES)}")
        role = self._call(role_name)
        return self._transact(fn, [role, Web3.to_checksum_address(account)], None)

    # -- sending

    def _transact(self, fn_name: str, args: list[Any], on_sent: OnSent | None) -> TxResult:
        what = f"{fn_name}()"
        if self.expected_chain_id is not None and self.chain_id() != self.expected_chain_id:
            raise ChainConfigError(f"RPC {self.rpc_url} is chain {self.chain_id()}, expected "
                                   f"{self.expected_chain_id}; refusing to send {what}")
        fn = getattr(self._contract.functions, fn_name)(*args)
        with self._send_lock:
            tx, tx_hash = self._sign_and_send(fn, what)
        if on_sent is not None:
            on_sent(tx_hash)
        return self.wait_for_receipt(tx_hash, self.receipt_timeout, tx)

    def _sign_and_send(self, fn: Any, what: str) -> tuple[dict[str, Any], str]:
        from web3 import exceptions as w3e

        sender = self.address
        for attempt in (1, 2):
            signed = None
            try:
                gas = int(fn.estimate_gas({"from": sender}))
                nonce = self._w3.eth.get_transaction_count(sender, "pending")  # type: ignore[arg-type]
                # 20% headroom: state can change between estimate and inclusion (e.g. leaderboard swaps).
                tx = dict(fn.build_transaction({"from": sender, "nonce": nonce, "gas": gas * 6 // 5 + 10_000,
                                                "chainId": self.chain_id()}))
                signed = self._account.sign_transaction(tx)
                raw_hash = self._w3.eth.send_raw_transaction(signed.raw_transaction)
                return tx, raw_hash.to_0x_hex()
            except w3e.Web3RPCError as exc:
                text = str(exc).lower()
                if signed is not None and "already known" in text:
                    # This exact transaction is already in the pool: follow it instead of sending another.
                    return tx, signed.hash.to_0x_hex()
                if attempt == 1 and "nonce too low" in text:
                    log.info("%s: nonce race (%s); retrying with a fresh nonce", what, exc)
                    continue
                raise map_web3_error(exc, self.abi, what) from exc
            except Exception as exc:
                raise map_web3_error(exc, self.abi, what) from exc
        raise ChainUnavailable(f"{what}: could not get a fresh nonce")
