"""`rl-swarm dashboard`: serve the dashboard API (web/api) and the built UI (web/ui/dist).

The app lives in `web/api` (installed with the package as `api`); settings come from flags,
env (RLSWARM_*) and `.env` like every service.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys

from hivemind_exp.common.settings_base import add_settings_arguments, load_settings, overrides_from_args


def _settings_class() -> type:
    try:
        from api.settings import DashboardSettings
    except ImportError as exc:
        raise SystemExit(f"cannot load the dashboard app ({exc}): it installs with this package from web/api; "
                         "reinstall from a full checkout (pip install -e . beside web/)") from None
    return DashboardSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, _settings_class())


def _check_port_free(host: str, port: int) -> None:
    """Fail with a readable message before uvicorn prints a traceback for a taken port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SystemExit(f"port {port} on {host} is already in use (another dashboard?); stop it or pick "
                                 f"another port with --port / RLSWARM_PORT") from None
            raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}; check --host / RLSWARM_HOST") from None


def run(args: argparse.Namespace) -> int:
    cls = _settings_class()
    settings = load_settings(cls, **overrides_from_args(args, cls))
    _check_port_free(settings.host, settings.port)

    import uvicorn
    from api.server import create_app

    if not (settings.ui_dist / "index.html").is_file():
        print(f"note: the UI is not built ({settings.ui_dist}); the API works, / explains how to build it "
              "(cd web/ui && npm install && npm run build)", file=sys.stderr)
    app = create_app(settings)
    # The address really bound; for a wildcard bind also where this machine's browser finds it.
    bound = f"[{settings.host}]" if ":" in settings.host else settings.host
    where = f" (all interfaces; from this machine http://127.0.0.1:{settings.port})" \
        if settings.host in ("0.0.0.0", "::") else ""
    print(f"dashboard listening on http://{bound}:{settings.port}{where}", file=sys.stderr)
    # log_config=None keeps the service's own logging set-up (LOG_LEVEL) for uvicorn too.
    # Forwarding headers only from configured proxies: from anyone else they would let a client
    # pick its own address and dodge the per-client live-stream cap.
    proxies = list(settings.forwarded_allow_ips)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                timeout_graceful_shutdown=5, proxy_headers=bool(proxies), forwarded_allow_ips=proxies or None)
    return 0
