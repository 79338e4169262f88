"""SwarmCoordinator on a real anvil through web3.py: every function, refusal, role check and event."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account

from hivemind_exp.chain.anvil import ANVIL_DEV_KEYS
from hivemind_exp.chain.artifact import load_artifact
from hivemind_exp.chain.errors import ChainRevert
from tests.fixtures.chain import DeployedContract, send_tx

pytestmark = pytest.mark.chain

ADDR = [Account.from_key(k).address for k in ANVIL_DEV_KEYS]
ROLES = ("OWNER_ROLE", "STAGE_MANAGER_ROLE", "BOOTNODE_MANAGER_ROLE")


def events(dc: DeployedContract, tx_hash: Any, name: str) -> list[dict[str, Any]]:
    w3, contract = dc.web3_contract()
    receipt = w3.eth.get_transaction_receipt(tx_hash)
    from web3.logs import DISCARD

    return [dict(e["args"]) for e in getattr(contract.events, name)().process_receipt(receipt, errors=DISCARD)]


def refused(name: str):
    """pytest.raises for a ChainRevert, checked by the caller against `name`."""
    return pytest.raises(ChainRevert, match=rf"^{name}:")


def test_initial_state_and_roles(deployed_contract: DeployedContract) -> None:
    c = deployed_contract.client(0)
    assert (c.current_round(), c.current_stage(), c.stage_count()) == (0, 0, 3)
    assert c.bootnodes() == [] and c.unique_voters() == 0 and c.unique_voted_peers() == 0
    for role in ROLES:
        assert c.has_role(role, ADDR[0]) and not c.has_role(role, ADDR[1])
    w3, contract = deployed_contract.web3_contract()
    assert contract.functions.UPGRADE_INTERFACE_VERSION().call() == "5.0.0"
    assert contract.functions.OWNER_ROLE().call() == w3.keccak(text="OWNER_ROLE")


def test_grant_and_revoke_role(deployed_contract: DeployedContract) -> None:
    owner, other = deployed_contract.client(0), deployed_contract.client(1)
    with refused("OnlyOwner"):
        other.grant_role("STAGE_MANAGER_ROLE", ADDR[1])
    tx = owner.grant_role("STAGE_MANAGER_ROLE", ADDR[1]).tx_hash
    role = owner._call("STAGE_MANAGER_ROLE")
    assert events(deployed_contract, tx, "RoleGranted") == [{"role": role, "account": ADDR[1], "sender": ADDR[0]}]
    assert other.has_role("STAGE_MANAGER_ROLE", ADDR[1])
    other.update_stage_and_round()  # the role now works
    with refused("OnlyOwner"):
        other.revoke_role("STAGE_MANAGER_ROLE", ADDR[1])
    tx = owner.revoke_role("STAGE_MANAGER_ROLE", ADDR[1]).tx_hash
    assert events(deployed_contract, tx, "RoleRevoked") == [{"role": role, "account": ADDR[1], "sender": ADDR[0]}]
    with refused("OnlyStageManager"):
        other.update_stage_and_round()
    # Granting twice changes nothing and emits nothing.
    tx = owner.grant_role("OWNER_ROLE", ADDR[0]).tx_hash
    assert events(deployed_contract, tx, "RoleGranted") == []


def test_register_peer_and_lookups(deployed_contract: DeployedContract) -> None:
    a, b = deployed_contract.client(1), deployed_contract.client(2)
    tx = a.register_peer("QmAlpha").tx_hash
    assert events(deployed_contract, tx, "PeerRegistered") == [{"eoa": ADDR[1], "peerId": "QmAlpha"}]
    a.register_peer("QmAlpha2")
    b.register_peer("QmBeta")
    with refused("PeerIdAlreadyRegistered"):
        b.register_peer("QmAlpha")
    with refused("InvalidPeerId"):
        b.register_peer("")
    with refused("InvalidPeerId"):
        b.register_peer("Q" * 129)
    _, contract = deployed_contract.web3_contract()
    assert contract.functions.getPeerId([ADDR[1], ADDR[2], ADDR[3]]).call() == [["QmAlpha", "QmAlpha2"], ["QmBeta"], []]
    assert contract.functions.getEoa(["QmBeta", "QmAlpha2", "QmNobody"]).call() == [
        ADDR[2], ADDR[1], "0x0000000000000000000000000000000000000000"]
    assert a.eoa_of("QmNobody") is None and a.peer_ids_of(ADDR[1]) == ["QmAlpha", "QmAlpha2"]


def test_stage_and_round_advance(deployed_contract: DeployedContract) -> None:
    owner = deployed_contract.client(0)
    with refused("OnlyStageManager"):
        deployed_contract.client(1).update_stage_and_round()
    seen = []
    for _ in range(4):
        result, rs = owner.update_stage_and_round()
        seen.append(rs)
        stage_events = events(deployed_contract, result.tx_hash, "StageAdvanced")
        assert stage_events == [{"roundNumber": rs[0], "newStage": rs[1]}]
        round_events = events(deployed_contract, result.tx_hash, "RoundAdvanced")
        assert round_events == ([{"newRoundNumber": 1}] if rs == (1, 0) else [])
    assert seen == [(0, 1), (0, 2), (1, 0), (1, 1)]
    # updateStageAndRound returns the new pair too (seen through eth_call).
    _, contract = deployed_contract.web3_contract()
    assert contract.functions.updateStageAndRound().call({"from": ADDR[0]}) == [1, 2]


def test_bootnodes(deployed_contract: DeployedContract) -> None:
    owner, other = deployed_contract.client(0), deployed_contract.client(1)
    with refused("OnlyBootnodeManager"):
        other.add_bootnodes(["/ip4/1.1.1.1/tcp/1"])
    tx = owner.add_bootnodes(["/a", "/b", "/c"]).tx_hash
    assert events(deployed_contract, tx, "BootnodesAdded") == [{"manager": ADDR[0], "count": 3}]
    assert owner.bootnodes() == ["/a", "/b", "/c"]
    _, contract = deployed_contract.web3_contract()
    assert contract.functions.getBootnodesCount().call() == 3
    with refused("InvalidBootnodeIndex"):
        owner.remove_bootnode(3)
    with refused("OnlyBootnodeManager"):
        other.remove_bootnode(0)
    tx = owner.remove_bootnode(0).tx_hash
    assert events(deployed_contract, tx, "BootnodeRemoved") == [{"manager": ADDR[0], "index": 0}]
    assert owner.bootnodes() == ["/c", "/b"], "last entry fills the gap"
    owner.remove_bootnode(1)
    assert owner.bootnodes() == ["/c"]
    with refused("OnlyBootnodeManager"):
        other.clear_bootnodes()
    tx = owner.clear_bootnodes().tx_hash
    assert events(deployed_contract, tx, "AllBootnodesCleared") == [{"manager": ADDR[0]}]
    assert owner.bootnodes() == [] and contract.functions.getBootnodesCount().call() == 0
    owner.add_bootnodes(["/d"])
    assert owner.bootnodes() == ["/d"], "a cleared list starts empty, not with old entries"
    owner.grant_role("BOOTNODE_MANAGER_ROLE", ADDR[1])
    other.add_bootnodes(["/e"])
    assert owner.bootnodes() == ["/d", "/e"]


def test_submit_reward_rules_and_totals(deployed_contract: DeployedContract) -> None:
    owner, a, b = deployed_contract.client(0), deployed_contract.client(1), deployed_contract.client(2)
    a.register_peer("QmA")
    b.register_peer("QmB")
    with refused("InvalidRoundNumber"):
        a.submit_reward(1, 0, 10, "QmA")
    with refused("InvalidStageNumber"):
        a.submit_reward(0, 3, 10, "QmA")
    with refused("StageOutOfBounds"):
        a.submit_reward(0, 1, 10, "QmA")
    with refused("InvalidVoterPeerId"):
        a.submit_reward(0, 0, 10, "QmB")
    with refused("InvalidVoterPeerId"):
        a.submit_reward(0, 0, 10, "QmUnregistered")
    tx = a.submit_reward(0, 0, 1500, "QmA").tx_hash
    assert events(deployed_contract, tx, "RewardSubmitted") == [
        {"account": ADDR[1], "roundNumber": 0, "stageNumber": 0, "reward": 1500, "peerId": "QmA"}]
    assert events(deployed_contract, tx, "CumulativeRewardsUpdated") == [
        {"account": ADDR[1], "peerId": "QmA", "totalRewards": 1500}]
    with refused("RewardAlreadySubmitted"):
        a.submit_reward(0, 0, 1, "QmA")
    owner.update_stage_and_round()
    owner.update_stage_and_round()
    owner.update_stage_and_round()  # round 1, stage 0: old stages of round 0 still accept late rewards
    a.submit_reward(0, 2, -400, "QmA")
    tx = a.submit_reward(1, 0, 250, "QmA").tx_hash
    assert events(deployed_contract, tx, "CumulativeRewardsUpdated")[0]["totalRewards"] == 1350
    b.submit_reward(0, 2, 7, "QmB")
    assert a.total_rewards(["QmA", "QmB", "QmNone"]) == [1350, 7, 0]
    assert a.round_stage_rewards(0, 2, [ADDR[1], ADDR[2], ADDR[3]]) == [-400, 7, 0]
    assert a.reward_on_chain(0, 2, "QmA") and not a.reward_on_chain(0, 1, "QmA")
    _, contract = deployed_contract.web3_contract()
    assert contract.functions.hasSubmittedRoundStageReward(1, 0, ADDR[1]).call()
    assert not contract.functions.hasSubmittedRoundStageReward(1, 0, ADDR[2]).call()


def test_submit_winners_rules_votes_and_leaderboards(deployed_contract: DeployedContract) -> None:
    owner = deployed_contract.client(0)
    voters = [deployed_contract.client(i) for i in (1, 2, 3)]
    for i, v in enumerate(voters):
        v.register_peer(f"QmV{i}")
    v0, v1, v2 = voters
    with refused("InvalidRoundNumber"):
        v0.submit_winners(1, ["QmX"], "QmV0")
    with refused("InvalidVoterPeerId"):
        v0.submit_winners(0, ["QmX"], "QmV1")
    with refused("InvalidVote"):
        v0.submit_winners(0, [], "QmV0")
    with refused("InvalidVote"):
        v0.submit_winners(0, ["QmX", "QmY", "QmX"], "QmV0")
    with refused("InvalidVote"):
        v0.submit_winners(0, ["QmX", ""], "QmV0")
    with refused("InvalidVote"):
        v0.submit_winners(0, [f"Qm{i}" for i in range(33)], "QmV0")
    tx = v0.submit_winners(0, ["QmX", "QmY"], "QmV0").tx_hash
    assert events(deployed_contract, tx, "WinnerSubmitted") == [
        {"account": ADDR[1], "peerId": "QmV0", "roundNumber": 0, "winners": ["QmX", "QmY"]}]
    with refused("WinnerAlreadyVoted"):
        v0.submit_winners(0, ["QmZ"], "QmV0")
    v1.submit_winners(0, ["QmY"], "QmV1")
    owner.update_stage_and_round()
    owner.update_stage_and_round()
    owner.update_stage_and_round()
    v0.submit_winners(1, ["QmY", "QmZ"], "QmV0")
    v2.submit_winners(0, ["QmZ"], "QmV2")  # a late vote for an earlier round is fine
    assert v0.voter_votes(0, "QmV0") == ["QmX", "QmY"] and v0.voter_votes(1, "QmV1") == []
    assert v0.winners_on_chain(1, "QmV0") and not v0.winners_on_chain(1, "QmV1")
    assert [v0.voter_vote_count(p) for p in ("QmV0", "QmV1", "QmV2", "QmNone")] == [2, 1, 1, 0]
    assert [v0.peer_vote_count(0, p) for p in ("QmX", "QmY", "QmZ")] == [1, 2, 1]
    assert [v0.peer_vote_count(1, p) for p in ("QmX", "QmY", "QmZ")] == [0, 1, 1]
    assert [v0.total_wins(p) for p in ("QmX", "QmY", "QmZ", "QmNone")] == [1, 3, 2, 0]
    assert v0.unique_voters() == 3 and v0.unique_voted_peers() == 3
    winners = [(e.peer_id, e.count) for e in v0.winner_leaderboard(0, 100)]
    assert winners == [("QmY", 3), ("QmZ", 2), ("QmX", 1)]
    assert [(e.peer_id, e.count) for e in v0.winner_leaderboard(1, 2)] == [("QmZ", 2)]
    assert v0.winner_leaderboard(5, 10) == [] and v0.winner_leaderboard(2, 1) == []
    voters_board = [(e.peer_id, e.count) for e in v0.voter_leaderboard(0, 3)]
    assert voters_board[0] == ("QmV0", 2) and sorted(voters_board[1:]) == [("QmV1", 1), ("QmV2", 1)]


def test_leaderboard_update_cost_does_not_grow_with_peers(deployed_contract: DeployedContract) -> None:
    """A vote costs about the same with 3 or 60 ranked peers: no loop over peers in a transaction.

    (A loop touching each ranked peer would add >= 57 x 2100 gas of cold reads alone.)"""
    a, b = deployed_contract.client(1), deployed_contract.client(2)
    owner = deployed_contract.client(0)
    a.register_peer("QmA")
    b.register_peer("QmB")
    a.submit_winners(0, ["QmW0", "QmW1", "QmW2"], "QmA")
    owner.update_stage_and_round(), owner.update_stage_and_round(), owner.update_stage_and_round()
    small = a.submit_winners(1, ["QmW1"], "QmA").gas_used  # QmW1 moves up among 3 ranked peers
    b.submit_winners(0, [f"QmN{i}" for i in range(30)], "QmB")
    b.submit_winners(1, [f"QmM{i}" for i in range(27)], "QmB")
    assert a.unique_voted_peers() == 60
    owner.update_stage_and_round(), owner.update_stage_and_round(), owner.update_stage_and_round()
    large = a.submit_winners(2, ["QmW2"], "QmA").gas_used  # QmW2 moves up among 60 ranked peers
    assert large < small + 20_000, (small, large)
    board = a.winner_leaderboard(0, 100)
    counts = [e.count for e in board]
    assert counts == sorted(counts, reverse=True) and board[0].peer_id == "QmW1" and board[0].count == 2


def test_initialize_only_once(deployed_contract: DeployedContract) -> None:
    dc = deployed_contract
    with refused("InvalidInitialization"):
        send_tx(dc.rpc_url, ANVIL_DEV_KEYS[1], dc.address, "initialize", ADDR[1])
    with refused("InvalidInitialization"):
        send_tx(dc.rpc_url, ANVIL_DEV_KEYS[1], dc.implementation, "initialize", ADDR[1])


def test_uups_upgrade(deployed_contract: DeployedContract) -> None:
    dc = deployed_contract
    a = dc.client(1)
    a.register_peer("QmKeep")
    w3, contract = dc.web3_contract()
    slot = "0x360894a13ba1a3210667c828492db98dca3e2076cc3735a920a3ca505d382bbc"
    impl_contract = w3.eth.contract(address=dc.implementation, abi=load_artifact().abi)
    assert "0x" + bytes(impl_contract.functions.proxiableUUID().call()).hex() == slot
    with refused("UUPSUnauthorizedCallContext"):
        try:
            contract.functions.proxiableUUID().call()
        except Exception as exc:
            from hivemind_exp.chain.client import map_web3_error

            raise map_web3_error(exc, load_artifact().abi, "proxiableUUID") from exc
    # A second logic contract to upgrade to.
    logic = w3.eth.contract(abi=load_artifact().abi, bytecode=load_artifact().bytecode)
    acct = Account.from_key(ANVIL_DEV_KEYS[0])
    tx = logic.constructor().build_transaction({"from": acct.address,
                                                "nonce": w3.eth.get_transaction_count(acct.address, "pending")})
    new_impl = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction), timeout=30)["contractAddress"]

    with refused("OnlyOwner"):
        send_tx(dc.rpc_url, ANVIL_DEV_KEYS[1], dc.address, "upgradeToAndCall", new_impl, b"")
    with refused("ERC1967InvalidImplementation"):
        send_tx(dc.rpc_url, ANVIL_DEV_KEYS[0], dc.address, "upgradeToAndCall", ADDR[5], b"")
    with refused("UUPSUnauthorizedCallContext"):
        send_tx(dc.rpc_url, ANVIL_DEV_KEYS[0], dc.implementation, "upgradeToAndCall", new_impl, b"")
    with refused("ERC1967NonPayable"):
        send_tx(dc.rpc_url, ANVIL_DEV_KEYS[0], dc.address, "upgradeToAndCall", new_impl, b"", value=1)
    init_again = contract.encode_abi("initialize", [ADDR[0]])
    with refused("InvalidInitialization"):  # a revert inside the follow-up call is passed through
        send_tx(dc.rpc_url, ANVIL_DEV_KEYS[0], dc.address, "upgradeToAndCall", new_impl, init_again)
    receipt = send_tx(dc.rpc_url, ANVIL_DEV_KEYS[0], dc.address, "upgradeToAndCall", new_impl,
                      contract.encode_abi("currentRound", []))
    upgraded = [dict(e["args"]) for e in contract.events.Upgraded().process_receipt(receipt)]
    assert upgraded == [{"implementation": new_impl}]
    stored = w3.eth.get_storage_at(dc.address, int(slot, 16))
    assert "0x" + bytes(stored)[-20:].hex() == new_impl.lower()
    assert a.eoa_of("QmKeep") == ADDR[1], "state survives the upgrade"
    assert a.has_role("OWNER_ROLE", ADDR[0])
