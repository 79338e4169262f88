"""DHT key names and signed subkeys.

Every record lives under a subkey that names its owner the way hivemind's
``RSASignatureValidator`` expects: ``<tag>[owner:ssh-rsa AAAA...]``. The DHT then only
accepts a value under that subkey if it is signed by that key, and a reader derives the
owner's peer ID from the key itself (the peer ID is a hash of it), so "who wrote this"
is never taken from the value.

Keys (``ns`` is `SwarmSettings.dht_namespace`):

- ``{ns}/outputs/r{round}/s{stage}/{peer}``  subkey tag: question hash
- ``{ns}/rollouts/r{round}/{peer}``           subkey tag: group key (SAPO game: a question spec)
- ``{ns}/rewards/r{round}/s{stage}``         subkey tag: empty (one per owner)
- ``{ns}/winners/r{round}``                  subkey tag: empty
- ``{ns}/round_state``                       subkey tag: empty (only the coordinator's is read)
- ``{ns}/peers``                             subkey tag: empty (heartbeats)
- ``{ns}/blob/{peer}/{sha256}``              subkey tag: chunk index (chunks of one large record)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hivemind_exp.swarm.identity import peer_id_from_ssh_public_key

# Same literal as hivemind.dht.crypto.RSASignatureValidator.PUBLIC_KEY_FORMAT (kept here so
# this module does not import hivemind).
_OWNER_PREFIX = b"[owner:"
_OWNER_RE = re.compile(rb"\[owner:(.+?)\]")
TAG_RE = re.compile(r"[A-Za-z0-9_.:-]{0,128}")
PEER_ID_RE = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,128}")


def outputs_key(ns: str, round_num: int, stage: int, peer_id: str) -> str:
    return f"{ns}/outputs/r{round_num}/s{stage}/{peer_id}"


def rollouts_key(ns: str, round_num: int, peer_id: str) -> str:
    return f"{ns}/rollouts/r{round_num}/{peer_id}"


def rewards_key(ns: str, round_num: int, stage: int) -> str:
    return f"{ns}/rewards/r{round_num}/s{stage}"


def winners_key(ns: str, round_num: int) -> str:
    return f"{ns}/winners/r{round_num}"


def round_state_key(ns: str) -> str:
    return f"{ns}/round_state"


def peers_key(ns: str) -> str:
    return f"{ns}/peers"


def blob_key(ns: str, peer_id: str, sha256_hex: str) -> str:
    return f"{ns}/blob/{peer_id}/{sha256_hex}"


def owner_marker(public_key_ssh: bytes) -> bytes:
    return _OWNER_PREFIX + public_key_ssh + b"]"


def make_subkey(tag: str, public_key_ssh: bytes) -> bytes:
    if not TAG_RE.fullmatch(tag):
        raise ValueError(f"subkey tag {tag!r}: use at most 128 letters, digits, '_', '.', ':' or '-'")
    return tag.encode() + owner_marker(public_key_ssh)


@dataclass(frozen=True)
class SignedSubkey:
    tag: str
    owner_peer_id: str


def parse_subkey(subkey: object) -> SignedSubkey:
    """Split ``<tag>[owner:KEY]`` and derive the owner's peer ID; ValueError if it is not one."""
    if not isinstance(subkey, bytes):
        raise ValueError(f"subkey is {type(subkey).__name__}, not bytes")
    owners = _OWNER_RE.findall(subkey)
    if len(owners) != 1:
        raise ValueError(f"subkey has {len(owners)} owner markers, expected 1")
    start = subkey.index(_OWNER_PREFIX)
    if not subkey.endswith(b"]") or start + len(_OWNER_PREFIX) + len(owners[0]) + 1 != len(subkey):
        raise ValueError("subkey has bytes after the owner marker")
    try:
        tag = subkey[:start].decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("subkey tag is not ASCII") from None
    if not TAG_RE.fullmatch(tag):
        raise ValueError(f"subkey tag {tag!r} has characters outside [A-Za-z0-9_.:-] or is too long")
    return SignedSubkey(tag=tag, owner_peer_id=peer_id_from_ssh_public_key(owners[0]))
