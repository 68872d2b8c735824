"""OTLP over HTTP/protobuf: spans through a batch processor, metrics from the registry.

Export is configured by the standard variables (``OTEL_EXPORTER_OTLP_ENDPOINT`` and the
per-signal ``..._TRACES_...``/``..._METRICS_...`` ones, headers, timeout, compression,
``OTEL_TRACES_EXPORTER``/``OTEL_METRICS_EXPORTER=none``, ``OTEL_BSP_*``,
``OTEL_METRIC_EXPORT_INTERVAL``), read by the SDK's own exporters. Nothing is exported on
a request's path: spans go to the SDK's batch processor (its own thread), metrics are read
from the registry on a timer. A collector that is down costs one warning (and one line
when it is back), not a log line per batch and not a request's latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry
from prometheus_client.samples import Sample

from gateway.telemetry_metrics import Spec, spec_for

log = logging.getLogger(__name__)

# The SDK's exporters log every failed batch (and every retry); Health reports instead.
EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.common.http",
)


def wanted(env: Mapping[str, str], signal: str) -> bool:
    """Whether ``signal`` ("traces" or "metrics") is exported over OTLP."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    chosen = env.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip().lower()
    if chosen == "none":
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
        f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"
    )
    if chosen not in ("", "otlp"):
        log.warning("OTEL_%s_EXPORTER=%s is not supported; using otlp", signal.upper(), chosen)
    protocol = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol != "http/protobuf" and (endpoint or chosen == "otlp"):
        log.warning("OTLP protocol %r is not supported; exporting http/protobuf", protocol)
    return bool(endpoint) or chosen == "otlp"


class Health(logging.Filter):
    """Whether an exporter's last export worked; says so once when that changes.

    As a logging filter on the SDK exporters' loggers it keeps their per-batch messages
    out of the log, remembering the last one as the reason given in the warning.
    """

    def __init__(self, what: str, endpoint: str) -> None:
        super().__init__()
        self.what = what
        self.endpoint = endpoint
        self.ok = True
        self.failures = 0
        self.reason = "no answer"

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            self.reason = record.getMessage()
            return False
        return True

    def result(self, ok: bool) -> None:
        if ok and not self.ok:
            log.info("OTLP %s export to %s works again", self.what, self.endpoint)
        elif not ok:
            self.failures += 1
            if self.ok:
                log.warning(
                    "OTLP %s export to %s failed (%s); dropping %s until it answers "
                    "(requests are not affected)",
                    self.what,
                    self.endpoint,
                    self.reason,
                    self.what,
                )
        self.ok = ok


