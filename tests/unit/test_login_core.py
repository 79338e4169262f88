"""Login service building blocks: passwords, tokens, keystore, server secret, storage, buckets, settings."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from hivemind_exp.common.settings_base import SettingsError, load_settings
from modal_login import keystore, security
from modal_login.ratelimit import TokenBucket
from modal_login.settings import LoginSettings
from modal_login.storage import EmailTaken, Storage


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_password_hash_roundtrip_and_unknown_user() -> None:
    h = security.hash_password("correct horse battery")
    assert h.startswith("$argon2id$") and "correct horse" not in h
    assert security.verify_password(h, "correct horse battery")
    assert not security.verify_password(h, "wrong horse battery")
    assert not security.verify_password(None, "correct horse battery")
    assert not security.verify_password("not-a-hash", "x")


def test_email_and_password_rules() -> None:
    assert security.normalize_email("  Ann@Example.COM ") == "ann@example.com"
    assert security.email_problem("ann@example.com") is None
    for bad in ("ann", "ann@", "@example.com", "a b@example.com", "a@" + "x" * 260 + ".com",
                "a\x00b@example.com", "ann\u202e@example.com", "ann\u200b@example.com", "ann\ud800@example.com"):
        assert security.email_problem(bad), bad
        assert "ann" not in (security.email_problem(bad) or "")  # names the field, never quotes the value
    assert security.password_problem("short", 8) == "password: use at least 8 characters"
    assert security.password_problem("x" * 1025, 8)
    assert security.password_problem(" " * 12, 8) == "password: must contain something other than spaces"
    assert "surrogate" in (security.password_problem("pass\ud800word", 8) or "")
    assert security.password_problem("long enough", 8) is None


def test_tokens_keys_and_csrf() -> None:
    a, b = security.new_token(), security.new_token()
    assert a != b and len(a) >= 40
    key = security.new_api_key()
    assert key.startswith("rlsk_") and security.token_hash(key) != key and len(security.token_hash(key)) == 64
    k = os.urandom(32)
    t = security.csrf_for(k, "session:abc")
    assert security.same(t, security.csrf_for(k, "session:abc"))
    assert not security.same(t, security.csrf_for(k, "session:abd"))
    assert not security.same(t, security.csrf_for(os.urandom(32), "session:abc"))
    assert not security.same(None, t) and not security.same("", "")


def test_secret_file_created_once_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "d" / "server-secret"
    s1 = keystore.load_or_create_secret(path, None)
    assert mode(path) == 0o600 and len(s1) >= 32
    assert keystore.load_or_create_secret(path, None) == s1
    assert keystore.load_or_create_secret(path, "y" * 40) == b"y" * 40  # env wins, file untouched
    os.chmod(path, 0o644)
    with pytest.raises(keystore.KeystoreError, match="chmod 600"):
        keystore.load_or_create_secret(path, None)


def test_wallet_keystore_encrypts_and_only_the_right_secret_opens_it() -> None:
    secret = os.urandom(32)
    address, ks = keystore.new_wallet(secret, "user-1")
    data = json.loads(ks)
    assert data["version"] == 3 and data["crypto"]["kdf"] == "pbkdf2"
    account = keystore.unlock(secret, "user-1", ks)
    assert account.address == address
    assert account.key.hex().removeprefix("0x") not in ks
    with pytest.raises(keystore.KeystoreError, match="does not decrypt with this server secret"):
        keystore.unlock(os.urandom(32), "user-1", ks)
    with pytest.raises(keystore.KeystoreError):
        keystore.unlock(secret, "user-2", ks)  # per-user password


def test_storage_users_sessions_keys(tmp_path: Path) -> None:
    st = Storage(tmp_path / "db.sqlite3")
    assert mode(tmp_path / "db.sqlite3") == 0o600
    u = st.create_user("a@b.co", "hash")
    with pytest.raises(EmailTaken):
        st.create_user("a@b.co", "hash2")
    assert st.user_by_email("a@b.co") == u == st.user_by_org(u.org_id) == st.user_by_id(u.id)
    assert st.user_by_org("nope") is None

    st.add_session("h1", u.id, ttl_s=60)
    st.add_session("h2", u.id, ttl_s=-1)  # already expired
    assert st.session_user("h1") == u and st.session_user("h2") is None
    st.drop_session("h1")
    assert st.session_user("h1") is None

    assert st.key_status(u.org_id) == "pending"
    st.activate_key(u.org_id, "k1")
    assert st.key_status(u.org_id) == "activated" and st.key_lookup("k1") == (u.org_id, "activated")
    st.activate_key(u.org_id, "k2")  # replaces k1
    assert st.key_lookup("k1") == (u.org_id, "revoked") and st.key_lookup("k2") == (u.org_id, "activated")
    assert st.revoke_keys(u.org_id) == 1
    assert st.key_status(u.org_id) == "revoked" and st.key_lookup("k2") == (u.org_id, "revoked")
    assert st.key_lookup("never") is None

    w = st.add_wallet(u.id, "0xabc", "{}")
    assert st.add_wallet(u.id, "0xdef", "{}") == w  # a racing second insert keeps the first
    st.mark_funded(u.id)
    assert st.wallet(u.id).funded  # type: ignore[union-attr]


def test_token_bucket_burst_then_rate() -> None:
    b = TokenBucket(rate=10.0, burst=3)
    assert [b.take("ip") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = b.take("ip")
    assert 0 < wait <= 0.1
    assert b.take("other") == 0.0  # buckets are per key
    time.sleep(0.12)
    assert b.take("ip") == 0.0


def test_settings_defaults_env_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLSWARM_LOGIN_HOST", "0.0.0.0")
    monkeypatch.setenv("RLSWARM_LOGIN_DATA_DIR", str(tmp_path))
    s = load_settings(LoginSettings)
    assert s.host == "0.0.0.0" and s.port == 3000 and "port" not in s.model_fields_set
    assert s.user_data_path == tmp_path / "userData.json" and not hasattr(s, "api_key_path")
    assert s.forwarded_allow_ips == [] and "127.0.0.1" in s.allowed_hosts and "modal-login" in s.allowed_hosts
    monkeypatch.setenv("RLSWARM_LOGIN_ALLOWED_HOSTS", "[::1],Login.Example.org")
    monkeypatch.setenv("RLSWARM_LOGIN_FORWARDED_ALLOW_IPS", "172.18.0.1,10.0.0.0/8")
    s2 = load_settings(LoginSettings)
    assert s2.allowed_hosts == ["[::1]", "login.example.org"] and s2.forwarded_allow_ips == ["172.18.0.1", "10.0.0.0/8"]
    monkeypatch.delenv("RLSWARM_LOGIN_ALLOWED_HOSTS")
    monkeypatch.delenv("RLSWARM_LOGIN_FORWARDED_ALLOW_IPS")
    assert s.url() == "http://127.0.0.1:3000"
    assert s.cors_origins == ["http://127.0.0.1:8080", "http://localhost:8080"]
    for bad, needle in [({"cors_origins": ["*"]}, "dashboard"), ({"contract_address": "0x12"}, "40 hex"),
                        ({"server_secret": "short"}, "32 random"), ({"rpc_url": "localhost:8545"}, "http://"),
                        ({"port": "70000"}, "--port"), ({"allowed_hosts": ["*"]}, "rebinding"),
                        ({"forwarded_allow_ips": ["*"]}, "not an IP")]:
        with pytest.raises(SettingsError, match=needle):
            load_settings(LoginSettings, **bad)
