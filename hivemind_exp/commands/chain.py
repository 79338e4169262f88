"""`rl-swarm chain`: run a local anvil chain with SwarmCoordinator deployed, until stopped.

Starts anvil (host/port/state file from `LocalChainSettings`), deploys the contract or reuses
the one recorded in the deployment file, grants the coordinator its roles, registers
bootnodes, writes the deployment JSON and prints a `chain ready:` line. SIGINT/SIGTERM stop
anvil cleanly (it writes its state file, when one is set).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from hivemind_exp.chain.settings import LocalChainSettings
from hivemind_exp.common.settings_base import add_settings_arguments, load_settings, overrides_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-file", default=None, metavar="PATH", help="append anvil's own output here "
                        "(default: anvil.log next to the deployment file)")
    add_settings_arguments(parser, LocalChainSettings)


# Set by Compose to the host address the chain port is published on (the container itself
# must listen on 0.0.0.0, so its own bind says nothing about who can reach it).
PUBLISHED_BIND_ENV = "CHAIN_PUBLISHED_BIND"


def _is_loopback(host: str) -> bool:
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def exposure_warning(anvil_host: str, published_bind: str | None) -> str | None:
    """A warning when the dev chain (anvil's well-known, funded dev keys) is reachable beyond loopback."""
    where = published_bind if published_bind else anvil_host
    what = f"published on {where} ({PUBLISHED_BIND_ENV})" if published_bind else f"listening on {where}"
    if _is_loopback(where):
        return None
    return (f"WARNING: the local dev chain is {what}: anyone who can reach it can use anvil's public dev keys "
            "(funded accounts, the contract's admin roles). Keep it on 127.0.0.1 (RLSWARM_CHAIN_BIND in Compose, "
            "--anvil-host locally) unless that network is yours alone.")


def run(args: argparse.Namespace) -> int:
    settings = load_settings(LocalChainSettings, **overrides_from_args(args, LocalChainSettings))
    warning = exposure_warning(settings.anvil_host, os.environ.get(PUBLISHED_BIND_ENV) or None)
    if warning:
        print(f"rl-swarm chain: {warning}", file=sys.stderr, flush=True)
    from hivemind_exp.chain.anvil import COORDINATOR_DEV_ACCOUNT, AnvilError, AnvilProcess, write_dev_key
    from hivemind_exp.chain.deploy import deploy_contract
    from hivemind_exp.chain.errors import ChainError

    import logging

    stop = threading.Event()
    log_path = Path(args.log_file) if getattr(args, "log_file", None) else settings.deployment_file.parent / "anvil.log"
    # anvil logs one line per RPC call; keep that for DEBUG runs only.
    quiet = logging.getLogger().getEffectiveLevel() > logging.DEBUG

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    anvil = AnvilProcess(settings.anvil_port, settings.anvil_host, state_file=settings.anvil_state_file,
                         chain_id=settings.anvil_chain_id, log_path=log_path, quiet=quiet)
    try:
        try:
            coordinator = settings.coordinator_address
            if settings.coordinator_key_file is not None:
                coordinator = write_dev_key(settings.coordinator_key_file, COORDINATOR_DEV_ACCOUNT)
                print(f"coordinator key (dev account {COORDINATOR_DEV_ACCOUNT}, {coordinator}) written to "
                      f"{settings.coordinator_key_file}", flush=True)
            anvil.start(timeout=settings.ready_timeout)
            deployment, reused = deploy_contract(
                anvil.rpc_url, settings.deployer_key.get_secret_value(),
                coordinator_address=coordinator,
                bootnodes=settings.bootnodes or None, deployment_path=settings.deployment_file,
                timeout=settings.rpc_timeout)
        except (AnvilError, ChainError) as exc:
            print(f"rl-swarm chain: {exc}", file=sys.stderr)
            return 1
        how = "reused" if reused else "deployed"
        print(f"SwarmCoordinator {how} at {deployment.address} (chain {deployment.chain_id}); "
              f"deployment written to {settings.deployment_file}", flush=True)
        # One parseable line for launchers waiting on this process.
        print(f"chain ready: rpc={anvil.rpc_url} address={deployment.address}", flush=True)
        while not stop.wait(0.5):
            proc = anvil.process
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                print(f"rl-swarm chain: anvil exited unexpectedly (code {code})", file=sys.stderr)
                return 1
        print("stopping the chain", flush=True)
        return 0
    finally:
        anvil.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
