"""The login page in headless Chromium (playwright-core driven by a node script): sign up, see
the wallet address, activate the key; then the trainer's API calls succeed with that key."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.fixtures.login import REPO, LoginChain, LoginServiceProc, login_chain, login_service, start_login_service  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.chain]


def test_sign_up_activate_and_relay_in_chromium(login_chain: LoginChain, login_service: LoginServiceProc) -> None:
    if not Path("/usr/bin/chromium").exists() or shutil.which("node") is None:
        pytest.fail("needs /usr/bin/chromium and node (apt-get install chromium nodejs; npm install)")
    shots = REPO / "test-output"
    shots.mkdir(exist_ok=True)
    email, password = "browser@example.com", "browser-pass-123"
    r = subprocess.run(["node", str(REPO / "tests" / "e2e" / "login_browser.mjs"), login_service.url, str(shots),
                        email, password], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert re.fullmatch(r"0x[0-9a-fA-F]{40}", seen["address"]) and seen["addressAfterSignIn"] == seen["address"]
    assert seen["statusBefore"] == "pending" and seen["statusAfter"] == "activated"
    assert seen["horizontalOverflowPx"] <= 0  # fits a 390 px phone screen
    session = next(c for c in seen["cookies"] if c["name"] == "rls_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict" and not session["secure"]  # plain-http local exception
    for name in ("login-signed-in-phone.png", "login-key-activated.png"):
        assert (shots / name).stat().st_size > 5000

    user_data = json.loads((login_service.data_dir / "userData.json").read_text())
    assert user_data == {"orgId": seen["orgId"], "address": seen["address"], "userId": user_data["userId"], "email": email}

    from hivemind_exp.chain.client import ChainReader

    auth = {"Authorization": f"Bearer {seen['apiKey']}"}
    from tests.fixtures.login import register_body

    body = register_body(seen["orgId"], seen["address"], login_chain.address)
    peer = body["peerId"]
    r2 = httpx.post(f"{login_service.url}/api/register-peer", json=body, headers=auth, timeout=60)
    assert r2.status_code == 200, r2.text
    reader = ChainReader(login_chain.rpc_url, login_chain.address)
    rnd, stage = reader.round_and_stage()
    r3 = httpx.post(f"{login_service.url}/api/submit-reward", headers=auth, timeout=60,
                    json={"orgId": seen["orgId"], "roundNumber": rnd, "stageNumber": stage, "reward": 42, "peerId": peer})
    assert r3.status_code == 200, r3.text
    assert reader.peer_ids_of(seen["address"]) == [peer] and reader.total_rewards([peer]) == [42]
