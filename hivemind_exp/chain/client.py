"""The chain client interface (`ChainClient`) and the read side every back-end shares.

Back-ends: `wallet.WalletChainClient` (signs with a local key via web3.py) and
`relay.RelayChainClient` (asks the login service to send). Both read the contract straight
from the RPC through `ChainReader`. `build_client(settings)` picks one from `ChainSettings`.

Every RPC request has a timeout; failures come out as the `errors` classes (never raw web3 /
requests exceptions), so callers can tell "down, retry" from "refused, here is why".
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Protocol, Sequence, runtime_checkable

from hivemind_exp.chain.artifact import ContractArtifact, load_artifact
from hivemind_exp.chain.errors import ChainConfigError, ChainError, ChainRevert, ChainUnavailable, decode_revert

if TYPE_CHECKING:
    from hivemind_exp.chain.proof import PeerKey
    from hivemind_exp.chain.settings import ChainSettings

log = logging.getLogger(__name__)

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
ROLE_NAMES = ("OWNER_ROLE", "STAGE_MANAGER_ROLE", "BOOTNODE_MANAGER_ROLE")

TxStatus = Literal["success", "reverted", "pending", "unknown"]
OnSent = Callable[[str], None]


@dataclass(frozen=True)
class TxResult:
    """A mined, successful transaction."""

    tx_hash: str
    block_number: int
    gas_used: int


@dataclass(frozen=True)
class LeaderboardEntry:
    peer_id: str
    count: int


@dataclass(frozen=True)
class RewardEvent:
    """One `RewardSubmitted` log: who submitted what for which round/stage, in which transaction."""

    round: int
    stage: int
    reward: int
    peer_id: str
    account: str
    tx_hash: str
    block_number: int


@runtime_checkable
class ChainClient(Protocol):
    """What the node, coordinator, outbox and `rl-swarm status` need from the chain.

    Writes wait for the receipt and return a `TxResult`, or raise `ChainRevert` (refused;
    `.already_done` when it is already on chain) or `ChainUnavailable` (retry later).
    `on_sent(tx_hash)` runs as soon as the transaction is accepted, before mining, so a
    caller can persist the hash and look it up after a crash.
    """

    mode: str
    contract_address: str

    def account_address(self, peer_id: str | None = None) -> str | None: ...
    def chain_id(self) -> int: ...
    def current_round(self) -> int: ...
    def current_stage(self) -> int: ...
    def round_and_stage(self) -> tuple[int, int]: ...
    def stage_count(self) -> int: ...
    def bootnodes(self) -> list[str]: ...
    def peer_ids_of(self, address: str) -> list[str]: ...
    def eoa_of(self, peer_id: str) -> str | None: ...
    def registered_peers(self, peer_ids: Sequence[str]) -> list[str]: ...
    def total_rewards(self, peer_ids: Sequence[str]) -> list[int]: ...
    def total_wins(self, peer_id: str) -> int: ...
    def voter_vote_count(self, peer_id: str) -> int: ...
    def voter_votes(self, round_number: int, peer_id: str) -> list[str]: ...
    def voter_leaderboard(self, start: int, end: int) -> list[LeaderboardEntry]: ...
    def winner_leaderboard(self, start: int, end: int) -> list[LeaderboardEntry]: ...
    def reward_on_chain(self, round_number: int, stage_number: int, peer_id: str) -> bool: ...
    def winners_on_chain(self, round_number: int, peer_id: str) -> bool: ...
    def transaction_status(self, tx_hash: str) -> TxStatus: ...
    def register_peer(self, key: PeerKey, *, on_sent: OnSent | None = None) -> TxResult: ...
    def submit_reward(self, round_number: int, stage_number: int, reward: int, peer_id: str, *,
                      on_sent: OnSent | None = None) -> TxResult: ...
    def submit_winners(self, round_number: int, winners: Sequence[str], peer_id: str, *,
                       on_sent: OnSent | None = None) -> TxResult: ...


def map_web3_error(exc: BaseException, abi: list[dict[str, Any]], what: str) -> ChainError:
    """Any exception out of web3/requests -> one of our error classes, naming `what` failed."""
    import requests
    from web3 import exceptions as w3e

    if isinstance(exc, ChainError):
        return exc
    if isinstance(exc, w3e.ContractLogicError):
        return decode_revert(exc.data if exc.data is not None else exc.message, abi)
    if isinstance(exc, (requests.exceptions.RequestException, ConnectionError, TimeoutError,
                        w3e.RequestTimedOut, w3e.ProviderConnectionError, w3e.TimeExhausted)):
        return ChainUnavailable(f"{what}: the chain RPC did not answer ({type(exc).__name__}: {exc})")
    if isinstance(exc, w3e.BadFunctionCallOutput):
        return ChainConfigError(f"{what}: no SwarmCoordinator answers at that address on this chain "
                                f"(deployment file from an older chain? re-run `rl-swarm chain`): {exc}")
    if isinstance(exc, w3e.Web3RPCError):
        text = str(exc).lower()
        if "execution reverted" in text or "revert" in text:
            data = (exc.rpc_response or {}).get("error", {}) if isinstance(exc.rpc_response, dict) else {}
            return decode_revert(data.get("data") if isinstance(data, dict) else None, abi)
        # Nonce races and "already known" clear up on a later attempt.
        return ChainUnavailable(f"{what}: the RPC returned an error: {exc}")
    return ChainError(f"{what} failed: {type(exc).__name__}: {exc}")


class ChainReader:
    """Reads of SwarmCoordinator over JSON-RPC (web3.py), shared by every back-end."""

    mode = "read-only"

    def __init__(self, rpc_url: str, contract_address: str, *, timeout: float = 10.0,
                 artifact: ContractArtifact | None = None):
        from web3 import Web3

        self.rpc_url = rpc_url
        self.timeout = timeout
        self._artifact = artifact or load_artifact()
        # No web3-internal retries: the caller (outbox) owns retry policy and backoff.
        self._w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout},
                                          exception_retry_configuration=None))
        try:
            self.contract_address = Web3.to_checksum_address(contract_address)
        except ValueError:
            raise ChainConfigError(f"contract address {contract_address!r} is not an EVM address") from None
        self._contract = self._w3.eth.contract(address=self.contract_address, abi=self._artifact.abi)
        self._chain_id: int | None = None

    # -- plumbing

    @property
    def abi(self) -> list[dict[str, Any]]:
        return self._artifact.abi

    def _call(self, fn_name: str, *args: Any) -> Any:
        try:
            return getattr(self._contract.functions, fn_name)(*args).call()
        except Exception as exc:  # mapped: callers see ChainError subclasses only
            raise map_web3_error(exc, self.abi, f"{fn_name}()") from exc

    def _rpc(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:
            raise map_web3_error(exc, self.abi, what) from exc

    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self._rpc("eth_chainId", lambda: self._w3.eth.chain_id))
        return self._chain_id

    def check(self, expected_chain_id: int | None = None) -> None:
        """Fail clearly unless the RPC answers, has the expected chain ID and code at the address."""
        cid = self.chain_id()
        if expected_chain_id is not None and cid != expected_chain_id:
            raise ChainConfigError(f"RPC {self.rpc_url} is chain {cid}, expected {expected_chain_id}; "
                                   "check --rpc-url / --expected-chain-id")
        code = self._rpc("eth_getCode", lambda: self._w3.eth.get_code(self.contract_address))
        if not code:
            raise ChainConfigError(f"no contract at {self.contract_address} on {self.rpc_url} (chain {cid}); "
                                   "re-run `rl-swarm chain` or fix --contract-address")

    def account_address(self, peer_id: str | None = None) -> str | None:
        """The wallet whose submissions count for `peer_id`: here, whoever registered it."""
        return self.eoa_of(peer_id) if peer_id else None

    # -- reads

    def current_round(self) -> int:
        return int(self._call("currentRound"))

    def current_stage(self) -> int:
        return int(self._call("currentStage"))

    def round_and_stage(self) -> tuple[int, int]:
        # Two calls at one block so a stage change between them cannot mix values.
        block = self._rpc("eth_blockNumber", lambda: self._w3.eth.block_number)
        try:
            r = self._contract.functions.currentRound().call(block_identifier=block)
            s = self._contract.functions.currentStage().call(block_identifier=block)
        except Exception as exc:
            raise map_web3_error(exc, self.abi, "currentRound()/currentStage()") from exc
        return int(r), int(s)

    def stage_count(self) -> int:
        return int(self._call("stageCount"))

    def bootnodes(self) -> list[str]:
        return list(self._call("getBootnodes"))

    def peer_ids_of(self, address: str) -> list[str]:
        from web3 import Web3

        return list(self._call("getPeerId", [Web3.to_checksum_address(address)])[0])

    def eoa_of(self, peer_id: str) -> str | None:
        eoa = str(self._call("getEoa", [peer_id])[0])
        return None if int(eoa, 16) == 0 else eoa

    def registered_peers(self, peer_ids: Sequence[str]) -> list[str]:
        """The peer IDs among `peer_ids` that are registered on chain, in order (one call)."""
        if not peer_ids:
            return []
        eoas = self._call("getEoa", list(peer_ids))
        return [p for p, e in zip(peer_ids, eoas) if int(str(e), 16) != 0]

    def total_rewards(self, peer_ids: Sequence[str]) -> list[int]:
        return [int(v) for v in self._call("getTotalRewards", list(peer_ids))]

    def round_stage_rewards(self, round_number: int, stage_number: int, accounts: Sequence[str]) -> list[int]:
        from web3 import Web3

        addrs = [Web3.to_checksum_address(a) for a in accounts]
        return [int(v) for v in self._call("getRoundStageReward", round_number, stage_number, addrs)]

    def total_wins(self, peer_id: str) -> int:
        return int(self._call("getTotalWins", peer_id))

    def voter_vote_count(self, peer_id: str) -> int:
        return int(self._call("getVoterVoteCount", peer_id))

    def peer_vote_count(self, round_number: int, peer_id: str) -> int:
        return int(self._call("getPeerVoteCount", round_number, peer_id))

    def voter_votes(self, round_number: int, peer_id: str) -> list[str]:
        return list(self._call("getVoterVotes", round_number, peer_id))

    def unique_voters(self) -> int:
        return int(self._call("uniqueVoters"))

    def unique_voted_peers(self) -> int:
        return int(self._call("uniqueVotedPeers"))

    def voter_leaderboard(self, start: int, end: int) -> list[LeaderboardEntry]:
        ids, counts = self._call("voterLeaderboard", start, end)
        return [LeaderboardEntry(str(p), int(c)) for p, c in zip(ids, counts)]

    def winner_leaderboard(self, start: int, end: int) -> list[LeaderboardEntry]:
        ids, counts = self._call("winnerLeaderboard", start, end)
        return [LeaderboardEntry(str(p), int(c)) for p, c in zip(ids, counts)]

    def reward_events(self, peer_id: str | None = None, from_block: int = 0) -> list[RewardEvent]:
        """`RewardSubmitted` logs since `from_block` (all peers, or one), oldest first."""
        event = self._contract.events.RewardSubmitted
        logs = self._rpc("eth_getLogs RewardSubmitted", lambda: event.get_logs(from_block=from_block))
        out = [RewardEvent(round=int(e["args"]["roundNumber"]), stage=int(e["args"]["stageNumber"]),
                           reward=int(e["args"]["reward"]), peer_id=str(e["args"]["peerId"]),
                           account=str(e["args"]["account"]), tx_hash="0x" + bytes(e["transactionHash"]).hex(),
                           block_number=int(e["blockNumber"]))
               for e in logs]
        return [e for e in out if peer_id is None or e.peer_id == peer_id]

    def has_role(self, role_name: str, address: str) -> bool:
        from web3 import Web3

        if role_name not in ROLE_NAMES:
            raise ValueError(f"unknown role {role_name!r}; one of {', '.join(ROLE_NAMES)}")
        role = self._call(role_name)
        return bool(self._call("hasRole", role, Web3.to_checksum_address(address)))

    def peer_reward(self, round_number: int, stage_number: int, peer_id: str) -> int:
        return int(self._call("getPeerRoundStageReward", round_number, stage_number, [peer_id])[0])

    def _owned_by_me(self, peer_id: str) -> bool:
        """Is `peer_id` registered to this client's wallet? Only then can a submission for it be ours.

        A read-only reader sends nothing, so for it any owner's record counts.
        """
        owner = self.eoa_of(peer_id)
        if owner is None:
            return False
        if self.mode == "read-only":
            return True
        mine = self.account_address(None)
        return mine is not None and owner.lower() == mine.lower()

    def reward_on_chain(self, round_number: int, stage_number: int, peer_id: str) -> bool:
        """Has this client's wallet landed `peer_id`'s reward for (round, stage)? (A reader: has anyone?)

        The contract keeps one reward per (round, stage, peer) and only the peer's owner may
        submit it, so "our wallet owns the peer and the peer has a reward" means we sent it. A
        peer owned by someone else is never "already landed" (the send then fails, with why).
        """
        if not self._owned_by_me(peer_id):
            return False
        return bool(self._call("hasSubmittedPeerReward", round_number, stage_number, peer_id))

    def winners_on_chain(self, round_number: int, peer_id: str) -> bool:
        """Has this client's wallet landed `peer_id`'s vote for the round? (Owner checked as above.)"""
        return self._owned_by_me(peer_id) and len(self.voter_votes(round_number, peer_id)) > 0

    def transaction_status(self, tx_hash: str) -> TxStatus:
        from web3 import exceptions as w3e

        try:
            receipt = self._w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except w3e.TransactionNotFound:
            try:
                self._w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
                return "pending"
            except w3e.TransactionNotFound:
                return "unknown"
            except Exception as exc:
                raise map_web3_error(exc, self.abi, "eth_getTransactionByHash") from exc
        except Exception as exc:
            raise map_web3_error(exc, self.abi, "eth_getTransactionReceipt") from exc
        return "success" if receipt["status"] == 1 else "reverted"

    def wait_for_receipt(self, tx_hash: str, timeout: float, tx: dict[str, Any] | None = None) -> TxResult:
        """Wait until mined; a reverted transaction is replayed to name its refusal."""
        from web3 import exceptions as w3e

        try:
            receipt = self._w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout,  # type: ignore[arg-type]
                                                                poll_latency=0.2)
        except w3e.TimeExhausted:
            raise ChainUnavailable(f"transaction {tx_hash} not mined within {timeout:.0f}s; will check it again") from None
        except Exception as exc:
            raise map_web3_error(exc, self.abi, "waiting for receipt") from exc
        if receipt["status"] != 1:
            raise self._revert_reason(tx_hash, int(receipt["blockNumber"]), tx)
        return TxResult(tx_hash=tx_hash, block_number=int(receipt["blockNumber"]), gas_used=int(receipt["gasUsed"]))

    def _revert_reason(self, tx_hash: str, block: int, tx: dict[str, Any] | None) -> ChainError:
        try:
            if tx is None:
                tx = dict(self._w3.eth.get_transaction(tx_hash))  # type: ignore[arg-type]
            call = {"from": tx["from"], "to": tx["to"], "data": tx.get("data") or tx.get("input")}
            self._w3.eth.call(call, block_identifier=block)  # type: ignore[arg-type]
        except Exception as exc:
            err = map_web3_error(exc, self.abi, f"transaction {tx_hash}")
            if isinstance(err, ChainRevert):
                return err
        return ChainRevert("Reverted", f"transaction {tx_hash} reverted in block {block} (out of gas?)")


def load_deployment_address(path: Path) -> str:
    """The contract address in a deployment JSON, or a ChainConfigError saying how to make one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return str(data["address"])
    except FileNotFoundError:
        raise ChainConfigError(f"no contract address: deployment file {path} does not exist; start the local chain "
                               "with `rl-swarm chain` or pass --contract-address") from None
    except (ValueError, KeyError, TypeError):
        raise ChainConfigError(f"deployment file {path} is not a deployment JSON (no 'address'); "
                               "delete it and re-run `rl-swarm chain`") from None


