"""Structured event logs: one JSON object per line in the message, never a secret.

Callers pass only ids, addresses, tx hashes, paths and outcomes. Free text that might
quote a request or a key (exception messages) goes through `redact` first, which the
`detail` field gets automatically.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

log = logging.getLogger("modal_login")

_HEXKEY = re.compile(r"0x[0-9a-fA-F]{64}")
_BEARER = re.compile(r"(rlsk_)[A-Za-z0-9_\-]+")
# An RPC provider's key often sits in the URL's path, query or user info: keep scheme://host:port only.
_URL = re.compile(r"\b(https?|wss?)://(?:[^/\s@'\"]*@)?([^/\s'\"?#]+)[^\s'\"]*")


def redact_url(url: str) -> str:
    return _URL.sub(lambda m: f"{m.group(1)}://{m.group(2)}" + ("/..." if len(m.group(0)) > len(f"{m.group(1)}://{m.group(2)}") else ""), url)


def redact(text: str) -> str:
    return redact_url(_BEARER.sub(r"\1<redacted>", _HEXKEY.sub("0x<redacted-64-hex>", text)))


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    payload = {"event": name}
    for k, v in fields.items():
        payload[k] = redact(str(v)) if k == "detail" else v
    log.log(level, json.dumps(payload, default=str, sort_keys=False))
