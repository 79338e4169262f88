"""Run a local anvil chain as a child process: start, wait until its RPC answers, stop cleanly.

Uses the native binary of the npm package `@foundry-rs/anvil` when present (the `.bin/anvil`
Node wrapper exits on a signal without waiting for anvil to dump its state).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from hivemind_exp.common.paths import node_modules_bin, repo_root

log = logging.getLogger(__name__)

# anvil's default dev accounts (mnemonic "test test test test test test test test test test test
# junk"): public test keys, only for local chains. Index 0 deploys; others can be coordinator/peers.
ANVIL_DEV_KEYS: tuple[str, ...] = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)


# The dev account `rl-swarm up` and Compose give the coordinator's roles.
COORDINATOR_DEV_ACCOUNT = 1


def write_dev_key(path: Path, index: int) -> str:
    """Write dev account `index`'s key to `path` (mode 0600, atomically); returns its address."""
    from eth_account import Account

    from hivemind_exp.common.fileio import atomic_write_text

    key = ANVIL_DEV_KEYS[index]
    if not path.exists() or path.read_text().strip() != key:
        atomic_write_text(path, key + "\n", mode=0o600)
    return Account.from_key(key).address


class AnvilError(RuntimeError):
    """anvil could not start or answer; the message says why and what to do."""


def anvil_binary() -> Path:
    """The native anvil binary if npm installed one, else the npm wrapper script."""
    scoped = repo_root() / "node_modules" / "@foundry-rs"
    for candidate in sorted(scoped.glob("anvil-*/bin/anvil")):
        if os.access(candidate, os.X_OK):
            return candidate
    wrapper = node_modules_bin("anvil")
    if wrapper.exists():
        return wrapper
    raise AnvilError(f"anvil is not installed (looked in {scoped} and {wrapper}); run `npm install` in {repo_root()}")


def port_in_use(host: str, port: int) -> bool:
    from hivemind_exp.common.net import port_free

    return not port_free(port, "127.0.0.1" if host in ("0.0.0.0", "") else host)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def rpc_request(url: str, method: str, params: list[Any] | None = None, timeout: float = 2.0) -> Any:
    """One JSON-RPC call with the standard library (no web3 import needed to probe a node)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        reply = json.loads(resp.read())
    if "error" in reply:
        raise AnvilError(f"{method} failed: {reply['error']}")
    return reply.get("result")


class AnvilProcess:
    """A local anvil on `host:port`. Use as a context manager or call start() / stop().

    `state_file`: anvil loads it at start (if present) and writes it on a clean stop, so the
    chain survives restarts. `log_path`: where anvil's output goes (default: discarded).
    `quiet`: anvil's --silent (no line per RPC call, which grows a log fast; errors still show).
    """

    def __init__(self, port: int = 8545, host: str = "127.0.0.1", *, state_file: Path | None = None,
                 chain_id: int | None = None, accounts: int = 10, block_time: float | None = None,
                 log_path: Path | None = None, quiet: bool = True, extra_args: list[str] | None = None):
        self.port = int(port)
        self.host = host
        self.state_file = Path(state_file) if state_file else None
        self.chain_id = chain_id
        self.accounts = accounts
        self.block_time = block_time
        self.log_path = Path(log_path) if log_path else None
        self.quiet = quiet
        self.extra_args = list(extra_args or [])
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def rpc_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [str(anvil_binary()), "--host", self.host, "--port", str(self.port), "--accounts", str(self.accounts)]
        if self.chain_id is not None:
            cmd += ["--chain-id", str(self.chain_id)]
        if self.block_time is not None:
            cmd += ["--block-time", str(self.block_time)]
        if self.state_file is not None:
            cmd += ["--state", str(self.state_file)]
        if self.quiet:
            cmd.append("--silent")
        return cmd + self.extra_args

    def start(self, timeout: float = 30.0) -> "AnvilProcess":
        if self.process is not None and self.process.poll() is None:
            return self
        if port_in_use(self.host, self.port):
            raise AnvilError(f"port {self.port} on {self.host} is already in use (another anvil or service?); "
                             f"stop it or choose another port (--anvil-port)")
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")
        out = self._log_file if self._log_file is not None else subprocess.DEVNULL
        log.info("starting anvil on %s:%d%s", self.host, self.port,
                 f" (state {self.state_file})" if self.state_file else "")
        try:
            # Own session: a Ctrl-C aimed at our terminal does not kill anvil before it saves state.
            self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            self._close_log()
            raise AnvilError(f"cannot run anvil ({exc}); run `npm install` in {repo_root()}") from exc
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll eth_chainId until it answers, anvil exits, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AnvilError(f"anvil exited with code {self.process.returncode} during start-up"
                                 f"{self._log_hint()}")
            try:
                rpc_request(self.rpc_url, "eth_chainId", timeout=1.0)
                return
            except (OSError, urllib.error.URLError, AnvilError, ValueError) as exc:
                last_error = exc
            time.sleep(delay)
            delay = min(0.5, delay * 2)
        raise AnvilError(f"anvil did not answer on {self.rpc_url} within {timeout:.0f}s ({last_error})"
                         f"{self._log_hint()}")

    def _log_hint(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
        return f"; last lines of {self.log_path}:\n  " + "\n  ".join(tail) if tail else ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGINT (anvil writes its state file), then SIGKILL if it does not exit in `timeout`."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("anvil did not exit %.0fs after SIGINT; killing it", timeout)
                proc.kill()
                proc.wait(5)
        self.process = None
        self._close_log()

    def kill(self) -> None:
        """SIGKILL without saving state (tests of crash behaviour)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "AnvilProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
