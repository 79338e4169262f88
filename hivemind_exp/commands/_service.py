"""Shared run loop of long-running node services: signal -> event -> finally: shutdown()."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)


def run_service(make: Callable[[threading.Event], Any], known_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Build the service, set it up, run it; any stop path ends in its `shutdown()`.

    Known errors (bad settings, unreachable swarm, broken model) are printed as one line
    naming the cause instead of a traceback.
    """
    stop = threading.Event()
    main_pid = os.getpid()

    def on_signal(signum: int, _frame: Any) -> None:
        if os.getpid() != main_pid:
            # A forked child (hivemind's DHT process) inherits this handler: let it die normally.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        log.info("received %s; shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    service = None
    try:
        service = make(stop)
        service.setup()
        return int(service.run() or 0)
    except known_errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if service is not None:
            service.shutdown()
        for s, h in previous.items():
            signal.signal(s, h)


def known_startup_errors() -> tuple[type[BaseException], ...]:
    from hivemind_exp.chain.errors import ChainError
    from hivemind_exp.game.data import DatasetError
    from hivemind_exp.swarm.identity import IdentityError
    from hivemind_exp.trainer.model_source import ModelSourceError
    from hivemind_exp.trainer.profiles import ProfileError
    from hivemind_exp.swarm.transport import SwarmStartupError

    errors: list[type[BaseException]] = [ChainError, DatasetError, IdentityError, ModelSourceError, ProfileError,
                                         SwarmStartupError]
    try:
        from hivemind_exp.services.node import NodeError
        from hivemind_exp.trainer.params import GRPOParamsError

        errors += [NodeError, GRPOParamsError]
    except ImportError:
        pass
    try:
        from hivemind_exp.chain.login_client import ActivationTimeout, LoginError

        errors += [ActivationTimeout, LoginError]
    except ImportError:
        pass
    return tuple(errors)