def resolve_contract_address(settings: ChainSettings) -> str:
    return settings.contract_address or load_deployment_address(settings.deployment_file)


def build_reader(settings: ChainSettings) -> ChainReader:
    """A read-only client (status, dashboard) whatever the chain mode."""
    return ChainReader(settings.rpc_url, resolve_contract_address(settings), timeout=settings.rpc_timeout)


def build_client(settings: ChainSettings) -> ChainClient | None:
    """The back-end `settings.chain_mode` asks for, or None when the chain is off."""
    if settings.chain_mode == "off":
        return None
    address = resolve_contract_address(settings)
    if settings.chain_mode == "wallet":
        from hivemind_exp.chain.settings import read_private_key
        from hivemind_exp.chain.wallet import WalletChainClient

        assert settings.wallet_key_file is not None  # the settings validator guarantees it
        return WalletChainClient(settings.rpc_url, address, read_private_key(settings.wallet_key_file),
                                 timeout=settings.rpc_timeout, receipt_timeout=settings.receipt_timeout,
                                 expected_chain_id=settings.expected_chain_id,
                                 replace_after=settings.tx_replace_after,
                                 max_replacements=settings.tx_max_replacements, fee_bump=settings.tx_fee_bump)
    from hivemind_exp.chain.relay import RelayChainClient

    assert settings.org_id is not None and settings.api_key is not None
    return RelayChainClient(settings.login_url, settings.org_id, settings.api_key.get_secret_value(),
                            rpc_url=settings.rpc_url, contract_address=address, rpc_timeout=settings.rpc_timeout,
                            relay_timeout=settings.relay_timeout, receipt_timeout=settings.receipt_timeout,
                            wallet_address=settings.relay_wallet_address)


