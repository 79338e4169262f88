"""`rl-swarm doctor`: check Python, torch, RAM, disk, ports, the model cache and npm tools."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--identity-path", default="swarm.pem", help="node identity file to check [default: swarm.pem]")
    parser.add_argument("--ports", default="8545,3000,8080,38331",
                        help="ports the local swarm needs, comma-separated [default: 8545,3000,8080,38331]")


def run(args: argparse.Namespace) -> int:
    from hivemind_exp.services.doctor import run_checks

    names = {8545: "chain (--anvil-port)", 3000: "login (--login-port)", 8080: "dashboard (--dashboard-port)",
             38331: "coordinator DHT (--coordinator-port)"}
    try:
        ports = {names.get(int(p), f"port {p}"): int(p) for p in str(args.ports).split(",") if p.strip()}
    except ValueError:
        print(f"--ports must be comma-separated integers, got {args.ports!r}")
        return 2
    checks = run_checks(ports, Path(args.identity_path))
    width = max(len(c.name) for c in checks)
    failed = 0
    for c in checks:
        mark = "ok  " if c.ok else ("FAIL" if c.required else "warn")
        print(f"[{mark}] {c.name.ljust(width)}  {c.detail}")
        if not c.ok:
            print(f"       {' ' * width}  fix: {c.fix}")
            failed += c.required
    print(f"\n{'all required checks passed' if not failed else f'{failed} required check(s) failed'}")
    return 1 if failed else 0
