"""Attacks on a real login service process on loopback (issue 12): each test is one attack
that worked against the old service.

- rate limit bypass with a fresh X-Forwarded-For per attempt;
- a DNS-rebinding page (foreign Host) signing up and taking over the trainer's files;
- passwords echoed in 422 bodies or logged through a 500; bad Unicode in email/password;
- /health fan-out against a chain that accepts and never answers (threadpool starvation);
- the RPC URL (with a provider key in it) shown to anonymous visitors and in 503 bodies;
- /api/get-api-key-status as an org-existence oracle.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.fixtures.login import LoginServiceProc, free_port, start_login_service  # noqa: F401


def closed_rpc(path: str = "") -> str:
    return f"http://127.0.0.1:{free_port()}{path}"


@pytest.fixture
def hanging_rpc() -> Iterator[str]:
    """A TCP server that accepts every connection and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(512)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                held.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    t.join(2)
    for c in held:
        c.close()
    srv.close()


def test_forwarded_for_does_not_reset_the_sign_in_limit(start_login_service: Callable[..., LoginServiceProc]) -> None:
    svc = start_login_service(rpc_url=closed_rpc(), signin_burst=3, signin_per_minute=1)
    codes = []
    for i in range(8):
        r = httpx.post(f"{svc.url}/api/auth/signin", json={"email": "victim@example.com", "password": f"guess-{i}-xx"},
                       headers={"X-Forwarded-For": f"10.0.{i}.{i + 1}", "X-Real-IP": f"10.1.{i}.1"})
        codes.append(r.status_code)
    assert codes[:3] == [401, 401, 401] and set(codes[3:]) == {429}, codes


def test_rebinding_host_is_refused_and_later_accounts_cannot_take_the_trainer_files(
        start_login_service: Callable[..., LoginServiceProc]) -> None:
    svc = start_login_service(rpc_url=closed_rpc())
    evil = "attacker.rebind.example"
    # What a rebinding page sends: its own name as Host and as Origin (so Origin == Host).
    r = httpx.post(f"{svc.url}/api/auth/signup", json={"email": "evil@example.com", "password": "evil-password-1"},
                   headers={"Host": f"{evil}:{svc.port}", "Origin": f"http://{evil}:{svc.port}"})
    assert r.status_code == 421 and "RLSWARM_LOGIN_ALLOWED_HOSTS" in r.json()["detail"]
    assert httpx.get(f"{svc.url}/", headers={"Host": evil}).status_code == 421
    assert not (svc.data_dir / "userData.json").exists()
    for host in ("localhost", "127.0.0.1", "[::1]"):
        assert httpx.get(f"{svc.url}/api/healthz", headers={"Host": f"{host}:{svc.port}"}).status_code == 200, host

    with httpx.Client(base_url=svc.url) as owner:
        o = owner.post("/api/auth/signup", json={"email": "owner@example.com", "password": "owner-password-1"}).json()
        owner_key = owner.post("/api/auth/activate-key", headers={"X-CSRF-Token": o["csrfToken"]}).json()["apiKey"]
    owner_data = json.loads((svc.data_dir / "userData.json").read_text())
    assert owner_data["email"] == "owner@example.com"

    # A second account (same machine, allowed host) signs up, activates, signs in again: the files stay the owner's.
    with httpx.Client(base_url=svc.url) as other:
        a = other.post("/api/auth/signup", json={"email": "other@example.com", "password": "other-password-1"}).json()
        other_key = other.post("/api/auth/activate-key", headers={"X-CSRF-Token": a["csrfToken"]}).json()["apiKey"]
        assert other.post("/api/auth/signin", json={"email": "other@example.com", "password": "other-password-1"}).status_code == 200
        assert "not changed for you" in other.get("/").text
    assert json.loads((svc.data_dir / "userData.json").read_text()) == owner_data
    # No file of the service holds either key in clear.
    for p in svc.data_dir.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert owner_key.encode() not in data and other_key.encode() not in data, p


def test_owner_email_setting_binds_the_files(start_login_service: Callable[..., LoginServiceProc]) -> None:
    svc = start_login_service(rpc_url=closed_rpc(), owner_email="Boss@Example.com")
    httpx.post(f"{svc.url}/api/auth/signup", json={"email": "first@example.com", "password": "first-password"})
    assert not (svc.data_dir / "userData.json").exists()  # the first account is not the owner named
    httpx.post(f"{svc.url}/api/auth/signup", json={"email": "boss@example.com", "password": "boss-password"})
    assert json.loads((svc.data_dir / "userData.json").read_text())["email"] == "boss@example.com"


