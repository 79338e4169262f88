"""HTTP client of the login service, used by `rl-swarm login` and by the trainer.

- `LoginClient`: sign up / sign in (JSON API, session cookie), activate or revoke the
  trainer's API key, read the key's status and the user's wallet address. The relayed
  contract calls (register-peer, submit-reward, submit-winner) are the chain back-end
  `hivemind_exp.chain.relay.RelayChainClient`, not this class.
- `wait_for_activation(login_url, org_id, timeout_s)`: what a trainer calls at start
  when it has no activated key yet: prints where to sign in, counts down, raises
  `ActivationTimeout` when the time is up.
- `read_user_data`, `read_api_key`, `write_private_json`: the files the service (or
  `rl-swarm login`) leaves for the trainer: `userData.json` and `apiKey`, both mode 0600.

Only the standard library and httpx; httpx is imported inside the functions that use it.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

DEFAULT_LOGIN_URL = "http://127.0.0.1:3000"
USER_DATA_FIELDS = ("orgId", "address", "userId", "email")


class LoginError(RuntimeError):
    """The login service refused or failed a call; the message says why and what to do."""

    def __init__(self, message: str, *, status: int | None = None, error: str | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.error = error
        self.retry_after = retry_after


class LoginUnavailable(LoginError):
    """The service could not be reached, or it answered 503 (chain down): retry later."""


class ActivationTimeout(TimeoutError):
    """The user did not activate the trainer's API key before the deadline."""


@dataclass(frozen=True)
class UserData:
    org_id: str
    address: str
    user_id: str
    email: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "UserData":
        missing = [k for k in USER_DATA_FIELDS if not isinstance(data.get(k), str) or not data.get(k)]
        if missing:
            raise ValueError(f"userData is missing {', '.join(missing)}")
        return cls(org_id=data["orgId"], address=data["address"], user_id=data["userId"], email=data["email"])

    def to_json(self) -> dict[str, str]:
        return {"orgId": self.org_id, "address": self.address, "userId": self.user_id, "email": self.email}


@dataclass(frozen=True)
class ApiKey:
    org_id: str
    api_key: str


# ---------------------------------------------------------------------------------- files

