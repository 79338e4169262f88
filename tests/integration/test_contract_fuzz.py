"""Random peers, rounds, rewards and votes against a Python model: totals and leaderboards add up."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest
from eth_account import Account

from hivemind_exp.chain.anvil import rpc_request
from hivemind_exp.chain.errors import ChainRevert
from hivemind_exp.chain.wallet import WalletChainClient
from tests.fixtures.chain import DeployedContract, peer_key, register

pytestmark = pytest.mark.chain


@pytest.mark.parametrize("seed", [7])
def test_random_swarm_matches_model(deployed_contract: DeployedContract, seed: int) -> None:
    rng = random.Random(seed)
    dc = deployed_contract
    owner = dc.client(0)
    peers: list[tuple[str, WalletChainClient]] = []
    for i in range(7):
        key = "0x" + rng.randbytes(32).hex()
        addr = Account.from_key(key).address
        rpc_request(dc.rpc_url, "anvil_setBalance", [addr, hex(10**20)])
        client = WalletChainClient(dc.rpc_url, dc.address, key, receipt_timeout=30)
        peer_id = peer_key(f"fuzz{i}").peer_id
        client.register_peer(peer_key(f"fuzz{i}"))
        peers.append((peer_id, client))
    # Registered peers that never submit: can be voted for, cannot vote.
    outsiders = [register(dc.client(9), f"outsider{i}") for i in (1, 2)]

    totals: Counter[str] = Counter()
    per_stage: dict[tuple[int, int], dict[str, int]] = defaultdict(dict)
    wins: Counter[str] = Counter()
    votes_cast: Counter[str] = Counter()
    round_votes: dict[int, Counter[str]] = defaultdict(Counter)
    took_part: dict[int, set[str]] = defaultdict(set)
    rounds = 3
    for rnd in range(rounds):
        for stage in range(3):
            for peer_id, client in peers:
                if rng.random() < 0.75:
                    reward = rng.randint(-5_000, 20_000)
                    client.submit_reward(rnd, stage, reward, peer_id)
                    totals[peer_id] += reward
                    per_stage[(rnd, stage)][client.address] = reward
                    took_part[rnd].add(peer_id)
            if stage < 2 or rnd < rounds - 1:
                owner.update_stage_and_round()
        for peer_id, client in peers:
            if rng.random() < 0.8:
                candidates = [p for p, _ in peers] + outsiders
                picked = rng.sample(candidates, rng.randint(1, 3))
                if peer_id not in took_part[rnd]:
                    with pytest.raises(ChainRevert, match="VoterNotParticipant"):
                        client.submit_winners(rnd, picked, peer_id)
                    continue
                client.submit_winners(rnd, picked, peer_id)
                votes_cast[peer_id] += 1
                for w in picked:
                    wins[w] += 1
                    round_votes[rnd][w] += 1
        # A second vote in the same round is always refused and changes nothing.
        voter_id, voter = peers[rng.randrange(len(peers))]
        if votes_cast[voter_id] and voter.winners_on_chain(rnd, voter_id):
            with pytest.raises(ChainRevert, match="WinnerAlreadyVoted"):
                voter.submit_winners(rnd, [outsiders[0]], voter_id)

    ids = [p for p, _ in peers]
    assert owner.total_rewards(ids) == [totals[p] for p in ids]
    for (rnd, stage), by_account in per_stage.items():
        accounts = [c.address for _, c in peers]
        assert owner.round_stage_rewards(rnd, stage, accounts) == [by_account.get(a, 0) for a in accounts]
    everyone = ids + outsiders
    assert [owner.total_wins(p) for p in everyone] == [wins[p] for p in everyone]
    assert [owner.voter_vote_count(p) for p in ids] == [votes_cast[p] for p in ids]
    for rnd, counter in round_votes.items():
        assert [owner.peer_vote_count(rnd, p) for p in everyone] == [counter[p] for p in everyone]

    assert owner.unique_voted_peers() == len([p for p in everyone if wins[p]])
    assert owner.unique_voters() == len([p for p in ids if votes_cast[p]])
    board = owner.winner_leaderboard(0, 1000)
    assert {e.peer_id: e.count for e in board} == {p: c for p, c in wins.items() if c}
    assert [e.count for e in board] == sorted((e.count for e in board), reverse=True)
    # Paging returns the same order as one big page.
    paged = owner.winner_leaderboard(0, 3) + owner.winner_leaderboard(3, 6) + owner.winner_leaderboard(6, 1000)
    assert paged == board
    vboard = owner.voter_leaderboard(0, 1000)
    assert {e.peer_id: e.count for e in vboard} == {p: c for p, c in votes_cast.items() if c}
    assert [e.count for e in vboard] == sorted((e.count for e in vboard), reverse=True)
