"""Wallet back-end, client factory, deploy/reuse and the anvil helper on real anvil processes."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from eth_account import Account

from hivemind_exp.chain.anvil import ANVIL_DEV_KEYS, AnvilProcess, free_port, port_in_use, rpc_request
from hivemind_exp.chain.client import ChainClient, ChainReader, build_client, ensure_registered
from hivemind_exp.chain.deploy import Deployment, deploy_contract
from hivemind_exp.chain.errors import ChainConfigError, ChainRevert, ChainUnavailable
from hivemind_exp.chain.settings import ChainSettings
from hivemind_exp.chain.wallet import WalletChainClient
from hivemind_exp.common.settings_base import load_settings
from tests.fixtures.chain import DeployedContract, event_log, peer_id, peer_key, register

pytestmark = pytest.mark.chain

ADDR = [Account.from_key(k).address for k in ANVIL_DEV_KEYS]


def test_anvil_dev_keys_match_the_running_chain(anvil: AnvilProcess) -> None:
    assert [a.lower() for a in rpc_request(anvil.rpc_url, "eth_accounts")] == [a.lower() for a in ADDR]


def test_build_client_from_settings_and_deployment_file(deployed_contract: DeployedContract, tmp_path: Path) -> None:
    dc = deployed_contract
    key_file = tmp_path / "wallet.key"
    key_file.write_text(ANVIL_DEV_KEYS[4])
    s = load_settings(ChainSettings, chain_mode="wallet", wallet_key_file=str(key_file), rpc_url=dc.rpc_url,
                      deployment_file=str(dc.deployment_path))
    client = build_client(s)
    assert isinstance(client, WalletChainClient) and isinstance(client, ChainClient)
    assert client.contract_address == dc.address and client.account_address() == ADDR[4]
    assert build_client(load_settings(ChainSettings, chain_mode="off")) is None
    with pytest.raises(ChainConfigError, match="rl-swarm chain"):
        build_client(load_settings(ChainSettings, chain_mode="wallet", wallet_key_file=str(key_file),
                                   deployment_file=str(tmp_path / "missing.json")))


def test_wallet_writes_reads_and_registration(deployed_contract: DeployedContract) -> None:
    dc = deployed_contract
    client = dc.client(4)
    sent: list[str] = []
    tx = client.register_peer(peer_key("wallet"), on_sent=sent.append)
    assert sent == [tx.tx_hash] and client.transaction_status(tx.tx_hash) == "success"
    assert client.transaction_status("0x" + "12" * 32) == "unknown"
    assert ensure_registered(client, peer_key("wallet")) is None
    assert ensure_registered(client, peer_key("wallet2")) is not None
    assert client.peer_ids_of(ADDR[4]) == [peer_id("wallet"), peer_id("wallet2")]
    with pytest.raises(ChainRevert, match="belongs to wallet"):
        ensure_registered(dc.client(5), peer_key("wallet"))
    assert client.round_and_stage() == (0, 0)


def test_concurrent_sends_from_one_wallet_get_distinct_nonces(deployed_contract: DeployedContract) -> None:
    dc = deployed_contract
    owner, client = dc.client(0), dc.client(4)
    threads_peer = register(client, "threads")
    for _ in range(5):
        owner.update_stage_and_round()  # round 1, stage 2: six (round, stage) pairs open
    pairs = [(r, s) for r in range(2) for s in range(3)]
    errors: list[BaseException] = []

    def send(r: int, s: int) -> None:
        try:
            client.submit_reward(r, s, 10 * r + s, threads_peer)
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=send, args=p) for p in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(event_log(dc, "RewardSubmitted", account=ADDR[4])) == 6
    assert client.total_rewards([threads_peer]) == [sum(10 * r + s for r, s in pairs)]
    # The public event reader (what the Compose check uses) sees the same six submissions.
    seen = client.reward_events(threads_peer)
    assert sorted((e.round, e.stage, e.reward) for e in seen) == [(r, s, 10 * r + s) for r, s in pairs]
    assert {e.account for e in seen} == {ADDR[4]} and all(len(e.tx_hash) == 66 for e in seen)
    assert client.reward_events("no-such-peer") == []


def test_rpc_down_and_wrong_chain_are_clear(deployed_contract: DeployedContract, anvil: AnvilProcess) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    client = WalletChainClient(dead, deployed_contract.address, ANVIL_DEV_KEYS[4], timeout=2)
    with pytest.raises(ChainUnavailable, match="did not answer"):
        client.current_round()
    with pytest.raises(ChainUnavailable):
        client.register_peer(peer_key("dead"))
    wrong_chain = WalletChainClient(anvil.rpc_url, deployed_contract.address, ANVIL_DEV_KEYS[4],
                                    expected_chain_id=1)
    with pytest.raises(ChainConfigError, match="expected 1"):
        wrong_chain.register_peer(peer_key("wrong-chain"))
    nothing_there = ChainReader(anvil.rpc_url, ADDR[9])
    with pytest.raises(ChainConfigError, match="no contract at"):
        nothing_there.check()
    with pytest.raises(ChainConfigError, match="not an EVM address"):
        ChainReader(anvil.rpc_url, "0x1234")
    with pytest.raises(ChainConfigError, match="not a valid"):
        WalletChainClient(anvil.rpc_url, deployed_contract.address, "0x" + "00" * 32)


def test_deploy_reuses_and_configures(anvil: AnvilProcess, tmp_path: Path) -> None:
    path = tmp_path / "run" / "deployment.json"
    boot = ["/ip4/127.0.0.1/tcp/38331/p2p/QmBoot"]
    first, reused = deploy_contract(anvil.rpc_url, ANVIL_DEV_KEYS[0], coordinator_address=ADDR[1],
                                    bootnodes=boot, deployment_path=path, reuse=False)
    assert not reused
    data = json.loads(path.read_text())
    assert data["address"] == first.address and data["chain_id"] == 31337 and data["deployer"] == ADDR[0]
    assert data["coordinator"] == ADDR[1] and len(data["artifact_sha256"]) == 64
    reader = ChainReader(anvil.rpc_url, first.address)
    assert reader.has_role("STAGE_MANAGER_ROLE", ADDR[1]) and reader.has_role("BOOTNODE_MANAGER_ROLE", ADDR[1])
    assert not reader.has_role("OWNER_ROLE", ADDR[1])
    assert reader.bootnodes() == boot

    again, reused = deploy_contract(anvil.rpc_url, ANVIL_DEV_KEYS[0], bootnodes=boot + ["/ip4/10.0.0.2/tcp/1"],
                                    deployment_path=path)
    assert reused and again.address == first.address
    assert reader.bootnodes() == boot + ["/ip4/10.0.0.2/tcp/1"], "bootnodes follow the latest request"
    # The coordinator is a stage manager: it can run the game clock.
    coord = WalletChainClient(anvil.rpc_url, first.address, ANVIL_DEV_KEYS[1])
    assert coord.update_stage_and_round()[1] == (0, 1)

    Deployment(**{**data, "address": ADDR[9]}).save(path)  # points at an account with no code
    fresh, reused = deploy_contract(anvil.rpc_url, ANVIL_DEV_KEYS[0], deployment_path=path)
    assert not reused and fresh.address != first.address
    assert Deployment.load(path).address == fresh.address


def test_anvil_state_file_keeps_the_chain_and_port_clash_is_clear(tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "chain" / "state.json"
    path = tmp_path / "deployment.json"
    with AnvilProcess(port, state_file=state, log_path=tmp_path / "anvil.log") as chain:
        dep, reused = deploy_contract(chain.rpc_url, ANVIL_DEV_KEYS[0], deployment_path=path)
        WalletChainClient(chain.rpc_url, dep.address, ANVIL_DEV_KEYS[2]).register_peer(peer_key("persist"))
        from hivemind_exp.chain.anvil import AnvilError

        with pytest.raises(AnvilError, match="already in use"):
            AnvilProcess(port).start(timeout=5)
    assert state.exists() and not port_in_use("127.0.0.1", port), "clean stop writes state and frees the port"
    with AnvilProcess(port, state_file=state) as chain:
        again, reused = deploy_contract(chain.rpc_url, ANVIL_DEV_KEYS[0], deployment_path=path)
        assert reused and again.address == dep.address
        assert ChainReader(chain.rpc_url, dep.address).eoa_of(peer_id("persist")) == ADDR[2]
