"""SwarmCoordinator on a real anvil through web3.py: every function, refusal, role check and event."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account

from hivemind_exp.chain.anvil import ANVIL_DEV_KEYS
from hivemind_exp.chain.artifact import load_artifact
from hivemind_exp.chain.errors import ChainRevert
from hivemind_exp.chain.proof import registration_message
from tests.fixtures.chain import DeployedContract, peer_id, peer_key, register, send_tx

pytestmark = pytest.mark.chain

ADDR = [Account.from_key(k).address for k in ANVIL_DEV_KEYS]
ROLES = ("OWNER_ROLE", "STAGE_MANAGER_ROLE", "BOOTNODE_MANAGER_ROLE")


def next_round(owner: Any) -> None:
    for _ in range(3):
        owner.update_stage_and_round()


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
    alpha, alpha2, beta = peer_id("alpha"), peer_id("alpha2"), peer_id("beta")
    assert alpha.startswith("Qm") and len(alpha) == 46
    tx = a.register_peer(peer_key("alpha"))
    assert events(deployed_contract, tx.tx_hash, "PeerRegistered") == [{"eoa": ADDR[1], "peerId": alpha}]
    assert 200_000 < tx.gas_used < 280_000, tx.gas_used  # RSA-2048 proof, measured ~251k
    register(a, "alpha2")
    register(b, "beta")
    with refused("PeerIdAlreadyRegistered"):
        b.register_peer(peer_key("alpha"))
    with refused("PeerProofRequired"):  # the 0.4.2 entry point only says what to use instead
        send_tx(deployed_contract.rpc_url, ANVIL_DEV_KEYS[2], deployed_contract.address, "registerPeer", "QmFresh")
    proof = peer_key("gamma").prove(b.chain_id(), deployed_contract.address, ADDR[2])
    with refused("InvalidPeerId"):
        b._transact("registerPeerWithProof", ["", proof.public_key, proof.signature], None)
    with refused("InvalidPeerId"):
        b._transact("registerPeerWithProof", ["Q" * 129, proof.public_key, proof.signature], None)
    with refused("InvalidPeerId"):  # '0' is not base58
        b._transact("registerPeerWithProof", [proof.peer_id[:-1] + "0", proof.public_key, proof.signature], None)
    _, contract = deployed_contract.web3_contract()
    assert contract.functions.getPeerId([ADDR[1], ADDR[2], ADDR[3]]).call() == [[alpha, alpha2], [beta], []]
    assert contract.functions.getEoa([beta, alpha2, "QmNobody"]).call() == [
        ADDR[2], ADDR[1], "0x0000000000000000000000000000000000000000"]
    assert a.eoa_of("QmNobody") is None and a.peer_ids_of(ADDR[1]) == [alpha, alpha2]


def test_registration_proof_is_checked(deployed_contract: DeployedContract) -> None:
    """Each part of the proof matters: key <-> peer ID, signature, and what the signature binds."""
    dc = deployed_contract
    a = dc.client(1)
    key, other = peer_key("proof-key"), peer_key("proof-other")
    chain_id = a.chain_id()
    _, contract = dc.web3_contract()
    good = key.prove(chain_id, dc.address, ADDR[1])
    assert contract.functions.registrationMessage(ADDR[1], key.peer_id).call() == registration_message(
        chain_id, dc.address, ADDR[1], key.peer_id), "client and contract must sign/check the same bytes"

    def attempt(peer: str, public_key: bytes, signature: bytes) -> None:
        a._transact("registerPeerWithProof", [peer, public_key, signature], None)

    bad = {
        "key of another peer": (key.peer_id, other.public_key, other.sign(b"x")),
        "signature by another key": (key.peer_id, key.public_key, other.prove(chain_id, dc.address, ADDR[1]).signature),
        "signed for another wallet": (key.peer_id, key.public_key, key.prove(chain_id, dc.address, ADDR[2]).signature),
        "signed for another chain": (key.peer_id, key.public_key, key.prove(chain_id + 1, dc.address, ADDR[1]).signature),
        "signed for another contract": (key.peer_id, key.public_key, key.prove(chain_id, ADDR[5], ADDR[1]).signature),
        "flipped signature bit": (key.peer_id, key.public_key, bytes([good.signature[0] ^ 1]) + good.signature[1:]),
        "short signature": (key.peer_id, key.public_key, good.signature[:-1]),
        "not a multihash": ("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG" + "2", key.public_key, good.signature),
    }
    for why, args in bad.items():
        with refused("InvalidPeerProof"):
            attempt(*args)
        assert a.eoa_of(key.peer_id) is None, why
    attempt(good.peer_id, good.public_key, good.signature)
    assert a.eoa_of(key.peer_id) == ADDR[1]


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
    pa, pb = register(a, "A"), register(b, "B")
    with refused("InvalidRoundNumber"):
        a.submit_reward(1, 0, 10, pa)
    with refused("InvalidStageNumber"):
        a.submit_reward(0, 3, 10, pa)
    with refused("StageOutOfBounds"):
        a.submit_reward(0, 1, 10, pa)
    with refused("InvalidVoterPeerId"):
        a.submit_reward(0, 0, 10, pb)
    with refused("InvalidVoterPeerId"):
        a.submit_reward(0, 0, 10, "QmUnregistered")
    for out_of_range in (1_000_001, -1_000_001, 10**60):
        with refused("RewardOutOfRange"):
            a.submit_reward(0, 0, out_of_range, pa)
    tx = a.submit_reward(0, 0, 1500, pa).tx_hash
    assert events(deployed_contract, tx, "RewardSubmitted") == [
        {"account": ADDR[1], "roundNumber": 0, "stageNumber": 0, "reward": 1500, "peerId": pa}]
    assert events(deployed_contract, tx, "CumulativeRewardsUpdated") == [
        {"account": ADDR[1], "peerId": pa, "totalRewards": 1500}]
    with refused("RewardAlreadySubmitted"):
        a.submit_reward(0, 0, 1, pa)
    next_round(owner)  # round 1, stage 0: the previous round still accepts late rewards
    a.submit_reward(0, 2, -400, pa)
    tx = a.submit_reward(1, 0, 250, pa).tx_hash
    assert events(deployed_contract, tx, "CumulativeRewardsUpdated")[0]["totalRewards"] == 1350
    b.submit_reward(0, 2, 7, pb)
    assert a.total_rewards([pa, pb, "QmNone"]) == [1350, 7, 0]
    assert a.round_stage_rewards(0, 2, [ADDR[1], ADDR[2], ADDR[3]]) == [-400, 7, 0]
    assert a.reward_on_chain(0, 2, pa) and not a.reward_on_chain(0, 1, pa)
    assert not b.reward_on_chain(0, 2, pa), "a reward of someone else's peer is never 'ours'"
    from hivemind_exp.chain.client import ChainReader

    reader = ChainReader(deployed_contract.rpc_url, deployed_contract.address)
    assert reader.reward_on_chain(0, 2, pa) and not reader.reward_on_chain(0, 1, pa), "a reader sees anyone's"
    _, contract = deployed_contract.web3_contract()
    assert contract.functions.hasSubmittedRoundStageReward(1, 0, ADDR[1]).call()
    assert not contract.functions.hasSubmittedRoundStageReward(1, 0, ADDR[2]).call()
    next_round(owner)  # round 2: round 0 is closed, round 1 still open
    with refused("RoundClosed"):
        a.submit_reward(0, 1, 5, pa)
    a.submit_reward(1, 1, 5, pa)
    # Bounds are inclusive.
    c = deployed_contract.client(3)
    pc = register(c, "C")
    c.submit_reward(2, 0, 1_000_000, pc)
    c.submit_reward(1, 0, -1_000_000, pc)
    assert c.total_rewards([pc]) == [0]


def test_two_peers_of_one_wallet_each_get_their_reward(deployed_contract: DeployedContract) -> None:
    """De-duplication is per (round, stage, peer): a wallet running two nodes loses nothing."""
    a = deployed_contract.client(1)
    p1, p2 = register(a, "twin1"), register(a, "twin2")
    a.submit_reward(0, 0, 100, p1)
    a.submit_reward(0, 0, 30, p2)
    with refused("RewardAlreadySubmitted"):
        a.submit_reward(0, 0, 1, p2)
    assert a.total_rewards([p1, p2]) == [100, 30]
    assert [a.peer_reward(0, 0, p) for p in (p1, p2)] == [100, 30]
    assert a.reward_on_chain(0, 0, p1) and a.reward_on_chain(0, 0, p2)
    assert a.round_stage_rewards(0, 0, [ADDR[1]]) == [130], "the 0.4.2 per-wallet view sums the wallet's peers"


def test_submit_winners_rules_votes_and_leaderboards(deployed_contract: DeployedContract) -> None:
    owner = deployed_contract.client(0)
    voters = [deployed_contract.client(i) for i in (1, 2, 3)]
    v_ids = [register(v, f"V{i}") for i, v in enumerate(voters)]
    x, y, z = (register(deployed_contract.client(4), n) for n in ("X", "Y", "Z"))
    v0, v1, v2 = voters
    with refused("InvalidRoundNumber"):
        v0.submit_winners(1, [x], v_ids[0])
    with refused("InvalidVoterPeerId"):
        v0.submit_winners(0, [x], v_ids[1])
    with refused("VoterNotParticipant"):  # no reward in round 0 yet
        v0.submit_winners(0, [x], v_ids[0])
    for i, v in enumerate(voters):
        v.submit_reward(0, 0, 10, v_ids[i])
    with refused("InvalidVote"):
        v0.submit_winners(0, [], v_ids[0])
    with refused("InvalidVote"):
        v0.submit_winners(0, [x, y, x], v_ids[0])
    with refused("InvalidVote"):
        v0.submit_winners(0, [x, ""], v_ids[0])
    with refused("InvalidVote"):
        v0.submit_winners(0, [x] * 33, v_ids[0])
    with refused("WinnerNotRegistered"):
        v0.submit_winners(0, [x, "QmNotRegistered"], v_ids[0])
    with refused("WinnerNotRegistered"):
        v0.submit_winners(0, ["<script>alert(1)</script>"], v_ids[0])
    tx = v0.submit_winners(0, [x, y], v_ids[0]).tx_hash
    assert events(deployed_contract, tx, "WinnerSubmitted") == [
        {"account": ADDR[1], "peerId": v_ids[0], "roundNumber": 0, "winners": [x, y]}]
    with refused("WinnerAlreadyVoted"):
        v0.submit_winners(0, [z], v_ids[0])
    v1.submit_winners(0, [y], v_ids[1])
    next_round(owner)
    v0.submit_reward(1, 0, 10, v_ids[0])
    v0.submit_winners(1, [y, z], v_ids[0])
    v2.submit_winners(0, [z], v_ids[2])  # a late vote for the previous round is fine
    assert v0.voter_votes(0, v_ids[0]) == [x, y] and v0.voter_votes(1, v_ids[1]) == []
    assert v0.winners_on_chain(1, v_ids[0]) and not v0.winners_on_chain(1, v_ids[1])
    assert not v1.winners_on_chain(1, v_ids[0]), "someone else's vote is never 'ours'"
    assert [v0.voter_vote_count(p) for p in (*v_ids, "QmNone")] == [2, 1, 1, 0]
    assert [v0.peer_vote_count(0, p) for p in (x, y, z)] == [1, 2, 1]
    assert [v0.peer_vote_count(1, p) for p in (x, y, z)] == [0, 1, 1]
    assert [v0.total_wins(p) for p in (x, y, z, "QmNone")] == [1, 3, 2, 0]
    assert v0.unique_voters() == 3 and v0.unique_voted_peers() == 3
    winners = [(e.peer_id, e.count) for e in v0.winner_leaderboard(0, 100)]
    assert winners == [(y, 3), (z, 2), (x, 1)]
    assert [(e.peer_id, e.count) for e in v0.winner_leaderboard(1, 2)] == [(z, 2)]
    assert v0.winner_leaderboard(5, 10) == [] and v0.winner_leaderboard(2, 1) == []
    voters_board = [(e.peer_id, e.count) for e in v0.voter_leaderboard(0, 3)]
    assert voters_board[0] == (v_ids[0], 2) and sorted(voters_board[1:]) == sorted([(v_ids[1], 1), (v_ids[2], 1)])
    next_round(owner)
    next_round(owner)  # round 3: round 1 is closed for votes too
    with refused("RoundClosed"):
        v1.submit_winners(1, [x], v_ids[1])


def test_leaderboard_update_cost_does_not_grow_with_peers(deployed_contract: DeployedContract) -> None:
    """A vote costs about the same with 3 or 60 ranked peers: no loop over peers in a transaction.

    (A loop touching each ranked peer would add >= 57 x 2100 gas of cold reads alone.)"""
    a, b = deployed_contract.client(1), deployed_contract.client(2)
    owner, c = deployed_contract.client(0), deployed_contract.client(3)
    pa, pb = register(a, "A"), register(b, "B")
    w = [register(c, f"W{i}") for i in range(3)]
    n = [register(c, f"N{i}") for i in range(30)]
    m = [register(c, f"M{i}") for i in range(27)]
    for voter, pid in ((a, pa), (b, pb)):
        voter.submit_reward(0, 0, 1, pid)
    a.submit_winners(0, w, pa)
    next_round(owner)
    for voter, pid in ((a, pa), (b, pb)):
        voter.submit_reward(1, 0, 1, pid)
    small = a.submit_winners(1, [w[1]], pa).gas_used  # W1 moves up among 3 ranked peers
    b.submit_winners(0, n, pb)
    b.submit_winners(1, m, pb)
    assert a.unique_voted_peers() == 60
    next_round(owner)
    a.submit_reward(2, 0, 1, pa)
    large = a.submit_winners(2, [w[2]], pa).gas_used  # W2 moves up among 60 ranked peers
    assert large < small + 20_000, (small, large)
    board = a.winner_leaderboard(0, 100)
    counts = [e.count for e in board]
    assert counts == sorted(counts, reverse=True) and board[0].peer_id == w[1] and board[0].count == 2


def test_initialize_only_once(deployed_contract: DeployedContract) -> None:
    dc = deployed_contract
    with refused("InvalidInitialization"):
        send_tx(dc.rpc_url, ANVIL_DEV_KEYS[1], dc.address, "initialize", ADDR[1])
    with refused("InvalidInitialization"):
        send_tx(dc.rpc_url, ANVIL_DEV_KEYS[1], dc.implementation, "initialize", ADDR[1])


def test_uups_upgrade(deployed_contract: DeployedContract) -> None:
    dc = deployed_contract
    a = dc.client(1)
    keep = register(a, "keep")
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
    assert a.eoa_of(keep) == ADDR[1], "state survives the upgrade"
    assert a.has_role("OWNER_ROLE", ADDR[0])
