"""`rl-swarm login-server`: serve the login service (modal-login/) with uvicorn.

Port 3000 by default; if 3000 is taken it moves to 3001, then 3002, and says so. A port
the user chose (flag or RLSWARM_LOGIN_PORT) is never moved: a clash is an error naming
what to do. The socket is bound here and handed to uvicorn, so the port that was found
free is the one served (no check-then-bind race).
"""

from __future__ import annotations

import argparse
import socket
import sys

from hivemind_exp.common.settings_base import add_settings_arguments, load_settings, overrides_from_args

# A default port that is taken moves up by one, at most this many times (3000 -> 3001 -> 3002).
FALLBACK_STEPS = 2


def _import_settings() -> type:
    try:
        from modal_login.settings import LoginSettings
    except ImportError as exc:
        raise SystemExit(f"cannot load the login service ({exc}): it installs with this package from "
                         "modal-login/; reinstall from a full checkout (pip install -e . beside modal-login/)") from None

    return LoginSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser, _import_settings())


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def bind_with_fallback(host: str, port: int, explicit: bool) -> tuple[socket.socket, int]:
    """Bind `port`; when the user did not choose it and it is taken, try the next FALLBACK_STEPS ports.

    SystemExit with advice when nothing could be bound.
    """
    candidates = [port] if explicit else [p for p in range(port, port + FALLBACK_STEPS + 1) if p <= 65535]
    for candidate in candidates:
        try:
            sock = bind(host, candidate)
        except OSError as e:
            if explicit:
                raise SystemExit(f"rl-swarm login-server: cannot listen on {host}:{candidate} ({e.strerror}). Stop what "
                                 f"holds it (`ss -ltnp | grep :{candidate}`) or choose another port with --port / "
                                 "RLSWARM_LOGIN_PORT.") from None
            continue
        if candidate != port:
            print(f"rl-swarm login-server: port {port} is in use; serving on {candidate} instead "
                  f"(set --port / RLSWARM_LOGIN_PORT to choose)", file=sys.stderr, flush=True)
        return sock, candidate
    tried = ", ".join(str(p) for p in candidates)
    raise SystemExit(f"rl-swarm login-server: ports {tried} on {host} are all in use. Free one, or pass --port N.")


def run(args: argparse.Namespace) -> int:
    login_settings_cls = _import_settings()
    settings = load_settings(login_settings_cls, **overrides_from_args(args, login_settings_cls))
    explicit = "port" in settings.model_fields_set
    sock, port = bind_with_fallback(settings.host, settings.port, explicit)
    settings.port = port

    import uvicorn

    from modal_login.app import create_app
    from modal_login.keystore import KeystoreError

    try:
        app = create_app(settings)
    except KeystoreError as e:
        sock.close()
        raise SystemExit(f"rl-swarm login-server: {e}") from None
    from modal_login.logs import redact_url

    print(f"login service ready: {settings.url()}/  (data in {settings.data_dir}, chain {redact_url(settings.rpc_url)})",
          file=sys.stderr, flush=True)
    # access_log off: the app logs each request itself as a structured event. Forwarding headers
    # are believed only from the configured proxies (default none): from anyone else they would
    # let a client pick its own IP and dodge the per-IP sign-in limit.
    proxies = list(settings.forwarded_allow_ips)
    config = uvicorn.Config(app, log_level="warning", access_log=False, proxy_headers=bool(proxies),
                            forwarded_allow_ips=proxies or None, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
