"""The `rl-swarm` command: instant help, every subcommand wired, doctor's report, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from hivemind_exp.cli import COMMANDS, build_parser, main

CLI = [sys.executable, "-m", "hivemind_exp.cli"]


def test_top_level_help_is_fast_and_lists_every_command():
    t0 = time.monotonic()
    proc = subprocess.run(CLI + ["--help"], capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert proc.returncode == 0
    for name in COMMANDS:
        assert name in proc.stdout
    assert took < 5, f"--help took {took:.1f} s: something heavy is imported at start"
    mods = subprocess.run(CLI[:1] + ["-c", "import sys, hivemind_exp.cli; print(sorted(sys.modules))"],
                          capture_output=True, text=True, timeout=60).stdout
    for heavy in ("'torch'", "'transformers'", "'hivemind'", "'web3'"):
        assert heavy not in mods


def test_every_subcommand_builds_its_parser():
    for name in COMMANDS:
        parser = build_parser(name)
        sub = parser._subparsers._group_actions[0].choices[name]  # noqa: SLF001 - argparse has no public accessor
        assert sub.get_default("_run") is not None, name


def test_bad_setting_exits_2_with_the_reason(capsys):
    assert main(["up", "--num-peers", "zero"]) == 2
    err = capsys.readouterr().err
    assert "num_peers" in err and "--num-peers" in err


def test_doctor_reports_each_check(tmp_path):
    env = {**os.environ, "RLSWARM_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(CLI + ["doctor", "--identity-path", str(tmp_path / "swarm.pem"), "--ports", "1"],
                          capture_output=True, text=True, timeout=120, env=env)
    out = proc.stdout
    for name in ("python", "torch", "memory", "disk", "embedded model", "node", "anvil", "port 1", "identity"):
        assert f"] {name}" in out, out
    # the empty cache is reported with the command that fixes it
    assert "rl-swarm prepare-model" in out


def test_log_lines_follow_the_current_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import logging

    from hivemind_exp.common.logging_setup import configure_logging

    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging(logging.INFO)
    first.close()  # what a finished capture does; a later record must not hit the closed stream
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("rl-swarm.test").info("still visible")
    assert "still visible" in second.getvalue()
