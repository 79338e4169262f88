"""Peer key proofs: the key, peer ID and signed message the contract checks (no chain here)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import load_der_public_key

from hivemind_exp.chain.proof import REGISTRATION_TAG, PeerKey, registration_message
from hivemind_exp.swarm.identity import decode_key_message, ensure_identity, load_identity

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
WALLET = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@pytest.fixture(scope="module")
def key() -> PeerKey:
    return PeerKey.generate()


def test_peer_key_of_a_node_identity_has_the_nodes_peer_id(tmp_path: Path) -> None:
    ident = load_identity(ensure_identity(tmp_path / "swarm.pem"))
    key = PeerKey.from_identity(ident)
    assert key.peer_id == ident.peer_id
    assert ident.private_key_der.hex() not in repr(key), "the private key is never printed"


def test_public_key_is_what_the_peer_id_hashes(key: PeerKey) -> None:
    from hivemind_exp.swarm.identity import b58encode

    assert b58encode(b"\x12\x20" + hashlib.sha256(key.public_key).digest()) == key.peer_id
    key_type, spki = decode_key_message(key.public_key)
    assert key_type == 0 and load_der_public_key(spki).key_size == 2048  # type: ignore[union-attr]


def test_message_binds_chain_contract_wallet_and_peer(key: PeerKey) -> None:
    from eth_abi import decode

    msg = registration_message(31337, CONTRACT, WALLET, key.peer_id)
    assert decode(["string", "uint256", "address", "address", "string"], msg) == (
        REGISTRATION_TAG, 31337, CONTRACT.lower(), WALLET.lower(), key.peer_id)
    variants = {registration_message(1, CONTRACT, WALLET, key.peer_id),
                registration_message(31337, WALLET, WALLET, key.peer_id),
                registration_message(31337, CONTRACT, CONTRACT, key.peer_id),
                registration_message(31337, CONTRACT, WALLET, key.peer_id + "x")}
    assert msg not in variants and len(variants) == 4


def test_proof_signature_verifies_with_the_peer_key_only(key: PeerKey) -> None:
    proof = key.prove(31337, CONTRACT, WALLET)
    _, spki = decode_key_message(proof.public_key)
    public = load_der_public_key(spki)
    msg = registration_message(31337, CONTRACT, WALLET, key.peer_id)
    public.verify(proof.signature, msg, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr,call-arg]
    with pytest.raises(InvalidSignature):
        public.verify(proof.signature, registration_message(31337, CONTRACT, CONTRACT, key.peer_id),  # type: ignore[union-attr,call-arg]
                      padding.PKCS1v15(), hashes.SHA256())
