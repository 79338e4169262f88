"""swarm.pem: created once with mode 0600, reused, never silently replaced when corrupt."""

from __future__ import annotations

import hashlib
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from hivemind_exp.swarm.identity import (
    IdentityError,
    decode_key_message,
    encode_key_message,
    ensure_identity,
    load_identity,
    load_peer_id,
    peer_id_from_ssh_public_key,
)

B58 = set("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")


def test_created_once_with_private_mode_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "swarm.pem"
    assert ensure_identity(path) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_bytes()
    peer_id = load_peer_id(path)
    # RSA peer IDs are sha2-256 multihashes: base58 "Qm" + 44 characters.
    assert peer_id.startswith("Qm") and len(peer_id) == 46 and set(peer_id) <= B58

    ensure_identity(path)
    assert path.read_bytes() == first
    assert load_peer_id(path) == peer_id
    assert not [p for p in path.parent.iterdir() if p.name != "swarm.pem"], "temporary files left behind"


def test_two_identities_differ(tmp_path: Path) -> None:
    assert load_peer_id(ensure_identity(tmp_path / "a.pem")) != load_peer_id(ensure_identity(tmp_path / "b.pem"))


def test_concurrent_creation_yields_one_key(tmp_path: Path) -> None:
    path = tmp_path / "swarm.pem"
    barrier = threading.Barrier(4)
    seen: list[str] = []

    def create() -> None:
        barrier.wait()
        seen.append(load_peer_id(ensure_identity(path)))

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 4 and len(set(seen)) == 1
    assert load_peer_id(path) == seen[0]


def test_file_format_is_libp2p_protobuf_rsa(tmp_path: Path) -> None:
    path = ensure_identity(tmp_path / "swarm.pem")
    key_type, der = decode_key_message(path.read_bytes())
    assert key_type == 0  # RSA
    key = serialization.load_der_private_key(der, password=None)
    assert key.key_size == 2048
    # Peer ID per the libp2p spec, computed independently of the module's helper.
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    public_msg = b"\x08\x00\x12" + _varint(len(spki)) + spki
    multihash = b"\x12\x20" + hashlib.sha256(public_msg).digest()
    assert load_peer_id(path) == _b58(multihash)


def test_protobuf_roundtrip_and_rejects_garbage() -> None:
    msg = encode_key_message(0, b"x" * 300)
    assert decode_key_message(msg) == (0, b"x" * 300)
    for bad in (b"", b"\x08", b"\x08\x00\x12\x05ab", b"\x1a\x00", b"\xff" * 12):
        with pytest.raises(ValueError):
            decode_key_message(bad)


@pytest.mark.parametrize("content", [
    b"not a key at all",
    b"",
    b"-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n",
    encode_key_message(0, b"\x30\x82\x01\x00garbage-der"),
])
def test_corrupt_file_raises_and_is_kept(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "swarm.pem"
    path.write_bytes(content)
    for call in (ensure_identity, load_peer_id):
        with pytest.raises(IdentityError) as err:
            call(path)
        text = str(err.value)
        assert str(path) in text and "corrupt" in text
        assert "mv " in text and "new peer ID" in text.replace("NEW", "new")
    assert path.read_bytes() == content, "a corrupt identity must never be replaced"


def test_truncated_real_key_is_corrupt(tmp_path: Path) -> None:
    path = ensure_identity(tmp_path / "swarm.pem")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(IdentityError, match="corrupt"):
        load_identity(path)


def test_non_rsa_key_is_refused_with_advice(tmp_path: Path) -> None:
    raw = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    path = tmp_path / "swarm.pem"
    path.write_bytes(encode_key_message(1, raw))
    with pytest.raises(IdentityError, match="Ed25519.*RSA"):
        ensure_identity(path)
    assert decode_key_message(path.read_bytes())[0] == 1


def test_missing_file_for_load(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="does not exist"):
        load_peer_id(tmp_path / "absent.pem")


def test_public_key_gives_same_peer_id_and_repr_hides_key(tmp_path: Path) -> None:
    ident = load_identity(ensure_identity(tmp_path / "swarm.pem"))
    assert ident.public_key_ssh.startswith(b"ssh-rsa ")
    assert peer_id_from_ssh_public_key(ident.public_key_ssh) == ident.peer_id
    assert "private" not in repr(ident) and ident.peer_id in repr(ident)
    with pytest.raises(ValueError):
        peer_id_from_ssh_public_key(b"ssh-rsa AAAAnot-base64")
    ed = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    with pytest.raises(ValueError, match="not RSA"):
        peer_id_from_ssh_public_key(ed)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _b58(data: bytes) -> str:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    n = int.from_bytes(data, "big")
    s = ""
    while n:
        n, r = divmod(n, 58)
        s = alphabet[r] + s
    return s
