"""Attacks on the on-chain record (issue 12), each against real anvil, each failing for the attacker.

Before the fix every one of these succeeded: `registerPeer` took any peer ID without proof,
the relay client took a peer registered by someone else for its own (and the outbox then
skipped the victim's reward as "already on chain"), `submitWinners` took made-up voters and
winners for any past round, `submitReward` took 10^60 for a long-closed round, a wallet's
second peer lost its reward, and a stuck transaction blocked its nonce forever.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from hivemind_exp.chain.anvil import ANVIL_DEV_KEYS, AnvilProcess, rpc_request
from hivemind_exp.chain.client import ensure_registered
from hivemind_exp.chain.errors import ChainRevert
from hivemind_exp.chain.outbox import Outbox, OutboxWorker
from hivemind_exp.chain.proof import PeerKey
from hivemind_exp.chain.wallet import WalletChainClient
from tests.fixtures.chain import (DeployedContract, deploy_fresh, event_log, mine, nonce_of, peer_key, register,
                                  send_tx, set_automine)
from tests.fixtures.login import (LoginChain, LoginServiceProc, SignedUpUser, login_chain,  # noqa: F401
                                  login_service, signed_up, start_login_service)
from tests.fixtures.procs import wait_for

pytestmark = pytest.mark.chain

ADDR = [Account.from_key(k).address for k in ANVIL_DEV_KEYS]
ATTACKER = 5


def refused(name: str) -> Any:
    return pytest.raises(ChainRevert, match=rf"^{name}:")




def next_round(owner: Any) -> None:
    for _ in range(3):
        owner.update_stage_and_round()


def drain(box: Outbox, client: Any, expect_settled: int, timeout: float = 30) -> None:
    worker = OutboxWorker(box, client, base_delay=0.2, max_delay=1.0, poll_interval=0.1).start()
    try:
        wait_for(lambda: box.counts().confirmed + box.counts().failed >= expect_settled, timeout, "outbox to settle")
    finally:
        worker.stop()


# ---------------------------------------------------------------- identity


def test_peer_id_read_from_the_dht_cannot_be_registered_by_another_wallet(deployed_contract: DeployedContract) -> None:
    dc = deployed_contract
    attacker, victim = dc.client(ATTACKER), dc.client(1)
    key = peer_key("victim")  # the attacker knows the peer ID and the public key (both are public on the DHT)
    chain_id = attacker.chain_id()
    with refused("PeerProofRequired"):  # the 0.4.2 way: first come, first served
        send_tx(dc.rpc_url, ANVIL_DEV_KEYS[ATTACKER], dc.address, "registerPeer", key.peer_id)
    own_key = PeerKey.generate()
    attempts = {
        "its own key's signature": own_key.prove(chain_id, dc.address, ADDR[ATTACKER]).signature,
        # a proof the victim made for its own wallet, copied from the mempool and front-run
        "the victim's proof": key.prove(chain_id, dc.address, ADDR[1]).signature,
        "garbage": bytes(256),
    }
    for why, signature in attempts.items():
        with refused("InvalidPeerProof"):
            attacker._transact("registerPeerWithProof", [key.peer_id, key.public_key, signature], None)
        assert attacker.eoa_of(key.peer_id) is None, why
    with refused("InvalidPeerProof"):  # its own key under the victim's peer ID
        attacker._transact("registerPeerWithProof", [key.peer_id, own_key.public_key,
                                                     own_key.prove(chain_id, dc.address, ADDR[ATTACKER]).signature],
                           None)
    # The real owner registers without trouble, and only it can submit for the peer.
    assert ensure_registered(victim, key) is not None
    assert victim.eoa_of(key.peer_id) == ADDR[1]
    with refused("InvalidVoterPeerId"):
        attacker.submit_reward(0, 0, 1, key.peer_id)


def test_relay_client_never_takes_another_wallets_peer_or_reward_for_its_own(
        login_chain: LoginChain, login_service: LoginServiceProc, signed_up: SignedUpUser, tmp_path: Path) -> None:
    """Relay mode, no --relay-wallet-address: a peer owned by another wallet is not "already mine",
    and that wallet's reward for the peer is not "already landed" for the outbox."""
    from hivemind_exp.chain.client import build_client
    from hivemind_exp.chain.settings import ChainSettings
    from hivemind_exp.common.settings_base import load_settings

    settings = load_settings(ChainSettings, chain_mode="relay", login_url=login_service.url, org_id=signed_up.org_id,
                             api_key=signed_up.api_key, rpc_url=login_chain.rpc_url,
                             contract_address=login_chain.address, receipt_timeout=30)
    assert settings.relay_wallet_address is None
    relay = build_client(settings)
    assert relay is not None
    # Someone else holds a copy of the node's key and registered the peer to their wallet first.
    key = PeerKey.generate()
    other = WalletChainClient(login_chain.rpc_url, login_chain.address, ANVIL_DEV_KEYS[ATTACKER], receipt_timeout=30)
    other.register_peer(key)
    with refused("PeerIdAlreadyRegistered") as exc:
        ensure_registered(relay, key)
    assert signed_up.address in str(exc.value) and other.address in str(exc.value)
    rnd, _ = relay.round_and_stage()
    other.submit_reward(rnd, 0, 999, key.peer_id)
    assert not relay.reward_on_chain(rnd, 0, key.peer_id)
    box = Outbox(tmp_path / "outbox.sqlite")
    box.enqueue_reward(rnd, 0, 5, key.peer_id)
    drain(box, relay, 1)
    (entry,) = box.entries()
    assert entry.status == "failed" and "InvalidVoterPeerId" in (entry.note or ""), entry


