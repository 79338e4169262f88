"""The `rl-swarm` command.

Each subcommand lives in `hivemind_exp.commands.<module>` exposing
`add_arguments(parser)` and `run(args) -> int`. The table below is all `--help` needs,
so the top-level help is instant; a subcommand's module (and its heavy imports) loads
only when that subcommand is chosen.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Compose, the launcher and the README call these names.
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("hivemind_exp.commands.up", "start the whole local swarm (chain, coordinator, peers, login, dashboard)"),
    "trainer": ("hivemind_exp.commands.trainer", "run one GRPO trainer node"),
    "coordinator": ("hivemind_exp.commands.coordinator", "run the bootstrap peer and stage manager"),
    "chain": ("hivemind_exp.commands.chain", "run a local anvil chain and deploy the SwarmCoordinator contract"),
    "login-server": ("hivemind_exp.commands.login_server", "serve the login service (wallets, API keys) on port 3000"),
    "login": ("hivemind_exp.commands.login", "sign in from a terminal (no browser) and activate the trainer's API key"),
    "dashboard": ("hivemind_exp.commands.dashboard", "serve the dashboard API and UI on port 8080"),
    "swarm-reader": ("hivemind_exp.commands.swarm_reader",
                     "serve read-only swarm snapshots over HTTP (the dashboard's DHT client, as its own service)"),
    "status": ("hivemind_exp.commands.status", "show this node's identity, registration, rewards and pending submissions"),
    "eval": ("hivemind_exp.commands.eval", "evaluate a checkpoint on GSM8K-format problems"),
    "doctor": ("hivemind_exp.commands.doctor", "check this machine and say how to fix what is wrong"),
    "prepare-model": ("hivemind_exp.commands.prepare_model", "convert/download the model once into the cache"),
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rl-swarm",
        description="RL Swarm: peer-to-peer GRPO training of small language models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    if selected not in COMMANDS:
        selected = None
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    from hivemind_exp.common.logging_setup import configure_logging
    from hivemind_exp.common.settings_base import SettingsError

    configure_logging()
    try:
        return int(args._run(args) or 0)
    except SettingsError as err:
        print(err.message, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
