"""Our compiled artifact exposes the public SwarmCoordinator 0.4.2 interface, plus documented additions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hivemind_exp.chain.artifact import load_artifact
from hivemind_exp.common.paths import shared_dir

PUBLIC_ABI = shared_dir() / "abi" / "SwarmCoordinator-0.4.2.abi.json"

# What we add to 0.4.2 (issue 12: registration needs a key proof; rewards are per peer).
ADDED_FUNCTIONS = {
    "registerPeerWithProof(string,bytes,bytes)": ((), "nonpayable"),
    "registrationMessage(address,string)": (("bytes",), "view"),
    "REGISTRATION_TAG()": (("string",), "view"),
    "hasSubmittedPeerReward(uint256,uint256,string)": (("bool",), "view"),
    "getPeerRoundStageReward(uint256,uint256,string[])": (("int256[]",), "view"),
}
ADDED_ERRORS = {"InvalidPeerId", "PeerProofRequired", "InvalidPeerProof", "RoundClosed", "RewardOutOfRange",
                "VoterNotParticipant", "WinnerNotRegistered"}


def _canonical(param: dict[str, Any]) -> str:
    t = param["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_canonical(c) for c in param["components"]) + ")" + t[5:]
    return t


def _functions(abi: list[dict[str, Any]]) -> dict[str, tuple[tuple[str, ...], str]]:
    out = {}
    for f in abi:
        if f["type"] == "function":
            sig = f"{f['name']}({','.join(_canonical(i) for i in f['inputs'])})"
            out[sig] = (tuple(_canonical(o) for o in f["outputs"]), f["stateMutability"])
    return out


def _items(abi: list[dict[str, Any]], kind: str) -> dict[str, tuple[tuple[str, bool], ...]]:
    return {e["name"]: tuple((_canonical(i), bool(i.get("indexed"))) for i in e["inputs"])
            for e in abi if e["type"] == kind}


@pytest.fixture(scope="module")
def public_abi() -> list[dict[str, Any]]:
    if not PUBLIC_ABI.exists():
        pytest.fail(f"public ABI missing at {PUBLIC_ABI}")
    return json.loads(PUBLIC_ABI.read_text())


def test_every_function_signature_matches(public_abi: list[dict[str, Any]]) -> None:
    ours, theirs = _functions(load_artifact().abi), _functions(public_abi)
    assert sorted(set(theirs) - set(ours)) == [], "functions of 0.4.2 we lack"
    assert {sig: ours[sig] for sig in set(ours) - set(theirs)} == ADDED_FUNCTIONS, (
        "functions beyond 0.4.2 must be exactly the documented additions")
    for sig, (outputs, mutability) in theirs.items():
        assert ours[sig][0] == outputs, f"{sig} returns {ours[sig][0]}, 0.4.2 returns {outputs}"
        # registerPeer only reverts now (PeerProofRequired), so solc makes it pure; callers see no difference.
        expected = "pure" if sig == "registerPeer(string)" else mutability
        assert ours[sig][1] == expected, f"{sig} is {ours[sig][1]}, expected {expected}"


def test_every_event_matches(public_abi: list[dict[str, Any]]) -> None:
    assert _items(load_artifact().abi, "event") == _items(public_abi, "event")


def test_errors_are_the_public_set_plus_documented_additions(public_abi: list[dict[str, Any]]) -> None:
    ours, theirs = _items(load_artifact().abi, "error"), _items(public_abi, "error")
    for name, args in theirs.items():
        assert ours.get(name) == args, f"error {name}{args} missing or different"
    assert set(ours) - set(theirs) == ADDED_ERRORS