# ---------------------------------------------------------------- rewards


def test_unbounded_and_backdated_rewards_are_refused(deployed_contract: DeployedContract) -> None:
    dc = deployed_contract
    owner, attacker = dc.client(0), dc.client(ATTACKER)
    pid = register(attacker, "greedy")
    for _ in range(3):
        next_round(owner)  # round 3: rounds 0 and 1 ended long ago
    with refused("RewardOutOfRange"):
        attacker.submit_reward(3, 0, 10**60, pid)
    with refused("RewardOutOfRange"):
        attacker.submit_reward(3, 0, -(10**60), pid)
    for old_round in (0, 1):
        with refused("RoundClosed"):
            attacker.submit_reward(old_round, 0, 10, pid)
    assert attacker.total_rewards([pid]) == [0]
    attacker.submit_reward(2, 2, 1_000_000, pid)  # the previous round, at the bound: accepted
    assert attacker.total_rewards([pid]) == [1_000_000]


def test_a_wallet_with_two_peers_lands_both_rewards_through_the_outbox(deployed_contract: DeployedContract,
                                                                       tmp_path: Path) -> None:
    dc = deployed_contract
    wallet = dc.client(2)
    first, second = register(wallet, "node-a"), register(wallet, "node-b")
    box_a, box_b = Outbox(tmp_path / "a.sqlite"), Outbox(tmp_path / "b.sqlite")  # two nodes, one wallet
    box_a.enqueue_reward(0, 0, 1200, first)
    box_b.enqueue_reward(0, 0, 800, second)
    drain(box_a, wallet, 1)
    drain(box_b, wallet, 1)
    for box in (box_a, box_b):
        (entry,) = box.entries()
        assert entry.status == "confirmed" and entry.tx_hash, "sent and mined, not skipped as 'already on chain'"
    assert wallet.total_rewards([first, second]) == [1200, 800]
    assert len(event_log(dc, "RewardSubmitted", account=ADDR[2])) == 2


# ---------------------------------------------------------------- votes


