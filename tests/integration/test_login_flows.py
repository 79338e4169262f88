"""End-to-end flows of the login service process: headless `rl-swarm login`, the trainer's
wait for activation, port fallback, and the secrets audit (no key or password anywhere)."""

from __future__ import annotations

import json
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from hivemind_exp.chain.login_client import ActivationTimeout, LoginClient, read_api_key, read_user_data, wait_for_activation
from tests.fixtures.login import (REPO, LoginChain, LoginServiceProc, free_port, login_chain,  # noqa: F401
                                  login_service, sign_up_user, start_login_service)


def cli(*args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hivemind_exp.cli", *args], input=stdin, capture_output=True,
                          text=True, cwd=REPO, timeout=timeout, env=env)


def closed_rpc() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_headless_login_cli(tmp_path: Path, start_login_service: Callable[..., LoginServiceProc]) -> None:
    svc = start_login_service(rpc_url=closed_rpc())
    ud = tmp_path / "trainer" / "userData.json"
    args = ["login", "--login-url", svc.url, "--email", "cli@example.com", "--password-stdin", "--user-data", str(ud)]
    r = cli(*args, "--new", stdin="cli-password-1\n")
    assert r.returncode == 0, r.stderr
    user = read_user_data(ud)
    key = read_api_key(ud.parent / "apiKey", user.org_id)
    for p in (ud, ud.parent / "apiKey"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert f"org {user.org_id}" in r.stdout and key.api_key not in r.stdout and "cli-password-1" not in r.stdout + r.stderr
    assert LoginClient(svc.url).key_status(user.org_id) == "activated"
    # the service wrote the same identity into its own data dir
    assert read_user_data(svc.data_dir / "userData.json") == user

    again = cli(*args, stdin="cli-password-1\n")  # sign in again: a fresh key replaces the old one
    assert again.returncode == 0, again.stderr
    assert read_api_key(ud.parent / "apiKey").api_key != key.api_key

    wrong = cli(*args, stdin="not-the-password\n")
    assert wrong.returncode == 1 and "wrong email or password" in wrong.stderr and "--new" in wrong.stderr
    taken = cli(*args, "--new", stdin="cli-password-1\n")
    assert taken.returncode == 1 and "EmailTaken" in taken.stderr and "drop --new" in taken.stderr
    down = cli("login", "--login-url", closed_rpc(), "--email", "x@example.com", "--password-stdin", stdin="pw\n")
    assert down.returncode == 3 and "rl-swarm login-server" in down.stderr
    nopw = cli("login", "--login-url", svc.url, "--email", "x@example.com")
    assert nopw.returncode != 0 and "--password-stdin" in nopw.stderr


def test_trainer_waits_for_activation(start_login_service: Callable[..., LoginServiceProc]) -> None:
    import io

    svc = start_login_service(rpc_url=closed_rpc())
    result: dict[str, Any] = {}

    def user_signs_in_later() -> None:
        time.sleep(1.5)
        with LoginClient(svc.url) as c:
            result["user"] = c.sign_up("late@example.com", "late-password")
            time.sleep(1.0)
            c.activate_key()

    t = threading.Thread(target=user_signs_in_later)
    t.start()
    out = io.StringIO()
    started = time.monotonic()
    org = wait_for_activation(svc.url, None, 60, user_data_path=svc.data_dir / "userData.json", poll_s=0.3, out=out)
    t.join()
    assert org == result["user"].org_id and time.monotonic() - started < 30
    assert "activated" in out.getvalue() and f"open {svc.url}/" in out.getvalue()

    # a signed-up user who never activates: bounded wait, clear error
    with LoginClient(svc.url) as c:
        pending = c.sign_up("never@example.com", "never-password")
    started = time.monotonic()
    with pytest.raises(ActivationTimeout, match="key pending"):
        wait_for_activation(svc.url, pending.org_id, 1.5, poll_s=0.3, out=io.StringIO())
    assert time.monotonic() - started < 10


def test_port_fallback_and_explicit_port_clash(tmp_path: Path) -> None:
    from hivemind_exp.commands.login_server import bind_with_fallback

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        sock, got = bind_with_fallback("127.0.0.1", port, explicit=False)
        sock.close()
        assert got in (port + 1, port + 2)
        with pytest.raises(SystemExit, match=f"cannot listen on 127.0.0.1:{port}.*--port"):
            bind_with_fallback("127.0.0.1", port, explicit=True)
        r = cli("login-server", "--port", str(port), "--data-dir", str(tmp_path / "d"), "--rpc-url", closed_rpc(),
                timeout=60)
        assert r.returncode != 0 and f"cannot listen on 127.0.0.1:{port}" in r.stderr


def test_bad_settings_exit_with_fix(tmp_path: Path) -> None:
    r = cli("login-server", "--cors-origins", "*", "--data-dir", str(tmp_path), timeout=60)
    assert r.returncode != 0 and "dashboard" in r.stderr and "Traceback" not in r.stderr
    help_ = cli("login-server", "--help", timeout=60)
    assert help_.returncode == 0 and "--rpc-url" in help_.stdout and "--cors-origins" in help_.stdout


@pytest.mark.chain
def test_secrets_never_leave_the_service(login_chain: LoginChain, login_service: LoginServiceProc) -> None:
    from hivemind_exp.chain.client import ChainReader
    from modal_login import keystore

    svc = login_service
    password = "Pa55word-Never-Logged-7f3a"
    bodies: list[str] = []

    def keep(r: httpx.Response) -> httpx.Response:
        bodies.append(r.text)
        bodies.append(json.dumps(dict(r.headers)))
        return r

    with httpx.Client(base_url=svc.url, timeout=60) as http:
        keep(http.get("/"))
        su = keep(http.post("/api/auth/signup", json={"email": "audit@example.com", "password": password})).json()
        csrf, org = su["csrfToken"], su["user"]["orgId"]
        keep(http.post("/api/auth/signout", headers={"X-CSRF-Token": csrf}))
        si = keep(http.post("/api/auth/signin", json={"email": "audit@example.com", "password": password})).json()
        activation = f"response {len(bodies)}"
        key = keep(http.post("/api/auth/activate-key", headers={"X-CSRF-Token": si["csrfToken"]})).json()["apiKey"]
        keep(http.get("/"))
        keep(http.get("/api/auth/me"))
        keep(http.get("/api/get-api-key-status", params={"orgId": org}))
        auth = {"Authorization": f"Bearer {key}"}
        from tests.fixtures.login import register_body

        reg = register_body(org, su["user"]["address"], login_chain.address)
        assert keep(http.post("/api/register-peer", json=reg, headers=auth)).status_code == 200
        rnd, stage = ChainReader(login_chain.rpc_url, login_chain.address).round_and_stage()
        r = keep(http.post("/api/submit-reward", headers=auth, json={"orgId": org, "roundNumber": rnd, "stageNumber": stage,
                                                                     "reward": 7, "peerId": reg["peerId"]}))
        assert r.status_code == 200, r.text
        keep(http.post("/api/submit-reward", headers=auth, json={"orgId": org, "roundNumber": rnd, "stageNumber": stage,
                                                                 "reward": 7, "peerId": reg["peerId"]}))
        keep(http.post("/api/auth/signin", json={"email": "audit@example.com", "password": "wrong" + password}))
        # Bad input that used to echo the password (422) or log it (500 traceback).
        keep(http.post("/api/auth/signup", json={"email": "audit2@example.com", "password": [password]}))
        keep(http.post("/api/auth/signup", json={"email": "audit2@example.com", "password": password + "x" * 1100}))
        keep(http.post("/api/auth/signin", content=('{"email": "audit@example.com", "password": "' + password
                                                    + '\\ud800"}').encode(), headers={"content-type": "application/json"}))
        keep(http.post("/api/auth/signup", json={"email": password + "\u202e@example.com", "password": password}))
        keep(http.get("/api/openapi.json"))

    # the wallet's private key, recovered the way only the service can
    secret = (svc.data_dir / "server-secret").read_bytes().strip()
    with sqlite3.connect(svc.data_dir / "login.sqlite3") as db:
        user_id, ks, address = db.execute("SELECT w.user_id, w.keystore, w.address FROM wallets w JOIN users u "
                                          "ON u.id = w.user_id WHERE u.email = 'audit@example.com'").fetchone()
    account = keystore.unlock(secret, user_id, ks)
    assert account.address == address
    key_hex = account.key.hex().removeprefix("0x").lower()
    api_key = key.lower()

    svc.stop()  # flush everything it writes
    log = svc.log_text()
    assert '"event": "relay"' in log and '"op": "submit_reward"' in log  # logs exist and are structured
    haystacks: dict[str, str] = {"service log": log}
    for i, b in enumerate(bodies):
        haystacks[f"response {i}"] = b.lower()
    for p in svc.data_dir.rglob("*"):
        if p.is_file():
            haystacks[str(p)] = p.read_bytes().decode("latin-1")
    haystacks = {w: t.lower() for w, t in haystacks.items()}
    assert len(haystacks) > 15
    assert [w for w, t in haystacks.items() if key_hex in t] == []
    assert [w for w, t in haystacks.items() if password.lower() in t] == []
    # The API key appears exactly where it is handed over: the activation response (no file holds it).
    assert [w for w, t in haystacks.items() if api_key in t] == [activation]
    assert not (svc.data_dir / "apiKey").exists()
