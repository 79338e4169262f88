"""The node's identity: ``swarm.pem``, the libp2p private key its Hivemind DHT uses.

Format (what hivemind 1.1.12's p2pd reads via ``DHT(identity_path=...)`` and what
``hivemind.p2p.P2P.generate_identity`` writes): a protobuf ``crypto.pb.PrivateKey``
message with ``key_type = RSA (0)`` and ``data`` = the RSA-2048 key as PKCS#1 DER.
The peer ID is the base58 sha2-256 multihash of the protobuf ``PublicKey`` message
(``key_type = RSA``, ``data`` = SubjectPublicKeyInfo DER), as in the libp2p peer-id spec.

Only RSA keys are accepted: hivemind's Python side (identity checks, and the
``RSASignatureValidator`` the swarm uses to sign DHT records with this same key)
understands RSA only.

The protobuf is two fields, so it is encoded here by hand: importing ``hivemind.proto``
would import all of hivemind (and torch), which ``--help`` and ``rl-swarm status`` must not.
"""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

KEY_TYPE_RSA = 0
KEY_TYPE_NAMES = {0: "RSA", 1: "Ed25519", 2: "Secp256k1", 3: "ECDSA"}
RSA_BITS = 2048
# libp2p multihash prefix: sha2-256 (0x12), 32-byte digest (0x20)
_SHA256_MULTIHASH_PREFIX = b"\x12\x20"
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class IdentityError(RuntimeError):
    """The identity file cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class NodeIdentity:
    """A loaded ``swarm.pem``: the peer ID and the public key used to sign DHT records."""

    path: Path
    peer_id: str
    # PKCS#1 DER of the private key: hand it only to the DHT's record signer.
    private_key_der: bytes
    # OpenSSH encoding ("ssh-rsa AAAA..."): what hivemind's owner markers contain.
    public_key_ssh: bytes

    def __repr__(self) -> str:  # never print key material
        return f"NodeIdentity(path={str(self.path)!r}, peer_id={self.peer_id!r})"

    def hivemind_private_key(self):  # -> hivemind.utils.crypto.RSAPrivateKey
        """This key as the ``RSAPrivateKey`` object hivemind's record validators sign with."""
        from hivemind.utils.crypto import RSAPrivateKey

        key = RSAPrivateKey.__new__(RSAPrivateKey)
        # RSAPrivateKey() would generate a fresh key; its pickle hook loads a DER key instead.
        key.__setstate__({"_private_key": self.private_key_der})
        return key


# ---------------------------------------------------------------- protobuf (2 fields)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def encode_key_message(key_type: int, data: bytes) -> bytes:
    """Protobuf ``{key_type: 1 (varint), data: 2 (bytes)}``: both PrivateKey and PublicKey."""
    return b"\x08" + _varint(key_type) + b"\x12" + _varint(len(data)) + data


def decode_key_message(buf: bytes) -> tuple[int, bytes]:
    """Inverse of `encode_key_message`; raises ValueError on anything else."""
    key_type: int | None = None
    data: bytes | None = None
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if field == 1 and wire == 0:
            key_type, pos = _read_varint(buf, pos)
        elif field == 2 and wire == 2:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated key data")
            data, pos = buf[pos : pos + length], pos + length
        else:
            raise ValueError(f"unexpected protobuf field {field} (wire type {wire})")
    if key_type is None or data is None:
        raise ValueError("key_type or data missing")
    return key_type, data


# ---------------------------------------------------------------- peer IDs


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58_ALPHABET[r] + out
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + out


def peer_id_from_public_der(spki_der: bytes) -> str:
    """Peer ID of an RSA public key given as SubjectPublicKeyInfo DER."""
    digest = hashlib.sha256(encode_key_message(KEY_TYPE_RSA, spki_der)).digest()
    return b58encode(_SHA256_MULTIHASH_PREFIX + digest)


