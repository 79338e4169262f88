"""login_client: the files the trainer reads, and wait_for_activation's countdown and timeout."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
from pathlib import Path

import pytest

from hivemind_exp.chain.login_client import (ActivationTimeout, UserData, read_api_key, read_user_data,
                                       wait_for_activation, write_private_json)


def test_write_private_json_is_0600_and_leaves_no_tmp(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "userData.json"
    old = os.umask(0o022)
    try:
        write_private_json(path, {"orgId": "o", "address": "0x1", "userId": "u", "email": "e@x.io"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["userData.json"]
    assert read_user_data(path) == UserData(org_id="o", address="0x1", user_id="u", email="e@x.io")
    write_private_json(path, {"orgId": "o2", "address": "0x2", "userId": "u", "email": "e@x.io"})
    assert read_user_data(path).org_id == "o2"


def test_write_failure_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "apiKey"
    write_private_json(path, {"orgId": "o", "apiKey": "k"})
    with pytest.raises(TypeError):
        write_private_json(path, {"orgId": object()})
    assert read_api_key(path) .api_key == "k"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["apiKey"]


def test_readers_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="rl-swarm login"):
        read_user_data(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        read_user_data(bad)
    bad.write_text(json.dumps({"orgId": "o", "address": "0x1"}))
    with pytest.raises(ValueError, match="userId, email"):
        read_user_data(bad)
    key = tmp_path / "apiKey"
    write_private_json(key, {"orgId": "org-a", "apiKey": "rlsk_x"})
    assert read_api_key(key, "org-a").api_key == "rlsk_x"
    with pytest.raises(ValueError, match="belongs to org org-a"):
        read_api_key(key, "org-b")


class FakeClock:
    """Virtual time, so a 30 s countdown runs in milliseconds."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_wait_for_activation_times_out_with_instructions(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    out = io.StringIO()
    with pytest.raises(ActivationTimeout) as err:
        wait_for_activation(url, "org-1", 40, poll_s=5, out=out, clock=FakeClock())
    text = out.getvalue()
    assert f"open {url}/" in text and f"rl-swarm login --login-url {url} --email" in text
    lines = [ln for ln in text.splitlines() if "waiting for key activation" in ln]
    # A line every 15 s of a 40 s wait (not one per poll): 0:40, 0:25, 0:10.
    assert [ln.split(": ")[1].split(" ")[0] for ln in lines] == ["0:40", "0:25", "0:10"]
    assert "login service unreachable" in lines[-1]
    msg = str(err.value)
    assert "0:40" in msg and "Activate key" in msg and "rl-swarm login" in msg


def test_wait_for_activation_waits_for_sign_in_file(tmp_path: Path) -> None:
    out = io.StringIO()
    with pytest.raises(ActivationTimeout, match="waiting for sign-in"):
        wait_for_activation(f"http://127.0.0.1:{closed_port()}", None, 3, user_data_path=tmp_path / "userData.json",
                            poll_s=1, out=out, clock=FakeClock())
    with pytest.raises(ValueError, match="timeout_s"):
        wait_for_activation("http://127.0.0.1:1", "org", 0)
    with pytest.raises(ValueError, match="user_data_path"):
        wait_for_activation("http://127.0.0.1:1", None, 5)
