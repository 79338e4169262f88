"""`rl-swarm trainer`: one GRPO node that plays the swarm's rounds."""

from __future__ import annotations

import argparse

from hivemind_exp.services.settings import TrainerSettings
from hivemind_exp.common.settings_base import add_settings_arguments, load_settings, overrides_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, TrainerSettings, skip=("hf_token", "api_key"))


def run(args: argparse.Namespace) -> int:
    from hivemind_exp.commands._service import known_startup_errors, run_service
    from hivemind_exp.services.node import TrainerNode

    settings = load_settings(TrainerSettings, **overrides_from_args(args, TrainerSettings))
    return run_service(lambda stop: TrainerNode(settings, stop), known_startup_errors())
