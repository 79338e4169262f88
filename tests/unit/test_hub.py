"""The HF token check at start (`hivemind_exp.trainer.hub.check_write_token`) against a local fake hub.

The fake answers `/api/whoami-v2` the way the hub does for each kind of token, so every
refusal is exercised without network access.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hivemind_exp.trainer.hub import HubError, check_write_token


def _scoped(entity: str, *perms: str) -> dict:
    return {"entity": {"type": "user", "name": entity}, "permissions": list(perms)}


TOKENS = {
    "hf_write": {"role": "write"},
    "hf_read": {"role": "read"},
    "hf_fine_ok": {"role": "fineGrained", "fineGrained": {"scoped": [_scoped("alice", "repo.content.read", "repo.write")]}},
    "hf_fine_other": {"role": "fineGrained", "fineGrained": {"scoped": [_scoped("bob", "repo.write")]}},
    "hf_fine_readonly": {"role": "fineGrained", "fineGrained": {"scoped": [_scoped("alice", "repo.content.read")]}},
}


class FakeHub(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        token = self.headers.get("authorization", "").removeprefix("Bearer ")
        if self.path != "/api/whoami-v2" or token not in TOKENS:
            body, status = b'{"error": "Invalid credentials in Authorization header"}', 401
        else:
            body = json.dumps({"type": "user", "name": "alice", "auth": {"accessToken": TOKENS[token]}}).encode()
            status = 200
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(autouse=True)
def _online(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test command runs with HF_HUB_OFFLINE=1 (nothing may reach the real hub); the fake
    # hub is on loopback, so let huggingface_hub talk to it.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="module")
def hub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("token", ["hf_write", "hf_fine_ok"])
def test_tokens_that_can_write_pass(hub: str, token: str) -> None:
    assert check_write_token(token, "alice/rl-swarm-node", endpoint=hub) == "alice"


@pytest.mark.parametrize("token, message", [
    ("hf_unknown", r"rejected by the hub \(HTTP 401\)"),
    ("hf_read", "read-only"),
    ("hf_fine_other", "without repo.write on alice/rl-swarm-node"),
    ("hf_fine_readonly", "without repo.write"),
    ("", "needs HF_TOKEN"),
])
def test_bad_tokens_are_refused_with_the_reason(hub: str, token: str, message: str) -> None:
    with pytest.raises(HubError, match=message):
        check_write_token(token, "alice/rl-swarm-node", endpoint=hub)


def test_unreachable_hub_says_how_to_go_on() -> None:
    with pytest.raises(HubError, match="cannot reach the Hugging Face hub.*unset --push-to-hub"):
        check_write_token("hf_write", "alice/x", endpoint="http://127.0.0.1:9")
