"""The server secret and the wallets' encrypted keystores.

The secret comes from `RLSWARM_LOGIN_SERVER_SECRET`, or is generated once (32 random
bytes) into `<data_dir>/server-secret`, created 0600 with O_EXCL so two starting
processes cannot each write their own. Each wallet key is stored only as a V3 keystore
(`eth_account.Account.encrypt`) whose password is HMAC(secret, "wallet:" + user id), so
every wallet has its own password and none is ever stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

# The keystore password is already a 256-bit random value, so a slow KDF adds no
# strength against guessing; pbkdf2 at this count keeps a relay call well under 0.2 s.
KDF = "pbkdf2"
KDF_ITERATIONS = 100_000


class KeystoreError(RuntimeError):
    """The secret file or a keystore is unusable; the message says how to fix it."""


def load_or_create_secret(path: Path, supplied: str | None) -> bytes:
    if supplied:
        return supplied.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise KeystoreError(f"{path} is readable by others (mode {mode:o}); run `chmod 600 {path}`") from None
        value = path.read_bytes().strip()
        if len(value) < 32:
            raise KeystoreError(f"{path} is too short to be the server secret; restore it from a backup (wallets are encrypted with it)")
        return value
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_urlsafe(32).encode("ascii"))
        f.flush()
        os.fsync(f.fileno())
    return path.read_bytes().strip()


def derive(secret: bytes, purpose: str) -> bytes:
    """A sub-key of the server secret for one purpose (wallet passwords, tokens)."""
    return hmac.new(secret, purpose.encode("utf-8"), hashlib.sha256).digest()


def _wallet_password(secret: bytes, user_id: str) -> str:
    return derive(secret, f"wallet:{user_id}").hex()


def new_wallet(secret: bytes, user_id: str) -> tuple[str, str]:
    """Create a wallet; return (checksummed address, keystore JSON). The key lives only in the keystore."""
    from eth_account import Account

    acct = Account.create()
    keystore = Account.encrypt(acct.key, _wallet_password(secret, user_id), kdf=KDF, iterations=KDF_ITERATIONS)
    return acct.address, json.dumps(keystore)


def unlock(secret: bytes, user_id: str, keystore_json: str) -> Any:
    """Decrypt a keystore into an eth_account LocalAccount (kept only as long as the caller holds it)."""
    from eth_account import Account

    try:
        key = Account.decrypt(json.loads(keystore_json), _wallet_password(secret, user_id))
    except ValueError:
        raise KeystoreError(
            "a wallet keystore does not decrypt with this server secret: the secret file or "
            "RLSWARM_LOGIN_SERVER_SECRET changed since the wallet was created; restore the original secret"
        ) from None
    return Account.from_key(key)
