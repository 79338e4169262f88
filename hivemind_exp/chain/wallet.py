"""Wallet back-end: signs SwarmCoordinator transactions with a local private key (web3.py).

Nonces: each send takes the account's *pending* transaction count under a lock, so threads
of one process never reuse a nonce; a "nonce too low" from a concurrent sender is retried
once with a fresh count. Gas is estimated first, which is also where refusals surface with
their custom error (nothing is sent for a call the contract would refuse).

Stuck transactions: one not mined within `replace_after` seconds is re-sent with the same
nonce and every fee field x `fee_bump` (>= 1.125, what nodes require to accept a
replacement), up to `max_replacements` times. All versions share one nonce, so at most one
of them is ever mined; the client waits for whichever it is. `on_sent` is called for each
version, so a caller persisting the hash keeps the newest one; the contract refuses a second
submission per peer anyway, so a lost hash cannot turn into a double.
"""

from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction
from typing import Any, Sequence

from hivemind_exp.chain.artifact import ContractArtifact
from hivemind_exp.chain.client import ROLE_NAMES, ChainReader, OnSent, TxResult, map_web3_error
from hivemind_exp.chain.errors import ChainConfigError, ChainUnavailable
from hivemind_exp.chain.proof import PeerKey, PeerProof

MIN_FEE_BUMP = 1.125  # geth/anvil refuse a same-nonce replacement with less than +10%; keep a margin

log = logging.getLogger(__name__)


