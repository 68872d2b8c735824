"""Shared-state health on ``/metrics``: whether limits are shared or have fallen back to
per-process counters because Redis is unavailable, and what the ledger had to spool; the
backend health model's counters (ejections, failure rates, panic routing); and how true
the router's quotes were (the learned correction and the recent error)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.state.health import HealthState
from gateway.state.quotes import QuoteCalibration
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


class QuoteCollector(Collector):
    """How true the router's quotes were, per backend, and the correction it learned
    (:mod:`gateway.state.quotes`; per process). Read at scrape time."""

    def __init__(self, calibration: QuoteCalibration) -> None:
        self._calibration = calibration

    def collect(self) -> Iterator[Metric]:
        labels = ["freshet_backend_id"]
        factor = GaugeMetricFamily(
            "freshet_quote_correction_factor",
            "Learned factor on the cost model's quoted time (corrected = factor x model + "
            "offset), by measure (ttft, duration)",
            labels=[*labels, "measure"],
        )
        offset = GaugeMetricFamily(
            "freshet_quote_correction_offset_seconds",
            "Learned offset added to the cost model's quoted time, by measure",
            labels=[*labels, "measure"],
        )
        error = GaugeMetricFamily(
            "freshet_quote_relative_error",
            "|actual - quoted| / actual of the recent requests' quotes as given (corrected), "
            "by measure and quantile (0.5, 0.9)",
            labels=[*labels, "measure", "quantile"],
        )
        observed = CounterMetricFamily(
            "freshet_quote_observations",
            "Requests whose quote was compared with what happened",
            labels=labels,
        )
        for backend_id in self._calibration.known():
            view = self._calibration.view(backend_id)
            observed.add_metric([backend_id], view.observed)
            for measure, f, o, p50, p90 in (
                (
                    "ttft",
                    view.ttft_factor,
                    view.ttft_offset_s,
                    view.ttft_error_p50,
                    view.ttft_error_p90,
                ),
                (
                    "duration",
                    view.duration_factor,
                    view.duration_offset_s,
                    view.duration_error_p50,
                    view.duration_error_p90,
                ),
            ):
                factor.add_metric([backend_id, measure], f)
                offset.add_metric([backend_id, measure], o)
                if p50 is not None and p90 is not None:
                    error.add_metric([backend_id, measure, "0.5"], p50)
                    error.add_metric([backend_id, measure, "0.9"], p90)
        yield factor
        yield offset
        yield error
        yield observed
