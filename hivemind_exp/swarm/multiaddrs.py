"""Settings values every service parses the same way: multiaddr lists, peer IDs, DHT namespaces.

Pure functions (no hivemind import), shared by the swarm, chain and dashboard settings so the
three accept the same spellings and explain a bad value the same way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

PEER_ID_RE = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{32,128}$")
MADDR_RE = re.compile(r"^(/[^/\s]+){2,}$")
NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def as_list(value: object) -> object:
    """One env var or flag with commas, or a JSON list, as a list of strings (other values pass through).

    One value with commas is the easy way to give several addresses; a JSON list (what
    pydantic-settings itself would expect) works too.
    """
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError("looks like a JSON list but does not parse; give a JSON list of strings or "
                             "comma-separated multiaddrs") from None
    if isinstance(value, str):
        return [v for v in (p.strip() for p in value.split(",")) if v]
    if isinstance(value, list):
        out: list[object] = []
        for item in value:
            out.extend(as_list(item) if isinstance(item, str) else [item])  # type: ignore[arg-type]
        return out
    return value


def check_maddr(value: str, what: str) -> str:
    value = value.strip()
    if not MADDR_RE.match(value):
        raise ValueError(f"{what} {value!r} is not a multiaddr; write it like /ip4/1.2.3.4/tcp/38331/p2p/Qm...")
    return value


def check_peer_id(value: str | None, hint: str) -> str | None:
    """None/empty stays None; anything else must be a base58 libp2p peer ID."""
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if not PEER_ID_RE.match(value):
        raise ValueError(f"not a base58 libp2p peer ID (like QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N); {hint}")
    return value


def check_namespace(value: str) -> str:
    if not NAMESPACE_RE.match(value):
        raise ValueError("dht_namespace must be 1-64 letters, digits, '_', '.' or '-' (the swarm's namespace)")
    return value


def read_bootnode_file(path: Path | None) -> list[str]:
    """The coordinator's multiaddrs from the file `rl-swarm coordinator --bootnode-file` writes, or [] while there is none.

    RuntimeError (saying what to do) when the file exists but does not hold a list of multiaddrs.
    """
    if path is None or not path.is_file():
        return []
    try:
        maddrs = json.loads(path.read_text())["maddrs"]
        if not isinstance(maddrs, list) or not all(isinstance(m, str) for m in maddrs):
            raise TypeError("maddrs is not a list of strings")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"bootnode file {path} is unreadable ({exc}); restart the coordinator, "
                           "which writes it") from None
    return list(maddrs)