class WalletChainClient(ChainReader):
    """ChainClient that signs with `private_key`; also the coordinator's stage/bootnode calls."""

    mode = "wallet"

    def __init__(self, rpc_url: str, contract_address: str, private_key: str, *, timeout: float = 10.0,
                 receipt_timeout: float = 120.0, expected_chain_id: int | None = None,
                 artifact: ContractArtifact | None = None, replace_after: float = 30.0,
                 max_replacements: int = 3, fee_bump: float = 1.25):
        super().__init__(rpc_url, contract_address, timeout=timeout, artifact=artifact)
        from eth_account import Account

        try:
            self._account = Account.from_key(private_key)
        except Exception:
            # Never echo the key: name the problem only.
            raise ChainConfigError("wallet private key is not a valid secp256k1 key (64 hex digits)") from None
        if fee_bump < MIN_FEE_BUMP:
            raise ChainConfigError(f"fee_bump {fee_bump} is below {MIN_FEE_BUMP}: nodes would refuse the replacement")
        if replace_after <= 0 or max_replacements < 0:
            raise ChainConfigError("replace_after must be > 0 and max_replacements >= 0")
        self.receipt_timeout = receipt_timeout
        self.expected_chain_id = expected_chain_id
        self.replace_after = replace_after
        self.max_replacements = max_replacements
        self.fee_bump = Fraction(str(fee_bump))
        self._send_lock = threading.Lock()

    @property
    def address(self) -> str:
        return str(self._account.address)

    def account_address(self, peer_id: str | None = None) -> str | None:
        return self.address

    # -- writes of every node

    def register_peer(self, key: PeerKey, *, on_sent: OnSent | None = None) -> TxResult:
        """Register `key`'s peer ID to this wallet, signing the proof with the peer's key."""
        return self.register_peer_with_proof(key.prove(self.chain_id(), self.contract_address, self.address),
                                             on_sent=on_sent)

    def register_peer_with_proof(self, proof: PeerProof, *, on_sent: OnSent | None = None) -> TxResult:
        """Register with a proof made elsewhere (the login relay: the node signs, the service sends)."""
        return self._transact("registerPeerWithProof", [proof.peer_id, proof.public_key, proof.signature], on_sent)

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
        sent: dict[str, dict[str, Any]] = {tx_hash: tx}  # every version of this nonce, by hash
        deadline = time.monotonic() + self.receipt_timeout
        replacements = 0
        while True:
            can_replace = replacements < self.max_replacements
            until = min(deadline, time.monotonic() + self.replace_after) if can_replace else deadline
            found = self._wait_any(sent, until, int(tx["nonce"]))
            if found is not None:
                return found
            if time.monotonic() >= deadline or not can_replace:
                raise ChainUnavailable(f"{what}: transaction {tx_hash} (nonce {tx['nonce']}) not mined within "
                                       f"{self.receipt_timeout:.0f}s after {replacements} fee bump(s); will check "
                                       "it again")
            with self._send_lock:
                replaced = self._replace(tx, what)
            if replaced is None:
                continue  # a version was mined meanwhile: the next wait finds it
            tx, tx_hash = replaced
            sent[tx_hash] = tx
            replacements += 1
            log.warning("%s: nonce %d not mined after %.0fs; replaced with fees x%s (%d/%d): %s", what, tx["nonce"],
                        self.replace_after, float(self.fee_bump), replacements, self.max_replacements, tx_hash)
            if on_sent is not None:
                on_sent(tx_hash)

    def _wait_any(self, sent: dict[str, dict[str, Any]], until: float, nonce: int) -> TxResult | None:
        """The receipt of whichever version got mined, or None at `until` (raises if it reverted)."""
        from web3 import exceptions as w3e

        used_polls = 0  # polls that saw the nonce consumed without a receipt of ours
        while True:
            nonce_used = self._rpc("eth_getTransactionCount",
                                   lambda: self._w3.eth.get_transaction_count(self.address, "latest")) > nonce  # type: ignore[arg-type]
            for tx_hash, tx in sent.items():
                try:
                    receipt = self._w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
                except w3e.TransactionNotFound:
                    continue
                except Exception as exc:
                    raise map_web3_error(exc, self.abi, "waiting for receipt") from exc
                if receipt["status"] != 1:
                    raise self._revert_reason(tx_hash, int(receipt["blockNumber"]), tx)
                return TxResult(tx_hash=tx_hash, block_number=int(receipt["blockNumber"]),
                                gas_used=int(receipt["gasUsed"]))
            used_polls = used_polls + 1 if nonce_used else 0
            if used_polls >= 2:  # twice: a load-balanced RPC may show the count before the receipt
                # Mined, but none of ours: another sender of this wallet used the nonce.
                raise ChainUnavailable(f"nonce {nonce} of {self.address} was used by a transaction this client did "
                                       "not send; will re-check the chain before sending again")
            if time.monotonic() >= until:
                return None
            time.sleep(0.2)

    def replace_pending(self, tx_hash: str) -> str | None:
        """Re-send a pending transaction of this wallet (e.g. sent before a restart) with bumped fees.

        Returns the new hash, or None when `tx_hash` is no longer pending (mined or dropped).
        """
        from web3 import exceptions as w3e

        try:
            found = self._w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
        except w3e.TransactionNotFound:
            return None
        except Exception as exc:
            raise map_web3_error(exc, self.abi, "eth_getTransactionByHash") from exc
        if found.get("blockNumber") is not None:
            return None
        if str(found["from"]).lower() != self.address.lower():
            raise ChainConfigError(f"transaction {tx_hash} was sent by {found['from']}, not this wallet "
                                   f"{self.address}; cannot replace it")
        tx: dict[str, Any] = {"chainId": self.chain_id(), "nonce": int(found["nonce"]), "to": found["to"],
                              "value": int(found.get("value") or 0), "data": found.get("input") or b"",
                              "gas": int(found["gas"])}
        if found.get("maxFeePerGas") is not None:
            tx.update(type=2, maxFeePerGas=int(found["maxFeePerGas"]),
                      maxPriorityFeePerGas=int(found["maxPriorityFeePerGas"]))
        else:
            tx["gasPrice"] = int(found["gasPrice"])
        with self._send_lock:
            replaced = self._replace(tx, f"transaction {tx_hash}")
        if replaced is None:
            return None
        log.warning("transaction %s (nonce %d) still pending; replaced with fees x%s: %s", tx_hash, tx["nonce"],
                    float(self.fee_bump), replaced[1])
        return replaced[1]

    def _replace(self, tx: dict[str, Any], what: str) -> tuple[dict[str, Any], str] | None:
        """Re-sign `tx` with every fee field x fee_bump (same nonce). None if its nonce got mined meanwhile."""
        from web3 import exceptions as w3e

        new = dict(tx)
        for name in ("maxFeePerGas", "maxPriorityFeePerGas", "gasPrice"):
            if name in new:
                bumped = Fraction(int(new[name])) * self.fee_bump
                new[name] = -(-bumped.numerator // bumped.denominator)  # ceil: never below the bump
        if "maxFeePerGas" in new:
            # The fee cap must also cover the current base fee, or the bump alone cannot unstick it.
            base = int(self._rpc("eth_getBlock", lambda: self._w3.eth.get_block("latest")).get("baseFeePerGas") or 0)
            new["maxFeePerGas"] = max(int(new["maxFeePerGas"]), 2 * base + int(new["maxPriorityFeePerGas"]))
        signed = self._account.sign_transaction(new)
        try:
            raw_hash = self._w3.eth.send_raw_transaction(signed.raw_transaction)
        except w3e.Web3RPCError as exc:
            text = str(exc).lower()
            if "nonce too low" in text:
                return None
            if "already known" in text:
                return new, signed.hash.to_0x_hex()
            raise map_web3_error(exc, self.abi, f"{what} (replacement)") from exc
        except Exception as exc:
            raise map_web3_error(exc, self.abi, f"{what} (replacement)") from exc
        return new, raw_hash.to_0x_hex()

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
