"""Chain errors: what went wrong, in words, and whether trying again can help.

- `ChainRevert`: the contract refused (`.error_name` is the custom error's name, e.g.
  "RewardAlreadySubmitted"; `.message` says it in plain English; `.already_done` says the
  thing asked for is already on chain, so a retry loop can count it as done).
- `ChainUnavailable`: the RPC / relay is down or timed out; retry later.
- `RelayRefused`: the login service said no for a reason that is not a contract error
  (unknown API key, not activated yet, bad request).
- `ChainConfigError`: settings / deployment / artifact problems; fix the configuration.

`decode_revert(data, abi)` turns raw revert data (custom error, `Error(string)`,
`Panic(uint256)`) into a `ChainRevert`.
"""

from __future__ import annotations

from typing import Any

# Plain-English meaning of each refusal of SwarmCoordinator (and of the proxy machinery).
REVERT_MESSAGES: dict[str, str] = {
    "PeerIdAlreadyRegistered": "this peer ID is already registered to a wallet",
    "InvalidPeerId": "the peer ID is empty, longer than 128 bytes or not base58",
    "PeerProofRequired": "registerPeer(peerId) is disabled: register with registerPeerWithProof(peerId, publicKey, "
                         "signature), signed by the peer's key (the chain client does this)",
    "InvalidPeerProof": "the public key does not hash to this peer ID, is not an RSA 2048-4096 bit key, or its "
                        "signature over (chain id, contract, sending wallet, peer ID) does not verify; sign with the "
                        "peer's own identity key for the wallet that sends the transaction",
    "RoundClosed": "that round is closed: rewards and votes are accepted for the current and the previous round only",
    "RewardOutOfRange": "the reward is outside -1000000..1000000 (i.e. +-1000 points at the x1000 scale)",
    "VoterNotParticipant": "this peer has no reward in that round, and only peers that took part may vote "
                           "(submit the round's reward first)",
    "WinnerNotRegistered": "a named winner is not a registered peer ID",
    "InvalidRoundNumber": "the round number is ahead of the chain's current round",
    "InvalidStageNumber": "the stage number is not a stage of the game (must be below stageCount())",
    "StageOutOfBounds": "that stage of the current round has not started yet on chain",
    "RewardAlreadySubmitted": "this peer already has a reward for that round and stage",
    "WinnerAlreadyVoted": "this peer already voted for the winners of that round",
    "InvalidVote": "the winners list is empty, too long (max 32), has duplicates or an empty/over-long peer ID",
    "InvalidVoterPeerId": "the caller's wallet does not own that peer ID (register the peer first, with this wallet)",
    "InvalidBootnodeIndex": "there is no bootnode at that index",
    "OnlyOwner": "only an account with OWNER_ROLE may do this",
    "OnlyStageManager": "only an account with STAGE_MANAGER_ROLE may advance the stage/round",
    "OnlyBootnodeManager": "only an account with BOOTNODE_MANAGER_ROLE may change the bootnodes",
    "InvalidInitialization": "the contract is already initialized",
    "NotInitializing": "this set-up step only runs inside initialize()",
    "UUPSUnauthorizedCallContext": "upgrade functions must be called through the proxy (proxiableUUID: directly)",
    "UUPSUnsupportedProxiableUUID": "the new implementation reports a different ERC-1967 slot",
    "ERC1967InvalidImplementation": "the new implementation is not a UUPS contract (no code or no proxiableUUID)",
    "ERC1967NonPayable": "ether sent to a call that does not use it",
    "AddressEmptyCode": "the target address has no code",
    "FailedCall": "a delegated call failed without a reason",
    "Error": "the contract reverted with a message",
    "Panic": "the contract hit an internal error (Solidity panic)",
    "Reverted": "the transaction reverted without a reason",
}

