"""Relay back-end against the real login service (`rl-swarm login-server` on anvil).

Uses the login fixtures (`tests/fixtures/login.py`): a signed-up user with an activated key.
Does not move the shared chain's round/stage (other tests use that chain too).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from hivemind_exp.chain.anvil import free_port
from hivemind_exp.chain.client import build_client, ensure_registered
from hivemind_exp.chain.errors import ChainRevert, ChainUnavailable, RelayRefused
from hivemind_exp.chain.outbox import Outbox, OutboxWorker
from hivemind_exp.chain.proof import PeerKey
from hivemind_exp.chain.relay import RelayChainClient
from hivemind_exp.chain.settings import ChainSettings
from hivemind_exp.common.settings_base import load_settings

pytestmark = pytest.mark.chain

def _relay(login_chain: Any, login_service: Any, org_id: str, api_key: str) -> RelayChainClient:
    s = load_settings(ChainSettings, chain_mode="relay", login_url=login_service.url, org_id=org_id, api_key=api_key,
                      rpc_url=login_chain.rpc_url, contract_address=login_chain.address, receipt_timeout=30)
    client = build_client(s)
    assert isinstance(client, RelayChainClient)
    return client


def test_relay_client_with_the_login_service(login_chain: Any, login_service: Any, signed_up: Any,
                                             tmp_path: Path) -> None:
    client = _relay(login_chain, login_service, signed_up.org_id, signed_up.api_key)
    assert client.api_key_activated()
    # No wallet address configured: the client asks the login service, never guesses from the chain.
    assert client.account_address() == signed_up.address
    key = PeerKey.generate()  # the shared chain outlives this test: a fresh peer each run
    peer = key.peer_id
    assert ensure_registered(client, key) is not None  # the node signs the proof, the service sends it
    assert ensure_registered(client, key) is None
    assert client.eoa_of(peer).lower() == signed_up.address.lower()
    with pytest.raises(ChainRevert) as dup:
        client.register_peer(key)
    assert dup.value.error_name == "PeerIdAlreadyRegistered" and dup.value.already_done

    rnd, _stage = client.round_and_stage()
    box = Outbox(tmp_path / "outbox.sqlite")
    box.enqueue_reward(rnd, 0, 1234, peer)
    box.enqueue_winners(rnd, [peer], peer)
    worker = OutboxWorker(box, client, base_delay=0.2, max_delay=1.0, poll_interval=0.2).start()
    try:
        deadline = time.monotonic() + 60
        while box.counts().pending and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.stop()
    assert box.counts().as_dict() == {"pending": 0, "confirmed": 2, "failed": 0}, box.entries()
    assert all(e.tx_hash and client.transaction_status(e.tx_hash) == "success" for e in box.entries())
    assert client.total_rewards([peer]) == [1234] and client.winners_on_chain(rnd, peer)

    with pytest.raises(ChainRevert) as again:
        client.submit_reward(rnd, 0, 1, peer)
    assert again.value.error_name == "RewardAlreadySubmitted" and again.value.already_done
    with pytest.raises(ChainRevert) as ahead:
        client.submit_reward(rnd + 5, 0, 1, peer)
    assert ahead.value.error_name == "InvalidRoundNumber" and ahead.value.retryable

    # With the user's wallet address known, a peer ID owned by another wallet is spotted up front.
    knowing = load_settings(ChainSettings, chain_mode="relay", login_url=login_service.url, org_id=signed_up.org_id,
                            api_key=signed_up.api_key, rpc_url=login_chain.rpc_url,
                            contract_address=login_chain.address, relay_wallet_address=signed_up.address)
    aware = build_client(knowing)
    assert aware is not None and aware.account_address() == signed_up.address
    assert ensure_registered(aware, key) is None
    from hivemind_exp.chain.anvil import ANVIL_DEV_KEYS
    from hivemind_exp.chain.wallet import WalletChainClient

    foreign = PeerKey.generate()
    WalletChainClient(login_chain.rpc_url, login_chain.address, ANVIL_DEV_KEYS[9]).register_peer(foreign)
    for c in (aware, client):  # with or without a configured address: someone else's peer is not ours
        with pytest.raises(ChainRevert, match="belongs to wallet"):
            ensure_registered(c, foreign)
        assert not c.reward_on_chain(rnd, 0, foreign.peer_id)

    wrong = _relay(login_chain, login_service, signed_up.org_id, "not-the-key")
    with pytest.raises(RelayRefused) as refused:
        wrong.submit_reward(rnd, 1, 1, peer)
    assert refused.value.status in (401, 403)


def test_relay_client_when_the_login_service_is_down(login_chain: Any) -> None:
    s = load_settings(ChainSettings, chain_mode="relay", login_url=f"http://127.0.0.1:{free_port()}", org_id="org",
                      api_key="key", rpc_url=login_chain.rpc_url, contract_address=login_chain.address)
    client = build_client(s)
    assert client is not None
    with pytest.raises(ChainUnavailable, match="cannot reach the login service"):
        client.submit_reward(0, 0, 1, "QmDown")
    assert client.current_round() >= 0, "reads still work: they go to the RPC"
