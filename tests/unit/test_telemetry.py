"""hivemind_exp.common.telemetry: exporter choice, the Prometheus endpoint, bundles, ASGI pieces.

Real SDK, real prometheus_client HTTP server on a free loopback port, a real FastAPI app
through its TestClient; values are read back by parsing the exposition text.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hivemind_exp.common.settings_base import SettingsError
from hivemind_exp.common.telemetry import (
    Telemetry,
    TelemetryError,
    get_telemetry,
    instrument_fastapi,
    metrics_asgi_app,
    setup_telemetry,
)

ENV_VARS = (
    "OTEL_METRICS_EXPORTER",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "RLSWARM_METRICS_HOST",
    "RLSWARM_METRICS_PORT",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[list[Telemetry]]:
    """No OTEL_* from the caller's shell or a .env; every Telemetry made is shut down."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    made: list[Telemetry] = []
    yield made
    for t in made:
        t.shutdown(timeout_millis=500)  # OTLP cases point at a closed port: do not wait for it


def _setup(made: list[Telemetry], *args, **kwargs) -> Telemetry:
    t = setup_telemetry(*args, **kwargs)
    made.append(t)
    return t


def _scrape(text: str) -> dict[tuple[str, frozenset], float]:
    samples: dict[tuple[str, frozenset], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def _find(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    hits = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(hits) == 1, f"{name}{labels}: {len(hits)} samples in {sorted(n for n, _ in samples)}"
    return hits[0]


def test_import_does_nothing() -> None:
    code = (
        "import sys, threading, hivemind_exp.common.telemetry as t; "
        "print(any(m.startswith('opentelemetry.sdk') for m in sys.modules), threading.active_count(), t.get_telemetry())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "1", "None"]


def test_prometheus_endpoint_serves_trainer_metrics(clean_env: list[Telemetry]) -> None:
    t = _setup(clean_env, "trainer-test", {"peer_id": "QmPeerA", "node_name": "peer-0"}, prometheus_port=0)
    assert t.exporters == ("prometheus",)
    assert t.trace_exporter == "none"
    assert t.prometheus_port and t.prometheus_url == f"http://127.0.0.1:{t.prometheus_port}/metrics"
    m = t.trainer_metrics()
    assert t.trainer_metrics() is m  # bundles are cached, instruments made once
    m.set_round(7, stage=2)
    m.record_reward(1, 0.25)
    m.record_reward(1, 1.25)
    m.record_reward(2, float("nan"))  # skipped, never exported
    m.record_loss(0.5, stage=1)
    m.record_generation(tokens=300, seconds=6.0)
    m.record_step(2.5, stage=1)
    m.set_dht_peers(3)
    m.record_published(4)
    m.record_fetched(9)
    m.record_dropped("too_large", 2)
    m.record_dropped("bad_signature")
    m.mark_checkpoint(time.time() - 30)
    m.set_outbox_depth(5)
    m.record_submission_failure("submit_reward", "timeout")

    with urllib.request.urlopen(t.prometheus_url, timeout=10) as resp:
        text = resp.read().decode()
    s = _scrape(text)
    peer = {"rlswarm_peer_id": "QmPeerA", "rlswarm_node_name": "peer-0", "service_name": "trainer-test"}
    assert _find(s, "rlswarm_trainer_round", **peer) == 7
    assert _find(s, "rlswarm_trainer_stage") == 2
    assert _find(s, "rlswarm_trainer_reward_count", stage="1") == 2
    assert _find(s, "rlswarm_trainer_reward_sum", stage="1") == pytest.approx(1.5)
    assert _find(s, "rlswarm_trainer_reward_bucket", stage="1", le="0.5") == 1
    assert _find(s, "rlswarm_trainer_reward_last", stage="1") == pytest.approx(1.25)
    assert not any(n.startswith("rlswarm_trainer_reward") and ("stage", "2") in ls for n, ls in s)
    assert _find(s, "rlswarm_trainer_grpo_loss", stage="1") == 0.5
    assert _find(s, "rlswarm_trainer_completion_tokens_total") == 300
    assert _find(s, "rlswarm_trainer_completion_tokens_per_second") == pytest.approx(50.0)
    assert _find(s, "rlswarm_trainer_step_duration_seconds_count", stage="1") == 1
    assert _find(s, "rlswarm_trainer_dht_peers") == 3
    assert _find(s, "rlswarm_trainer_dht_records_published_total") == 4
    assert _find(s, "rlswarm_trainer_dht_records_fetched_total") == 9
    assert _find(s, "rlswarm_trainer_dht_records_dropped_total", reason="too_large") == 2
    assert _find(s, "rlswarm_trainer_dht_records_dropped_total", reason="bad_signature") == 1
    assert 30 <= _find(s, "rlswarm_trainer_checkpoint_age_seconds") < 90
    assert _find(s, "rlswarm_trainer_outbox_depth") == 5
    assert _find(s, "rlswarm_trainer_chain_submission_failures_total", method="submit_reward", reason="timeout") == 1
    assert _find(s, "target_info", rlswarm_peer_id="QmPeerA") == 1
    assert _find(s, "process_resident_memory_bytes") > 0

    port = t.prometheus_port
    t.shutdown()
    t.shutdown()  # idempotent
    assert get_telemetry("trainer-test") is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_bad_values_raise_clear_errors(clean_env: list[Telemetry]) -> None:
    with pytest.raises(ValueError, match="service_name"):
        setup_telemetry("  ")
    with pytest.raises(ValueError, match="prometheus_port must be 0..65535"):
        setup_telemetry("x", prometheus_port=70000)
    with pytest.raises(ValueError, match="'peer_id' must be a string"):
        setup_telemetry("x", {"peer_id": 3})  # type: ignore[dict-item]
    m = _setup(clean_env, "neg").trainer_metrics()
    with pytest.raises(ValueError, match="peer count must be >= 0"):
        m.set_dht_peers(-1)


def test_setup_is_idempotent_per_service(clean_env: list[Telemetry]) -> None:
    a = _setup(clean_env, "svc-a")
    assert setup_telemetry("svc-a") is a
    assert get_telemetry("svc-a") is a
    b = _setup(clean_env, "svc-b")
    assert b is not a and b.registry is not a.registry
    a.shutdown()
    c = _setup(clean_env, "svc-a")
    assert c is not a


@pytest.mark.parametrize(
    ("env", "metrics", "traces"),
    [
        ({}, ("prometheus",), "none"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, ("otlp",), "otlp"),
        ({"OTEL_METRICS_EXPORTER": "otlp"}, ("otlp",), "none"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_METRICS_EXPORTER": "otlp,prometheus",
          "OTEL_TRACES_EXPORTER": "none"}, ("otlp", "prometheus"), "none"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
         ("otlp",), "otlp"),
        ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:9/v1/metrics"}, ("otlp",), "none"),
        ({"OTEL_METRICS_EXPORTER": "none"}, (), "none"),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, (), "none"),
    ],
)
def test_exporter_choice_follows_otel_env(
    clean_env: list[Telemetry], monkeypatch: pytest.MonkeyPatch, env: dict[str, str], metrics: tuple, traces: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    t = _setup(clean_env, "choice")
    assert get_telemetry("choice") is t
    assert (t.exporters, t.trace_exporter) == (metrics, traces)
    assert (t.registry is not None) == ("prometheus" in metrics)
    t.trainer_metrics().set_round(1)  # instruments work whatever the exporters


@pytest.mark.parametrize(
    ("var", "value", "expect"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "use grpc or http/protobuf"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "udp", "use one of grpc, http/protobuf"),
        ("OTEL_METRICS_EXPORTER", "prom", "otlp, prometheus, console, none"),
        ("OTEL_TRACES_EXPORTER", "jaeger", "otlp, console, none"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "-5", "greater than 0"),
        ("RLSWARM_METRICS_HOST", " ", "give an address to bind"),
    ],
)
def test_bad_otel_env_names_the_variable(
    clean_env: list[Telemetry], monkeypatch: pytest.MonkeyPatch, var: str, value: str, expect: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as err:
        setup_telemetry("bad-env")
    assert var in err.value.message and expect in err.value.message


def test_port_in_use_says_how_to_fix(clean_env: list[Telemetry]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(TelemetryError, match="RLSWARM_METRICS_PORT"):
            setup_telemetry("busy", prometheus_port=busy.getsockname()[1])
    assert get_telemetry("busy") is None


def test_span_records_attributes_and_errors(clean_env: list[Telemetry]) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    t = _setup(clean_env, "spans")
    memory = InMemorySpanExporter()
    t.tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
    with t.span("stage", {"round": 3, "stage": 1}):
        pass
    with pytest.raises(RuntimeError), t.span("chain.submit_reward"):
        raise RuntimeError("rpc down")
    spans = {s.name: s for s in memory.get_finished_spans()}
    assert dict(spans["stage"].attributes) == {"round": 3, "stage": 1}
    failed = spans["chain.submit_reward"]
    assert failed.status.status_code.name == "ERROR"
    assert failed.events[0].name == "exception"
    assert spans["stage"].resource.attributes["service.name"] == "spans"


def _fastapi_app(recorder=None, service_name: str = "dash-test"):
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/api/rounds/{round_id}")
    def rounds(round_id: int) -> dict[str, int]:
        return {"round": round_id}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    instrument_fastapi(app, recorder, service_name=service_name)
    return app


def test_middleware_records_route_templates_and_metrics_route(clean_env: list[Telemetry]) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(_fastapi_app(Telemetry.dashboard_metrics), raise_server_exceptions=False)
    before = client.get("/metrics")  # the app exists before setup_telemetry runs
    assert before.status_code == 503 and "setup_telemetry" in before.text
    assert client.get("/api/rounds/1").status_code == 200  # not recorded: no telemetry yet

    t = _setup(clean_env, "dash-test")
    for r in (1, 2, 3):
        assert client.get(f"/api/rounds/{r}").json() == {"round": r}
    assert client.get("/no/such/page").status_code == 404
    assert client.get("/boom").status_code == 500
    dash = t.dashboard_metrics()
    dash.mark_refreshed("dht", time.time() - 4)
    dash.mark_refreshed("chain")
    dash.record_poll_error("chain")

    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    s = _scrape(resp.text)
    name = "http_server_request_duration_seconds_count"
    assert _find(s, name, http_route="/api/rounds/{round_id}", http_response_status_code="200",
                 http_request_method="GET", service_name="dash-test") == 3
    assert _find(s, name, http_route="unmatched", http_response_status_code="404") == 1
    assert _find(s, name, http_route="/boom", http_response_status_code="500") == 1
    assert not any(("http_route", "/metrics") in ls for _, ls in s)
    assert 4 <= _find(s, "rlswarm_dashboard_cache_age_seconds", source="dht") < 60
    assert 0 <= _find(s, "rlswarm_dashboard_cache_age_seconds", source="chain") < 30
    assert _find(s, "rlswarm_dashboard_poll_errors_total", source="chain") == 1


def test_login_metrics_through_middleware(clean_env: list[Telemetry]) -> None:
    from fastapi.testclient import TestClient

    t = _setup(clean_env, "login-test")
    login = t.login_metrics()
    client = TestClient(_fastapi_app(login, service_name="login-test"), raise_server_exceptions=False)
    client.get("/api/rounds/5")
    client.get("/boom")
    login.record_sign_in("success")
    login.record_sign_in("bad_password")
    login.record_sign_in("bad_password")
    login.record_transaction_sent("submitReward")
    login.record_transaction_failed("submitReward", "nonce too low")

    s = _scrape(client.get("/metrics").text)
    assert _find(s, "rlswarm_login_api_calls_total", endpoint="/api/rounds/{round_id}", status="200") == 1
    assert _find(s, "rlswarm_login_api_calls_total", endpoint="/boom", status="500") == 1
    assert _find(s, "http_server_request_duration_seconds_count", http_route="/boom") == 1
    assert _find(s, "rlswarm_login_sign_ins_total", result="bad_password") == 2
    assert _find(s, "rlswarm_login_transactions_sent_total", method="submitReward") == 1
    assert _find(s, "rlswarm_login_transactions_failed_total", reason="nonce too low") == 1


def test_metrics_app_in_otlp_mode_says_where_metrics_go(
    clean_env: list[Telemetry], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    t = _setup(clean_env, "otlp-only")
    app = FastAPI()
    app.add_route("/metrics", metrics_asgi_app(t))
    resp = TestClient(app).get("/metrics")
    assert resp.status_code == 404
    assert "exported via otlp" in resp.text and "OTEL_METRICS_EXPORTER=prometheus" in resp.text


_DEAD_COLLECTOR_CHILD = r"""
import logging, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
from hivemind_exp.common.telemetry import setup_telemetry
t = setup_telemetry("dead-collector")
counter = t.meter.create_counter("ticks")
start = time.monotonic()
ticks = 0
while time.monotonic() - start < 4.0:   # the service's own work: must never wait on the exporter
    counter.add(1)
    ticks += 1
    time.sleep(0.01)
print(f"ticks {ticks}", flush=True)
t.shutdown(timeout_millis=500)
"""


def test_dead_collector_is_logged_once_and_never_blocks(tmp_path) -> None:
    """OTLP export to a collector that is not there: one warning, then quiet; the process runs on."""
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PATH": "/usr/bin:/bin", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
           "OTEL_METRIC_EXPORT_INTERVAL": "200", "OTEL_EXPORTER_OTLP_TIMEOUT": "1", "OTEL_TRACES_EXPORTER": "none",
           "PYTHONPATH": ":".join(sys.path)}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _DEAD_COLLECTOR_CHILD], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 30, "shutting down waited on the dead collector"
    ticks = int(proc.stdout.split("ticks ")[1].split()[0])
    assert ticks > 100, f"the main loop was held up: {ticks} ticks in 4 s"
    failures = [line for line in proc.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert len(failures) == 1, "\n".join(failures) or proc.stderr
    assert "further export failures are not logged" in failures[0]


def test_export_gate_rearms_after_a_success() -> None:
    import logging

    from hivemind_exp.common.telemetry import _ExportFailureGate

    gate = _ExportFailureGate()

    def record(level: int = logging.WARNING) -> logging.LogRecord:
        return logging.LogRecord("otlp", level, __file__, 1, "export failed: %s", ("UNAVAILABLE",), None)

    assert gate.filter(record()) and not gate.filter(record()) and not gate.filter(record(logging.ERROR))
    assert gate.filter(record(logging.INFO)), "INFO/DEBUG lines are never dropped"
    gate.succeeded()
    first_again = record()
    assert gate.filter(first_again) and "not logged until" in first_again.getMessage()
    assert first_again.getMessage().startswith("export failed: UNAVAILABLE")