BAD_INPUTS = [
    # (field, JSON body as text so lone surrogates reach the server as the attacker sent them)
    ("password", '{"email": "a@example.com", "password": "Secr3t-\\ud800-Value"}'),
    ("email", '{"email": "a\\ud800b@example.com", "password": "Secr3t-Value-xx"}'),
    ("email", '{"email": "a\\u0000b@example.com", "password": "Secr3t-Value-xx"}'),
    ("email", '{"email": "evil\\u202egpj.exe@example.com", "password": "Secr3t-Value-xx"}'),
    ("password", '{"email": "a@example.com", "password": "' + "x" * 1100 + 'Secr3t"}'),
    ("password", '{"email": "a@example.com", "password": ["Secr3t-Value-xx"]}'),
]


def test_bad_input_gets_4xx_naming_the_field_without_its_value(start_login_service: Callable[..., LoginServiceProc]) -> None:
    svc = start_login_service(rpc_url=closed_rpc(), signin_burst=1000)
    for path in ("/api/auth/signup", "/api/auth/signin"):
        for field, raw in BAD_INPUTS:
            r = httpx.post(f"{svc.url}{path}", content=raw.encode(), headers={"content-type": "application/json"})
            assert 400 <= r.status_code < 500, (path, raw[:60], r.status_code, r.text[:300])
            assert field in r.json()["detail"], (path, r.text)
            assert "Secr3t" not in r.text and "ud800" not in r.text.lower() and "gpj" not in r.text, r.text
    # A key holder's write with an orgId SQLite cannot encode: 422 naming the field, not a 500.
    with httpx.Client(base_url=svc.url) as c:
        su = c.post("/api/auth/signup", json={"email": "keyholder@example.com", "password": "keyholder-pw"}).json()
        key = c.post("/api/auth/activate-key", headers={"X-CSRF-Token": su["csrfToken"]}).json()["apiKey"]
    r = httpx.post(f"{svc.url}/api/register-peer", content=b'{"orgId": "Secr3t\\ud800", "peerId": "QmX"}',
                   headers={"content-type": "application/json", "Authorization": f"Bearer {key}"})
    assert r.status_code == 422 and "orgId" in r.json()["detail"] and "Secr3t" not in r.text, r.text
    r = httpx.post(f"{svc.url}/api/auth/signup", json={"email": "spaces@example.com", "password": " " * 12})
    assert r.status_code == 422 and "password" in r.json()["detail"] and "spaces" in r.json()["detail"]
    # The page's form path refuses the same (with the field named in the page).
    page = httpx.get(f"{svc.url}/")
    import re

    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = httpx.post(f"{svc.url}/signup", data={"email": "form@example.com", "password": " " * 12, "csrf_token": token},
                   cookies=page.cookies)
    assert r.status_code == 400 and "password" in r.text
    svc.stop()
    log = svc.log_text()
    assert "Secr3t" not in log and "Traceback" not in log and "gpj" not in log


