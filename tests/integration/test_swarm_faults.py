"""Faults over real processes: a trainer killed mid-stage resumes; a silent coordinator stalls nobody.

One swarm (coordinator + 3 tiny-model trainers, no chain) serves both scenarios in turn, so
the suite pays for one start-up.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.fixtures.procs import CLI, free_block, node_env, wait_for

pytestmark = [pytest.mark.slow]


class Proc:
    def __init__(self, name: str, argv: list[str], log: Path, cwd: Path):
        self.name, self.argv, self.log, self.cwd = name, argv, log, cwd
        self.p: subprocess.Popen | None = None
        self.offset = 0

    def start(self) -> "Proc":
        self.offset = self.log.stat().st_size if self.log.exists() else 0
        fh = self.log.open("ab")
        self.p = subprocess.Popen(self.argv, stdout=fh, stderr=subprocess.STDOUT, env=node_env(), cwd=self.cwd,
                                  start_new_session=True)
        fh.close()
        return self

    def text(self, since_start: bool = True) -> str:
        data = self.log.read_bytes()
        return data[self.offset:].decode(errors="replace") if since_start else data.decode(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.p is not None and self.p.poll() is None:
            try:
                os.killpg(self.p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(timeout=10)
        if self.p is not None:
            try:  # p2pd and friends share the group
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    @property
    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None


def steps_done(text: str) -> list[tuple[int, int]]:
    return [(int(r), int(s)) for r, s in re.findall(r"round (\d+) stage (\d): GRPO step done", text)]


def test_trainer_killed_mid_stage_resumes_and_silent_coordinator_stalls_nobody(tmp_path, tiny_model_dir):
    from hivemind_exp.swarm.identity import ensure_identity, load_peer_id

    profile = tmp_path / "tiny.yaml"
    profile.write_text("model: tiny\nquestions_per_round: 2\ngrpo:\n  num_generations: 3\n"
                       "  max_completion_length: 24\n  learning_rate: 1.0e-4\n")
    # The victim's steps are made long (16 completions of 384 tokens: seconds, not the others'
    # fraction of one) so that a kill right after "training on" lands inside its stage-2 step.
    slow_profile = tmp_path / "tiny-slow.yaml"
    slow_profile.write_text("model: tiny\nquestions_per_round: 2\ngrpo:\n  num_generations: 8\n"
                            "  max_completion_length: 384\n  learning_rate: 1.0e-4\n")
    base = free_block(4)
    coord_pem = ensure_identity(tmp_path / "coordinator.pem")
    coord_id = load_peer_id(coord_pem)
    boot = f"/ip4/127.0.0.1/tcp/{base}/p2p/{coord_id}"
    coord_argv = CLI + ["coordinator", "--identity-path", str(coord_pem), "--host-maddrs",
                        f"/ip4/127.0.0.1/tcp/{base}", "--stage-seconds", "60", "--min-stage-seconds", "3",
                        "--early-advance-min-peers", "3",
                        "--chain-mode", "off", "--state-file", str(tmp_path / "coordinator-state.json")]
    coordinator = Proc("coordinator", coord_argv, tmp_path / "coordinator.log", tmp_path).start()
    peers: list[Proc] = []
    try:
        wait_for(lambda: "coordinator ready" in coordinator.text(), 120, "coordinator", [coordinator.p],
                 [coordinator.log])
        for i in range(3):
            argv = CLI + ["trainer", "--identity-path", str(tmp_path / f"peer{i}.pem"), "--data-dir",
                          str(tmp_path / f"peer{i}"), "--host-maddrs", f"/ip4/127.0.0.1/tcp/{base + 1 + i}",
                          "--initial-peers", boot, "--coordinator-peer-id", coord_id, "--model", str(tiny_model_dir),
                          "--config", str(slow_profile if i == 2 else profile), "--dataset", "generated",
                          "--chain-mode", "off",
                          "--stage-stale-seconds", "5", "--poll-seconds", "1", "--heartbeat-seconds", "5",
                          "--no-dht-check-identity-free"]
            peers.append(Proc(f"peer{i}", argv, tmp_path / f"peer{i}.log", tmp_path).start())
        logs = [coordinator.log] + [p.log for p in peers]
        victim = peers[2]

        # --- 1. kill a trainer in the middle of stage 2; it resumes and finishes the round ---------
        wait_for(lambda: "round 0 stage 2: training on" in victim.text(), 300, "peer2 in stage 2",
                 [coordinator.p] + [p.p for p in peers], logs, poll=0.02)
        victim.kill(signal.SIGKILL)
        assert (0, 1) in steps_done(victim.text())
        assert (0, 2) not in steps_done(victim.text()), "stage 2 finished before the kill: not a mid-stage kill"
        victim.start()
        wait_for(lambda: "resuming from checkpoint" in victim.text(), 120, "peer2 restart", [victim.p], logs)
        assert re.search(r"finished round 0 stage 1", victim.text()), victim.text()[-2000:]
        wait_for(lambda: re.search(r"round 0 stage [23]: training on", victim.text()), 300,
                 "peer2 to train again after its restart", [coordinator.p, victim.p], logs)
        # While peer2 was down the other two could finish stage 2 and the coordinator move on
        # without it (a dead peer stalls nobody); only then may the restarted node skip stage 2.
        stage2_over = "round 0 stage 3 started" in coordinator.text()
        wait_for(lambda: all("round 0 winners" in p.text(since_start=False) for p in peers), 400,
                 "round 0 to finish on every peer", [coordinator.p] + [p.p for p in peers], logs)
        after = steps_done(victim.text())
        assert (0, 1) not in after, "the restarted node redid a stage it had finished"
        assert (0, 3) in after, after
        assert (0, 2) in after or stage2_over, f"skipped stage 2 while it was still running: {after}"
        assert victim.text().count("round 0 winners") == 1

        # --- 2. the coordinator goes silent past the stage deadline: nobody crashes or trains ------
        wait_for(lambda: all("round 1 stage 1: GRPO step done" in p.text(since_start=False) for p in peers), 300,
                 "round 1 stage 1 on every peer", [coordinator.p] + [p.p for p in peers], logs)
        coordinator.kill(signal.SIGKILL)
        # The stage in flight finishes; once its deadline (60 s) passes, the peers call it stale
        # and wait. From then on nothing is trained until the coordinator is back.
        wait_for(lambda: all("not training on a stale stage" in p.text(since_start=False) for p in peers), 240,
                 "peers to notice the silent coordinator", [p.p for p in peers], logs)
        counts = [len(steps_done(p.text(since_start=False))) for p in peers]
        time.sleep(15)
        assert all(p.alive for p in peers), "a trainer died while the coordinator was away"
        assert [len(steps_done(p.text(since_start=False))) for p in peers] == counts, "trained on a stale stage"

        # The coordinator comes back: the swarm moves on and trains again.
        coordinator.start()
        wait_for(lambda: "starting round 2" in coordinator.text(), 120, "the coordinator to continue after round 1",
                 [coordinator.p], logs)
        wait_for(lambda: all(len(steps_done(p.text(since_start=False))) > c for p, c in zip(peers, counts)), 300,
                 "training to resume after the coordinator returned", [coordinator.p] + [p.p for p in peers], logs)
    finally:
        for p in [*peers, coordinator]:
            p.kill(signal.SIGTERM)