# Refusals meaning "what you asked for is already the case": a retry loop treats them as done.
ALREADY_DONE: frozenset[str] = frozenset({"PeerIdAlreadyRegistered", "RewardAlreadySubmitted", "WinnerAlreadyVoted"})

# Refusals that can turn into success later without changing the request (the chain's
# round/stage has not caught up yet).
NOT_YET: frozenset[str] = frozenset({"InvalidRoundNumber", "StageOutOfBounds", "VoterNotParticipant"})


class ChainError(Exception):
    """Base of every chain-client error. `.retryable`: may a later identical attempt succeed?"""

    retryable: bool = False


class ChainConfigError(ChainError):
    """Settings, deployment file or artifact are wrong or missing."""


class ChainUnavailable(ChainError):
    """The RPC node or the login relay did not answer (down, timeout, 5xx). Retry later."""

    retryable = True


class RelayRefused(ChainError):
    """The login relay refused for a non-contract reason (HTTP status in `.status`)."""

    def __init__(self, message: str, status: int, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class ChainRevert(ChainError):
    """The contract refused. `.error_name` names the custom error; `.args_decoded` its arguments."""

    def __init__(self, error_name: str, detail: str = "", args_decoded: tuple[Any, ...] = ()):
        self.error_name = error_name
        self.args_decoded = args_decoded
        base = REVERT_MESSAGES.get(error_name, "the contract refused the call")
        self.message = f"{base}: {detail}" if detail else base
        super().__init__(f"{error_name}: {self.message}")
        self.retryable = error_name in NOT_YET

    @property
    def already_done(self) -> bool:
        return self.error_name in ALREADY_DONE


def _selector(signature: str) -> bytes:
    from eth_utils import keccak

    return keccak(text=signature)[:4]


def _type_string(param: dict[str, Any]) -> str:
    t = str(param["type"])
    if t.startswith("tuple"):
        inner = ",".join(_type_string(c) for c in param.get("components", []))
        return f"({inner}){t[5:]}"
    return t


def error_table(abi: list[dict[str, Any]]) -> dict[bytes, tuple[str, list[str]]]:
    """4-byte selector -> (error name, argument types) for every error in `abi`."""
    table: dict[bytes, tuple[str, list[str]]] = {}
    for item in abi:
        if item.get("type") != "error":
            continue
        types = [_type_string(p) for p in item.get("inputs", [])]
        table[_selector(f"{item['name']}({','.join(types)})")] = (str(item["name"]), types)
    table[_selector("Error(string)")] = ("Error", ["string"])
    table[_selector("Panic(uint256)")] = ("Panic", ["uint256"])
    return table


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, dict):  # some nodes nest it: {"data": "0x..."} or {"message": ..., "data": ...}
        return _as_bytes(data.get("data", ""))
    if isinstance(data, str):
        s = data[2:] if data.startswith("0x") else data
        try:
            return bytes.fromhex(s)
        except ValueError:
            return b""
    return b""


def decode_revert(data: Any, abi: list[dict[str, Any]]) -> ChainRevert:
    """Revert data (hex string or bytes) -> ChainRevert with the error's name and arguments."""
    raw = _as_bytes(data)
    if len(raw) < 4:
        return ChainRevert("Reverted")
    entry = error_table(abi).get(raw[:4])
    if entry is None:
        return ChainRevert("Reverted", f"unknown error selector 0x{raw[:4].hex()}")
    name, types = entry
    args: tuple[Any, ...] = ()
    if types:
        from eth_abi import decode

        try:
            args = tuple(decode(types, raw[4:]))
        except Exception:  # malformed tail: keep the name, which is what callers act on
            args = ()
    detail = ""
    if name == "Error" and args:
        detail = str(args[0])
    elif name == "Panic" and args:
        detail = f"code 0x{int(args[0]):x}"
    elif args:
        detail = ", ".join(a.hex() if isinstance(a, bytes) else str(a) for a in args)
    return ChainRevert(name, detail, args)
