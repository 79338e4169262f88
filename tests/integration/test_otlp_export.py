"""OTLP export end to end: telemetry pushes to a real OTLP receiver on loopback.

The receivers are real servers built from opentelemetry-proto: a gRPC server implementing
the OTLP MetricsService and TraceService, and an HTTP server taking
`POST /v1/metrics` protobuf bodies (what the collector's 4317/4318 receivers accept).
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from hivemind_exp.common.telemetry import setup_telemetry

OTEL_VARS = (
    "OTEL_METRICS_EXPORTER",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "RLSWARM_METRICS_PORT",
)


class Received:
    """What a receiver got, with a condition variable to wait on."""

    def __init__(self) -> None:
        self.metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.traces: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.cond = threading.Condition()

    def add(self, kind: str, request: Any) -> None:
        with self.cond:
            getattr(self, kind).append(request)
            self.cond.notify_all()

    def wait_for(self, predicate, timeout: float = 20.0) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), "the OTLP receiver got nothing matching in time"


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, received: Received):
        self.received = received

    def Export(self, request, context):  # noqa: N802 - gRPC method name
        self.received.add("metrics", request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: Received):
        self.received = received

    def Export(self, request, context):  # noqa: N802
        self.received.add("traces", request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> pytest.MonkeyPatch:
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env
    return monkeypatch


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[int, Received]]:
    received = Received()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(received), server)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(received), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, received
    server.stop(grace=None)


@pytest.fixture
def http_receiver() -> Iterator[tuple[int, Received]]:
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/metrics" or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(404)
                self.end_headers()
                return
            received.add("metrics", metrics_service_pb2.ExportMetricsServiceRequest.FromString(body))
            reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], received
    server.shutdown()
    server.server_close()


def _attrs(kvs) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in kvs}


def _metrics_by_name(requests) -> dict[str, Any]:
    """Latest metric of each name across requests, with its resource attributes."""
    out: dict[str, Any] = {}
    for req in requests:
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out[m.name] = (m, _attrs(rm.resource.attributes))
    return out


def _point_value(point) -> float:
    return point.as_double if point.WhichOneof("value") == "as_double" else point.as_int


def test_grpc_export_on_shutdown_carries_names_values_and_resource(otel_env, grpc_receiver) -> None:
    port, received = grpc_receiver
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    otel_env.setenv("OTEL_METRIC_EXPORT_INTERVAL", "600000")  # nothing periodic: only shutdown pushes
    t = setup_telemetry("trainer", {"peer_id": "QmOtlpPeer", "node_name": "peer-7"})
    assert t.exporters == ("otlp",) and t.registry is None
    m = t.trainer_metrics()
    m.set_round(7, stage=1)
    m.record_reward(1, 0.5)
    m.record_reward(1, 1.0)
    m.record_loss(0.25, stage=1)
    m.record_generation(tokens=120, seconds=2.0)
    m.record_dropped("bad_signature")
    m.mark_checkpoint()
    with t.span("stage", {"round": 7, "stage": 1}):
        pass
    assert received.metrics == []
    t.shutdown()  # must flush

    received.wait_for(lambda: received.metrics and received.traces)
    by_name = _metrics_by_name(received.metrics)
    expected = {
        "rlswarm.trainer.round",
        "rlswarm.trainer.stage",
        "rlswarm.trainer.reward",
        "rlswarm.trainer.reward.last",
        "rlswarm.trainer.grpo.loss",
        "rlswarm.trainer.completion.tokens",
        "rlswarm.trainer.completion.tokens_per_second",
        "rlswarm.trainer.dht.records.dropped",
        "rlswarm.trainer.checkpoint.age",
    }
    assert expected <= set(by_name), sorted(by_name)
    _, resource = by_name["rlswarm.trainer.round"]
    assert resource["service.name"] == "trainer"
    assert resource["rlswarm.peer_id"] == "QmOtlpPeer"
    assert resource["rlswarm.node_name"] == "peer-7"

    assert _point_value(by_name["rlswarm.trainer.round"][0].gauge.data_points[0]) == 7
    reward = by_name["rlswarm.trainer.reward"][0].histogram
    assert reward.aggregation_temporality == 2  # cumulative: what the collector's Prometheus exporter needs
    (point,) = reward.data_points
    assert (point.count, point.sum) == (2, pytest.approx(1.5))
    assert _attrs(point.attributes) == {"stage": "1"}
    tps = by_name["rlswarm.trainer.completion.tokens_per_second"][0].gauge.data_points[0]
    assert _point_value(tps) == pytest.approx(60.0)
    (dropped,) = by_name["rlswarm.trainer.dht.records.dropped"][0].sum.data_points
    assert _attrs(dropped.attributes) == {"reason": "bad_signature"} and _point_value(dropped) == 1

    spans = [
        (span.name, _attrs(rs.resource.attributes)["rlswarm.peer_id"])
        for req in received.traces
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    assert ("stage", "QmOtlpPeer") in spans


def test_grpc_periodic_export_without_flush(otel_env, grpc_receiver) -> None:
    port, received = grpc_receiver
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    otel_env.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    otel_env.setenv("OTEL_TRACES_EXPORTER", "none")
    t = setup_telemetry("dashboard", {"node_name": "dash-0"})
    try:
        d = t.dashboard_metrics()
        d.record_request("GET", "/api/leaderboard", 200, 0.012)
        d.mark_refreshed("chain", time.time() - 3)
        received.wait_for(lambda: "rlswarm.dashboard.cache.age" in _metrics_by_name(received.metrics))
        by_name = _metrics_by_name(received.metrics)
        hist, resource = by_name["http.server.request.duration"]
        assert resource["service.name"] == "dashboard"
        assert hist.unit == "s"
        assert _attrs(hist.histogram.data_points[0].attributes)["http.route"] == "/api/leaderboard"
        age = by_name["rlswarm.dashboard.cache.age"][0].gauge.data_points[0]
        assert 3 <= _point_value(age) < 60
    finally:
        t.shutdown()


def test_http_protobuf_export(otel_env, http_receiver) -> None:
    port, received = http_receiver
    otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    otel_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    otel_env.setenv("OTEL_TRACES_EXPORTER", "none")
    t = setup_telemetry("modal-login", {"node_name": "login"})
    login = t.login_metrics()
    login.record_sign_in("success")
    login.record_transaction_sent("submitWinners")
    t.shutdown()
    received.wait_for(lambda: received.metrics)
    by_name = _metrics_by_name(received.metrics)
    assert {"rlswarm.login.sign_ins", "rlswarm.login.transactions.sent"} <= set(by_name)
    (point,) = by_name["rlswarm.login.sign_ins"][0].sum.data_points
    assert _attrs(point.attributes) == {"result": "success"} and _point_value(point) == 1
    assert by_name["rlswarm.login.sign_ins"][1]["service.name"] == "modal-login"