def test_fake_voters_fake_winners_and_backdated_votes_are_refused(deployed_contract: DeployedContract) -> None:
    dc = deployed_contract
    owner, attacker = dc.client(0), dc.client(ATTACKER)
    html = "<img src=x onerror=alert(1)>"
    made_up = [f"QmFakeVoter{i}" for i in range(8)]
    for pid in made_up:  # made-up peer IDs cannot be registered any more
        with refused("PeerProofRequired"):
            send_tx(dc.rpc_url, ANVIL_DEV_KEYS[ATTACKER], dc.address, "registerPeer", pid)
        with refused("InvalidVoterPeerId"):
            attacker.submit_winners(0, [html], pid)
    # Real keys it generated: each still has to take part in a round to vote in it.
    sybils = [register(attacker, f"sybil{i}") for i in range(3)]
    with refused("VoterNotParticipant"):
        attacker.submit_winners(0, [sybils[1]], sybils[0])
    attacker.submit_reward(0, 0, 1, sybils[0])
    with refused("WinnerNotRegistered"):
        attacker.submit_winners(0, [html], sybils[0])
    with refused("WinnerNotRegistered"):
        attacker.submit_winners(0, [sybils[1], "QmNotAPeer"], sybils[0])
    attacker.submit_winners(0, [sybils[1]], sybils[0])
    with refused("WinnerAlreadyVoted"):
        attacker.submit_winners(0, [sybils[2]], sybils[0])
    for _ in range(2):
        next_round(owner)  # round 2
    with refused("RoundClosed"):
        attacker.submit_winners(0, [sybils[1]], sybils[2])
    board = [(e.peer_id, e.count) for e in attacker.winner_leaderboard(0, 100)]
    assert board == [(sybils[1], 1)], "one vote landed, nothing made-up on the leaderboard"
    assert attacker.unique_voters() == 1


# ---------------------------------------------------------------- stuck transactions


def _raw(rpc_url: str, tx_hash: str) -> str:
    return str(rpc_request(rpc_url, "eth_getRawTransactionByHash", [tx_hash]))


def _track(box: Outbox, rpc_url: str, seen: list[tuple[str, dict[str, Any], str]], stop: threading.Event) -> None:
    """Record every tx hash the outbox persists, with its fields and raw bytes while still in the pool."""
    while not stop.is_set():
        entries = box.entries()
        h = entries[0].tx_hash if entries else None
        if h and (not seen or seen[-1][0] != h):
            tx = rpc_request(rpc_url, "eth_getTransactionByHash", [h])
            if tx is not None:
                seen.append((h, tx, _raw(rpc_url, h)))
        time.sleep(0.02)


def _stuck_setup(anvil: AnvilProcess, tmp_path: Path,
                 max_replacements: int) -> tuple[DeployedContract, WalletChainClient, str, Outbox]:
    dc = deploy_fresh(anvil.rpc_url, tmp_path)
    client = WalletChainClient(dc.rpc_url, dc.address, ANVIL_DEV_KEYS[4], receipt_timeout=60, replace_after=1.0,
                               max_replacements=max_replacements, fee_bump=1.25)
    pid = register(client, "stuck")
    box = Outbox(tmp_path / "outbox.sqlite")
    box.enqueue_reward(0, 0, 321, pid)
    return dc, client, pid, box


def test_stuck_transaction_is_replaced_with_higher_fees_and_lands_once(own_anvil: AnvilProcess,
                                                                       tmp_path: Path) -> None:
    dc, client, pid, box = _stuck_setup(own_anvil, tmp_path, max_replacements=3)
    nonce = nonce_of(dc.rpc_url, ADDR[4])
    seen: list[tuple[str, dict[str, Any], str]] = []
    stop = threading.Event()
    set_automine(dc.rpc_url, False)  # nothing gets mined: the first transaction is stuck
    tracker = threading.Thread(target=_track, args=(box, dc.rpc_url, seen, stop), daemon=True)
    tracker.start()
    worker = OutboxWorker(box, client, base_delay=0.2, max_delay=1.0, poll_interval=0.1).start()
    try:
        wait_for(lambda: len(seen) >= 2, 20, "a replacement to be sent")
        assert box.counts().confirmed == 0
        set_automine(dc.rpc_url, True)
        mine(dc.rpc_url)
        wait_for(lambda: box.counts().confirmed == 1, 30, "the entry to be confirmed")
    finally:
        worker.stop()
        stop.set()
        tracker.join(5)
    (entry,) = box.entries()
    first, second = seen[0][1], seen[1][1]
    assert int(first["nonce"], 16) == int(second["nonce"], 16) == nonce, "a replacement reuses the nonce"
    for fee in ("maxFeePerGas", "maxPriorityFeePerGas"):
        assert int(second[fee], 16) >= int(first[fee], 16) * 1.25, fee
    receipt = rpc_request(dc.rpc_url, "eth_getTransactionReceipt", [entry.tx_hash])
    assert receipt is not None and int(receipt["status"], 16) == 1
    assert entry.tx_hash in [h for h, _, _ in seen[1:]], "the confirmed hash is a replacement"
    assert nonce_of(dc.rpc_url, ADDR[4]) == nonce + 1, "exactly one transaction mined for the entry"
    assert len(event_log(dc, "RewardSubmitted", account=ADDR[4])) == 1
    assert client.total_rewards([pid]) == [321]


