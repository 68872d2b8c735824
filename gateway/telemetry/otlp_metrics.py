"""OTLP metrics: the Prometheus registry's current values, sent under the OpenTelemetry
names, units and attribute names (cumulative temporality) every
``OTEL_METRIC_EXPORT_INTERVAL`` milliseconds."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, cast

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
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
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry
from prometheus_client.samples import Sample

from gateway.telemetry.export import Health, in_daemon_thread
from gateway.telemetry.metrics import Spec, spec_for


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
        # No timeout of its own: the exporter's (OTEL_EXPORTER_OTLP_TIMEOUT) ends it, and
        # the next export waits for it, so a slow collector never piles up threads.
        await in_daemon_thread(lambda: results.append(self.exporter.export(data)), "metrics")
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
