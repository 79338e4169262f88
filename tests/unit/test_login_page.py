"""The login app in-process (Starlette TestClient), with the chain unreachable: page, CSRF,
cookies, JSON session API, CORS, origin and size guards. Chain-backed calls: tests/integration."""

from __future__ import annotations

import re
import socket
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from modal_login.app import create_app
from modal_login.settings import LoginSettings


def closed_rpc() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def settings(tmp_path: Path) -> LoginSettings:
    return LoginSettings(data_dir=tmp_path / "data", rpc_url=closed_rpc(), contract_address="0x" + "11" * 20,
                         signin_burst=50, chain_timeout_s=2, allowed_hosts=["testserver", "login.example"])


def csrf(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def sign_up_page(c: TestClient, email: str = "ann@example.com", password: str = "s3cret-pass") -> str:
    page = c.get("/")
    r = c.post("/signup", data={"email": email, "password": password, "csrf_token": csrf(page.text)},
               follow_redirects=False)
    assert r.status_code == 303, r.text
    return c.get("/").text


def test_page_sign_up_shows_wallet_and_writes_user_data(settings: LoginSettings) -> None:
    c = TestClient(create_app(settings))
    first = c.get("/")
    assert first.status_code == 200 and "Create account" in first.text and 'name="viewport"' in first.text
    anon = first.headers["set-cookie"]
    assert "rls_anon=" in anon and "HttpOnly" in anon and "samesite=strict" in anon.lower() and "Secure" not in anon
    page = c.get("/")  # cookie kept: same token, no new cookie
    assert "set-cookie" not in page.headers and csrf(page.text) == csrf(first.text)

    r = c.post("/signup", data={"email": "Ann@Example.com", "password": "s3cret-pass", "csrf_token": csrf(page.text)},
               follow_redirects=False)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "rls_session=" in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    home = c.get(r.headers["location"]).text
    address = re.search(r'id="wallet-address">(0x[0-9a-fA-F]{40})<', home).group(1)  # type: ignore[union-attr]
    assert "Account created" in home and 'id="key-status" class="status pending">pending' in home
    assert "not funded yet" in home and "chain is unreachable" in home

    ud = settings.user_data_path
    assert ud is not None and stat.S_IMODE(ud.stat().st_mode) == 0o600
    import json
    data = json.loads(ud.read_text())
    assert set(data) == {"orgId", "address", "userId", "email"}
    assert data["address"] == address and data["email"] == "ann@example.com"


def test_forms_need_csrf_and_errors_render(settings: LoginSettings) -> None:
    c = TestClient(create_app(settings))
    c.get("/")
    r = c.post("/signup", data={"email": "ann@example.com", "password": "s3cret-pass", "csrf_token": "forged"})
    assert r.status_code == 403 and "reload the page" in r.text
    r = c.post("/signup", data={"email": "ann@example.com", "password": "s3cret-pass"})
    assert r.status_code == 403
    fresh = TestClient(create_app(settings))  # no anon cookie at all
    r = fresh.post("/signin", data={"email": "ann@example.com", "password": "x", "csrf_token": csrf(c.get("/").text)})
    assert r.status_code == 403

    home = sign_up_page(c)
    r = c.post("/key/activate", data={"csrf_token": "forged"})
    assert r.status_code == 403 and 'id="api-key"' not in r.text
    c.post("/signout", data={"csrf_token": csrf(home)})
    page = c.get("/").text
    r = c.post("/signin", data={"email": "ann@example.com", "password": "wrong-pass", "csrf_token": csrf(page)})
    assert r.status_code == 401 and "wrong email or password" in r.text and "ann@example.com" in r.text
    r = c.post("/signup", data={"email": "ann@example.com", "password": "s3cret-pass", "csrf_token": csrf(page)})
    assert r.status_code == 409 and "sign in instead" in r.text
    r = c.post("/signup", data={"email": "bob@example.com", "password": "short", "csrf_token": csrf(page)})
    assert r.status_code == 400 and "at least 8 characters" in r.text


def test_activate_shows_key_once_and_revoke(settings: LoginSettings) -> None:
    c = TestClient(create_app(settings))
    home = sign_up_page(c)
    r = c.post("/key/activate", data={"csrf_token": csrf(home)})
    key = re.search(r'id="api-key">(rlsk_[\w-]+)<', r.text).group(1)  # type: ignore[union-attr]
    assert "activated" in r.text
    assert key not in c.get("/").text  # shown once only
    org = re.search(r'id="org-id">([^<]+)<', home).group(1)  # type: ignore[union-attr]
    assert c.get("/api/get-api-key-status", params={"orgId": org}).json() == {"orgId": org, "status": "activated"}
    # The key is handed over in the page only: no file of the service holds it in clear.
    assert settings.user_data_path is not None
    assert [p.name for p in settings.data_dir.rglob("*") if p.is_file() and key.encode() in p.read_bytes()] == []
    r = c.post("/key/revoke", data={"csrf_token": csrf(home)}, follow_redirects=False)
    assert r.status_code == 303
    assert c.get("/api/get-api-key-status", params={"orgId": org}).json()["status"] == "revoked"
    # Unknown orgs read like known ones without a key: no existence oracle.
    assert c.get("/api/get-api-key-status", params={"orgId": "nobody"}).json() == {"orgId": "nobody", "status": "pending"}


def test_https_requests_get_secure_cookies(settings: LoginSettings) -> None:
    c = TestClient(create_app(settings), base_url="https://login.example")
    assert "Secure" in c.get("/").headers["set-cookie"]


def test_json_session_api_needs_csrf_header(settings: LoginSettings) -> None:
    c = TestClient(create_app(settings))
    r = c.post("/api/auth/signup", json={"email": "cli@example.com", "password": "s3cret-pass"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["user"]) == {"orgId", "address", "userId", "email"} and body["funded"] is False
    assert c.post("/api/auth/activate-key").status_code == 403
    assert c.post("/api/auth/activate-key", headers={"X-CSRF-Token": "nope"}).status_code == 403
    r = c.post("/api/auth/activate-key", headers={"X-CSRF-Token": body["csrfToken"]})
    assert r.status_code == 200 and r.json()["apiKey"].startswith("rlsk_")
    me = c.get("/api/auth/me").json()
    assert me["keyStatus"] == "activated" and me["peerIds"] is None  # chain down: unknown, not "none"
    assert TestClient(create_app(settings)).get("/api/auth/me").status_code == 401
    # text/plain (what a cross-site form can send) is not parsed as JSON
    r = c.post("/api/auth/signin", content=b'{"email":"cli@example.com","password":"s3cret-pass"}',
               headers={"content-type": "text/plain"})
    assert r.status_code == 422


def test_cors_origin_and_size_guards(settings: LoginSettings) -> None:
    c = TestClient(create_app(settings))
    ok = c.options("/api/register-peer", headers={"Origin": "http://127.0.0.1:8080", "Access-Control-Request-Method": "POST",
                                                  "Access-Control-Request-Headers": "authorization,content-type"})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://127.0.0.1:8080"
    bad = c.options("/api/register-peer", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in bad.headers
    r = c.post("/api/auth/signin", json={"email": "a@b.co", "password": "x"}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["error"] == "ForeignOrigin"
    big = b'{"orgId": "' + b"x" * settings.max_body_bytes + b'"}'
    r = c.post("/api/register-peer", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"

    def chunks():  # no Content-Length: cut while streaming
        for _ in range(20):
            yield b"x" * 8192

    r = c.post("/api/auth/signin", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_sign_in_rate_limit(tmp_path: Path) -> None:
    s = LoginSettings(data_dir=tmp_path, rpc_url=closed_rpc(), signin_burst=2, signin_per_minute=1,
                      allowed_hosts=["testserver"])
    c = TestClient(create_app(s))
    codes = [c.post("/api/auth/signin", json={"email": "x@example.com", "password": "whatever1"}).status_code
             for _ in range(3)]
    assert codes == [401, 401, 429]
    r = c.post("/api/auth/signin", json={"email": "x@example.com", "password": "whatever1"})
    assert r.json()["error"] == "RateLimited" and int(r.headers["retry-after"]) >= 1


def test_health(settings: LoginSettings) -> None:
    c = TestClient(create_app(settings))
    for path in ("/health", "/api/healthz"):
        assert c.get(path).json() == {"status": "ok", "chain": "down", "chainId": None}
