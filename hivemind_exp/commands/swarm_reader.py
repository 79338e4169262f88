"""`rl-swarm swarm-reader`: serve read-only swarm snapshots over HTTP for the dashboard.

A DHT client (hivemind, so torch too) in its own service, so the dashboard's image needs
neither (`RLSWARM_SWARM_READER_URL` there). Heavy imports happen in `run` only, so
`--help` is instant.
"""

from __future__ import annotations

import argparse

from hivemind_exp.common.settings_base import add_settings_arguments, load_settings, overrides_from_args
from hivemind_exp.services.settings import SwarmReaderSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, SwarmReaderSettings)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(SwarmReaderSettings, **overrides_from_args(args, SwarmReaderSettings))
    from hivemind_exp.commands.dashboard import _check_port_free

    _check_port_free(settings.host, settings.port)

    import sys

    import uvicorn

    from hivemind_exp.services.swarm_reader import create_app

    app = create_app(settings)
    print(f"swarm reader listening on http://{settings.host}:{settings.port} (GET /api/snapshot, /api/healthz)",
          file=sys.stderr)
    # log_config=None keeps the service's own logging set-up (LOG_LEVEL) for uvicorn too.
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                timeout_graceful_shutdown=5)
    return 0
