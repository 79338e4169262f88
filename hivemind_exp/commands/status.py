"""`rl-swarm status`: this node's identity, registration, on-chain standing and outbox.

Shows the peer ID (from swarm.pem, or --peer-id), the wallet that submits for it, whether
it is registered on chain, the chain's round/stage, the peer's total rewards and wins, and
the node's outbox (pending / confirmed / failed submissions). Exit code 0 when the chain
answered, 1 when it could not be read (the rest is still shown).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import Field

from hivemind_exp.chain.settings import ChainSettings
from hivemind_exp.common.settings_base import add_settings_arguments, load_settings, overrides_from_args


class StatusSettings(ChainSettings):
    """What `rl-swarm status` reads: chain access plus where the node keeps its identity and data."""

    peer_id: str | None = Field(None, description="peer ID to report on (default: read from --identity-file)")
    identity_file: Path = Field(Path("swarm.pem"), description="the node's libp2p key file (swarm.pem)")
    data_dir: Path = Field(Path(".rlswarm"), description="the node's data directory (holds chain-outbox.sqlite)")
    outbox_file: Path | None = Field(None, description="outbox database (default: <data-dir>/chain-outbox.sqlite)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_settings_arguments(parser, StatusSettings)


def _peer_id(settings: StatusSettings) -> tuple[str | None, str | None]:
    """(peer id, problem) from the flag or the identity file."""
    if settings.peer_id:
        return settings.peer_id, None
    try:
        from hivemind_exp.swarm.identity import load_peer_id  # type: ignore[attr-defined]
    except ImportError:
        return None, "identity module not available; pass --peer-id"
    path = settings.identity_file
    if not Path(path).exists():
        return None, f"no identity file at {path} (start the node once, or pass --identity-file / --peer-id)"
    try:
        return str(load_peer_id(path)), None
    except Exception as exc:  # a broken key file must not hide the rest of the status
        return None, f"cannot read {path}: {exc}"


def _wallet(settings: StatusSettings) -> str | None:
    if settings.chain_mode == "wallet" and settings.wallet_key_file is not None:
        from eth_account import Account

        from hivemind_exp.chain.settings import read_private_key

        return str(Account.from_key(read_private_key(settings.wallet_key_file)).address)
    if settings.chain_mode == "relay":
        return settings.relay_wallet_address
    return None


def collect(settings: StatusSettings) -> dict[str, Any]:
    """Everything the command shows, as plain data (also what --json prints)."""
    from hivemind_exp.chain.errors import ChainError
    from hivemind_exp.chain.outbox import Outbox, default_outbox_path
    from hivemind_exp.chain.rewards import chain_to_points

    peer_id, peer_problem = _peer_id(settings)
    info: dict[str, Any] = {"peer_id": peer_id, "chain_mode": settings.chain_mode, "rpc_url": settings.rpc_url}
    if peer_problem:
        info["peer_id_problem"] = peer_problem
    wallet = _wallet(settings)
    info["wallet"] = wallet

    chain: dict[str, Any] = {}
    try:
        from hivemind_exp.chain.client import build_reader

        reader = build_reader(settings)
        chain["contract"] = reader.contract_address
        reader.check(settings.expected_chain_id)
        chain["chain_id"] = reader.chain_id()
        rnd, stage = reader.round_and_stage()
        chain.update(round=rnd, stage=stage, stage_count=reader.stage_count())
        if peer_id:
            owner = reader.eoa_of(peer_id)
            chain["registered"] = owner is not None
            chain["registered_to"] = owner
            if wallet is None:
                info["wallet"] = owner
            total = reader.total_rewards([peer_id])[0]
            chain.update(total_rewards=total, total_reward_points=chain_to_points(total),
                         total_wins=reader.total_wins(peer_id), votes_cast=reader.voter_vote_count(peer_id))
        chain["ok"] = True
    except ChainError as exc:
        chain.update(ok=False, error=str(exc))
    info["chain"] = chain

    outbox_path = settings.outbox_file or default_outbox_path(settings.data_dir)
    if Path(outbox_path).exists():
        outbox = Outbox(outbox_path)
        counts = outbox.counts().as_dict()
        failed = [{"id": e.id, "kind": e.kind, "payload": e.payload, "reason": e.note}
                  for e in outbox.entries("failed")[-5:]]
        info["outbox"] = {"path": str(outbox_path), **counts, "recent_failures": failed}
    else:
        info["outbox"] = {"path": str(outbox_path), "missing": True}
    return info


def _print_text(info: dict[str, Any]) -> None:
    chain = info["chain"]
    print(f"peer ID:       {info['peer_id'] or '(unknown: ' + info.get('peer_id_problem', '') + ')'}")
    print(f"wallet:        {info['wallet'] or '(unknown)'}")
    print(f"chain mode:    {info['chain_mode']}  (rpc {info['rpc_url']})")
    if chain.get("ok"):
        print(f"contract:      {chain['contract']} on chain {chain['chain_id']}")
        print(f"round/stage:   round {chain['round']}, stage {chain['stage']} of {chain['stage_count']}")
        if "registered" in chain:
            reg = f"yes (wallet {chain['registered_to']})" if chain["registered"] else "no"
            print(f"registered:    {reg}")
            print(f"total rewards: {chain['total_reward_points']:g} points ({chain['total_rewards']} on chain)")
            print(f"total wins:    {chain['total_wins']}   votes cast: {chain['votes_cast']}")
    else:
        print(f"chain:         unreachable: {chain.get('error')}")
    ob = info["outbox"]
    if ob.get("missing"):
        print(f"outbox:        none yet ({ob['path']})")
    else:
        print(f"outbox:        {ob['pending']} pending, {ob['confirmed']} confirmed, {ob['failed']} failed  "
              f"({ob['path']})")
        for f in ob["recent_failures"]:
            print(f"  failed #{f['id']} {f['kind']} {f['payload']}: {f['reason']}")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(StatusSettings, **overrides_from_args(args, StatusSettings))
    info = collect(settings)
    if getattr(args, "json", False):
        json.dump(info, sys.stdout, indent=2, default=str)
        print()
    else:
        _print_text(info)
    return 0 if info["chain"].get("ok") else 1
