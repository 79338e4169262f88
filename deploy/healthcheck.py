"""Container health checks for docker-compose.yml (stdlib only: slim images have no curl).

    python deploy/healthcheck.py URL...                 GET each URL, healthy on 2xx
    python deploy/healthcheck.py --jsonrpc URL          the chain answers eth_chainId
    python deploy/healthcheck.py --tcp HOST:PORT        something accepts TCP there (DHT)
    python deploy/healthcheck.py --file PATH            PATH exists and is not empty

Checks can be combined; all must pass. Exit 0 = healthy, 1 = unhealthy (the reason is
printed, and Docker keeps it in `docker inspect`).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_S = 4.0


def check_http(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:  # noqa: S310 - URLs from our compose file
            return None if 200 <= resp.status < 300 else f"{url} answered {resp.status}"
    except urllib.error.HTTPError as err:
        return f"{url} answered {err.code}"
    except OSError as err:
        return f"{url} unreachable: {err}"


def check_jsonrpc(url: str) -> str | None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # noqa: S310
            reply = json.loads(resp.read())
    except (OSError, ValueError) as err:
        return f"JSON-RPC {url} unreachable: {err}"
    if "result" not in reply:
        return f"JSON-RPC {url} returned no chain id: {reply.get('error')}"
    return None


def check_tcp(target: str) -> str | None:
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=TIMEOUT_S):
            return None
    except (OSError, ValueError) as err:
        return f"nothing accepts TCP on {target}: {err}"


def check_file(path: str) -> str | None:
    p = Path(path)
    return None if p.is_file() and p.stat().st_size > 0 else f"{path} is missing or empty"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="container health check (see module docstring)")
    parser.add_argument("urls", nargs="*", help="HTTP URLs that must answer 2xx to GET")
    parser.add_argument("--jsonrpc", action="append", default=[], metavar="URL", help="Ethereum JSON-RPC URL")
    parser.add_argument("--tcp", action="append", default=[], metavar="HOST:PORT", help="TCP endpoint")
    parser.add_argument("--file", action="append", default=[], metavar="PATH", help="file that must exist")
    args = parser.parse_args(argv)
    if not (args.urls or args.jsonrpc or args.tcp or args.file):
        parser.error("give at least one check")
    problems = [
        p
        for p in (
            *(check_http(u) for u in args.urls),
            *(check_jsonrpc(u) for u in args.jsonrpc),
            *(check_tcp(t) for t in args.tcp),
            *(check_file(f) for f in args.file),
        )
        if p
    ]
    for p in problems:
        print(f"unhealthy: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