class GuardedSpanExporter(SpanExporter):
    """The SDK's OTLP span exporter, reporting through :class:`Health`."""

    def __init__(self, inner: OTLPSpanExporter, health: Health) -> None:
        self.inner = inner
        self.health = health

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        self.health.result(result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def span_exporter() -> GuardedSpanExporter:
    inner = OTLPSpanExporter()
    return GuardedSpanExporter(inner, Health("spans", getattr(inner, "_endpoint", "?")))


class MetricsExport:
    """Sends the registry's current values over OTLP every ``interval_s`` (cumulative)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        resource: Resource,
        scope: InstrumentationScope,
        interval_s: float,
        exporter: OTLPMetricExporter | None = None,
    ) -> None:
        self._registry = registry
        self._resource = resource
        self._scope = scope
        self.interval_s = interval_s
        self.exporter = exporter or OTLPMetricExporter()
        self.health = Health("metrics", getattr(self.exporter, "_endpoint", "?"))

    async def run(self, refresh: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.export_once(refresh)

    async def export_once(self, refresh: Callable[[], Awaitable[None]]) -> None:
        await refresh()
        data = self.collect()
        results: list[object] = []
        done = await in_daemon_thread(
            lambda: results.append(self.exporter.export(data)), "metrics", self.interval_s
        )
        if done:
            self.health.result(results == [MetricExportResult.SUCCESS])

    def collect(self) -> MetricsData:
        now = time.time_ns()
        metrics = []
        for family in self._registry.collect():
            spec = spec_for(family.name)
            if spec is None or not family.samples:
                continue
            metrics.append(_metric(spec, family.samples, now))
        scope = ScopeMetrics(scope=self._scope, metrics=metrics, schema_url="")
        resource = ResourceMetrics(resource=self._resource, scope_metrics=[scope], schema_url="")
        return MetricsData(resource_metrics=[resource])


def _attributes(spec: Spec, labels: Mapping[str, str]) -> dict[str, str]:
    return {
        attribute: labels[label]
        for attribute, label in zip(spec.attributes, spec.labels, strict=True)
        if labels.get(label)
    }


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "le"))


def _metric(spec: Spec, samples: Sequence[Sample], now: int) -> Metric:
    series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = defaultdict(lambda: {"buckets": []})
    for s in samples:
        point = series[_key(s.labels)]
        suffix = s.name[len(spec.prometheus) :]
        if suffix == "_bucket":
            point["buckets"].append((float(s.labels["le"]), s.value))
        else:
            point[suffix or "value"] = s.value
    cumulative = AggregationTemporality.CUMULATIVE
    if spec.kind == "histogram":
        points = [_histogram_point(spec, dict(key), p, now) for key, p in series.items()]
        data: Histogram | Sum | Gauge = Histogram(points, cumulative)
    elif spec.kind == "counter":
        numbers = [
            NumberDataPoint(
                attributes=_attributes(spec, dict(key)),
                start_time_unix_nano=int(p.get("_created", 0) * 1e9),
                time_unix_nano=now,
                value=p.get("_total", 0.0),
            )
            for key, p in series.items()
        ]
        data = Sum(numbers, cumulative, is_monotonic=True)
    else:
        gauge_points = [
            NumberDataPoint(_attributes(spec, dict(key)), 0, now, p.get("value", 0.0))
            for key, p in series.items()
        ]
        data = Gauge(gauge_points)
    return Metric(name=spec.name, description=spec.description, unit=spec.unit, data=data)


def _histogram_point(
    spec: Spec, labels: dict[str, str], point: dict[str, Any], now: int
) -> HistogramDataPoint:
    cumulative = [count for _, count in sorted(point["buckets"])]
    counts = [int(c - p) for c, p in zip(cumulative, [0.0, *cumulative[:-1]], strict=True)]
    return HistogramDataPoint(
        attributes=_attributes(spec, labels),
        start_time_unix_nano=int(point.get("_created", 0) * 1e9),
        time_unix_nano=now,
        count=int(point.get("_count", 0)),
        sum=point.get("_sum", 0.0),
        bucket_counts=counts,
        explicit_bounds=list(spec.buckets),
        # Prometheus histograms keep no min or max; None leaves the fields unset.
        min=cast(float, None),
        max=cast(float, None),
    )


def quiet(loggers: Sequence[str], filters: Sequence[logging.Filter]) -> Callable[[], None]:
    """Attach ``filters`` to the exporters' loggers; returns the undo."""
    for name in loggers:
        for f in filters:
            logging.getLogger(name).addFilter(f)

    def undo() -> None:
        for name in loggers:
            for f in filters:
                with contextlib.suppress(ValueError):
                    logging.getLogger(name).removeFilter(f)

    return undo


async def in_daemon_thread(work: Callable[[], object], what: str, timeout_s: float) -> bool:
    """Run blocking export work in a daemon thread, so that a collector that does not
    answer can hold up neither the event loop nor the process's exit. False: timed out."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def wake() -> None:
        # The loop may be gone when work that timed out ends after the shutdown.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(done.set)

    def run() -> None:
        try:
            work()
        except Exception:
            log.exception("OTLP %s export failed", what)
        finally:
            wake()

    threading.Thread(target=run, name=f"freshet-otlp-{what}", daemon=True).start()
    try:
        await asyncio.wait_for(done.wait(), timeout_s)
    except TimeoutError:
        log.warning("OTLP %s export did not finish in %.0f s", what, timeout_s)
        return False
    return True
