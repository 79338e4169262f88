"""The swarm across a real (if simulated) network: hosts as network namespaces, impaired links, NAT.

One lab for the module (tests/fixtures/netns.py): host `boot` runs the chain and the
coordinator, `t0` and `t1` a trainer each on the lab LAN, `t2` a trainer behind a
masquerading router (no inbound connections; DHT client mode), `late` and `late2` are spare
hosts for start-up tests. Every link has 80 ms +- 20 ms one-way delay and 2 % loss (user-space switch:
this kernel has no netem). The tests run in order on the one swarm, so the module pays for
one start-up (budget: 5 minutes on a 2-core machine):

1. a full three-stage round: every stage advances early (every peer's records arrived before
   the deadline), every trainer built its prompts from all three peers' answers;
2. the NAT'd trainer is listed in the peer directory, no peer announces a loopback address,
   and a loopback announce address is refused naming the setting;
3. a trainer's cable is pulled for longer than a stage deadline: it does not crash, trains
   no stale stage, plays again within a bounded time, and its chain submissions are all
   confirmed once each;
4. the bootnode host's cable is pulled: the trainers keep exchanging records; a trainer
   started meanwhile retries with one line per attempt and joins once it is back;
5. a trainer whose bootnode never answers fails within a bounded time with a clear error.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.netns import Lab, impaired_lab, netns_unavailable
from tests.fixtures.netns_swarm import DHT_PORT, LabSwarm, log_time, node_env

pytestmark = [pytest.mark.slow, pytest.mark.chain]  # anvil from node_modules runs on the boot host

STAGE_SECONDS = 20.0
STALE_SECONDS = 5.0
FETCH_TIMEOUT = 6.0
DELAY, JITTER, LOSS = 0.080, 0.020, 0.02
TRAINERS = ["t0", "t1", "t2"]
# Per-stage wall time of the same tiny-model round on loopback (no impairment), for the report.
FIGURES: dict[str, object] = {}


@pytest.fixture(scope="module")
def lab():
    yield from impaired_lab(["boot", "t0", "t1", "late", "late2"], ["t2"], delay=DELAY, jitter=JITTER, loss=LOSS)


@pytest.fixture(scope="module")
def swarm(lab, tmp_path_factory, tiny_model_dir, tiny_profile):
    sw = LabSwarm(lab, tmp_path_factory.mktemp("netns-swarm"), tiny_model_dir, tiny_profile, TRAINERS,
                  stage_seconds=STAGE_SECONDS, stage_stale_seconds=STALE_SECONDS,
                  extra_trainer_args=["--dht-fetch-timeout", str(FETCH_TIMEOUT)])
    try:
        FIGURES["join_s"] = round(sw.start(), 1)
        yield sw
    finally:
        sw.close()


def test_a_killed_lab_is_cleaned_up_by_the_next() -> None:
    """SIGKILL a process that holds a lab (with a process running inside a host): the switch dies with
    it (no TAP left in this namespace) and the next lab removes its namespaces and processes."""
    from tests.fixtures.netns import cleanup_stale

    why = netns_unavailable()
    if why:
        pytest.skip(f"cannot build the network lab: {why}")
    code = ("import sys,time; sys.path.insert(0, %r)\n"
            "from tests.fixtures.netns import Lab\n"
            "lab = Lab(['a', 'b'], ['c'])\n"
            "lab.popen('a', ['sleep', '600'], '/dev/null')\n"
            "print('ready', lab.tag, flush=True); time.sleep(600)") % str(Path(__file__).resolve().parents[2])
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        line = owner.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("ready"), line
        tag = line.split()[1]
    finally:
        owner.kill()
        owner.wait()
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{tag}-a" in names, "the killed lab's namespaces should still be there before the cleanup"
    sleeper = subprocess.run(["ip", "netns", "pids", f"{tag}-a"], capture_output=True, text=True).stdout.split()
    assert sleeper, "the process inside the killed lab's host should have outlived its owner"
    removed = cleanup_stale()
    assert {f"{tag}-{h}" for h in ("a", "b", "c", "router")} <= set(removed), removed
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert tag not in names, names
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert tag not in links, links
    time.sleep(0.2)
    assert not any(Path(f"/proc/{p}").exists() and "sleep" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
                   for p in sleeper), "the killed lab's process is still running"


def stale_steps(sw: LabSwarm, host: str) -> list[dict]:
    """Steps that began after their stage was over: the coordinator had moved on and the stage's deadline
    plus the stale margin had passed (allowing one fetch between the decision and the step)."""
    starts: dict[tuple[int, int], float] = {}
    order: list[tuple[int, int]] = []
    for t, r, s in sw.stage_starts():
        if (r, s) not in starts:
            starts[(r, s)] = t
            order.append((r, s))
    ends = {k: (starts[n] if i + 1 < len(order) and (n := order[i + 1]) else math.inf) for i, k in enumerate(order)}
    bad = []
    for e in sw.steps(host):
        key = (e["round"], e["stage"])
        begin = e["at"] - e["seconds"]
        if key not in starts:
            bad.append(e)
            continue
        over = max(ends[key], starts[key] + STAGE_SECONDS + STALE_SECONDS)
        if begin > over + FETCH_TIMEOUT + 2:
            bad.append(e)
    return bad


def alive_or_fail(sw: LabSwarm) -> None:
    dead = [n for n, s in sw.services.items() if s.proc is not None and not s.alive and n in TRAINERS + ["coordinator"]]
    assert not dead, f"crashed: {dead}\n{sw.logs()}"


def test_full_round_over_impaired_links(swarm: LabSwarm, lab: Lab) -> None:
    # Round 0 starts before the trainers are up; round 1 is the first one they play from its start.
    swarm.wait(lambda: all("round 1 winners" in swarm.services[h].text() for h in TRAINERS), 240,
               "round 1 to finish on every trainer")
    alive_or_fail(swarm)
    early = swarm.early_advances()
    assert {(1, 1), (1, 2), (1, 3)} <= early, (
        f"a stage of round 1 ran into its {STAGE_SECONDS:.0f} s deadline: not every peer's records arrived in time "
        f"(early advances: {sorted(early)})\n{swarm.services['coordinator'].text()[-3000:]}")
    for h in TRAINERS:
        log = swarm.services[h].text()
        for stage in (2, 3):
            assert f"round 1 stage {stage}: training on 2 question(s) with 3 peer answer(s)" in log, (h, log[-3000:])
    stats = lab.stats()
    for h in TRAINERS:
        assert stats[h]["tx_bytes"] > 10_000, f"{h} sent almost nothing over the lab's switch: {stats}"
    assert sum(s["dropped_loss"] for s in stats.values()) > 0, f"the 2 % loss never dropped a frame: {stats}"
    FIGURES["round1_stage_s"] = swarm.stage_seconds_of(1)
    print(f"\nnetns lab, {DELAY * 1000:.0f} ms +- {JITTER * 1000:.0f} ms one-way, {LOSS:.0%} loss: "
          f"join {FIGURES['join_s']} s, round 1 stage seconds {FIGURES['round1_stage_s']}")


def test_nat_peer_is_listed_and_nobody_announces_loopback(swarm: LabSwarm, lab: Lab) -> None:
    from pydantic import ValidationError

    from hivemind_exp.services.settings import TrainerSettings

    # The router lets the NAT'd host out but nobody in.
    assert swarm.reachable("t2", "boot"), "the NAT'd host cannot reach the bootnode through its router"
    assert not swarm.reachable("t0", "t2", timeout=2), "the NAT'd trainer accepted an inbound connection"
    peers = {p["peer_id"]: p for p in swarm.observe("boot", "peers")["peers"]}
    ids = swarm.peer_ids
    assert set(ids.values()) <= set(peers), f"peer directory lacks some trainers: {sorted(peers)} vs {ids}"
    assert peers[ids["t2"]]["maddrs"] == [], "a client-mode (NAT'd) node announced addresses nobody can dial"
    for h in ("t0", "t1"):
        assert peers[ids[h]]["maddrs"] == [swarm.trainer_maddr(h)], peers[ids[h]]
    assert not [m for p in peers.values() for m in p["maddrs"] if "/127." in m], peers
    # The NAT'd trainer's answers reached the others (they counted 3 peers above) and it saw theirs.
    assert "round 1 stage 2: training on 2 question(s) with 3 peer answer(s)" in swarm.services["t2"].text()

    with pytest.raises(ValidationError) as err:
        TrainerSettings(_env_file=None, announce_maddrs=[f"/ip4/127.0.0.1/tcp/{DHT_PORT}"],  # type: ignore[call-arg]
                        initial_peers=[swarm.coord_maddr])
    text = str(err.value)
    assert "announce_maddrs" in text and "--announce-maddrs" in text and "loopback" in text


def test_trainer_partition_and_heal(swarm: LabSwarm, lab: Lab) -> None:
    victim = "t1"
    svc = swarm.services[victim]
    steps_before = len(swarm.steps(victim))
    log_at_cut = len(svc.text())
    t_cut = time.time()
    lab.cut(victim)
    try:
        fail_fast(swarm, lab)  # test 5's trainer runs in this idle window (module budget)
        time.sleep(STAGE_SECONDS + STALE_SECONDS + 10)  # longer than a stage deadline plus the stale margin
        assert svc.alive, f"{victim} died while cut off\n{svc.text()[-3000:]}"
        # A stage that began before the cut may still be played within its deadline, from records the
        # victim's own DHT storage already held (stale_steps below checks the deadline); a stage that
        # began after the cut is one it cannot have learned of.
        unseen = {(r, st) for t, r, st in swarm.stage_starts() if t > t_cut}
        during = [e for e in swarm.steps(victim)[steps_before:] if (e["round"], e["stage"]) in unseen]
        assert not during, f"{victim} trained while it could see neither the chain nor the swarm: {during}"
        assert re.search(r"not training on a stale stage|waiting for the coordinator's round state",
                         svc.text()[log_at_cut:]), f"{victim} never said it was waiting:\n{svc.text()[log_at_cut:][-3000:]}"
    finally:
        lab.cut(victim, down=False)  # healed even when an assertion failed, so later tests get the lab whole
    t_heal = time.time()

    # Rejoined: it trains a stage that started after the heal, and the coordinator sees its records
    # (a stage ends early only once all three trainers published it).
    def rejoined() -> bool:
        later = {(r, s) for t, r, s in swarm.stage_starts() if t > t_heal}
        played = {(e["round"], e["stage"]) for e in swarm.steps(victim) if e["at"] > t_heal}
        return bool(later & played & swarm.early_advances())

    swarm.wait(rejoined, 120, f"{victim} to play a stage with the others again after the heal")
    FIGURES["partition_rejoin_s"] = round(time.time() - t_heal, 1)
    alive_or_fail(swarm)
    assert not stale_steps(swarm, victim), f"{victim} trained on a stale stage: {stale_steps(swarm, victim)}"

    # Nothing it queued for the chain was lost or sent twice: one confirmed reward per step.
    steps = {(e["round"], e["stage"]) for e in swarm.steps(victim)}
    swarm.wait(lambda: {(x.payload["round"], x.payload["stage"] + 1) for x in swarm.outbox(victim)
                        if x.kind == "reward" and x.status == "confirmed"} >= steps, 90,
               f"{victim}'s chain submissions to be confirmed")
    rewards = [(x.payload["round"], x.payload["stage"]) for x in swarm.outbox(victim) if x.kind == "reward"]
    assert len(rewards) == len(set(rewards)), f"a reward was queued twice: {rewards}"
    assert not [x for x in swarm.outbox(victim) if x.status == "failed"], swarm.outbox(victim)
    keys = sorted((r, s - 1, swarm.peer_ids[victim]) for r, s in steps)
    assert all(swarm.rewards_on_chain(keys)), f"some rewards of {victim} are not on chain: {keys}"
    print(f"\npartition of {victim} for {STAGE_SECONDS + STALE_SECONDS + 10:.0f} s: playing again "
          f"{FIGURES['partition_rejoin_s']} s after the heal")


def test_bootnode_partition_and_late_joiner(swarm: LabSwarm, lab: Lab) -> None:
    t_cut = time.time()
    lab.cut("boot")
    # A trainer started while the bootnode is unreachable: bounded retries, one line per attempt.
    late_log = swarm.work / "late.log"
    argv = [a for a in swarm.services["t0"].argv]
    argv = _retarget(argv, swarm, "late") + ["--dht-startup-retries", "6", "--dht-startup-backoff", "2",
                                             "--dht-bootnode-probe-timeout", "2", "--chain-mode", "off"]
    late = lab.popen("late", argv, late_log, env=node_env(), cwd=swarm.work)
    try:
        time.sleep(12)
        # The two public trainers still reach each other: t1 finds t0's fresh heartbeat through t0 alone.
        peers = {p["peer_id"]: p for p in swarm.observe("t1", "peers", boot=swarm.trainer_maddr("t0"))["peers"]}
        for h in ("t0", "t1"):
            assert swarm.peer_ids[h] in peers and peers[swarm.peer_ids[h]]["last_seen"] > t_cut + 1, (
                f"{h}'s heartbeat did not get through while the bootnode was away: {peers}")
        assert late.poll() is None, late_log.read_text()[-3000:]
        attempts = re.findall(r"event=bootnode_probe attempt=(\d+)/7", late_log.read_text())
        assert attempts, f"no probe line while the bootnode is unreachable:\n{late_log.read_text()[-3000:]}"
        lab.cut("boot", down=False)
        t_heal = time.time()
        alive_or_fail(swarm)
        # The swarm goes on: a stage started after the heal is played by every trainer.
        swarm.wait(lambda: any(t > t_heal and all((r, s) in {(e["round"], e["stage"]) for e in swarm.steps(h)}
                                                  for h in TRAINERS) for t, r, s in swarm.stage_starts()),
                   120, "a stage after the bootnode's return, played by every trainer")
        swarm.wait(lambda: "joined the swarm" in late_log.read_text(), 60, "the late trainer to join after the heal")
        assert late.poll() is None
        text = late_log.read_text()
        n = [int(a) for a in re.findall(r"event=bootnode_probe attempt=(\d+)/7", text)]
        assert n == list(range(1, len(n) + 1)) and len(n) < 7, n
        FIGURES["bootnode_recover_s"] = round(time.time() - t_heal, 1)
        for h in TRAINERS:
            assert not stale_steps(swarm, h), (h, stale_steps(swarm, h))
    finally:
        lab.stop(late)


_FAIL_FAST: dict[str, object] = {}


def fail_fast(swarm: LabSwarm, lab: Lab) -> subprocess.Popen:
    """Start (once) a trainer in host `late2`, whose cable is out, with 3 short bootnode probes."""
    if "proc" not in _FAIL_FAST:
        lab.cut("late2")
        log = swarm.work / "late2.log"
        argv = _retarget(list(swarm.services["t0"].argv), swarm, "late2") + [
            "--dht-startup-retries", "2", "--dht-startup-backoff", "0.5", "--dht-bootnode-probe-timeout", "1",
            "--chain-mode", "off"]
        _FAIL_FAST.update(proc=lab.popen("late2", argv, log, env=node_env(), cwd=swarm.work), log=log)
    return _FAIL_FAST["proc"]  # type: ignore[return-value]


def test_unreachable_bootnode_fails_fast_and_clearly(swarm: LabSwarm, lab: Lab) -> None:
    proc = fail_fast(swarm, lab)
    log: Path = _FAIL_FAST["log"]  # type: ignore[assignment]
    try:
        code = proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        lab.stop(proc)
        raise AssertionError(f"the trainer hung with an unreachable bootnode:\n{log.read_text()[-3000:]}")
    finally:
        lab.cut("late2", down=False)
    text = log.read_text()
    stamps = [t for t in (log_time(line) for line in text.splitlines()) if t is not None]
    probes = [log_time(line) for line in text.splitlines() if "event=bootnode_probe" in line]
    # bounded: from its first line to giving up (the model loads before the swarm starts)
    elapsed = stamps[-1] - stamps[0]
    assert elapsed < 60 and probes[-1] - probes[0] < 10, (elapsed, probes)
    assert code == 1, (code, text[-3000:])
    assert re.findall(r"event=bootnode_probe attempt=(\d)/3", text) == ["1", "2", "3"], text[-3000:]
    assert "error: Could not reach any bootnode after 3 attempt(s)" in text and "--initial-peers" in text, text[-2000:]
    assert swarm.coord_maddr in text
    assert "joined the swarm" not in text
    FIGURES["unreachable_fail_s"] = round(elapsed, 1)
    print(f"\nfigures: {FIGURES}")


def _retarget(argv: list[str], swarm: LabSwarm, host: str, data: str | None = None) -> list[str]:
    """t0's trainer argv moved to another host (own identity, data dir and listen address)."""
    d = swarm.work / (data or host)
    d.mkdir(parents=True, exist_ok=True)
    out = list(argv)
    cut = out.index("--chain-mode")  # drop t0's chain flags; the callers add their own
    out = out[:cut]
    for flag, value in (("--identity-path", str(d / "swarm.pem")), ("--data-dir", str(d)),
                        ("--host-maddrs", f"/ip4/{swarm.lab.hosts[host].ip}/tcp/{DHT_PORT}")):
        out[out.index(flag) + 1] = value
    if "--wallet-key-file" in out:
        i = out.index("--wallet-key-file")
        del out[i:i + 2]
    return out