def ensure_registered(client: ChainClient, key: PeerKey) -> str | None:
    """Register `key`'s peer ID (with proof of the key) unless already registered to this client's wallet.

    Returns the tx hash when it registered, None when nothing was needed. A peer ID owned by
    another wallet is a ChainRevert("PeerIdAlreadyRegistered") naming that wallet; so is a
    client that cannot say which wallet is its own (never assume a registration is ours).
    """
    peer_id = key.peer_id
    mine = client.account_address(None)
    if mine is None:
        raise ChainConfigError(f"cannot tell which wallet this {client.mode} client sends from, so cannot check who "
                               f"owns {peer_id}; set --relay-wallet-address (userData.json 'address')")

    def owner_check() -> str | None:
        owner = client.eoa_of(peer_id)
        if owner is None:
            return None
        if owner.lower() == mine.lower():
            return owner
        raise ChainRevert("PeerIdAlreadyRegistered", f"{peer_id} belongs to wallet {owner}, not {mine}")

    if owner_check() is not None:
        return None
    try:
        return client.register_peer(key).tx_hash
    except ChainRevert as exc:
        # Someone registered it between our check and our send: ours only if the owner is us.
        if exc.error_name == "PeerIdAlreadyRegistered" and owner_check() is not None:
            return None
        raise