def test_hanging_chain_does_not_starve_other_requests(hanging_rpc: str,
                                                      start_login_service: Callable[..., LoginServiceProc]) -> None:
    svc = start_login_service(rpc_url=hanging_rpc, contract_address="0x" + "11" * 20, chain_timeout_s=5,
                              signin_burst=1000)
    with httpx.Client(base_url=svc.url) as c:  # a signed-in user whose page reads the chain
        c.post("/api/auth/signup", json={"email": "busy@example.com", "password": "busy-password"})
        su = c.post("/api/auth/signin", json={"email": "busy@example.com", "password": "busy-password"}).json()
        key = c.post("/api/auth/activate-key", headers={"X-CSRF-Token": su["csrfToken"]}).json()["apiKey"]
        cookies = dict(c.cookies)
    org = su["user"]["orgId"]

    from tests.fixtures.login import register_body

    body = register_body(org, su["user"]["address"], "0x" + "11" * 20)  # a valid request: it must reach the chain

    def relay_write() -> int:
        return httpx.post(f"{svc.url}/api/register-peer", json=body,
                          headers={"Authorization": f"Bearer {key}"}, timeout=30).status_code

    # The 80 /health callers run in their own process, so this one's clients are not slowed by them.
    flood = subprocess.Popen([sys.executable, "-c", FLOOD, svc.url, "80"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    pool = ThreadPoolExecutor(12)
    writes = [pool.submit(relay_write) for _ in range(12)]  # each used to hold a request thread through the wait
    time.sleep(2.0)
    latencies, pages = [], []
    try:
        assert flood.poll() is None
        for _ in range(10):
            t0 = time.perf_counter()
            assert httpx.get(f"{svc.url}/api/get-api-key-status", params={"orgId": org}, timeout=30).status_code == 200
            t1 = time.perf_counter()
            assert httpx.get(f"{svc.url}/", cookies=cookies, timeout=30).status_code == 200
            latencies.append(t1 - t0)
            pages.append(time.perf_counter() - t1)
        t0 = time.perf_counter()
        h = httpx.get(f"{svc.url}/health", timeout=30)
        health_s = time.perf_counter() - t0
    finally:
        flood.kill()
        flood.wait(10)
        codes = [w.result(timeout=60) for w in writes]
        pool.shutdown()
    latencies.sort()
    pages.sort()
    print(f"\nunder 80 concurrent /health callers + 12 hanging writes: key status p50 {latencies[5]:.3f}s "
          f"max {latencies[-1]:.3f}s; signed-in page p50 {pages[5]:.3f}s max {pages[-1]:.3f}s; "
          f"/health {health_s:.3f}s; write codes {sorted(set(codes))}")
    # Before: every /health made its own 5 s chain call on a request thread: ~4-5 s per request.
    assert latencies[5] < 1.0 and latencies[-1] < 2.5, latencies
    assert pages[5] < 1.5 and pages[-1] < 3.0, pages
    assert h.json()["chain"] == "down" and health_s < 1.0
    assert set(codes) <= {503}  # chain busy or not answering: refused, not hung forever


# Each caller keeps one /health in flight, then pauses 0.25 s: 80 concurrent calls (what the attack
# was), not a CPU-saturating request flood (a different problem, for a rate limit in front).
FLOOD = """
import sys, threading, time, httpx
url, n = sys.argv[1], int(sys.argv[2])
def loop():
    with httpx.Client(timeout=30) as h:
        while True:
            try:
                h.get(url + "/health")
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
for _ in range(n):
    threading.Thread(target=loop, daemon=True).start()
threading.Event().wait()
"""


def test_rpc_url_and_org_existence_stay_private(start_login_service: Callable[..., LoginServiceProc]) -> None:
    secret = f"provider-key-{uuid.uuid4().hex[:10]}"
    svc = start_login_service(rpc_url=closed_rpc(f"/v3/{secret}"))
    assert secret not in httpx.get(f"{svc.url}/").text
    with httpx.Client(base_url=svc.url) as c:
        su = c.post("/api/auth/signup", json={"email": "rpc@example.com", "password": "rpc-password"}).json()
        key = c.post("/api/auth/activate-key", headers={"X-CSRF-Token": su["csrfToken"]}).json()["apiKey"]
        page = c.get("/").text
    assert secret not in page
    from tests.fixtures.login import register_body

    r = httpx.post(f"{svc.url}/api/register-peer", json=register_body(su["user"]["orgId"], su["user"]["address"],
                                                                       "0x" + "22" * 20),
                   headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 503 and secret not in r.text and "127.0.0.1" not in r.text
    # Known org without a key and an org nobody has read the same.
    with httpx.Client(base_url=svc.url) as c:
        pending = c.post("/api/auth/signup", json={"email": "pend@example.com", "password": "pend-password"}).json()
    known = httpx.get(f"{svc.url}/api/get-api-key-status", params={"orgId": pending["user"]["orgId"]})
    unknown = httpx.get(f"{svc.url}/api/get-api-key-status", params={"orgId": str(uuid.uuid4())})
    assert known.status_code == unknown.status_code == 200
    assert known.json()["status"] == unknown.json()["status"] == "pending"
    svc.stop()
    assert secret not in svc.log_text()


def test_trusted_proxy_setting_is_honoured(tmp_path: Path, start_login_service: Callable[..., LoginServiceProc]) -> None:
    # With the proxy configured, its X-Forwarded-For names the client: two clients, two buckets.
    svc = start_login_service(rpc_url=closed_rpc(), signin_burst=1, signin_per_minute=1, forwarded_allow_ips="127.0.0.1")
    a = [httpx.post(f"{svc.url}/api/auth/signin", json={"email": "p@example.com", "password": "pw-guess-1"},
                    headers={"X-Forwarded-For": "203.0.113.5"}).status_code for _ in range(2)]
    b = httpx.post(f"{svc.url}/api/auth/signin", json={"email": "p@example.com", "password": "pw-guess-1"},
                   headers={"X-Forwarded-For": "203.0.113.6"}).status_code
    assert a == [401, 429] and b == 401
