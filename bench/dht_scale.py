"""A swarm of N peers on loopback over the project's real swarm transport: join, visibility, cost.

    .venv/bin/python bench/dht_scale.py [--peers 4,8,16,32] [--rounds 3] [--idle-seconds 20] [--uncapped-read]

Each peer is its own process running a `HivemindTransport` (so its own hivemind DHT child
process and p2p daemon), started the way the node starts it: peer 0 bootstraps a new swarm
and is the coordinator, every other peer joins through it, heartbeats once and then keeps
heartbeating every --heartbeat-seconds (with a directory read, as the node's heartbeat thread
does). Each round every peer publishes one stage's outputs the way `Node.run_stage` does
(`publish_outputs` with --questions `OutputRecord`s: a completion of --completion-chars
characters, the parsed answer, the reward and the question in `meta`; then `publish_reward`),
at a staggered instant within --spread seconds, while every peer polls the whole swarm (a
directory read, then `fetch_outputs` of every listed peer: the read a node made before reads
were capped) until it holds every peer's record or --visibility-timeout passes.

Printed per swarm size:
- join: seconds from `HivemindTransport.start` to the first heartbeat stored (p50/max), and
  until every peer's directory lists all N peers;
- visibility: for each published record, (latest moment any peer first held it) - (moment the
  publisher started publishing): p50/p99/max over all records, measured by polling, so it
  includes up to one poll's duration;
- dropped: (record, reader) pairs never seen by the deadline, plus the transport's own drop
  counters (bad records rejected), plus peers missing from a directory at the end;
- idle cost per peer (worker + DHT child + p2pd) over --idle-seconds with only heartbeats:
  CPU as % of one core, RSS and PSS (PSS splits pages the forked DHT child shares);
- the per-stage read a node makes (`fetch_outputs` of one stage with the default peer set, at
  most --max-peers-per-read peers: `hivemind_exp.swarm.read_set`), run by each peer in turn on
  a quiet swarm (--read-settle-seconds after the rounds; the load then is printed): wall and
  CPU seconds, and how many peers with stored records no reader read (coverage);
  with --uncapped-read also the read of every listed peer (directory read included), the
  cost that grows with swarm size without the cap.

The LAST line is a JSON object with every figure, keyed by swarm size. The machine's `uptime`
load is printed before and after each size. Children run in their own sessions; on Ctrl-C,
SIGTERM or any failure every peer is asked to close, then its whole process tree is killed.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from hivemind_exp.swarm.read_set import DEFAULT_MAX_PEERS_PER_READ  # noqa: E402 - after the path fix; cheap


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        one, five, fifteen = os.getloadavg()
        return f"load average: {one:.2f}, {five:.2f}, {fifteen:.2f}"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


# ---------------------------------------------------------------------------- peer worker


def _tree_cpu(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def worker_main(args: argparse.Namespace) -> int:
    """One peer: start the transport, report, then serve JSON-line commands on stdin."""
    # Protocol lines go to the real stdout; anything else that prints (libraries) goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"peer{args.index} %(asctime)s %(name)s %(levelname)s %(message)s")

    from hivemind_exp.swarm.hivemind_transport import HivemindTransport
    from hivemind_exp.swarm.records import OutputRecord
    from hivemind_exp.swarm.settings import SwarmSettings

    def send(obj: dict[str, Any]) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    settings = SwarmSettings(  # type: ignore[call-arg]
        _env_file=None,
        host_maddrs=["/ip4/127.0.0.1/tcp/0"],
        initial_peers=args.initial_peers,
        identity_path=Path(args.tmp) / f"peer{args.index}.pem",
        coordinator_peer_id=args.coordinator or None,
        dht_check_identity_free=False,
        dht_startup_timeout=args.startup_timeout,
        dht_publish_timeout=args.publish_timeout,
        dht_max_peers_per_read=args.max_peers_per_read,
    )
    name = f"peer{args.index}"
    started = time.time()
    transport = HivemindTransport.start(settings)
    up = time.time()
    ok = transport.heartbeat(name=name)
    joined = time.time()
    stop = threading.Event()

    def pids() -> list[int]:
        import psutil

        out = [os.getpid()]
        try:
            out += [c.pid for c in psutil.Process().children(recursive=True)]
        except psutil.Error:
            pass
        return out

    def heartbeat_loop() -> None:  # Node._heartbeat_loop: heartbeat, then a directory read for metrics
        while not stop.wait(args.heartbeat_seconds):
            try:
                transport.heartbeat()
                transport.list_peers(timeout=5)
            except Exception as err:  # noqa: BLE001 - like the node, retry on the next tick
                print(f"{name} heartbeat failed: {err}", file=sys.stderr)

    beat = threading.Thread(target=heartbeat_loop, name="heartbeat", daemon=True)
    beat.start()
    send({"event": "ready", "peer_id": transport.peer_id, "maddrs": transport.visible_maddrs(),
          "started": started, "up": up, "joined": joined, "heartbeat_ok": ok, "pids": pids()})

    def read_everyone(round_no: int, stage: int, timeout: float) -> dict[str, dict[str, OutputRecord]]:
        # The uncapped read: the whole directory (and ourselves), as a node read before the cap.
        t_end = time.time() + timeout
        listed = {p.peer_id for p in transport.list_peers(timeout=timeout)} | {transport.peer_id}
        return transport.fetch_outputs(round_no, stage, timeout=max(0.5, t_end - time.time()), peers=listed)

    question = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                "How many clips did Natalia sell altogether in April and May? ") * 3

    def outputs(round_no: int, stage: int) -> dict[str, OutputRecord]:
        body = (f"peer {args.index} round {round_no} stage {stage}: " + "Let me think step by step. " * 200)
        text = body[:args.completion_chars - 12] + " #### 72"
        return {f"q{round_no}-{j}": OutputRecord(completion=text, final_answer="72", reward=1.2,
                                                 meta={"stage": stage, "question": question[:300]})
                for j in range(args.questions)}

    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            op = cmd["cmd"]
            if op == "quit":
                break
            if op == "peers":
                t = time.time()
                listed = [p.peer_id for p in transport.list_peers(timeout=cmd.get("timeout", 10))]
                send({"listed": listed, "seconds": time.time() - t})
            elif op == "round":
                r, s = cmd["round"], cmd["stage"]
                expect = set(cmd["expect"])
                published: dict[str, Any] = {}

                def publish(r: int = r, s: int = s, published: dict[str, Any] = published) -> None:
                    time.sleep(max(0.0, cmd["publish_at"] - time.time()))
                    published["start"] = time.time()
                    ok1 = transport.publish_outputs(r, s, outputs(r, s))
                    ok2 = transport.publish_reward(r, s, 1.2)
                    published["end"] = time.time()
                    published["ok"] = bool(ok1 and ok2)

                pub = threading.Thread(target=publish, daemon=True)
                pub.start()
                first_seen: dict[str, float] = {}
                polls: list[float] = []
                deadline = cmd["deadline"]
                while time.time() < deadline and set(first_seen) != expect:
                    t = time.time()
                    got = read_everyone(r, s, max(0.5, min(10.0, deadline - t)))
                    done = time.time()
                    polls.append(done - t)
                    want = {f"q{r}-{j}" for j in range(args.questions)}
                    for peer, recs in got.items():
                        if peer in expect and peer not in first_seen and want <= set(recs):
                            first_seen[peer] = done
                    if set(first_seen) != expect:
                        time.sleep(args.poll_interval)
                pub.join(timeout=max(1.0, deadline - time.time() + args.publish_timeout))
                send({"first_seen": first_seen, "polls": polls, "published": published})
            elif op == "stage_read":
                tree = pids()
                cpu0, t0 = _tree_cpu(tree), time.time()
                if cmd.get("uncapped"):
                    got = read_everyone(cmd["round"], cmd["stage"], cmd.get("timeout", 10))
                else:  # what a node does: the default peer set, capped at dht_max_peers_per_read
                    got = transport.fetch_outputs(cmd["round"], cmd["stage"], timeout=cmd.get("timeout", 10))
                wall, cpu = time.time() - t0, _tree_cpu(tree) - cpu0
                send({"seconds": wall, "cpu_seconds": cpu, "peers": len(got), "read": sorted(got),
                      "records": sum(len(v) for v in got.values())})
            elif op == "drops":
                send({"drops": transport.drop_counts(), "restarts": transport.restart_count})
            elif op == "pids":
                send({"pids": pids()})
            else:
                send({"error": f"unknown command {op!r}"})
    finally:
        stop.set()
        transport.close()
        send({"event": "closed"})
    return 0


# ---------------------------------------------------------------------------- orchestrator


class PeerFailed(RuntimeError):
    pass


class Peer:
    """A worker process, spoken to in JSON lines; its stderr goes to a log file."""

    def __init__(self, index: int, tmp: Path, args: argparse.Namespace, initial_peers: list[str], coordinator: str):
        self.index = index
        self.log_path = tmp / f"peer{index}.log"
        self._log = self.log_path.open("w")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--index", str(index), "--tmp", str(tmp),
               "--questions", str(args.questions), "--completion-chars", str(args.completion_chars),
               "--heartbeat-seconds", str(args.heartbeat_seconds), "--poll-interval", str(args.poll_interval),
               "--startup-timeout", str(args.startup_timeout), "--publish-timeout", str(args.publish_timeout),
               "--max-peers-per-read", str(args.max_peers_per_read), "--coordinator", coordinator]
        for m in initial_peers:
            cmd += ["--initial-peer", m]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                   PYTHONUNBUFFERED="1")
        self.spawned = time.time()
        # Own session: a terminal's Ctrl-C reaches only the orchestrator, which shuts peers down in order.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, start_new_session=True, env=env)
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.info: dict[str, Any] = {}
        self.pids: list[int] = [self.proc.pid]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def receive(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise PeerFailed(f"peer {self.index} did not answer within {timeout:.0f}s; its log:\n{self.tail()}") from None
        if line is None:
            raise PeerFailed(f"peer {self.index} exited (code {self.proc.poll()}); its log:\n{self.tail()}")
        return json.loads(line)

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise PeerFailed(f"peer {self.index} is gone ({exc}); its log:\n{self.tail()}") from None

    def ask(self, cmd: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.send(cmd)
        return self.receive(timeout)

    def refresh_pids(self) -> None:
        import psutil

        try:
            kids = [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.Error:
            return
        self.pids = list(dict.fromkeys(self.pids + kids))

    def shutdown(self, grace: float) -> None:
        """Ask the peer to close (`reap` then waits and kills whatever of its tree is left)."""
        self.refresh_pids()
        if not self.info:  # still starting: it reads no commands yet, so stop its tree now
            self.kill_tree()
        elif self.proc.poll() is None:
            try:
                self.send({"cmd": "quit"})
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except (PeerFailed, OSError):
                pass

    def kill_tree(self) -> None:
        import psutil

        for pid in self.pids:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass

    def reap(self, grace_deadline: float) -> int:
        """Wait for the peer to exit; kill what is left of its tree. Returns how many had to be killed."""
        import psutil

        try:
            self.proc.wait(timeout=max(0.1, grace_deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass
        left = []
        for pid in self.pids:  # the DHT child and p2pd too, in case the worker could not close them
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p)
            except psutil.Error:
                pass
        # torch's torch_shm_manager (started for hivemind's file_system tensor sharing) quits by
        # itself about 2 s after its last client exits: wait for that before killing anything.
        until = time.time() + max(5.0, grace_deadline - time.time())
        while left and time.time() < until:
            left = [p for p in left if _running(p)]
            if left:
                time.sleep(0.1)
        killed = 0
        for p in left:
            try:
                name = p.name()
                p.kill()
                killed += 1
                log(f"peer {self.index}: killed {name} (pid {p.pid}), still running after the peer closed")
            except psutil.Error:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        return killed


def _running(proc: Any) -> bool:
    """Alive and not a zombie (an orphan's zombie lingers until PID 1 reaps it)."""
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def shutdown_all(peers: list[Peer], grace: float = 20.0) -> int:
    """Close every peer (in parallel); returns how many processes outlived the grace and were killed."""
    for p in peers:
        p.shutdown(grace)
    deadline = time.time() + grace
    return sum(p.reap(deadline) for p in peers)


def tree_usage(peer: Peer) -> tuple[float, float, float]:
    """(cpu seconds, rss MB, pss MB) of the peer's process tree."""
    import psutil

    cpu = rss = pss = 0.0
    for pid in peer.pids:
        try:
            proc = psutil.Process(pid)
            t = proc.cpu_times()
            cpu += t.user + t.system
            mem = proc.memory_full_info()
            rss += mem.rss / 2**20
            pss += getattr(mem, "pss", mem.rss) / 2**20
        except psutil.Error:
            pass
    return cpu, rss, pss


def run_size(n: int, args: argparse.Namespace, interrupted: threading.Event) -> dict[str, Any]:
    peers: list[Peer] = []
    with tempfile.TemporaryDirectory(prefix=f"dht-scale-{n}-") as tmp_s:
        tmp = Path(tmp_s)
        load_before = uptime()
        log(f"--- {n} peers; {load_before}")
        try:
            from hivemind_exp.swarm.identity import ensure_identity, load_identity

            boot_id = load_identity(ensure_identity(tmp / "peer0.pem")).peer_id
            peers.append(Peer(0, tmp, args, [], boot_id))
            peers[0].info = peers[0].receive(args.startup_timeout * 3 + 60)
            boot = peers[0].info["maddrs"]
            pending = list(range(1, n))
            while pending:  # join in waves of --join-concurrency, as nodes come up over time
                if interrupted.is_set():
                    raise KeyboardInterrupt
                wave = [Peer(i, tmp, args, boot, boot_id) for i in pending[:args.join_concurrency]]
                pending = pending[args.join_concurrency:]
                peers.extend(wave)
                for p in wave:
                    p.info = p.receive(args.startup_timeout * 3 + 60)
            for p in peers:
                p.refresh_pids()
            ids = [p.info["peer_id"] for p in peers]
            join_s = [p.info["joined"] - p.info["started"] for p in peers]
            spawn_s = [p.info["joined"] - p.spawned for p in peers]
            hb_failed = sum(1 for p in peers if not p.info["heartbeat_ok"])
            all_up = max(p.info["joined"] for p in peers)
            log(f"{n} peers up: join (start+heartbeat) p50 {statistics.median(join_s):.2f}s max {max(join_s):.2f}s")

            # Directory convergence: every peer lists all N.
            converge_deadline = time.time() + args.visibility_timeout * 2
            missing_dir: dict[int, int] = {}
            converged_at = None
            while time.time() < converge_deadline:
                missing_dir = {}
                for p in peers:
                    p.send({"cmd": "peers", "timeout": 10})
                for p in peers:
                    listed = set(p.receive(60)["listed"])
                    if not set(ids) <= listed:
                        missing_dir[p.index] = len(set(ids) - listed)
                if not missing_dir:
                    converged_at = time.time()
                    break
                time.sleep(0.5)
            directory_s = None if converged_at is None else converged_at - all_up
            log(f"directory: {'all peers list all ' + str(n) if converged_at else f'incomplete {missing_dir}'}"
                + (f", {directory_s:.2f}s after the last peer joined" if directory_s is not None else ""))

            # Idle cost: heartbeats only.
            for p in peers:
                p.refresh_pids()
            before = [tree_usage(p) for p in peers]
            time.sleep(args.idle_seconds)
            after = [tree_usage(p) for p in peers]
            idle_cpu = [100 * (a[0] - b[0]) / args.idle_seconds for a, b in zip(after, before)]
            rss = [a[1] for a in after]
            pss = [a[2] for a in after]
            log(f"idle {args.idle_seconds:.0f}s: CPU per peer mean {statistics.mean(idle_cpu):.1f}% of a core, "
                f"RSS mean {statistics.mean(rss):.0f} MB, PSS mean {statistics.mean(pss):.0f} MB")

            # Rounds: everyone publishes a stage's outputs (staggered), everyone polls until all are visible.
            latencies: list[float] = []
            lost = 0
            publish_failed = 0
            poll_s: list[float] = []
            publish_s: list[float] = []
            round_base = 1000
            stored_first_round: set[str] = set()  # peers whose round-1 publish was confirmed: the stage read's data
            for k in range(args.rounds):
                if interrupted.is_set():
                    raise KeyboardInterrupt
                r = round_base + k
                t0 = time.time() + 1.0
                deadline = t0 + args.spread + args.visibility_timeout
                for i, p in enumerate(peers):
                    p.send({"cmd": "round", "round": r, "stage": 1, "expect": ids,
                            "publish_at": t0 + args.spread * i / max(1, n), "deadline": deadline})
                replies = [p.receive(deadline - time.time() + args.publish_timeout + 60) for p in peers]
                starts = {ids[i]: rep["published"].get("start") for i, rep in enumerate(replies)}
                if k == 0:
                    stored_first_round = {ids[i] for i, rep in enumerate(replies) if rep["published"].get("ok")}
                for i, rep in enumerate(replies):
                    poll_s += rep["polls"]
                    pub = rep["published"]
                    if not pub.get("ok"):
                        publish_failed += 1
                    if "end" in pub:
                        publish_s.append(pub["end"] - pub["start"])
                round_lat = []
                for pid in ids:
                    seen = [rep["first_seen"].get(pid) for rep in replies]
                    lost += sum(1 for s in seen if s is None)
                    if starts[pid] is not None and all(s is not None for s in seen):
                        round_lat.append(max(seen) - starts[pid])  # type: ignore[type-var]
                latencies += round_lat
                log(f"round {k + 1}/{args.rounds}: {len(round_lat)}/{n} records seen by all {n} peers"
                    + (f", visibility p50 {statistics.median(round_lat):.2f}s max {max(round_lat):.2f}s"
                       if round_lat else ""))

            # The per-stage read a node makes, one peer at a time on a quiet swarm: capped (the
            # node's default) and, with --uncapped-read, every listed peer, right after it.
            # Let the publish storm of the rounds drain first, so the reads measure the read.
            time.sleep(args.read_settle_seconds)
            load_at_read = uptime()
            cap = args.max_peers_per_read
            want = n if cap <= 0 else min(n, cap)
            reads, full_reads = [], []
            for p in peers:
                reads.append(p.ask({"cmd": "stage_read", "round": round_base, "stage": 1, "timeout": 10}, 60))
                if args.uncapped_read:
                    full_reads.append(p.ask({"cmd": "stage_read", "round": round_base, "stage": 1, "timeout": 10,
                                             "uncapped": True}, 60))
            read_wall = [x["seconds"] for x in reads]
            read_cpu = [x["cpu_seconds"] for x in reads]
            read_short = sum(1 for x in reads if x["peers"] < want)
            read_over = sum(1 for x in reads if x["peers"] > want)
            # Coverage among peers whose records are there to read (a failed publish is not the cap's doing).
            unread = len(stored_first_round - {q for x in reads for q in x["read"]})
            log(f"stage read, cap {cap or 'none'} ({want} of {n} peers x {args.questions} records): wall p50 "
                f"{statistics.median(read_wall):.3f}s, CPU p50 {statistics.median(read_cpu):.3f}s; short reads "
                f"{read_short}, over the cap {read_over}, peers nobody read {unread} of {len(stored_first_round)} "
                f"stored; {load_at_read}")
            if full_reads:
                full_wall = [x["seconds"] for x in full_reads]
                full_cpu = [x["cpu_seconds"] for x in full_reads]
                full_short = sum(1 for x in full_reads if x["peers"] < n)
                log(f"stage read, uncapped ({n} peers): wall p50 {statistics.median(full_wall):.3f}s, CPU p50 "
                    f"{statistics.median(full_cpu):.3f}s; short reads {full_short}")

            drops: dict[str, int] = {}
            restarts = 0
            for p in peers:
                d = p.ask({"cmd": "drops"}, 30)
                restarts += d["restarts"]
                for reason, c in d["drops"].items():
                    drops[reason] = drops.get(reason, 0) + c
            final_missing = 0
            for p in peers:
                p.send({"cmd": "peers", "timeout": 10})
            for p in peers:
                final_missing += len(set(ids) - set(p.receive(60)["listed"]))
            alive = sum(1 for p in peers if p.proc.poll() is None)
        finally:
            t = time.time()
            left = shutdown_all(peers)
            shutdown_s = time.time() - t
        load_after = uptime()
    pairs = n * n * args.rounds
    result = {
        "peers": n,
        "join_p50_s": round(statistics.median(join_s), 3), "join_max_s": round(max(join_s), 3),
        "spawn_to_join_p50_s": round(statistics.median(spawn_s), 3),
        "heartbeat_failed": hb_failed,
        "directory_converged_s": None if directory_s is None else round(directory_s, 3),
        "directory_missing": missing_dir,
        "visibility_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "visibility_p99_s": round(percentile(latencies, 99), 3) if latencies else None,
        "visibility_max_s": round(max(latencies), 3) if latencies else None,
        "records": n * args.rounds, "records_seen_by_all": len(latencies),
        "reader_pairs": pairs, "reader_pairs_lost": lost, "publish_failed": publish_failed,
        "publish_p50_s": round(statistics.median(publish_s), 3) if publish_s else None,
        "poll_p50_s": round(statistics.median(poll_s), 3) if poll_s else None,
        "poll_p99_s": round(percentile(poll_s, 99), 3) if poll_s else None,
        "transport_drops": drops, "dht_restarts": restarts,
        "idle_cpu_pct_mean": round(statistics.mean(idle_cpu), 2), "idle_cpu_pct_max": round(max(idle_cpu), 2),
        "rss_mb_mean": round(statistics.mean(rss)), "rss_mb_max": round(max(rss)),
        "pss_mb_mean": round(statistics.mean(pss)), "pss_mb_total": round(sum(pss)),
        "stage_read_wall_p50_s": round(statistics.median(read_wall), 4),
        "stage_read_wall_max_s": round(max(read_wall), 4),
        "stage_read_cpu_p50_s": round(statistics.median(read_cpu), 4),
        "stage_read_short": read_short, "stage_read_over_cap": read_over,
        "stage_read_cap": cap, "stage_read_peers": want, "stage_read_unread_peers": unread,
        "stage_read_stored_peers": len(stored_first_round), "uptime_at_read": load_at_read,
        "stage_read_uncapped_wall_p50_s": round(statistics.median(full_wall), 4) if full_reads else None,
        "stage_read_uncapped_wall_max_s": round(max(full_wall), 4) if full_reads else None,
        "stage_read_uncapped_cpu_p50_s": round(statistics.median(full_cpu), 4) if full_reads else None,
        "stage_read_uncapped_short": full_short if full_reads else None,
        "directory_missing_at_end": final_missing, "peers_alive_at_end": alive,
        "processes_killed_at_shutdown": left, "shutdown_s": round(shutdown_s, 2),
        "uptime_before": load_before, "uptime_after": load_after,
    }
    return result


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"swarm on loopback: {args.questions} OutputRecord(s) of {args.completion_chars} chars per peer per round, "
          f"{args.rounds} round(s), publishes spread over {args.spread}s, poll pause {args.poll_interval}s, "
          f"heartbeat every {args.heartbeat_seconds}s, {os.cpu_count()} CPUs")
    head = (f"{'peers':>5} {'join p50/max s':>15} {'dir s':>6} {'vis p50/p99/max s':>19} {'lost':>5} {'drops':>5} "
            f"{'idle CPU%':>9} {'RSS MB':>7} {'PSS MB':>7} {'read wall/CPU s':>16} {'uncapped s':>16} "
            f"{'poll p50 s':>10}")
    print(f"stage read: at most {args.max_peers_per_read or 'every'} peer(s) per read (--max-peers-per-read)"
          + ("; 'uncapped': every listed peer, directory read included" if args.uncapped_read else ""))
    print(head)
    for r in results:
        full = ("-" if r["stage_read_uncapped_wall_p50_s"] is None
                else f"{r['stage_read_uncapped_wall_p50_s']:.3f}/{r['stage_read_uncapped_cpu_p50_s']:.3f}")
        vis = ("-" if r["visibility_p50_s"] is None
               else f"{r['visibility_p50_s']:.2f}/{r['visibility_p99_s']:.2f}/{r['visibility_max_s']:.2f}")
        print(f"{r['peers']:>5} {r['join_p50_s']:>7.2f}/{r['join_max_s']:<7.2f} "
              f"{'-' if r['directory_converged_s'] is None else format(r['directory_converged_s'], '.2f'):>6} "
              f"{vis:>19} {r['reader_pairs_lost']:>5} {sum(r['transport_drops'].values()):>5} "
              f"{r['idle_cpu_pct_mean']:>9.1f} {r['rss_mb_mean']:>7} {r['pss_mb_mean']:>7} "
              f"{r['stage_read_wall_p50_s']:>7.3f}/{r['stage_read_cpu_p50_s']:<8.3f} {full:>16} "
              f"{r['poll_p50_s'] or 0:>10.3f}")
    for r in results:
        ok = (r["visibility_p99_s"] is not None and r["visibility_p99_s"] < 1.0 and r["reader_pairs_lost"] == 0
              and r["directory_missing_at_end"] == 0 and r["peers_alive_at_end"] == r["peers"])
        print(f"{r['peers']:>3} peers: target p99 < 1 s and no peer lost: {'MET' if ok else 'NOT MET'}; "
              f"before: {r['uptime_before']}; after: {r['uptime_after']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", default="4,8,16,32", help="swarm sizes, comma-separated [4,8,16,32]")
    parser.add_argument("--rounds", type=int, default=3, help="publish/visibility rounds per size [3]")
    parser.add_argument("--questions", type=int, default=2,
                        help="OutputRecords per peer per round (the profile's questions_per_round) [2]")
    parser.add_argument("--completion-chars", type=int, default=600,
                        help="characters per completion (~128 tokens of GSM8K reasoning) [600]")
    parser.add_argument("--spread", type=float, default=2.0, help="seconds over which a round's publishes start [2]")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="pause between a reader's polls [0.05]")
    parser.add_argument("--visibility-timeout", type=float, default=30.0,
                        help="seconds after the last publish a record may take to be seen [30]")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="idle window for CPU/memory [20]")
    parser.add_argument("--heartbeat-seconds", type=float, default=20.0, help="heartbeat period (node default) [20]")
    parser.add_argument("--join-concurrency", type=int, default=4, help="peers starting at once [4]")
    parser.add_argument("--startup-timeout", type=float, default=60.0, help="dht_startup_timeout per peer [60]")
    parser.add_argument("--publish-timeout", type=float, default=30.0, help="dht_publish_timeout (node default) [30]")
    parser.add_argument("--max-peers-per-read", type=int, default=DEFAULT_MAX_PEERS_PER_READ,
                        help="each peer's dht_max_peers_per_read: most peers one stage read asks for; 0: no cap "
                        f"[{DEFAULT_MAX_PEERS_PER_READ}]")
    parser.add_argument("--read-settle-seconds", type=float, default=10.0,
                        help="pause after the rounds before the stage reads, for the publishes to drain [10]")
    parser.add_argument("--uncapped-read", action="store_true",
                        help="also measure the per-stage read of every listed peer (the read without the cap)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", default="", help=argparse.SUPPRESS)
    parser.add_argument("--initial-peer", dest="initial_peers", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)
    try:
        sizes = [int(x) for x in args.peers.split(",") if x.strip()]
    except ValueError:
        parser.error("--peers takes comma-separated integers, e.g. 4,8,16,32")
    if not sizes or min(sizes) < 2:
        parser.error("every swarm size must be >= 2")
    if args.rounds < 1 or args.questions < 1 or args.join_concurrency < 1:
        parser.error("--rounds, --questions and --join-concurrency must be >= 1")
    if args.max_peers_per_read == 1 or args.max_peers_per_read < 0:
        parser.error("--max-peers-per-read must be 0 (no cap) or at least 2")

    interrupted = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        interrupted.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # also when started in the background, where SIGINT is ignored
    results = []
    try:
        for n in sizes:
            results.append(run_size(n, args, interrupted))
    except KeyboardInterrupt:
        log("interrupted: every peer was shut down")
        return 130
    except PeerFailed as exc:
        log(f"failed: {exc}")
        return 1
    print_table(results, args)
    print(json.dumps({"sizes": {str(r["peers"]): r for r in results},
                      "settings": {k: getattr(args, k) for k in ("rounds", "questions", "completion_chars", "spread",
                                                                 "poll_interval", "idle_seconds", "heartbeat_seconds",
                                                                 "join_concurrency", "max_peers_per_read",
                                                                 "read_settle_seconds",
                                                                 "uncapped_read")}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
