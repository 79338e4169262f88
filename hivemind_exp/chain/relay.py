"""Relay back-end: the login service holds the wallet and sends the transactions.

HTTP contract with the login service (`modal-login/`), all with `Authorization: Bearer <api key>`:

- `GET  /api/get-api-key-status?orgId=...`  -> JSON with the key's activation ("activated": true
  or "status": "activated")
- `GET  /api/wallet-address?orgId=...` -> {"orgId", "address"}: the user's wallet (the peer's
  key signs a registration proof bound to it)
- `POST /api/register-peer`   {orgId, peerId, publicKey, signature} (hex; see `chain.proof`)
- `POST /api/submit-reward`   {orgId, roundNumber, stageNumber, reward, peerId}
- `POST /api/submit-winner`   {orgId, roundNumber, winners, peerId}

A success carries the transaction hash; this client then waits for the receipt over RPC.
Refusals: 409 = already registered/submitted, 400 = wrong round/stage or bad input (the
body names the contract error), 401/403 = key unknown or not activated, 503 = chain down
(retry). Reads go straight to the RPC (`ChainReader`).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from hivemind_exp.chain.client import ChainReader, OnSent, TxResult
from hivemind_exp.chain.errors import REVERT_MESSAGES, ChainRevert, ChainUnavailable, RelayRefused
from hivemind_exp.chain.proof import PeerKey

log = logging.getLogger(__name__)

_TX_HASH_KEYS = ("txHash", "tx_hash", "transactionHash", "hash")
_ERROR_KEYS = ("errorName", "error_name", "error", "name", "code", "message", "detail")


def _error_name(body: Any, text: str) -> str | None:
    """The contract error named in a relay error response, if any."""
    if isinstance(body, dict):
        for key in _ERROR_KEYS:
            value = body.get(key)
            if isinstance(value, str) and value in REVERT_MESSAGES:
                return value
            if isinstance(value, dict):
                inner = _error_name(value, "")
                if inner:
                    return inner
    # e.g. "execution reverted: custom error RewardAlreadySubmitted()"
    for name in REVERT_MESSAGES:
        if name in text and name not in ("Error", "Panic", "Reverted"):
            return name
    return None


def _tx_hash(body: Any) -> str | None:
    if isinstance(body, dict):
        for key in _TX_HASH_KEYS:
            value = body.get(key)
            if isinstance(value, str) and value.startswith("0x") and len(value) == 66:
                return value
        for value in body.values():
            found = _tx_hash(value)
            if found:
                return found
    return None


class RelayChainClient(ChainReader):
    """ChainClient whose writes go through the login service; reads go to the RPC."""

    mode = "relay"

    def __init__(self, login_url: str, org_id: str, api_key: str, *, rpc_url: str, contract_address: str,
                 rpc_timeout: float = 10.0, relay_timeout: float = 60.0, receipt_timeout: float = 120.0,
                 wallet_address: str | None = None):
        super().__init__(rpc_url, contract_address, timeout=rpc_timeout)
        self.wallet_address = wallet_address
        self.login_url = login_url.rstrip("/")
        self.org_id = org_id
        self._api_key = api_key
        self.relay_timeout = relay_timeout
        self.receipt_timeout = receipt_timeout

    def account_address(self, peer_id: str | None = None) -> str | None:
        """The user's wallet in the login service: configured (userData.json), else asked once.

        Never "whoever owns `peer_id`": that would take someone else's registration for ours.
        """
        if not self.wallet_address:
            self.wallet_address = self.fetch_wallet_address()
        return self.wallet_address

    def fetch_wallet_address(self) -> str:
        from web3 import Web3

        status, body, text = self._request("GET", "/api/wallet-address", what="wallet address",
                                           params={"orgId": self.org_id})
        if status >= 500:
            raise ChainUnavailable(f"wallet address: login service answered {status}: {text}")
        if status in (401, 403):
            raise RelayRefused(f"wallet address: API key refused ({status}); activate it with `rl-swarm login`: "
                               f"{text}", status, retryable=True)
        address = body.get("address") if isinstance(body, dict) else None
        if status != 200 or not isinstance(address, str) or not Web3.is_address(address):
            raise RelayRefused(f"wallet address: login service answered {status} without a wallet address "
                               f"(older login service? set --relay-wallet-address from userData.json): {text}",
                               status)
        return Web3.to_checksum_address(address)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    def _request(self, method: str, path: str, *, what: str, json_body: dict[str, Any] | None = None,
                 params: dict[str, str] | None = None) -> tuple[int, Any, str]:
        import httpx

        url = f"{self.login_url}{path}"
        try:
            with httpx.Client(timeout=self.relay_timeout) as http:
                resp = http.request(method, url, json=json_body, params=params, headers=self._headers())
        except httpx.TimeoutException:
            raise ChainUnavailable(f"{what}: login service {self.login_url} did not answer within "
                                   f"{self.relay_timeout:.0f}s") from None
        except httpx.HTTPError as exc:
            raise ChainUnavailable(f"{what}: cannot reach the login service at {self.login_url} "
                                   f"({type(exc).__name__}: {exc}); is `rl-swarm login-server` running?") from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        return resp.status_code, body, resp.text[:500]

    def api_key_activated(self) -> bool:
        """Has the user activated this API key in the login service?"""
        status, body, text = self._request("GET", "/api/get-api-key-status", what="api key status",
                                           params={"orgId": self.org_id})
        if status >= 500:
            raise ChainUnavailable(f"api key status: login service answered {status}: {text}")
        if status == 404 or status >= 400 and status not in (401, 403):
            raise RelayRefused(f"api key status: login service answered {status}: {text}", status)
        if not isinstance(body, dict):
            return False
        return body.get("activated") is True or str(body.get("status", "")).lower() == "activated"

    def _send(self, path: str, body: dict[str, Any], what: str, already_name: str, on_sent: OnSent | None) -> TxResult:
        status, data, text = self._request("POST", path, what=what, json_body={"orgId": self.org_id, **body})
        if 200 <= status < 300:
            tx_hash = _tx_hash(data)
            if tx_hash is None:
                # Retryable: the outbox re-checks the chain before sending again, so no double.
                raise RelayRefused(f"{what}: login service answered {status} without a transaction hash: {text}",
                                   status, retryable=True)
            if on_sent is not None:
                on_sent(tx_hash)
            return self.wait_for_receipt(tx_hash, self.receipt_timeout)
        name = _error_name(data, text)
        if status == 409:
            raise ChainRevert(name or already_name, f"login service: {text}")
        if status == 400 and name:
            raise ChainRevert(name, f"login service: {text}")
        if status in (502, 503, 504) or status >= 500:
            raise ChainUnavailable(f"{what}: login service answered {status} (chain or relay down): {text}")
        if status in (401, 403):
            # The user can fix this (log in / activate the key) without changing the request.
            raise RelayRefused(f"{what}: API key refused ({status}); activate it with `rl-swarm login`: {text}",
                               status, retryable=True)
        if status == 404:
            raise RelayRefused(f"{what}: login service has no {path} ({status}); check --login-url", status)
        raise RelayRefused(f"{what}: login service answered {status}: {text}", status)

    def register_peer(self, key: PeerKey, *, on_sent: OnSent | None = None) -> TxResult:
        """The node signs the proof for the user's wallet; the login service only sends it."""
        wallet = self.account_address(None)
        assert wallet is not None  # account_address raises rather than return None here
        proof = key.prove(self.chain_id(), self.contract_address, wallet)
        body = {"peerId": proof.peer_id, "publicKey": "0x" + proof.public_key.hex(),
                "signature": "0x" + proof.signature.hex()}
        return self._send("/api/register-peer", body, "registerPeerWithProof", "PeerIdAlreadyRegistered", on_sent)

    def submit_reward(self, round_number: int, stage_number: int, reward: int, peer_id: str, *,
                      on_sent: OnSent | None = None) -> TxResult:
        body = {"roundNumber": int(round_number), "stageNumber": int(stage_number), "reward": int(reward),
                "peerId": peer_id}
        return self._send("/api/submit-reward", body, "submitReward", "RewardAlreadySubmitted", on_sent)

    def submit_winners(self, round_number: int, winners: Sequence[str], peer_id: str, *,
                       on_sent: OnSent | None = None) -> TxResult:
        body = {"roundNumber": int(round_number), "winners": list(winners), "peerId": peer_id}
        return self._send("/api/submit-winner", body, "submitWinners", "WinnerAlreadyVoted", on_sent)
