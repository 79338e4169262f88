"""Revert decoding: every custom error of the artifact, Error(string), Panic, junk."""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_utils import keccak

from hivemind_exp.chain.artifact import load_artifact
from hivemind_exp.chain.errors import ALREADY_DONE, REVERT_MESSAGES, ChainRevert, decode_revert

REQUIRED = ["PeerIdAlreadyRegistered", "InvalidRoundNumber", "InvalidStageNumber", "StageOutOfBounds",
            "RewardAlreadySubmitted", "WinnerAlreadyVoted", "InvalidVote", "InvalidVoterPeerId",
            "InvalidBootnodeIndex", "OnlyOwner", "OnlyStageManager", "OnlyBootnodeManager"]


def _errors() -> list[dict]:
    return [e for e in load_artifact().abi if e["type"] == "error"]


def test_artifact_declares_every_required_error() -> None:
    names = {e["name"] for e in _errors()}
    assert set(REQUIRED) <= names, set(REQUIRED) - names


@pytest.mark.parametrize("error", _errors(), ids=lambda e: e["name"])
def test_each_custom_error_decodes_to_its_name_and_message(error: dict) -> None:
    types = [i["type"] for i in error["inputs"]]
    selector = keccak(text=f"{error['name']}({','.join(types)})")[:4]
    values = {"address": "0x" + "11" * 20, "bytes32": b"\x22" * 32}
    args = encode(types, [values[t] for t in types]) if types else b""
    exc = decode_revert("0x" + (selector + args).hex(), load_artifact().abi)
    assert exc.error_name == error["name"]
    assert error["name"] in REVERT_MESSAGES, "every contract error needs a plain-English message"
    assert REVERT_MESSAGES[error["name"]] in str(exc)
    assert exc.already_done == (error["name"] in ALREADY_DONE)
    if types:
        assert len(exc.args_decoded) == len(types)


def test_error_string_and_panic() -> None:
    abi = load_artifact().abi
    data = keccak(text="Error(string)")[:4] + encode(["string"], ["boom"])
    exc = decode_revert(data, abi)
    assert exc.error_name == "Error" and "boom" in exc.message
    panic = keccak(text="Panic(uint256)")[:4] + encode(["uint256"], [0x11])
    assert decode_revert(panic, abi).message.endswith("code 0x11")


def test_unknown_and_empty_revert_data() -> None:
    abi = load_artifact().abi
    assert decode_revert("0x", abi).error_name == "Reverted"
    assert decode_revert(None, abi).error_name == "Reverted"
    unknown = decode_revert("0xdeadbeef", abi)
    assert unknown.error_name == "Reverted" and "0xdeadbeef" in unknown.message
    nested = decode_revert({"data": "0x" + keccak(text="OnlyOwner()")[:4].hex()}, abi)
    assert nested.error_name == "OnlyOwner"


def test_retryable_only_for_not_yet_errors() -> None:
    assert ChainRevert("InvalidRoundNumber").retryable
    assert ChainRevert("StageOutOfBounds").retryable
    assert not ChainRevert("InvalidVote").retryable
    assert ChainRevert("WinnerAlreadyVoted").already_done
