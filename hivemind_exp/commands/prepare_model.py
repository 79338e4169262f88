"""`rl-swarm prepare-model`: materialise the model once into the cache (progress bar)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="embedded", help="model to prepare [default: embedded SmolLM2-135M]")
    parser.add_argument("--quiet-if-ready", action="store_true", help="print nothing when the checkpoint is already cached")


def run(args: argparse.Namespace) -> int:
    from hivemind_exp.trainer import model_source as ms

    try:
        if ms.is_embedded(args.model):
            ready = ms.checkpoint_complete(ms.embedded_checkpoint_dir())
            path = ms.materialize_embedded(progress=True)
            if not (ready and args.quiet_if_ready):
                print(f"model ready: {path}")
        else:
            print(f"model ready: {ms.resolve_model(args.model)}")
    except ms.ModelSourceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
