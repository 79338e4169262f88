"""OpenTelemetry metrics (and optional traces) for every RL Swarm service.

Call `setup_telemetry(service_name, attributes, prometheus_port)` once at service start;
it returns a `Telemetry` whose typed bundles (`trainer_metrics()`, `login_metrics()`,
`dashboard_metrics()`) are what services call. Nothing happens at import time.

Where metrics go is chosen by the standard OpenTelemetry environment variables:

- `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._METRICS_ENDPOINT`) set, or `OTEL_METRICS_EXPORTER=otlp`:
  OTLP push through a PeriodicExportingMetricReader (`OTEL_METRIC_EXPORT_INTERVAL` ms).
  `OTEL_EXPORTER_OTLP_PROTOCOL` (or `..._METRICS_PROTOCOL`) is `grpc` (default) or
  `http/protobuf`. This is the Docker Compose mode (the otel-collector service).
- otherwise (local mode): a Prometheus text endpoint. `prometheus_port` (the service's
  own `metrics_port` setting; 0 = any free port here, so pass None for "no endpoint")
  starts a small HTTP server on `RLSWARM_METRICS_HOST` (127.0.0.1 by default); FastAPI
  services instead mount `metrics_asgi_app()` on their own port (see `instrument_fastapi`).
- `OTEL_METRICS_EXPORTER` may also list `prometheus`, `console` or `none` (comma
  separated); `OTEL_SDK_DISABLED=true` turns everything into no-ops.
- Traces (`Telemetry.tracer`, `Telemetry.span`) go over OTLP when
  `OTEL_TRACES_EXPORTER` is `otlp` (the default when an OTLP endpoint is set), to the
  console with `console`; otherwise spans are created but not exported.

Each `Telemetry` owns its providers and its own Prometheus registry, so several can live
in one process (tests); the first one set up in a process also becomes the global
OpenTelemetry provider so third-party instrumentation reports through it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import AliasChoices, Field, field_validator

from hivemind_exp.common.settings_base import ServiceSettings, load_settings

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

METRIC_EXPORTERS = ("otlp", "prometheus", "console", "none")
TRACE_EXPORTERS = ("otlp", "console", "none")
OTLP_PROTOCOLS = ("grpc", "http/protobuf")
# Resource attribute keys given without a namespace get this one (peer_id -> rlswarm.peer_id).
ATTRIBUTE_NAMESPACE = "rlswarm."
# Label values from callers (reasons, routes) are bounded so a bug cannot explode cardinality.
MAX_LABEL_LEN = 64

# Bucket boundaries: the SDK default (0..10000) suits milliseconds, not our units.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STEP_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# No negative bound: prometheus_client then drops _sum/_count; penalties land in le="0".
REWARD_BUCKETS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class TelemetryError(RuntimeError):
    """Telemetry could not start (bad exporter settings, port in use); the message says what to fix."""


class TelemetrySettings(ServiceSettings):
    """Exporter choice. The OTEL_* names are the OpenTelemetry standard ones."""

    metrics_exporter: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_METRICS_EXPORTER"),
        description="comma-separated metric exporters: otlp, prometheus, console, none "
        "(default: otlp when an OTLP endpoint is set, else prometheus)",
    )
    traces_exporter: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_TRACES_EXPORTER"),
        description="trace exporter: otlp, console or none (default: otlp when an OTLP endpoint is set, else none)",
    )
    # The exporters read these themselves; here they only decide whether OTLP is on.
    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP collector URL, e.g. http://otel-collector:4317 (grpc) or http://otel-collector:4318 (http)",
    )
    otlp_metrics_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
        description="OTLP URL for metrics only (used as is, e.g. http://otel-collector:4318/v1/metrics)",
    )
    otlp_traces_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        description="OTLP URL for traces only",
    )
    # Two fields, not one with two aliases, so an error names the variable that was set.
    otlp_protocol_all: str = Field(
        default="grpc",
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_PROTOCOL"),
        description="OTLP transport for every signal: grpc or http/protobuf",
    )
    otlp_protocol_metrics: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"),
        description="OTLP transport for metrics only (overrides OTEL_EXPORTER_OTLP_PROTOCOL)",
    )
    export_interval_ms: int = Field(
        default=10_000,
        gt=0,
        validation_alias=AliasChoices("OTEL_METRIC_EXPORT_INTERVAL"),
        description="milliseconds between OTLP metric pushes",
    )
    sdk_disabled: bool = Field(
        default=False,
        validation_alias=AliasChoices("OTEL_SDK_DISABLED"),
        description="true turns all telemetry into no-ops",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="address the Prometheus /metrics server binds (0.0.0.0 inside a container)",
    )

    @field_validator("metrics_host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("give an address to bind, e.g. 127.0.0.1 (or 0.0.0.0 inside a container)")
        return value.strip()

    @field_validator("metrics_exporter")
    @classmethod
    def _check_metrics_exporter(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        names = [n.strip().lower() for n in value.split(",") if n.strip()]
        bad = [n for n in names if n not in METRIC_EXPORTERS]
        if bad:
            raise ValueError(f"unknown exporter(s) {bad}; use a comma-separated list of {', '.join(METRIC_EXPORTERS)}")
        return ",".join(names)

    @field_validator("traces_exporter")
    @classmethod
    def _check_traces_exporter(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        name = value.strip().lower()
        if name not in TRACE_EXPORTERS:
            raise ValueError(f"use one of {', '.join(TRACE_EXPORTERS)}")
        return name

    @field_validator("otlp_protocol_all", "otlp_protocol_metrics")
    @classmethod
    def _check_protocol(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = value.strip().lower()
        if name == "http/json":
            raise ValueError("http/json is not supported by the Python SDK; use grpc or http/protobuf")
        if name not in OTLP_PROTOCOLS:
            raise ValueError(f"use one of {', '.join(OTLP_PROTOCOLS)}")
        return name

    @property
    def otlp_protocol(self) -> str:
        return self.otlp_protocol_metrics or self.otlp_protocol_all

    def metric_exporters(self) -> tuple[str, ...]:
        if self.sdk_disabled:
            return ()
        if self.metrics_exporter is None:
            return ("otlp",) if (self.otlp_endpoint or self.otlp_metrics_endpoint) else ("prometheus",)
        names = tuple(n for n in self.metrics_exporter.split(",") if n != "none")
        return names

    def trace_exporter(self) -> str:
        if self.sdk_disabled:
            return "none"
        if self.traces_exporter is None:
            return "otlp" if (self.otlp_endpoint or self.otlp_traces_endpoint) else "none"
        return self.traces_exporter


def _bounded(value: object) -> str:
    text = str(value)
    return text if len(text) <= MAX_LABEL_LEN else text[: MAX_LABEL_LEN - 3] + "..."


def _check_count(n: int, what: str) -> int:
    if n < 0:
        raise ValueError(f"{what} must be >= 0, got {n}")
    return n


class _AgeGauge:
    """Seconds since the last `mark(key)`, per key, read when metrics are collected."""

    def __init__(self) -> None:
        self._marks: dict[tuple[tuple[str, str], ...], float] = {}
        self._lock = threading.Lock()

    def mark(self, attributes: Mapping[str, str], at: float | None = None) -> None:
        key = tuple(sorted(attributes.items()))
        with self._lock:
            self._marks[key] = time.time() if at is None else at

    def observe(self, _options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        now = time.time()
        with self._lock:
            items = list(self._marks.items())
        return [Observation(max(0.0, now - at), dict(key)) for key, at in items]


class RequestRecorder(Protocol):
    """What `TelemetryMiddleware` needs: one call per finished HTTP request."""

    def record_request(self, method: str, route: str, status_code: int, seconds: float) -> None: ...


class HttpServerMetrics:
    """`http.server.request.duration` (OpenTelemetry semantic conventions), by route template."""

    def __init__(self, meter: Meter):
        self._duration = meter.create_histogram(
            "http.server.request.duration",
            unit="s",
            description="HTTP request latency by route template, method and status code",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_S,
        )

    def record_request(self, method: str, route: str, status_code: int, seconds: float) -> None:
        self._duration.record(
            max(0.0, seconds),
            {
                "http.request.method": _bounded(method.upper()),
                "http.route": _bounded(route),
                "http.response.status_code": int(status_code),
            },
        )


class TrainerMetrics:
    """Everything a trainer node reports. Stages are 0-based or 1-based as the node uses them."""

    def __init__(self, meter: Meter):
        self._round = meter.create_gauge("rlswarm.trainer.round", unit="{round}", description="current round")
        self._stage = meter.create_gauge("rlswarm.trainer.stage", unit="{stage}", description="current stage")
        self._reward = meter.create_histogram(
            "rlswarm.trainer.reward",
            description="rewards of this node's completions, per stage",
            explicit_bucket_boundaries_advisory=REWARD_BUCKETS,
        )
        self._reward_last = meter.create_gauge(
            "rlswarm.trainer.reward.last", description="last (mean) reward of this node, per stage"
        )
        self._loss = meter.create_gauge("rlswarm.trainer.grpo.loss", description="last GRPO loss, per stage")
        self._tokens = meter.create_counter(
            "rlswarm.trainer.completion.tokens", unit="{token}", description="completion tokens generated"
        )
        self._tps = meter.create_gauge(
            "rlswarm.trainer.completion.tokens_per_second",
            unit="{token}/s",
            description="completion tokens per second of the last generation batch",
        )
        self._step = meter.create_histogram(
            "rlswarm.trainer.step.duration",
            unit="s",
            description="wall time of one GRPO step (generation + update), per stage",
            explicit_bucket_boundaries_advisory=STEP_BUCKETS_S,
        )
        self._peers = meter.create_gauge("rlswarm.trainer.dht.peers", unit="{peer}", description="peers seen on the DHT")
        self._published = meter.create_counter(
            "rlswarm.trainer.dht.records.published", unit="{record}", description="records this node put on the DHT"
        )
        self._fetched = meter.create_counter(
            "rlswarm.trainer.dht.records.fetched", unit="{record}", description="valid records read from the DHT"
        )
        self._dropped = meter.create_counter(
            "rlswarm.trainer.dht.records.dropped",
            unit="{record}",
            description="DHT records dropped as invalid, by reason",
        )
        self._checkpoint = _AgeGauge()
        meter.create_observable_gauge(
            "rlswarm.trainer.checkpoint.age",
            callbacks=[self._checkpoint.observe],
            unit="s",
            description="seconds since the last checkpoint was saved",
        )
        self._eval_accuracy = meter.create_gauge(
            "rlswarm.trainer.eval.accuracy", description="accuracy on the held-out set at the last evaluation")
        self._eval_format = meter.create_gauge(
            "rlswarm.trainer.eval.format_rate", description="share of held-out answers in the tagged format")
        self._outbox = meter.create_gauge(
            "rlswarm.trainer.outbox.depth", unit="{call}", description="contract calls waiting in the durable outbox"
        )
        self._submission_failures = meter.create_counter(
            "rlswarm.trainer.chain.submission.failures",
            unit="{call}",
            description="failed on-chain submissions, by method and reason",
        )

    def set_round(self, round_number: int, stage: int | None = None) -> None:
        self._round.set(int(round_number))
        if stage is not None:
            self._stage.set(int(stage))

    def record_reward(self, stage: int, reward: float) -> None:
        """One reward (or a batch mean): feeds the per-stage histogram and the last-value gauge."""
        if not math.isfinite(reward):
            log.debug("skipping non-finite reward %r for stage %s", reward, stage)
            return
        attrs = {"stage": str(stage)}
        self._reward.record(float(reward), attrs)
        self._reward_last.set(float(reward), attrs)

    def record_loss(self, loss: float, stage: int | None = None) -> None:
        if not math.isfinite(loss):
            log.debug("skipping non-finite loss %r", loss)
            return
        self._loss.set(float(loss), {"stage": str(stage)} if stage is not None else {})

    def record_generation(self, tokens: int, seconds: float) -> None:
        """A finished generation batch: counts its tokens and sets tokens/second."""
        self._tokens.add(_check_count(int(tokens), "tokens"))
        if seconds > 0:
            self._tps.set(tokens / seconds)

    def record_step(self, seconds: float, stage: int | None = None) -> None:
        self._step.record(max(0.0, float(seconds)), {"stage": str(stage)} if stage is not None else {})

    def set_dht_peers(self, count: int) -> None:
        self._peers.set(_check_count(int(count), "peer count"))

    def record_published(self, count: int = 1) -> None:
        self._published.add(_check_count(count, "published count"))

    def record_fetched(self, count: int = 1) -> None:
        self._fetched.add(_check_count(count, "fetched count"))

    def record_dropped(self, reason: str, count: int = 1) -> None:
        self._dropped.add(_check_count(count, "dropped count"), {"reason": _bounded(reason)})

    def mark_checkpoint(self, saved_at: float | None = None) -> None:
        """A checkpoint was saved (now, or at unix time `saved_at` when resuming)."""
        self._checkpoint.mark({}, saved_at)

    def record_eval(self, accuracy: float, format_rate: float) -> None:
        self._eval_accuracy.set(float(accuracy))
        self._eval_format.set(float(format_rate))

    def set_outbox_depth(self, depth: int) -> None:
        self._outbox.set(_check_count(int(depth), "outbox depth"))

    def record_submission_failure(self, method: str, reason: str) -> None:
        self._submission_failures.add(1, {"method": _bounded(method), "reason": _bounded(reason)})


class LoginMetrics:
    """The login service: sign-ins, API calls, relayed transactions."""

    def __init__(self, meter: Meter, http: HttpServerMetrics | None = None):
        self._http = http or HttpServerMetrics(meter)
        self._sign_ins = meter.create_counter("rlswarm.login.sign_ins", unit="{sign_in}", description="sign-ins by result")
        self._api_calls = meter.create_counter(
            "rlswarm.login.api.calls", unit="{call}", description="API calls by endpoint and status code"
        )
        self._tx_sent = meter.create_counter(
            "rlswarm.login.transactions.sent", unit="{transaction}", description="contract transactions relayed"
        )
        self._tx_failed = meter.create_counter(
            "rlswarm.login.transactions.failed", unit="{transaction}", description="relayed transactions that failed"
        )

    def record_sign_in(self, result: str) -> None:
        """`result`: a short fixed word such as success, bad_password, locked."""
        self._sign_ins.add(1, {"result": _bounded(result)})

    def record_request(self, method: str, route: str, status_code: int, seconds: float) -> None:
        self._http.record_request(method, route, status_code, seconds)
        self._api_calls.add(1, {"endpoint": _bounded(route), "status": int(status_code)})

    def record_transaction_sent(self, method: str) -> None:
        self._tx_sent.add(1, {"method": _bounded(method)})

    def record_transaction_failed(self, method: str, reason: str) -> None:
        self._tx_failed.add(1, {"method": _bounded(method), "reason": _bounded(reason)})


class DashboardMetrics:
    """The dashboard: request latency/status by route and the age of its DHT/chain caches."""

    def __init__(self, meter: Meter, http: HttpServerMetrics | None = None):
        self._http = http or HttpServerMetrics(meter)
        self._cache = _AgeGauge()
        meter.create_observable_gauge(
            "rlswarm.dashboard.cache.age",
            callbacks=[self._cache.observe],
            unit="s",
            description="seconds since the last successful poll, by source (dht, chain)",
        )
        self._poll_errors = meter.create_counter(
            "rlswarm.dashboard.poll.errors", unit="{poll}", description="failed polls by source"
        )

    def record_request(self, method: str, route: str, status_code: int, seconds: float) -> None:
        self._http.record_request(method, route, status_code, seconds)

    def mark_refreshed(self, source: str, at: float | None = None) -> None:
        """The `source` cache (dht, chain) was refreshed now (or at unix time `at`)."""
        self._cache.mark({"source": _bounded(source)}, at)

    def record_poll_error(self, source: str) -> None:
        self._poll_errors.add(1, {"source": _bounded(source)})


@dataclass
class Telemetry:
    """One process's telemetry: providers, the meter and tracer, and the bundles."""

    service_name: str
    resource_attributes: dict[str, str]
    exporters: tuple[str, ...]
    trace_exporter: str
    meter_provider: MeterProvider
    tracer_provider: TracerProvider
    meter: Meter
    tracer: Tracer
    registry: CollectorRegistry | None = None
    prometheus_port: int | None = None
    _server: Any = None
    _server_thread: threading.Thread | None = None
    _bundles: dict[str, Any] = field(default_factory=dict)
    _closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def prometheus_url(self) -> str | None:
        """`http://host:port/metrics` of the standalone Prometheus server, if one runs."""
        if self._server is None:
            return None
        host = self._server.server_address[0]
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{host}:{self.prometheus_port}/metrics"

    def _bundle(self, key: str, factory: Callable[[Meter], Any]) -> Any:
        with self._lock:
            if key not in self._bundles:
                self._bundles[key] = factory(self.meter)
            return self._bundles[key]

    def trainer_metrics(self) -> TrainerMetrics:
        return self._bundle("trainer", TrainerMetrics)

    def http_server_metrics(self) -> HttpServerMetrics:
        return self._bundle("http", HttpServerMetrics)

    # Login and dashboard share the one http.server.request.duration instrument.
    def login_metrics(self) -> LoginMetrics:
        http = self.http_server_metrics()
        return self._bundle("login", lambda meter: LoginMetrics(meter, http))

    def dashboard_metrics(self) -> DashboardMetrics:
        http = self.http_server_metrics()
        return self._bundle("dashboard", lambda meter: DashboardMetrics(meter, http))

    @contextlib.contextmanager
    def span(self, name: str, attributes: Mapping[str, str | int | float | bool] | None = None) -> Iterator[Span]:
        """A span (per stage, per chain call); records the exception and re-raises on error."""
        with self.tracer.start_as_current_span(name, attributes=dict(attributes or {})) as span:
            yield span

    def metrics_asgi_app(self) -> MetricsApp:
        return MetricsApp(self)

    def force_flush(self, timeout_millis: int = 10_000) -> bool:
        """Push pending metrics/spans now (OTLP); True when every exporter finished in time."""
        ok = self.meter_provider.force_flush(timeout_millis)
        return bool(self.tracer_provider.force_flush(timeout_millis)) and bool(ok)

    def shutdown(self, timeout_millis: int = 5_000) -> None:
        """Flush and stop exporters and the /metrics server. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _forget(self)
        atexit.unregister(self.shutdown)
        # Metrics first (the final push matters most); a dead collector must not make a
        # service crash on exit, so failures are logged, not raised.
        for what, stop in (
            ("metrics", lambda: self.meter_provider.shutdown(timeout_millis=timeout_millis)),
            ("traces", self.tracer_provider.shutdown),
        ):
            try:
                stop()
            except Exception as err:  # noqa: BLE001 - SDK raises bare Exception on reader failures
                log.warning("telemetry %s: flushing %s at shutdown failed: %s", self.service_name, what, err)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# The process's telemetry by service name: setup_telemetry is idempotent per service.
_ACTIVE: dict[str, Telemetry] = {}
_ACTIVE_LOCK = threading.Lock()
_GLOBAL_INSTALLED = False


def _forget(telemetry: Telemetry) -> None:
    with _ACTIVE_LOCK:
        if _ACTIVE.get(telemetry.service_name) is telemetry:
            del _ACTIVE[telemetry.service_name]


def get_telemetry(service_name: str | None = None) -> Telemetry | None:
    """The active telemetry of `service_name` (or the only/first active one when None)."""
    with _ACTIVE_LOCK:
        if service_name is not None:
            return _ACTIVE.get(service_name)
        return next(iter(_ACTIVE.values()), None)


def _resource_attributes(service_name: str, attributes: Mapping[str, str] | None) -> dict[str, str]:
    if not isinstance(service_name, str) or not service_name.strip():
        raise ValueError("setup_telemetry: service_name must be a non-empty string such as 'trainer'")
    out = {"service.name": service_name}
    for key, value in (attributes or {}).items():
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"setup_telemetry: attribute names must be non-empty strings, got {key!r}")
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValueError(f"setup_telemetry: attribute {key!r} must be a string, got {type(value).__name__}")
        out[key if "." in key else ATTRIBUTE_NAMESPACE + key] = value
    return out


# Loggers through which the OTLP exporters (and the SDK's export loops) report failures.
_EXPORT_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.sdk.metrics._internal.export",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.trace.export",
)


class _ExportFailureGate(logging.Filter):
    """Lets the first OTLP export failure be logged and drops the next ones until an export
    succeeds again: a collector that is absent or dead costs one warning, not one per interval.
    (The exports run on the SDK's own threads, so the service never waits on them.)"""

    NOTE = (" [telemetry: the service goes on without its collector; further export failures are not logged "
            "until an export succeeds again]")

    def __init__(self) -> None:
        super().__init__()
        self.failing = False
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        with self._lock:
            if self.failing:
                return False
            self.failing = True
        record.msg = f"{record.msg}{self.NOTE}"
        return True

    def succeeded(self) -> None:
        with self._lock:
            was, self.failing = self.failing, False
        if was:
            log.info("telemetry: OTLP export works again")


_EXPORT_GATE = _ExportFailureGate()


def _install_export_gate() -> None:
    for name in _EXPORT_LOGGERS:
        logger = logging.getLogger(name)
        if _EXPORT_GATE not in logger.filters:
            logger.addFilter(_EXPORT_GATE)


class _GatedExporter:
    """An OTLP exporter whose successful exports re-arm the failure log (everything else delegates)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def export(self, *args: Any, **kwargs: Any) -> Any:
        result = self._inner.export(*args, **kwargs)
        if getattr(result, "name", None) == "SUCCESS":
            _EXPORT_GATE.succeeded()
        return result


def _otlp_metric_exporter(settings: TelemetrySettings) -> Any:
    from opentelemetry.sdk.metrics import Counter, Histogram, ObservableCounter, UpDownCounter
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    # Cumulative everywhere: the collector's Prometheus exporter needs cumulative sums.
    temporality = {
        Counter: AggregationTemporality.CUMULATIVE,
        UpDownCounter: AggregationTemporality.CUMULATIVE,
        Histogram: AggregationTemporality.CUMULATIVE,
        ObservableCounter: AggregationTemporality.CUMULATIVE,
    }
    if settings.otlp_protocol == "http/protobuf":
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter
        except ImportError as err:
            raise TelemetryError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf needs opentelemetry-exporter-otlp-proto-http: "
                "pip install opentelemetry-exporter-otlp-proto-http, or use grpc"
            ) from err
        return _GatedExporter(HttpExporter(preferred_temporality=temporality))
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter

    return _GatedExporter(GrpcExporter(preferred_temporality=temporality))


def _span_processor(settings: TelemetrySettings, kind: str) -> Any:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    if kind == "console":
        return SimpleSpanProcessor(ConsoleSpanExporter())
    if settings.otlp_protocol_all == "http/protobuf":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
        except ImportError as err:
            raise TelemetryError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf needs opentelemetry-exporter-otlp-proto-http"
            ) from err
        return BatchSpanProcessor(_GatedExporter(HttpSpanExporter()))
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

    return BatchSpanProcessor(_GatedExporter(GrpcSpanExporter()))


def setup_telemetry(
    service_name: str,
    attributes: dict[str, str] | None = None,
    prometheus_port: int | None = None,
) -> Telemetry:
    """Start telemetry for this process (idempotent per `service_name`).

    `attributes` become resource attributes; keys without a dot get the `rlswarm.`
    namespace (`{"peer_id": ...}` -> `rlswarm.peer_id`). `prometheus_port` starts a
    /metrics server in local mode (0 = any free port; None = none).
    Raises SettingsError (a SystemExit with a readable message) for bad OTEL_* values and
    TelemetryError when the /metrics port cannot be bound.
    """
    resource_attrs = _resource_attributes(service_name, attributes)
    with _ACTIVE_LOCK:
        existing = _ACTIVE.get(service_name)
    if existing is not None:
        if existing.resource_attributes != resource_attrs:
            log.warning("telemetry for %s is already set up with other attributes; keeping the first", service_name)
        return existing

    settings = load_settings(TelemetrySettings)
    exporters = settings.metric_exporters()
    trace_kind = settings.trace_exporter()
    port = prometheus_port
    if port is not None and not 0 <= port <= 65535:
        raise ValueError(f"prometheus_port must be 0..65535, got {port}")

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricReader,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create(resource_attrs)
    readers: list[MetricReader] = []
    registry = None
    if "otlp" in exporters or trace_kind == "otlp":
        _install_export_gate()
    if "otlp" in exporters:
        readers.append(
            PeriodicExportingMetricReader(
                _otlp_metric_exporter(settings), export_interval_millis=settings.export_interval_ms
            )
        )
    if "console" in exporters:
        readers.append(
            PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=settings.export_interval_ms)
        )
    if "prometheus" in exporters:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry, ProcessCollector

        # A private registry: no clash between several Telemetry objects in one process.
        registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)
        label_keys = set(resource_attrs)
        readers.append(
            PrometheusMetricReader(
                registry=registry,
                scope_info_enabled=False,
                # Copy our resource attributes (service, peer) onto every series so a scrape
                # of several local peers stays apart without relabelling.
                resource_attribute_filter=lambda key: key in label_keys,
            )
        )

    meter_provider = MeterProvider(metric_readers=readers, resource=resource, shutdown_on_exit=False)
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    if trace_kind != "none":
        tracer_provider.add_span_processor(_span_processor(settings, trace_kind))

    telemetry = Telemetry(
        service_name=service_name,
        resource_attributes=resource_attrs,
        exporters=exporters,
        trace_exporter=trace_kind,
        meter_provider=meter_provider,
        tracer_provider=tracer_provider,
        meter=meter_provider.get_meter("rl-swarm"),
        tracer=tracer_provider.get_tracer("rl-swarm"),
        registry=registry,
    )
    if registry is not None and port is not None:
        from prometheus_client import start_http_server

        try:
            server, thread = start_http_server(port, addr=settings.metrics_host, registry=registry)
        except OSError as err:
            meter_provider.shutdown(timeout_millis=1000)
            raise TelemetryError(
                f"cannot serve /metrics on {settings.metrics_host}:{port} ({err.strerror or err}); "
                "stop what holds it or pick another port (the service's --metrics-port / RLSWARM_METRICS_PORT)"
            ) from err
        telemetry._server, telemetry._server_thread = server, thread
        telemetry.prometheus_port = int(server.server_port)

    _install_global(telemetry)
    atexit.register(telemetry.shutdown)
    with _ACTIVE_LOCK:
        _ACTIVE.setdefault(service_name, telemetry)
    log.info(
        "telemetry for %s: metrics -> %s%s, traces -> %s",
        service_name,
        ", ".join(exporters) or "disabled",
        f" ({telemetry.prometheus_url})" if telemetry.prometheus_url else "",
        trace_kind,
    )
    return telemetry


def _install_global(telemetry: Telemetry) -> None:
    """Make the first telemetry of the process the global OpenTelemetry provider (the API allows one)."""
    global _GLOBAL_INSTALLED
    with _ACTIVE_LOCK:
        if _GLOBAL_INSTALLED:
            return
        _GLOBAL_INSTALLED = True
    from opentelemetry import metrics, trace

    metrics.set_meter_provider(telemetry.meter_provider)
    trace.set_tracer_provider(telemetry.tracer_provider)


# --- ASGI: /metrics app and request middleware -------------------------------------------


async def _send_text(send: Callable[..., Any], status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class MetricsApp:
    """ASGI app serving the Prometheus text format of a telemetry's registry.

    Mount on a FastAPI app with `app.add_route("/metrics", metrics_asgi_app())` (exact path)
    or `app.mount("/metrics", ...)`. With telemetry=None it serves whatever telemetry is
    active in the process when a request arrives, so the app can be built before setup.
    """

    def __init__(self, telemetry: Telemetry | None = None, service_name: str | None = None):
        self._telemetry = telemetry
        self._service_name = service_name

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        telemetry = self._telemetry or get_telemetry(self._service_name)
        if telemetry is None:
            await _send_text(send, 503, b"telemetry is not set up in this process (setup_telemetry)\n", "text/plain")
            return
        if telemetry.registry is None:
            body = (
                f"metrics of {telemetry.service_name} are exported via {', '.join(telemetry.exporters) or 'nothing'}, "
                "not served here; unset OTEL_EXPORTER_OTLP_ENDPOINT or set OTEL_METRICS_EXPORTER=prometheus\n"
            )
            await _send_text(send, 404, body.encode(), "text/plain")
            return
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        await _send_text(send, 200, generate_latest(telemetry.registry), CONTENT_TYPE_LATEST)


def metrics_asgi_app(telemetry: Telemetry | None = None, service_name: str | None = None) -> MetricsApp:
    """The /metrics ASGI app for the login and dashboard services (see `MetricsApp`)."""
    return MetricsApp(telemetry, service_name)


def route_template(scope: Mapping[str, Any]) -> str:
    """The matched route's template (`/api/rounds/{round}`), never the raw path (cardinality)."""
    route = scope.get("route")
    if route is None:
        return "unmatched"
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if path is None:
        return "unmatched"
    from starlette.routing import Mount

    if isinstance(route, Mount):
        return (path.rstrip("/") or "") + "/{path:path}"
    return str(path) or "/"


RecorderSource = RequestRecorder | Callable[[Telemetry], RequestRecorder] | None


class TelemetryMiddleware:
    """Pure ASGI middleware: latency and status of every HTTP request by route template.

    `recorder` is either an object with `record_request` (a `DashboardMetrics`), or a
    function of the process `Telemetry` returning one (`Telemetry.login_metrics`), looked
    up at request time so the app can be built before `setup_telemetry` runs. Without one
    it uses `http_server_metrics()`. Requests before setup are not recorded. Paths in
    `exclude` (default /metrics) are not recorded either.
    """

    def __init__(
        self,
        app: Callable[..., Any],
        recorder: RecorderSource = None,
        service_name: str | None = None,
        exclude: Iterable[str] = ("/metrics",),
    ):
        self.app = app
        self._recorder = recorder
        self._service_name = service_name
        self._exclude = frozenset(exclude)

    def _resolve(self) -> RequestRecorder | None:
        if self._recorder is not None and hasattr(self._recorder, "record_request"):
            return self._recorder  # type: ignore[return-value]
        telemetry = get_telemetry(self._service_name)
        if telemetry is None:
            return None
        if self._recorder is None:
            return telemetry.http_server_metrics()
        return self._recorder(telemetry)  # type: ignore[operator]

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http" or scope.get("path") in self._exclude:
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets when the app raises before responding
        start = time.perf_counter()

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            try:
                recorder = self._resolve()
                if recorder is not None:
                    recorder.record_request(scope.get("method", "GET"), route_template(scope), status, elapsed)
            except Exception:  # metrics must never break a request
                log.exception("recording request metrics failed")


def instrument_fastapi(app: Any, recorder: RecorderSource = None, service_name: str | None = None) -> None:
    """Add `TelemetryMiddleware` and an exact `/metrics` route to a FastAPI/Starlette app.

    Example: `instrument_fastapi(app, Telemetry.dashboard_metrics, service_name="dashboard")`
    at module level; `setup_telemetry("dashboard", ...)` later in the command's run().
    """
    app.add_middleware(TelemetryMiddleware, recorder=recorder, service_name=service_name)
    app.add_route("/metrics", MetricsApp(None, service_name), include_in_schema=False)