def test_when_the_original_lands_instead_of_its_replacement_the_entry_is_confirmed_once(
        own_anvil: AnvilProcess, tmp_path: Path) -> None:
    # One replacement only, so the client does not replace the original again after it is re-sent.
    dc, client, pid, box = _stuck_setup(own_anvil, tmp_path, max_replacements=1)
    nonce = nonce_of(dc.rpc_url, ADDR[4])
    seen: list[tuple[str, dict[str, Any], str]] = []
    stop = threading.Event()
    set_automine(dc.rpc_url, False)
    tracker = threading.Thread(target=_track, args=(box, dc.rpc_url, seen, stop), daemon=True)
    tracker.start()
    worker = OutboxWorker(box, client, base_delay=0.2, max_delay=1.0, poll_interval=0.1).start()
    try:
        wait_for(lambda: len(seen) >= 2, 20, "a replacement to be sent")
        original_hash, _, original_raw = seen[0]
        # The network had the original after all: the replacement vanishes, the original is mined.
        stop.set()
        tracker.join(5)
        for h, _, _ in seen[1:]:
            rpc_request(dc.rpc_url, "anvil_dropTransaction", [h])
        assert rpc_request(dc.rpc_url, "eth_sendRawTransaction", [original_raw]) == original_hash
        mine(dc.rpc_url)
        set_automine(dc.rpc_url, True)
        wait_for(lambda: box.counts().confirmed == 1, 30, "the entry to be confirmed")
    finally:
        worker.stop()
        stop.set()
    (entry,) = box.entries()
    assert entry.tx_hash == original_hash, "confirmed by the version that was mined"
    assert nonce_of(dc.rpc_url, ADDR[4]) == nonce + 1
    assert len(event_log(dc, "RewardSubmitted", account=ADDR[4])) == 1
    # A restart that only knows a replacement's (now unknown) hash checks the chain and sends nothing.
    box.record_sent(entry.id, seen[-1][0])
    box._update(entry.id, "status = 'pending'", ())
    drain(box, client, 1)
    assert box.entries()[0].status == "confirmed" and box.entries()[0].note == "already on chain"
    assert nonce_of(dc.rpc_url, ADDR[4]) == nonce + 1 and client.total_rewards([pid]) == [321]


