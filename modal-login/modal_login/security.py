"""Passwords (argon2id), session and CSRF tokens, API keys.

Tokens are 32 random bytes; only their SHA-256 is stored, so a copy of the database
cannot be replayed as a session or an API key (a high-entropy token needs no slow hash).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from functools import lru_cache
from typing import Any

API_KEY_PREFIX = "rlsk_"
EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


@lru_cache(maxsize=1)
def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """True when `password` matches; with `stored=None` still spends the same time (no user enumeration by timing)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    h = _hasher()
    if stored is None:
        stored = _dummy_hash()
        try:
            h.verify(stored, password)
        except (VerificationError, InvalidHashError):
            pass
        return False
    try:
        return bool(h.verify(stored, password))
    except (VerificationError, InvalidHashError):
        return False


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher().hash(secrets.token_urlsafe(16))


def normalize_email(email: str) -> str:
    return email.strip().lower()


# Control, format (RTL override, zero-width...), surrogate, private-use and unassigned code points.
_BAD_EMAIL_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"}


def has_lone_surrogate(text: str) -> bool:
    # JSON "\ud800" decodes to a str that cannot be encoded as UTF-8 (argon2, SQLite would raise).
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def email_problem(email: str) -> str | None:
    """Why `email` is not acceptable (never quoting it), or None."""
    if any(unicodedata.category(ch) in _BAD_EMAIL_CATEGORIES for ch in email):
        return "email: contains control, invisible, direction-override or invalid characters; type it plainly"
    if len(email) > 254 or not EMAIL_RE.match(email):
        return "email: enter an address like name@example.com"
    return None


def password_problem(password: str, min_length: int) -> str | None:
    """Why `password` is not acceptable for a new account (never quoting it), or None."""
    if has_lone_surrogate(password):
        return "password: contains invalid Unicode (a lone surrogate); use ordinary characters"
    if "\x00" in password:
        return "password: contains a NUL character"
    if len(password) < min_length:
        return f"password: use at least {min_length} characters"
    if len(password) > 1024:
        return "password: use at most 1024 characters"
    if not password.strip():
        return "password: must contain something other than spaces"
    return None


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def csrf_for(key: bytes, binding: str) -> str:
    """CSRF token bound to a session (or to the anonymous CSRF cookie) by HMAC with a server sub-key."""
    return hmac.new(key, binding.encode("utf-8"), hashlib.sha256).hexdigest()


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))
