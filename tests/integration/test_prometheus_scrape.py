"""A real Prometheus server (/usr/bin/prometheus) scrapes RL Swarm's /metrics endpoints.

1. `test_prometheus_scrapes_telemetry_endpoints`: two real processes in local
   (Prometheus) mode: one records trainer metrics through `TrainerMetrics` on its own
   /metrics server, the other is the shipped login service (`rl-swarm login-server`), which
   sets up its own telemetry; after a sign-up and two sign-ins Prometheus' HTTP API must
   return the series with the peer/service labels and the values the processes recorded.
2. `test_prometheus_scrapes_a_local_swarm` (slow): `rl-swarm up` with its metrics ports;
   Prometheus must see the trainers' reward, loss and tokens-per-second series with sane
   values, and the dashboard's request latency.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fixtures.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = Path("/usr/bin/prometheus")




def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise AssertionError(f"{proc.args!r} exited with {proc.returncode} before {url} answered:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (a 503 health while a source is stale still means it is up)
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


class Prometheus:
    """The Debian prometheus binary with a temp config and storage, on a free loopback port."""

    def __init__(self, workdir: Path, targets: dict[str, list[str]]):
        assert PROMETHEUS.is_file(), "the Debian `prometheus` package is needed (scripts/bootstrap.sh test installs it)"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": tg}]} for job, tg in targets.items()
            ],
        }
        cfg = workdir / "prometheus.yml"
        cfg.write_text(json.dumps(config))  # JSON is YAML
        self.log = workdir / "prometheus.log"
        self.proc = subprocess.Popen(
            [str(PROMETHEUS), f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        wait_http(f"{self.url}/-/ready", 60, self.proc, self.log)

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        params = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, promql: str, timeout: float, min_series: int = 1) -> list[dict]:
        deadline = time.monotonic() + timeout
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if len(result) >= min_series:
                return result
            time.sleep(1)
        targets = urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10).read().decode()[:2000]
        raise AssertionError(f"Prometheus has {len(result)} series for {promql} after {timeout:.0f} s; targets: {targets}")

    def close(self) -> None:
        stop(self.proc)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "RLSWARM_"))}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


TRAINER_CHILD = textwrap.dedent(
    """
    import sys, time
    from hivemind_exp.common.telemetry import setup_telemetry
    t = setup_telemetry("trainer", {"peer_id": "QmScrapePeer", "node_name": "scrape-peer"},
                        prometheus_port=int(sys.argv[1]))
    m = t.trainer_metrics()
    m.set_dht_peers(2)
    for round_number in range(1, 10_000):
        m.set_round(round_number, stage=0)
        m.record_reward(0, 0.5 + (round_number % 2) * 0.25)
        m.record_loss(0.1 * round_number, stage=0)
        m.record_generation(tokens=256, seconds=4.0)
        m.record_step(1.5, stage=0)
        time.sleep(0.5)
    """
)

@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        stop(p)


def _spawn(procs: list[subprocess.Popen], log: Path, *argv: str, env: dict[str, str]) -> subprocess.Popen:
    p = subprocess.Popen(list(argv), stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=env, cwd=str(log.parent), start_new_session=True)
    procs.append(p)
    return p


def _value(series: dict) -> float:
    return float(series["value"][1])


@pytest.mark.timeout(240)
def test_prometheus_scrapes_telemetry_endpoints(tmp_path: Path, procs: list[subprocess.Popen]) -> None:
    trainer_port, login_port = free_port(), free_port()
    env = _clean_env()
    trainer_log = tmp_path / "trainer.log"
    trainer = _spawn(procs, trainer_log, sys.executable, "-c", TRAINER_CHILD, str(trainer_port), env=env)
    login_log = tmp_path / "login.log"
    # The shipped service, as `rl-swarm up` and Compose start it (it sets up its own telemetry).
    login = _spawn(procs, login_log, sys.executable, "-m", "hivemind_exp.cli", "login-server", "--port", str(login_port),
                   "--data-dir", str(tmp_path / "login-data"), env=env)
    wait_http(f"http://127.0.0.1:{trainer_port}/metrics", 60, trainer, trainer_log)
    wait_http(f"http://127.0.0.1:{login_port}/metrics", 90, login, login_log)
    for path in ("/api/healthz", "/health", "/no/such/page"):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{login_port}{path}", timeout=10).close()
        except urllib.error.HTTPError:
            pass  # 404 (and 503 while no chain runs) are statuses worth recording too
    account = json.dumps({"email": "scrape@example.com", "password": "a long enough password"}).encode()
    for path, body in (("/api/auth/signup", account), ("/api/auth/signin", account),
                       ("/api/auth/signin", account.replace(b"a long", b"a wrong"))):
        req = urllib.request.Request(f"http://127.0.0.1:{login_port}{path}", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=30).close()
        except urllib.error.HTTPError as err:
            assert err.code == 401, err  # only the wrong password is refused

    prom = Prometheus(tmp_path, {"trainer": [f"127.0.0.1:{trainer_port}"], "login": [f"127.0.0.1:{login_port}"]})
    procs.append(prom.proc)

    (reward,) = prom.wait_for('rlswarm_trainer_reward_last{rlswarm_peer_id="QmScrapePeer",stage="0"}', 60)
    assert reward["metric"]["job"] == "trainer" and reward["metric"]["service_name"] == "trainer"
    assert _value(reward) in (0.5, 0.75)
    (loss,) = prom.wait_for('rlswarm_trainer_grpo_loss{rlswarm_peer_id="QmScrapePeer"}', 30)
    assert math.isfinite(_value(loss)) and _value(loss) > 0
    (tps,) = prom.wait_for("rlswarm_trainer_completion_tokens_per_second", 30)
    assert _value(tps) == pytest.approx(64.0)
    (rounds,) = prom.wait_for("rlswarm_trainer_round", 30)
    assert _value(rounds) >= 1
    (count,) = prom.wait_for('rlswarm_trainer_reward_count{stage="0"}', 30)
    assert _value(count) >= 1
    # The emitter's pace depends on machine load, so compare Prometheus' rate with the raw
    # samples it scraped in the same window, at the same evaluation time, once the 10 s
    # window is full (a young series' rate is extrapolated from a few samples).
    deadline = time.monotonic() + 60
    while True:
        at = time.time()
        window = prom.query("rlswarm_trainer_completion_tokens_total[10s]", at=at)
        if window and window[0]["values"][-1][0] - window[0]["values"][0][0] >= 8:
            break
        assert time.monotonic() < deadline, f"no full 10 s window of token samples after 60 s: {window}"
        time.sleep(1)
    (rate,) = prom.query("rate(rlswarm_trainer_completion_tokens_total[10s])", at=at)
    (t0, v0), (t1, v1) = window[0]["values"][0], window[0]["values"][-1]
    raw = (float(v1) - float(v0)) / (t1 - t0)
    assert raw > 0 and (float(v1) - float(v0)) % 256 == 0  # whole generations of 256 tokens
    assert _value(rate) == pytest.approx(raw, rel=0.35)  # rate() extrapolates to the window's edges

    health = prom.wait_for(
        'http_server_request_duration_seconds_count{job="login",http_route="/api/healthz",http_request_method="GET"}', 60
    )
    assert sum(_value(s) for s in health) >= 1
    (unmatched,) = prom.wait_for('rlswarm_login_api_calls_total{endpoint="unmatched",status="404"}', 30)
    assert _value(unmatched) == 1
    (p99,) = prom.wait_for(
        'histogram_quantile(0.99, sum by (le) (http_server_request_duration_seconds_bucket{job="login"}))', 30
    )
    assert 0 < _value(p99) <= 10
    (ok,) = prom.wait_for('rlswarm_login_sign_ins_total{result="success"}', 30)
    (bad,) = prom.wait_for('rlswarm_login_sign_ins_total{result="rejected"}', 30)
    assert (_value(ok), _value(bad)) == (1, 1)
    up = prom.query("up")
    assert {s["metric"]["job"]: _value(s) for s in up} == {"trainer": 1.0, "login": 1.0}


@pytest.mark.slow
@pytest.mark.chain
@pytest.mark.timeout(900)
@pytest.mark.skipif(
    not (ROOT / "hivemind_exp" / "commands" / "up.py").is_file(),
    reason="`rl-swarm up` (hivemind_exp/commands/up.py) is not written yet; this runs as soon as it exists",
)
def test_prometheus_scrapes_a_local_swarm(tmp_path: Path, procs: list[subprocess.Popen]) -> None:
    """The whole local swarm (`rl-swarm up`): trainers' reward/loss/tokens-per-second, dashboard latency."""
    num_peers, metrics_base = 2, free_port()
    ports = {name: free_port() for name in ("anvil", "login", "dashboard", "coordinator", "peer")}
    env = _clean_env(
        RLSWARM_NUM_PEERS=str(num_peers),
        RLSWARM_METRICS_BASE_PORT=str(metrics_base),
        RLSWARM_ANVIL_PORT=str(ports["anvil"]),
        RLSWARM_LOGIN_PORT=str(ports["login"]),
        RLSWARM_DASHBOARD_PORT=str(ports["dashboard"]),
        RLSWARM_COORDINATOR_PORT=str(ports["coordinator"]),
        RLSWARM_PEER_BASE_PORT=str(ports["peer"]),
        RLSWARM_RUN_DIR=str(tmp_path / "run"),
        RLSWARM_LOGS_DIR=str(tmp_path / "logs"),
        RLSWARM_STAGE_SECONDS="30",
        RLSWARM_DATASET="generated",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    log = tmp_path / "up.log"
    up = _spawn(procs, log, str(ROOT / ".venv" / "bin" / "rl-swarm"), "up", env=env)
    dashboard = f"http://127.0.0.1:{ports['dashboard']}"
    wait_http(f"{dashboard}/api/healthz", 600, up, log)
    # Trainer/coordinator processes get consecutive metrics ports from metrics_base.
    metric_targets = [f"127.0.0.1:{metrics_base + i}" for i in range(num_peers + 1)]
    prom = Prometheus(tmp_path, {"swarm": metric_targets, "dashboard": [dashboard.removeprefix("http://")]})
    procs.append(prom.proc)
    for _ in range(3):
        try:
            urllib.request.urlopen(f"{dashboard}/api/healthz", timeout=10).close()
        except urllib.error.HTTPError as err:
            assert err.code == 503, err  # stale source: still a request the middleware records

    rewards = prom.wait_for("rlswarm_trainer_reward_last", 600, min_series=num_peers)
    assert len({s["metric"]["rlswarm_peer_id"] for s in rewards}) >= num_peers
    assert all(-10 <= _value(s) <= 100 for s in rewards), rewards
    losses = prom.wait_for("rlswarm_trainer_grpo_loss", 300, min_series=1)
    assert all(math.isfinite(_value(s)) for s in losses), losses
    tps = prom.wait_for("rlswarm_trainer_completion_tokens_per_second", 120, min_series=1)
    assert all(0 < _value(s) < 1e6 for s in tps), tps
    latency = prom.wait_for('http_server_request_duration_seconds_count{job="dashboard",http_route="/api/healthz"}', 60)
    assert sum(_value(s) for s in latency) >= 3
