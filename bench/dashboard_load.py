"""Load test of the dashboard's read endpoints while a real swarm runs.

Starts three DHT peers on 127.0.0.1 that keep publishing (heartbeats, rewards, answers, the
round state), optionally anvil with the contract (--chain), and `rl-swarm dashboard` as a
subprocess; then N concurrent clients (default 200) each loop over the read endpoints
for D seconds (default 30), pausing --think seconds between requests (a bounded load,
like browsers refreshing, not a flood). Prints requests/s, p50/p99 latency and errors;
the last line is one JSON object.

    .venv/bin/python bench/dashboard_load.py [--clients 200] [--duration 30] [--think 0.5] [--chain]

Target on a 2-core machine: p99 < 50 ms and no errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ENDPOINTS = ("/api/round_and_stage", "/api/leaderboard", "/api/leaderboard?limit=20&offset=20",
             "/api/leaderboard-cumulative", "/api/rewards-history", "/api/gossip", "/api/nodes", "/api/me",
             "/api/healthz")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=200, help="concurrent clients (default 200)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load (default 30)")
    p.add_argument("--think", type=float, default=0.5, help="seconds each client waits between requests "
                   "(default 0.5; 0 = as fast as possible)")
    p.add_argument("--chain", action="store_true", help="also run anvil with the contract (needs node_modules)")
    p.add_argument("--url", help="load an already running dashboard instead of starting a swarm")
    args = p.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.think < 0:
        p.error("--clients must be >= 1, --duration > 0 and --think >= 0")
    return args


class Publisher(threading.Thread):
    """Keeps the swarm busy: every second a heartbeat per peer, and a new stage every 5 s."""

    def __init__(self, swarm: Any):
        super().__init__(daemon=True, name="bench-publisher")
        self.swarm = swarm
        self.stop_event = threading.Event()
        self.round, self.stage = 3, 1
        self.published = 0

    def run(self) -> None:
        from hivemind_exp.swarm.records import OutputRecord

        tick = 0
        while not self.stop_event.wait(1.0):
            tick += 1
            self.swarm.heartbeat()
            if tick % 5:
                continue
            self.stage = self.stage % 3 + 1  # the swarm counts stages from 1
            self.round += self.stage == 1
            coord = self.swarm.transports[0]
            coord.publish_round_state(self.round, self.stage, time.time() + 5)
            for i, t in enumerate(self.swarm.transports):
                t.publish_reward(self.round, self.stage, round(random.uniform(0, 3), 3))
                t.publish_outputs(self.round, self.stage, {
                    "q-bench": OutputRecord(completion=f"answer {i}", final_answer=str(i),
                                            meta={"question": f"Benchmark question of round {self.round}"})})
                self.published += 2


async def load(url: str, clients: int, duration: float, think: float) -> dict[str, Any]:
    import aiohttp

    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop_at = time.perf_counter() + duration

    async def client(session: aiohttp.ClientSession, k: int) -> None:
        i = k  # clients start on different endpoints
        await asyncio.sleep(random.uniform(0, max(think, 0.05)))  # spread the first wave
        while time.perf_counter() < stop_at:
            path = ENDPOINTS[i % len(ENDPOINTS)]
            i += 1
            t0 = time.perf_counter()
            try:
                async with session.get(url + path) as r:
                    await r.read()
                    if r.status != 200:
                        errors[f"HTTP {r.status}"] = errors.get(f"HTTP {r.status}", 0) + 1
                        continue
            except Exception as exc:  # count, do not stop: a load test reports errors
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            latencies.append(time.perf_counter() - t0)
            if think:
                await asyncio.sleep(think)

    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session, k) for k in range(clients)))
        elapsed = time.perf_counter() - started
    lat = sorted(latencies)

    def pct(q: float) -> float:
        return 1000 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    return {"clients": clients, "duration_s": round(elapsed, 2), "think_s": think, "requests": len(lat),
            "errors": sum(errors.values()), "error_kinds": errors,
            "requests_per_s": round(len(lat) / elapsed, 1),
            "p50_ms": round(pct(0.50), 2), "p90_ms": round(pct(0.90), 2), "p99_ms": round(pct(0.99), 2),
            "max_ms": round(1000 * lat[-1], 2) if lat else None,
            "mean_ms": round(1000 * statistics.fmean(lat), 2) if lat else None}


def server_side_latency(url: str) -> dict[str, Any]:
    """From the dashboard's own /metrics: the request-duration histogram summed over routes.

    Tells server time apart from the load generator's own scheduling delays (both share the
    machine's cores): `server_p99_le_ms` is the smallest bucket bound holding 99% of requests.
    """
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("http_server_request_duration_seconds_bucket{") and 'le="' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    total = buckets.get(float("inf"), 0.0)
    if not total:
        return {"server_requests": 0}
    p99 = next(b for b in sorted(buckets) if buckets[b] >= 0.99 * total)
    return {"server_requests": int(total), "server_share_under_10ms": round(buckets.get(0.01, 0.0) / total, 4),
            "server_share_under_50ms": round(buckets.get(0.05, 0.0) / total, 4),
            "server_p99_le_ms": None if p99 == float("inf") else round(p99 * 1000, 1)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path[:0] = [str(REPO)]
    with ExitStack() as stack:
        url = args.url
        publisher = None
        if url is None:
            from hivemind_exp.chain.anvil import AnvilProcess, free_port
            from tests.fixtures.web import UI, launch_dashboard, start_web_swarm

            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dash-bench-")))
            print("starting 3 DHT peers...", file=sys.stderr)
            swarm = start_web_swarm(base)
            stack.callback(lambda: [t.close() for t in swarm.transports])
            chain = None
            if args.chain:
                from tests.fixtures.chain import deploy_fresh
                from tests.fixtures.web import WebChain

                anvil = AnvilProcess(free_port(), log_path=base / "anvil.log").start(timeout=30)
                stack.callback(anvil.stop)
                chain = WebChain(deploy_fresh(anvil.rpc_url, base))
            print("starting the dashboard...", file=sys.stderr)
            # Default poll intervals: the load runs against the service as deployed.
            dash = launch_dashboard(base / "dash", swarm, chain, ui_dist=UI / "dist", dht_poll_interval=2.0,
                                    chain_poll_interval=5.0)
            stack.callback(dash.stop)
            url = dash.url
            publisher = Publisher(swarm)
            publisher.start()
            stack.callback(publisher.stop_event.set)
        print(f"load: {args.clients} clients x {args.duration:.0f}s against {url} (think {args.think}s)",
              file=sys.stderr)
        # uvloop (uvicorn's own dependency) when present: the client shares the cores with the server,
        # so a cheaper client loop means less of its own delay inside the measured latency.
        try:
            import uvloop

            factory: Any = uvloop.new_event_loop
        except ImportError:
            factory = None
        with asyncio.Runner(loop_factory=factory) as runner:
            result = runner.run(load(url, args.clients, args.duration, args.think))
        try:
            result.update(server_side_latency(url))
        except Exception as exc:  # the client-side numbers stand on their own
            result["server_side_error"] = f"{type(exc).__name__}: {exc}"
        with open("/proc/loadavg") as f:
            result["loadavg_1m"] = float(f.read().split()[0])
        result["target_p99_ms"] = 50
        result["met_target"] = result["errors"] == 0 and result["p99_ms"] < 50
        if publisher is not None:
            result["swarm_records_published_during_run"] = publisher.published
    print(f"{result['requests']} requests in {result['duration_s']}s = {result['requests_per_s']} req/s; "
          f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms; "
          f"errors {result['errors']} {result['error_kinds'] or ''}; server-side p99 <= "
          f"{result.get('server_p99_le_ms')} ms; machine load {result['loadavg_1m']}")
    print(json.dumps(result))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
