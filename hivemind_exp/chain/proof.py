"""Proof of a peer's key for `registerPeerWithProof`.

The contract registers a peer ID only for a caller that shows the peer's RSA public key (the
protobuf ``PublicKey`` whose sha2-256 multihash is the peer ID) and a PKCS#1 v1.5 SHA-256
signature, made with that key, over ``registration_message(chain_id, contract, wallet, peer_id)``
= ``abi.encode(REGISTRATION_TAG, chainid, contract, wallet, peerId)``. Binding the wallet, chain
and contract means a proof seen in the mempool cannot be replayed by another wallet.

`PeerKey` is what a chain client needs to make such a proof: built from the node's identity
file (`PeerKey.from_identity`) or freshly generated (`PeerKey.generate`, for tests and tools).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hivemind_exp.swarm.identity import NodeIdentity

REGISTRATION_TAG = "rl-swarm registerPeer v1"


def registration_message(chain_id: int, contract_address: str, wallet: str, peer_id: str) -> bytes:
    """The bytes the peer's key signs; identical to the contract's `registrationMessage(wallet, peerId)`."""
    from eth_abi import encode
    from web3 import Web3

    return encode(["string", "uint256", "address", "address", "string"],
                  [REGISTRATION_TAG, int(chain_id), Web3.to_checksum_address(contract_address),
                   Web3.to_checksum_address(wallet), peer_id])


@dataclass(frozen=True)
class PeerProof:
    peer_id: str
    public_key: bytes  # protobuf PublicKey {RSA, SubjectPublicKeyInfo DER}
    signature: bytes


@dataclass(frozen=True)
class PeerKey:
    """A peer's RSA key: its peer ID, the protobuf public key, and a signer (never printed)."""

    peer_id: str
    public_key: bytes
    private_key_der: bytes = field(repr=False)

    @classmethod
    def from_identity(cls, identity: NodeIdentity) -> PeerKey:
        return cls.from_private_der(identity.private_key_der)

    @classmethod
    def from_private_der(cls, der: bytes) -> PeerKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        from hivemind_exp.swarm.identity import KEY_TYPE_RSA, encode_key_message, peer_id_from_public_der

        key = serialization.load_der_private_key(der, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("a peer key must be RSA (what hivemind peers use)")
        spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        return cls(peer_id=peer_id_from_public_der(spki), public_key=encode_key_message(KEY_TYPE_RSA, spki),
                   private_key_der=der)

    @classmethod
    def generate(cls, bits: int = 2048) -> PeerKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        return cls.from_private_der(key.private_bytes(serialization.Encoding.DER,
                                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                                      serialization.NoEncryption()))

    def sign(self, message: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        key = serialization.load_der_private_key(self.private_key_der, password=None)
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr,call-arg]

    def prove(self, chain_id: int, contract_address: str, wallet: str) -> PeerProof:
        """Proof that lets `wallet` (and only it) register this peer on that contract and chain."""
        msg = registration_message(chain_id, contract_address, wallet, self.peer_id)
        return PeerProof(self.peer_id, self.public_key, self.sign(msg))
