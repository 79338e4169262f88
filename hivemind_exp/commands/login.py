"""`rl-swarm login`: sign up / sign in from a terminal, no browser, and activate the trainer's key.

    rl-swarm login --email you@example.com --new     # first time: create the account
    rl-swarm login --email you@example.com           # later: sign in, issue a fresh key

The password is read with getpass (twice for --new), or from stdin with --password-stdin
(for scripts). On success the service has created the wallet; this command writes
userData.json and the apiKey file (both 0600, atomic) on this machine, and prints the org
id and wallet address; start the trainer with RLSWARM_ORG_ID and RLSWARM_API_KEY from them
(the login service itself keeps only the key's hash). The key itself is not printed unless
--print-key is given.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from hivemind_exp.chain.login_client import DEFAULT_LOGIN_URL
from hivemind_exp.common.paths import repo_root


def _default_dir() -> Path:
    return repo_root() / "modal-login" / "temp-data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--email", required=True, help="the account's email address")
    parser.add_argument("--new", action="store_true", help="create the account (sign up) instead of signing in")
    parser.add_argument("--login-url", default=os.environ.get("RLSWARM_LOGIN_URL", DEFAULT_LOGIN_URL),
                        help=f"base URL of the login service (env RLSWARM_LOGIN_URL) [default: {DEFAULT_LOGIN_URL}]")
    parser.add_argument("--user-data", type=Path, default=None, metavar="PATH",
                        help="where to write userData.json [default: modal-login/temp-data/userData.json]")
    parser.add_argument("--api-key-file", type=Path, default=None, metavar="PATH",
                        help="where to write the API key [default: apiKey beside userData.json]")
    parser.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    parser.add_argument("--no-activate", action="store_true", help="only sign in; do not issue a new API key")
    parser.add_argument("--print-key", action="store_true", help="also print the API key (it is a secret: mind your terminal logs)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each call [default: 60]")


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            raise SystemExit("rl-swarm login: --password-stdin given but stdin had no password line")
        return password
    if not sys.stdin.isatty():
        raise SystemExit("rl-swarm login: no terminal to ask for the password; pipe it with --password-stdin")
    password = getpass.getpass("Password: ")
    if args.new and getpass.getpass("Repeat password: ") != password:
        raise SystemExit("rl-swarm login: the passwords differ; run the command again")
    return password


def run(args: argparse.Namespace) -> int:
    from hivemind_exp.chain.login_client import LoginClient, LoginError, LoginUnavailable, write_private_json

    password = _read_password(args)
    user_data_path: Path = args.user_data or _default_dir() / "userData.json"
    key_path: Path = args.api_key_file or user_data_path.parent / "apiKey"
    with LoginClient(args.login_url, timeout_s=args.timeout) as client:
        try:
            user = client.sign_up(args.email, password) if args.new else client.sign_in(args.email, password)
            key = None if args.no_activate else client.activate_key()
        except LoginUnavailable as e:
            print(f"rl-swarm login: {e}", file=sys.stderr)
            return 3
        except LoginError as e:
            hint = ""
            if e.error == "InvalidCredentials" and not args.new:
                hint = " (no account yet? add --new)"
            elif e.error == "EmailTaken":
                hint = " (drop --new to sign in)"
            print(f"rl-swarm login: {e}{hint}", file=sys.stderr)
            return 1
    del password
    write_private_json(user_data_path, user.to_json())
    print(f"signed in as {user.email}: org {user.org_id}, wallet {user.address}")
    print(f"wrote {user_data_path}")
    if key is not None:
        write_private_json(key_path, {"orgId": key.org_id, "apiKey": key.api_key})
        print(f"API key activated (any earlier key of this account stops working); wrote {key_path}")
        if args.print_key:
            print(f"API key: {key.api_key}")
    return 0
