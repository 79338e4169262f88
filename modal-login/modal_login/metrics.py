"""The login service's counters (sign-ins, relayed transactions), when telemetry is set up.

`create_app`'s lifespan calls `setup_telemetry("modal-login")`; before that (or in a test
app without it) these are no-ops, so the service never depends on metrics.
"""

from __future__ import annotations

from typing import Any


def _metrics() -> Any:
    from hivemind_exp.common.telemetry import get_telemetry

    telemetry = get_telemetry("modal-login")
    return telemetry.login_metrics() if telemetry is not None else None


def sign_in(result: str) -> None:
    m = _metrics()
    if m is not None:
        m.record_sign_in(result)


def transaction_sent(method: str) -> None:
    m = _metrics()
    if m is not None:
        m.record_transaction_sent(method)


def transaction_failed(method: str, reason: str) -> None:
    m = _metrics()
    if m is not None:
        m.record_transaction_failed(method, reason)