def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically with mode 0600 (see `hivemind_exp.common.fileio`): never half a file,
    never readable by others."""
    from hivemind_exp.common.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n", mode=0o600)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist yet: sign in first (open the login page or run `rl-swarm login --email ...`)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} {path} is not readable JSON ({e}); delete it and sign in again") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must hold a JSON object; delete it and sign in again")
    return data


def read_user_data(path: Path) -> UserData:
    """userData.json -> UserData (orgId, address, userId, email)."""
    try:
        return UserData.from_json(_read_json(path, "userData file"))
    except ValueError as e:
        raise ValueError(f"{path}: {e}; delete it and sign in again") from None


def read_api_key(path: Path, org_id: str | None = None) -> ApiKey:
    """The apiKey file -> ApiKey; checks it belongs to `org_id` when given."""
    data = _read_json(path, "API key file")
    org, key = data.get("orgId"), data.get("apiKey")
    if not isinstance(org, str) or not isinstance(key, str) or not org or not key:
        raise ValueError(f"API key file {path} lacks orgId/apiKey; activate the key again (login page or `rl-swarm login`)")
    if org_id is not None and org != org_id:
        raise ValueError(f"API key file {path} belongs to org {org}, not {org_id}: activate the key again while signed in as this user")
    return ApiKey(org_id=org, api_key=key)


# ------------------------------------------------------------------------------- client

def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class LoginClient:
    """Thin JSON client; one instance keeps one signed-in session (cookie + CSRF token)."""

    def __init__(self, login_url: str = DEFAULT_LOGIN_URL, timeout_s: float = 60.0):
        import httpx

        self.login_url = login_url.rstrip("/")
        self._http = httpx.Client(base_url=self.login_url, timeout=timeout_s, follow_redirects=False)
        self._csrf: str | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "LoginClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, *, json_body: Any = None, params: dict[str, str] | None = None,
              headers: dict[str, str] | None = None) -> dict[str, Any]:
        import httpx

        try:
            resp = self._http.request(method, path, json=json_body, params=params, headers=headers)
        except httpx.HTTPError as e:
            raise LoginUnavailable(f"cannot reach the login service at {self.login_url} ({type(e).__name__}: {e}); "
                                   "is it running? start it with `rl-swarm login-server`") from None
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {"detail": body}
        if resp.status_code < 400:
            return body
        error = body.get("error") if isinstance(body.get("error"), str) else None
        detail = body.get("detail")
        if not isinstance(detail, str):
            detail = json.dumps(detail)[:500] if detail is not None else resp.text[:300]
        message = f"{method} {path} -> {resp.status_code}{f' {error}' if error else ''}: {detail}"
        cls = LoginUnavailable if resp.status_code == 503 else LoginError
        raise cls(message, status=resp.status_code, error=error, retry_after=_retry_after(resp.headers))

    # -- account (session) -----------------------------------------------------------
    def sign_up(self, email: str, password: str) -> UserData:
        return self._session_start("/api/auth/signup", email, password)

    def sign_in(self, email: str, password: str) -> UserData:
        return self._session_start("/api/auth/signin", email, password)

    def _session_start(self, path: str, email: str, password: str) -> UserData:
        body = self._call("POST", path, json_body={"email": email, "password": password})
        self._csrf = body.get("csrfToken")
        return UserData.from_json(body.get("user") or {})

    def _csrf_headers(self) -> dict[str, str]:
        if not self._csrf:
            raise LoginError("not signed in: call sign_in() first")
        return {"X-CSRF-Token": self._csrf}

    def activate_key(self) -> ApiKey:
        body = self._call("POST", "/api/auth/activate-key", headers=self._csrf_headers())
        return ApiKey(org_id=body["orgId"], api_key=body["apiKey"])

    def revoke_key(self) -> str:
        return str(self._call("POST", "/api/auth/revoke-key", headers=self._csrf_headers())["status"])

    # -- trainer API -----------------------------------------------------------------
    def key_status(self, org_id: str) -> str:
        """'activated', 'pending' or 'revoked'; LoginError(status=404) for an unknown org."""
        return str(self._call("GET", "/api/get-api-key-status", params={"orgId": org_id})["status"])

    def wallet_address(self, api_key: str, org_id: str) -> str:
        """The user's wallet: what a peer's registration proof must name (see `chain.proof`)."""
        return str(self._call("GET", "/api/wallet-address", params={"orgId": org_id},
                              headers={"Authorization": f"Bearer {api_key}"})["address"])


# ---------------------------------------------------------------------- waiting for a key

def _fmt(seconds: float) -> str:
    s = max(0, int(seconds))
    return f"{s // 60:d}:{s % 60:02d}"


def wait_for_activation(login_url: str, org_id: str | None, timeout_s: float, *,
                        user_data_path: Path | None = None, poll_s: float = 2.0,
                        out: IO[str] | None = None, clock: Any = time) -> str:
    """Block until the org's API key is `activated`; return the org id.

    With `org_id=None` it first waits for `user_data_path` (userData.json) to appear,
    i.e. for the user to sign in, and reads the org from it. Prints the login URL and
    the headless `rl-swarm login` command once, then a countdown (one rewritten line
    on a terminal, a line every 15 s otherwise). Raises `ActivationTimeout` naming what
    to do when `timeout_s` passes; `ValueError` for a bad timeout.
    """
    if not timeout_s or timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
    if org_id is None and user_data_path is None:
        raise ValueError("give org_id, or user_data_path to read it from once the user signs in")
    stream = out if out is not None else sys.stderr
    tty = bool(getattr(stream, "isatty", lambda: False)())
    url = login_url.rstrip("/")
    stream.write(
        "\nThe trainer needs an activated API key from the login service.\n"
        f"  in a browser:   open {url}/ , sign up or sign in, then press 'Activate key'\n"
        f"  in a terminal:  rl-swarm login --login-url {url} --email YOU@EXAMPLE.COM   (add --new the first time)\n"
        f"Waiting up to {_fmt(timeout_s)} (min:s).\n"
    )
    stream.flush()
    deadline = clock.monotonic() + timeout_s
    last_line = -1e9
    last_state = "service not reached yet"
    client = LoginClient(url, timeout_s=min(10.0, max(1.0, poll_s * 5)))
    try:
        while True:
            state = last_state
            if org_id is None and user_data_path is not None:
                try:
                    org_id = read_user_data(user_data_path).org_id
                except (FileNotFoundError, ValueError):
                    state = "waiting for sign-in"
            if org_id is not None:
                try:
                    status = client.key_status(org_id)
                    if status == "activated":
                        if tty:
                            stream.write("\n")
                        stream.write(f"API key activated for org {org_id}.\n")
                        stream.flush()
                        return org_id
                    state = f"key {status}"
                except LoginUnavailable as e:
                    state = f"login service unreachable ({e.status or 'no answer'})"
                except LoginError as e:
                    state = "org unknown to the service (sign in again)" if e.status == 404 else f"error {e.status}"
            last_state = state
            left = deadline - clock.monotonic()
            if left <= 0:
                if tty:
                    stream.write("\n")
                stream.flush()
                raise ActivationTimeout(
                    f"no activated API key after {_fmt(timeout_s)} (last state: {state}). Open {url}/ and press "
                    f"'Activate key', or run `rl-swarm login --login-url {url} --email ...`, then start the trainer again "
                    "(or raise its activation timeout)."
                )
            now = clock.monotonic()
            if tty:
                stream.write(f"\r  waiting for key activation: {_fmt(left)} left ({state})   ")
            elif now - last_line >= 15:
                stream.write(f"  waiting for key activation: {_fmt(left)} left ({state})\n")
                last_line = now
            stream.flush()
            clock.sleep(min(poll_s, max(0.05, left)))
    finally:
        client.close()