@functools.lru_cache(maxsize=4096)
def peer_id_from_ssh_public_key(ssh_key: bytes) -> str:
    """Peer ID of the owner named in a DHT owner marker (``ssh-rsa AAAA...``).

    Raises ValueError when the bytes are not an RSA public key. Cached: the same few
    hundred peers' keys are seen on every fetch.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_ssh_public_key(ssh_key)
    except Exception as exc:  # the library raises several types for garbage
        raise ValueError(f"not an OpenSSH public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("owner key is not RSA")
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return peer_id_from_public_der(spki)


# ---------------------------------------------------------------- the file


def _corrupt(path: Path, why: str) -> IdentityError:
    return IdentityError(
        f"The identity file {path} is corrupt ({why}). It is the node's private key and fixes its peer ID, so it "
        f"is never replaced automatically. If you have a backup, restore it. Otherwise move the file away "
        f"(e.g. `mv {path} {path}.broken`) and start again: a new identity is created, which gives this node a NEW "
        f"peer ID (its on-chain registration and history stay with the old one)."
    )


def load_identity(path: str | os.PathLike[str]) -> NodeIdentity:
    """Read and check an existing identity file; raise `IdentityError` naming what to do."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    p = Path(path).expanduser()
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise IdentityError(f"The identity file {p} does not exist; it is created at the node's first start "
                            f"(or call ensure_identity).") from None
    except OSError as exc:
        raise IdentityError(f"Cannot read the identity file {p}: {exc.strerror}. Fix its permissions "
                            f"(chmod 600 {p}, owned by the user running the node).") from None
    try:
        key_type, der = decode_key_message(raw)
    except ValueError as exc:
        raise _corrupt(p, f"not a libp2p private key: {exc}") from None
    if key_type != KEY_TYPE_RSA:
        name = KEY_TYPE_NAMES.get(key_type, f"type {key_type}")
        raise IdentityError(
            f"The identity file {p} holds a {name} key; this node needs an RSA key (hivemind signs DHT records with "
            f"it). Move the file away (e.g. `mv {p} {p}.{name.lower()}`) to create a new RSA identity, which gives "
            f"this node a new peer ID."
        )
    try:
        private = serialization.load_der_private_key(der, password=None)
    except Exception as exc:  # ValueError / UnsupportedAlgorithm / TypeError for garbage
        raise _corrupt(p, f"the RSA key does not parse: {type(exc).__name__}") from None
    if not isinstance(private, rsa.RSAPrivateKey):
        raise _corrupt(p, "the key data is not an RSA private key")
    public = private.public_key()
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ssh = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return NodeIdentity(path=p, peer_id=peer_id_from_public_der(spki), private_key_der=der, public_key_ssh=ssh)


def _new_key_file_bytes() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    return encode_key_message(KEY_TYPE_RSA, der)


def ensure_identity(path: str | os.PathLike[str]) -> Path:
    """Create the identity file once (mode 0600, atomically); reuse it afterwards.

    An existing file is checked, never replaced: a corrupt one raises `IdentityError`.
    Two processes racing to create it end up with the same single key (the loser
    reuses the winner's file).
    """
    p = Path(path).expanduser()
    if p.exists():
        load_identity(p)
        return p
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IdentityError(f"Cannot create the directory {p.parent} for the identity file: {exc.strerror}. "
                            f"Choose another identity_path or fix the permissions.") from None
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, _new_key_file_bytes())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link() fails if the target exists, so a concurrent creator's key is never clobbered.
            os.link(tmp, p)
        except FileExistsError:
            pass
    except OSError as exc:
        raise IdentityError(f"Cannot write the identity file {p}: {exc.strerror}. Choose another identity_path "
                            f"or fix the directory's permissions.") from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    load_identity(p)
    return p


def load_peer_id(path: str | os.PathLike[str]) -> str:
    """Base58 peer ID of the identity at ``path`` (which must exist)."""
    return load_identity(path).peer_id

