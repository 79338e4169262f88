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


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted, not when logging was set up.

    A handler bound to the stream of the moment keeps writing to it after it is replaced and
    closed (a test harness's capture, a redirect), and background threads then fail with
    "I/O operation on closed file".
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 - logging's own attribute
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging(level: int | None = None) -> None:
    lvl = level_from_env() if level is None else level
    handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter(_FORMAT))
    logging.basicConfig(level=lvl, handlers=[handler], force=True)
    # Third-party loggers are chatty at INFO; keep them at WARNING unless debugging.
    if lvl > logging.DEBUG:
        for noisy in ("hivemind", "httpx", "urllib3", "web3", "asyncio", "filelock"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
