"""Shared-state health on ``/metrics``: whether limits are shared or have fallen back to
per-process counters because Redis is unavailable, and what the ledger had to spool; and
the backend health model's counters (ejections, failure rates, panic routing)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.state.health import HealthState
from gateway.state.shared import SharedState


class SharedStateCollector(Collector):
    """Read at scrape time from :meth:`SharedState.view` (no work per request)."""

    def __init__(self, shared: SharedState) -> None:
        self._shared = shared

    def collect(self) -> Iterator[Metric]:
        yield from health_metrics(self._shared.health)
        view = self._shared.view()
        yield GaugeMetricFamily(
            "freshet_limits_shared",
            "1 when rate limits and budgets are shared (Redis up), 0 when per-process",
            value=1.0 if view.limits == "shared" else 0.0,
        )
        if view.redis is not None:
            yield GaugeMetricFamily(
                "freshet_redis_up", "1 when Redis answers", value=1.0 if view.redis.up else 0.0
            )
            yield CounterMetricFamily(
                "freshet_redis_outages", "Times Redis became unavailable", value=view.redis.outages
            )
            yield CounterMetricFamily(
                "freshet_limits_local_admissions",
                "Requests admitted by per-process limits while Redis was unavailable",
                value=view.redis.local_admissions,
            )
        if view.spooled_bytes is not None:
            yield GaugeMetricFamily(
                "freshet_ledger_spooled_bytes",
                "Usage records buffered on disk until Redis is back",
                value=view.spooled_bytes,
            )
            yield CounterMetricFamily(
                "freshet_ledger_spool_dropped",
                "Usage records dropped because the on-disk buffer was full",
                value=view.spool_dropped or 0,
            )


def health_metrics(health: HealthState) -> Iterator[Metric]:
    """The health model's counters (the circuit's state itself is the telemetry's
    ``freshet_backend_circuit_state``, read from the same model)."""
    ejections = CounterMetricFamily(
        "freshet_backend_ejections",
        "Times the backend was ejected (its circuit opened)",
        labels=["freshet_backend_id"],
    )
    rate = GaugeMetricFamily(
        "freshet_backend_failure_rate",
        "Share of this process's requests to the backend that failed before their first "
        "byte, over the health window",
        labels=["freshet_backend_id"],
    )
    for backend_id in sorted(health.known()):
        view = health.view(backend_id)
        ejections.add_metric([backend_id], view.ejections)
        rate.add_metric([backend_id], view.failure_rate or 0.0)
    panics = CounterMetricFamily(
        "freshet_route_panic",
        "Requests sent to unhealthy backends because every candidate was unhealthy",
        labels=["freshet_group"],
    )
    for group, count in sorted(health.panics.items()):
        panics.add_metric([group], count)
    yield ejections
    yield rate
    yield panics
