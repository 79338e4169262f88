"""The login service as a process against a real anvil + SwarmCoordinator: every trainer endpoint,
auth failures, malformed bodies, replays, chain down, rate limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import time

import httpx
import pytest

from tests.fixtures.login import (LoginChain, LoginServiceProc, SignedUpUser, free_port,  # noqa: F401
                                  login_chain, login_service, register_body, sign_up_user, signed_up,
                                  start_login_service)

pytestmark = pytest.mark.chain


def post(svc: LoginServiceProc, path: str, body: Any, key: str | None = None, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{svc.url}{path}", json=body, headers=headers, timeout=60, **kw)


def test_trainer_flow_on_chain(login_chain: LoginChain, login_service: LoginServiceProc, signed_up: SignedUpUser) -> None:
    from hivemind_exp.chain.client import ChainReader

    u, svc = signed_up, login_service
    reader = ChainReader(login_chain.rpc_url, login_chain.address)
    assert reader._w3.eth.get_balance(u.address) > 0  # funded from anvil's dev account
    r = httpx.get(f"{svc.url}/api/get-api-key-status", params={"orgId": u.org_id})
    assert r.json() == {"orgId": u.org_id, "status": "activated"}

    r = httpx.get(f"{svc.url}/api/wallet-address", params={"orgId": u.org_id},
                  headers={"Authorization": f"Bearer {u.api_key}"})
    assert r.json() == {"orgId": u.org_id, "address": u.address}, r.text
    assert httpx.get(f"{svc.url}/api/wallet-address", params={"orgId": u.org_id}).status_code == 401
    assert u.client.wallet_address(u.api_key, u.org_id) == u.address

    from hivemind_exp.chain.proof import PeerKey

    key = PeerKey.generate()
    peer = key.peer_id
    # A proof signed for another wallet (or one without the key) does not register anything.
    other_wallet = register_body(u.org_id, "0x" + "11" * 20, login_chain.address, key)
    r = post(svc, "/api/register-peer", other_wallet, u.api_key)
    assert (r.status_code, r.json()["error"]) == (400, "InvalidPeerProof"), r.text
    assert reader.eoa_of(peer) is None
    body = register_body(u.org_id, u.address, login_chain.address, key)
    r = post(svc, "/api/register-peer", body, u.api_key)
    assert r.status_code == 200, r.text
    tx_hash = r.json()["txHash"]
    assert tx_hash.startswith("0x") and len(tx_hash) == 66
    assert reader.eoa_of(peer) == u.address and reader.peer_ids_of(u.address) == [peer]
    me = u.client._call("GET", "/api/auth/me")
    assert me["peerIds"] == [peer]

    r = post(svc, "/api/register-peer", body, u.api_key)
    assert (r.status_code, r.json()["error"]) == (409, "PeerIdAlreadyRegistered")

    rnd, stage = reader.round_and_stage()
    reward = {"orgId": u.org_id, "roundNumber": rnd, "stageNumber": stage, "reward": 1234, "peerId": peer}
    r = post(svc, "/api/submit-reward", reward, u.api_key)
    assert r.status_code == 200, r.text
    assert reader.total_rewards([peer]) == [1234]
    r = post(svc, "/api/submit-reward", reward, u.api_key)  # replay
    assert (r.status_code, r.json()["error"]) == (409, "RewardAlreadySubmitted")
    assert reader.total_rewards([peer]) == [1234]
    r = post(svc, "/api/submit-reward", {**reward, "roundNumber": rnd + 5}, u.api_key)
    assert (r.status_code, r.json()["error"]) == (400, "InvalidRoundNumber")
    r = post(svc, "/api/submit-reward", {**reward, "stageNumber": 99}, u.api_key)
    assert (r.status_code, r.json()["error"]) == (400, "InvalidStageNumber")

    vote = {"orgId": u.org_id, "roundNumber": rnd, "winners": [peer], "peerId": peer}
    r = post(svc, "/api/submit-winner", vote, u.api_key)
    assert r.status_code == 200, r.text
    assert reader.voter_votes(rnd, peer) == [peer]
    r = post(svc, "/api/submit-winner", vote, u.api_key)
    assert (r.status_code, r.json()["error"]) == (409, "WinnerAlreadyVoted")
    r = post(svc, "/api/submit-winner", {**vote, "peerId": "QmNotMine"}, u.api_key)
    assert (r.status_code, r.json()["error"]) == (400, "InvalidVoterPeerId")


def test_keys_orgs_and_bodies_are_checked(login_chain: LoginChain, login_service: LoginServiceProc,
                                          signed_up: SignedUpUser) -> None:
    svc, u = login_service, signed_up
    other = sign_up_user(svc.url)
    body = {"orgId": u.org_id, "peerId": "QmAuthTest"}
    bodies = {"/api/register-peer": register_body(u.org_id, u.address, login_chain.address),
              "/api/submit-reward": {**body, "roundNumber": 0, "stageNumber": 0, "reward": 1},
              "/api/submit-winner": {**body, "roundNumber": 0, "winners": ["QmAuthTest"]}}
    cases = [(None, 401, "MissingApiKey"), ("rlsk_wrong", 401, "InvalidApiKey"), ("x" * 500, 401, "InvalidApiKey"),
             (other.api_key, 403, "WrongOrg")]
    for path, body in bodies.items():
        for key, status, error in cases:
            r = post(svc, path, body, key)
            assert (r.status_code, r.json()["error"]) == (status, error), (path, key, r.text)
            if status == 401:
                assert r.headers["www-authenticate"].startswith("Bearer")
    body = bodies["/api/register-peer"]
    r = httpx.post(f"{svc.url}/api/register-peer", json=body, headers={"Authorization": "Basic abc"})
    assert r.status_code == 401
    r = post(svc, "/api/register-peer", {**body, "orgId": "no-such-org"}, u.api_key)
    assert (r.status_code, r.json()["error"]) == (404, "UnknownOrg")
    # no org-existence oracle: an unknown org reads "pending", like a known org without a key
    assert httpx.get(f"{svc.url}/api/get-api-key-status", params={"orgId": "no-such-org"}).json()["status"] == "pending"
    assert httpx.get(f"{svc.url}/api/get-api-key-status").status_code == 422

    # malformed bodies and wrong types are 422 before anything reaches the chain
    k, o = u.api_key, u.org_id
    bad_bodies = [
        ("/api/register-peer", {"orgId": o}),
        ("/api/register-peer", {"orgId": o, "peerId": ""}),
        ("/api/register-peer", {"orgId": o, "peerId": "not base58 0OIl"}),
        ("/api/register-peer", {"orgId": o, "peerId": "QmA", "extra": 1}),
        ("/api/register-peer", {"orgId": o, "peerId": "QmA"}),  # no key proof
        ("/api/register-peer", {**body, "publicKey": "0x", "signature": "0x00"}),
        ("/api/register-peer", {**body, "publicKey": "0xzz", "signature": "0x00"}),
        ("/api/register-peer", {**body, "publicKey": "0x" + "00" * 1025, "signature": "0x00"}),
        ("/api/register-peer", ["not", "an", "object"]),
        ("/api/submit-reward", {"orgId": o, "roundNumber": "1", "stageNumber": 0, "reward": 1, "peerId": "QmA"}),
        ("/api/submit-reward", {"orgId": o, "roundNumber": 0, "stageNumber": 0, "reward": 1.5, "peerId": "QmA"}),
        ("/api/submit-reward", {"orgId": o, "roundNumber": -1, "stageNumber": 0, "reward": 1, "peerId": "QmA"}),
        ("/api/submit-reward", {"orgId": o, "roundNumber": 0, "stageNumber": 0, "reward": 2**255, "peerId": "QmA"}),
        ("/api/submit-winner", {"orgId": o, "roundNumber": 0, "winners": [], "peerId": "QmA"}),
        ("/api/submit-winner", {"orgId": o, "roundNumber": 0, "winners": ["QmA"] * 33, "peerId": "QmA"}),
        ("/api/submit-winner", {"orgId": o, "roundNumber": 0, "winners": "QmA", "peerId": "QmA"}),
    ]
    for path, bad in bad_bodies:
        r = post(svc, path, bad, k)
        assert r.status_code == 422, (path, bad, r.text)
    r = httpx.post(f"{svc.url}/api/register-peer", content=b"{not json", headers={"Authorization": f"Bearer {k}",
                                                                                     "Content-Type": "application/json"})
    assert r.status_code == 422
    r = httpx.post(f"{svc.url}/api/register-peer", content=b"x" * 200_000,
                   headers={"Authorization": f"Bearer {k}", "Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"]) == (413, "PayloadTooLarge")

    # revoke: the old key stops working, status says so; a new activation works again
    assert u.client.revoke_key() == "revoked"
    assert httpx.get(f"{svc.url}/api/get-api-key-status", params={"orgId": o}).json()["status"] == "revoked"
    r = post(svc, "/api/register-peer", body, k)
    assert (r.status_code, r.json()["error"]) == (401, "RevokedApiKey")
    new_key = u.client.activate_key().api_key
    assert post(svc, "/api/register-peer", register_body(o, u.address, login_chain.address),
                new_key).status_code == 200
    other.client.close()


def test_chain_down_gives_503_with_retry_after(tmp_path: Any, start_login_service: Callable[..., LoginServiceProc]) -> None:
    from hivemind_exp.chain.anvil import ANVIL_DEV_KEYS, AnvilProcess
    from hivemind_exp.chain.deploy import deploy_contract

    anvil = AnvilProcess(port=free_port()).start(timeout=30)
    try:
        dep, _ = deploy_contract(anvil.rpc_url, ANVIL_DEV_KEYS[0], deployment_path=tmp_path / "dep.json")
        svc = start_login_service(rpc_url=anvil.rpc_url, contract_address=dep.address, retry_after_s=7)
        u = sign_up_user(svc.url)
        first = register_body(u.org_id, u.address, dep.address)
        assert post(svc, "/api/register-peer", first, u.api_key).status_code == 200
        assert httpx.get(f"{svc.url}/api/healthz").json()["chain"] == "ok"
    finally:
        anvil.stop()
    for path, body in [("/api/register-peer", register_body(u.org_id, u.address, dep.address)),
                       ("/api/submit-reward", {"orgId": u.org_id, "roundNumber": 0, "stageNumber": 0, "reward": 5,
                                               "peerId": first["peerId"]}),
                       ("/api/submit-winner", {"orgId": u.org_id, "roundNumber": 0, "winners": [first["peerId"]],
                                               "peerId": first["peerId"]})]:
        r = post(svc, path, body, u.api_key)
        assert r.status_code == 503, r.text
        assert r.json()["error"] == "ChainUnavailable" and r.headers["retry-after"] == "7"
    # Health answers from the background probe, which the failed calls woke up.
    deadline = time.monotonic() + 15
    while httpx.get(f"{svc.url}/api/healthz").json()["chain"] != "down" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert httpx.get(f"{svc.url}/api/healthz").json() == {"status": "ok", "chain": "down", "chainId": None}
    assert u.client._call("GET", "/api/auth/me")["peerIds"] is None
    # sign-up still works with the chain down; the wallet is funded later
    late = sign_up_user(svc.url)
    assert late.address.startswith("0x")
    assert "Traceback" not in svc.log_text()
    u.client.close()
    late.client.close()


def test_write_rate_limit_per_org(login_chain: LoginChain, start_login_service: Callable[..., LoginServiceProc]) -> None:
    svc = start_login_service(rpc_url=login_chain.rpc_url, contract_address=login_chain.address,
                              writes_burst=2, writes_per_second=0.05)
    u = sign_up_user(svc.url)
    other = sign_up_user(svc.url)
    codes = [post(svc, "/api/submit-winner", {"orgId": u.org_id, "roundNumber": 0, "winners": ["QmW"],
                                              "peerId": "QmNeverRegistered"}, u.api_key) for _ in range(3)]
    assert [c.status_code for c in codes] == [400, 400, 429]
    assert codes[2].json()["error"] == "RateLimited" and int(codes[2].headers["retry-after"]) >= 1
    # another org has its own bucket
    r = post(svc, "/api/submit-winner", {"orgId": other.org_id, "roundNumber": 0, "winners": ["QmW"],
                                         "peerId": "QmNeverRegistered"}, other.api_key)
    assert r.status_code == 400
    u.client.close()
    other.client.close()
