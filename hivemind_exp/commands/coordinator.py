"""`rl-swarm coordinator`: the bootstrap peer and stage manager."""

from __future__ import annotations

import argparse

from hivemind_exp.services.settings import CoordinatorSettings
from hivemind_exp.common.settings_base import add_settings_arguments, load_settings, overrides_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, CoordinatorSettings, skip=("api_key",))


def run(args: argparse.Namespace) -> int:
    from hivemind_exp.commands._service import known_startup_errors, run_service
    from hivemind_exp.services.coordinator import Coordinator

    settings = load_settings(CoordinatorSettings, **overrides_from_args(args, CoordinatorSettings))
    return run_service(lambda stop: Coordinator(settings, stop), known_startup_errors())
