"""Logging for every service: `LOG_LEVEL` (DEBUG/INFO/WARNING/ERROR) and `DEBUG=1` as shorthand."""

from __future__ import annotations

import logging
import os
import sys

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def level_from_env() -> int:
    if os.environ.get("DEBUG", "").strip().lower() in ("1", "true", "yes", "on"):
        return logging.DEBUG
    name = os.environ.get("LOG_LEVEL", "INFO").strip().upper()
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        print(f"LOG_LEVEL={name!r} is not a level; use DEBUG, INFO, WARNING or ERROR. Using INFO.", file=sys.stderr)
        return logging.INFO
    return level


def configure_logging(level: int | None = None) -> None:
    lvl = level_from_env() if level is None else level
    logging.basicConfig(level=lvl, format=_FORMAT, stream=sys.stderr, force=True)
    # Third-party loggers are chatty at INFO; keep them at WARNING unless debugging.
    if lvl > logging.DEBUG:
        for noisy in ("hivemind", "httpx", "urllib3", "web3", "asyncio", "filelock"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