def test_transaction_stuck_across_a_restart_is_replaced_by_the_next_worker(own_anvil: AnvilProcess,
                                                                           tmp_path: Path) -> None:
    """The sender gave up waiting (or died); the next worker finds the hash still pending and bumps it."""
    dc, _, pid, box = _stuck_setup(own_anvil, tmp_path, max_replacements=0)
    nonce = nonce_of(dc.rpc_url, ADDR[4])
    set_automine(dc.rpc_url, False)
    impatient = WalletChainClient(dc.rpc_url, dc.address, ANVIL_DEV_KEYS[4], receipt_timeout=1.0,
                                  max_replacements=0)
    first = OutboxWorker(box, impatient, base_delay=0.2, max_delay=1.0, poll_interval=0.1).start()
    try:
        # It gave up waiting once the note is "unavailable: ... not mined within 1s"; 0.2 s later its
        # next pass finds the hash pending and notes "sent; waiting to be mined": either means the
        # same (a poll can miss the first note's short life). Generous time for a loaded machine.
        def gave_up() -> bool:
            e = box.entries()[0]
            return e.tx_hash is not None and (e.note or "").startswith(("unavailable", "sent;"))

        wait_for(gave_up, 60, "the first sender to give up waiting")
    finally:
        first.stop()
    stuck_hash = box.entries()[0].tx_hash
    stuck = rpc_request(dc.rpc_url, "eth_getTransactionByHash", [stuck_hash])
    assert stuck is not None and stuck["blockNumber"] is None
    patient = WalletChainClient(dc.rpc_url, dc.address, ANVIL_DEV_KEYS[4], receipt_timeout=60, replace_after=1.0,
                                max_replacements=2)
    second = OutboxWorker(box, patient, base_delay=0.2, max_delay=1.0, poll_interval=0.1).start()
    try:
        wait_for(lambda: box.entries()[0].tx_hash != stuck_hash, 20, "the restarted worker to replace it")
        assert nonce_of(dc.rpc_url, ADDR[4], "pending") == nonce + 1, "a replacement, not a second transaction"
        set_automine(dc.rpc_url, True)
        mine(dc.rpc_url)
        wait_for(lambda: box.counts().confirmed == 1, 30, "the entry to be confirmed")
    finally:
        second.stop()
    (entry,) = box.entries()
    mined = rpc_request(dc.rpc_url, "eth_getTransactionByHash", [entry.tx_hash])
    assert int(mined["nonce"], 16) == nonce
    assert int(mined["maxFeePerGas"], 16) >= int(stuck["maxFeePerGas"], 16) * 1.25
    assert nonce_of(dc.rpc_url, ADDR[4]) == nonce + 1
    assert len(event_log(dc, "RewardSubmitted", account=ADDR[4])) == 1 and dc.client(4).total_rewards([pid]) == [321]


def test_nonce_taken_by_another_sender_of_the_wallet_is_noticed_and_the_entry_resent_once(
        own_anvil: AnvilProcess, tmp_path: Path) -> None:
    """Another process of the same wallet replaces our stuck transaction with its own: we neither
    wait forever on a hash that can never be mined nor count the entry as landed."""
    dc, client, pid, box = _stuck_setup(own_anvil, tmp_path, max_replacements=0)
    nonce = nonce_of(dc.rpc_url, ADDR[4])
    set_automine(dc.rpc_url, False)
    worker = OutboxWorker(box, client, base_delay=0.2, max_delay=1.0, poll_interval=0.1).start()
    try:
        wait_for(lambda: box.entries()[0].tx_hash is not None, 20, "the reward to be sent")
        ours = rpc_request(dc.rpc_url, "eth_getTransactionByHash", [box.entries()[0].tx_hash])
        acct = Account.from_key(ANVIL_DEV_KEYS[4])
        theirs = acct.sign_transaction({"to": ADDR[9], "value": 1, "gas": 21_000, "nonce": nonce, "chainId": 31337,
                                        "maxFeePerGas": int(ours["maxFeePerGas"], 16) * 2,
                                        "maxPriorityFeePerGas": int(ours["maxPriorityFeePerGas"], 16) * 2})
        rpc_request(dc.rpc_url, "eth_sendRawTransaction", ["0x" + theirs.raw_transaction.hex().removeprefix("0x")])
        mine(dc.rpc_url)  # their transfer takes the nonce; our reward can never be mined now
        set_automine(dc.rpc_url, True)
        wait_for(lambda: box.counts().confirmed == 1, 30, "the entry to be re-sent and confirmed")
    finally:
        worker.stop()
    (entry,) = box.entries()
    mined = rpc_request(dc.rpc_url, "eth_getTransactionByHash", [entry.tx_hash])
    assert int(mined["nonce"], 16) == nonce + 1, "re-sent with the next nonce"
    assert len(event_log(dc, "RewardSubmitted", account=ADDR[4])) == 1 and client.total_rewards([pid]) == [321]
