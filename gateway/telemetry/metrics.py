"""Metrics: GenAI semantic-convention histograms, energy and cost counters, backend gauges.

Recorded with ``prometheus-client`` into a registry of this app (not the process-global
one). Measured on this project's 2-vCPU machine, one recording with labels costs about
2 µs there (0.7 µs for a histogram, 0.35 µs for a counter once the label child is kept),
against about 8 µs through the OpenTelemetry SDK's instruments read by its Prometheus
exporter. ``/metrics`` renders the registry; when OTLP is configured the same registry is
exported over OTLP under the OpenTelemetry names (:mod:`gateway.telemetry.otlp_metrics`).

Every instrument is described once by a :class:`Spec`: its OpenTelemetry name, unit and
attribute names, and the Prometheus name derived from them.

Under ``freshet serve --workers N`` (prometheus_client's multiprocess mode, set up by
:mod:`gateway.cli.workers`) every worker keeps its values in files of a directory the
workers share, and ``/metrics`` merges them, so a scrape reports the whole process group
whichever worker answers it: counters and histograms summed; each gauge as its spec's
``multiprocess`` mode says (requests this gateway has open on a backend summed over the
workers; what a backend reports, the largest any worker sees, since workers in front of
one remote server see the same numbers; up only if up in every worker). A recording then
also writes to a memory-mapped file (a few microseconds more).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from msgspec import Struct
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.backend import BackendStatus
from gateway.outcome import UsageRecord
from gateway.telemetry.recorders import recorder
from gateway.telemetry.trace import RequestTrace

Kind = Literal["histogram", "counter", "gauge"]
# How prometheus_client merges a gauge over the processes of a multiprocess group.
GaugeMerge = Literal["livesum", "livemax", "livemin"]


class Spec(Struct, frozen=True, kw_only=True):
    name: str  # OpenTelemetry name
    prometheus: str  # Prometheus name (counters get ``_total`` when rendered)
    kind: Kind
    unit: str
    description: str
    attributes: tuple[str, ...]
    buckets: tuple[float, ...] = ()
    multiprocess: GaugeMerge = "livemax"  # gauges only

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(label_name(a) for a in self.attributes)


def label_name(attribute: str) -> str:
    return attribute.replace(".", "_")


REQUEST = (
    "gen_ai.operation.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "freshet.backend.id",
    "freshet.group",
)
BACKEND = ("freshet.backend.id",)

# Bucket boundaries as recommended by the GenAI semantic conventions, extended below for
# the simulated etched ASIC (tens of microseconds per output token).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24,
                    20.48, 40.96, 81.92)  # fmt: skip
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0)  # fmt: skip
TPOT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)  # fmt: skip
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)  # fmt: skip

DURATION = Spec(
    name="gen_ai.server.request.duration",
    prometheus="gen_ai_server_request_duration_seconds",
    kind="histogram",
    unit="s",
    description="Time from the request's arrival to the end of its response",
    attributes=(*REQUEST, "error.type"),
    buckets=DURATION_BUCKETS,
)
TTFT = Spec(
    name="gen_ai.server.time_to_first_token",
    prometheus="gen_ai_server_time_to_first_token_seconds",
    kind="histogram",
    unit="s",
    description="Time from the request's arrival to its first generated chunk",
    attributes=REQUEST,
    buckets=TTFT_BUCKETS,
)
TPOT = Spec(
    name="gen_ai.server.time_per_output_token",
    prometheus="gen_ai_server_time_per_output_token_seconds",
    kind="histogram",
    unit="s",
    description="Time per output token after the first, for successful responses",
    attributes=REQUEST,
    buckets=TPOT_BUCKETS,
)
TOKENS = Spec(
    name="gen_ai.client.token.usage",
    prometheus="gen_ai_client_token_usage",
    kind="histogram",
    unit="{token}",
    description="Tokens per request, by type (input: prompt, output: generated)",
    attributes=(*REQUEST, "gen_ai.token.type"),
    buckets=TOKEN_BUCKETS,
)
ENERGY = Spec(
    name="freshet.energy",
    prometheus="freshet_energy_joules",
    kind="counter",
    unit="J",
    description="Energy the requests used, as metered, modelled or simulated",
    attributes=(*REQUEST, "freshet.energy_source"),
)
COST = Spec(
    name="freshet.cost",
    prometheus="freshet_cost_usd",
    kind="counter",
    unit="USD",
    description="What the requests cost: energy, hardware share and list prices",
    attributes=REQUEST,
)
QUEUE = Spec(
    name="freshet.backend.queue_depth",
    prometheus="freshet_backend_queue_depth",
    kind="gauge",
    unit="{request}",
    description="Requests waiting in the backend's queue, as the backend reports it",
    attributes=BACKEND,
)
RUNNING = Spec(
    name="freshet.backend.running",
    prometheus="freshet_backend_running",
    kind="gauge",
    unit="{request}",
    description="Requests the backend reports running",
    attributes=BACKEND,
)
IN_FLIGHT = Spec(
    name="freshet.backend.in_flight",
    prometheus="freshet_backend_in_flight",
    kind="gauge",
    unit="{request}",
    description="Requests this gateway process has open on the backend",
    attributes=BACKEND,
    multiprocess="livesum",
)
UP = Spec(
    name="freshet.backend.up",
    prometheus="freshet_backend_up",
    kind="gauge",
    unit="1",
    description="1 when the backend reports itself healthy",
    attributes=BACKEND,
    multiprocess="livemin",
)
CIRCUIT = Spec(
    name="freshet.backend.circuit_state",
    prometheus="freshet_backend_circuit_state",
    kind="gauge",
    unit="1",
    description="1 for the circuit breaker's current state (closed, open, half_open)",
    attributes=(*BACKEND, "freshet.circuit.state"),
)
SPECS = (DURATION, TTFT, TPOT, TOKENS, ENERGY, COST, QUEUE, RUNNING, IN_FLIGHT, UP, CIRCUIT)
CIRCUIT_STATES = ("closed", "open", "half_open")


class Metrics:
    """The app's instruments, and the two places that record into them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Multiprocess mode: the instruments write to this process's files, and the
        # registry reads every process's files instead of the instruments.
        directory = multiprocess_dir()
        own = None if directory else self.registry
        if directory:
            MultiProcessCollector(self.registry, directory)  # type: ignore[no-untyped-call]
        self.multiprocess = directory is not None
        doc = {s.name: f"{s.description} ({s.name}, {s.unit})" for s in SPECS}
        self._histograms = {
            s.name: Histogram(s.prometheus, doc[s.name], s.labels, registry=own,
                              buckets=s.buckets)
            for s in SPECS if s.kind == "histogram"
        }  # fmt: skip
        self._counters = {
            s.name: Counter(s.prometheus, doc[s.name], s.labels, registry=own)
            for s in SPECS
            if s.kind == "counter"
        }
        self._gauges = {
            s.name: Gauge(s.prometheus, doc[s.name], s.labels, registry=own,
                          multiprocess_mode=s.multiprocess)
            for s in SPECS if s.kind == "gauge"
        }  # fmt: skip
        # Label children by label values: looking one up is most of a recording's cost,
        # so a request's are found with one lookup of its label values.
        self._series: dict[tuple[str, ...], dict[str, Any]] = {}
        self._g: dict[tuple[str, tuple[str, ...]], Gauge] = {}

    def _child(self, base: tuple[str, ...], key: str, spec: Spec, *extra: str) -> Any:
        series = self._series.get(base)
        if series is None:
            series = self._series[base] = {}
        child = series.get(key)
        if child is None:
            parent = self._histograms.get(spec.name) or self._counters[spec.name]
            child = series[key] = recorder(parent.labels(*base, *extra))
        return child

    def _gauge(self, spec: Spec, values: tuple[str, ...]) -> Gauge:
        child = self._g.get((spec.name, values))
        if child is None:
            child = self._g[(spec.name, values)] = self._gauges[spec.name].labels(*values)
        return child

    def request_done(self, t: RequestTrace) -> None:
        """One finished request (called once, after its response ended)."""
        record = t.record
        duration = (t.end_ns - t.start_ns) / 1e9
        error = t.error_type or ""
        if record is None:
            # The model may not exist (404): never a label value.
            model = (t.model or "") if t.routes else ""
            base = (t.operation, model, "", "", "")
            self._child(base, "duration " + error, DURATION, error).observe(duration)
            return
        base = (t.operation, t.model or "", _served(record), record.backend, record.group or "")
        series = self._series.get(base)
        if series is None or "output" not in series:
            self._child(base, "input", TOKENS, "input")
            self._child(base, "output", TOKENS, "output")
            self._child(base, "cost", COST)
            self._child(base, "ttft", TTFT)
            self._child(base, "tpot", TPOT)
            series = self._series[base]
        self._child(base, "duration " + error, DURATION, error).observe(duration)
        series["input"].observe(record.prompt_tokens)
        series["output"].observe(record.completion_tokens)
        series["cost"].inc(record.usd_total)
        if record.joules is not None:
            source = record.energy_source or ""
            self._child(base, "energy " + source, ENERGY, source).inc(record.joules)
        if record.ttft_s is not None:
            series["ttft"].observe(record.ttft_s)
            if record.status == "ok" and record.completion_tokens > 1:
                per_token = (record.duration_s - record.ttft_s) / (record.completion_tokens - 1)
                series["tpot"].observe(max(0.0, per_token))

    def backends(
        self,
        statuses: Mapping[str, BackendStatus],
        circuits: Mapping[str, str],
        in_flight: Mapping[str, int],
    ) -> None:
        """Set the per-backend gauges (before each scrape or export)."""
        for backend_id, status in statuses.items():
            self._gauge(QUEUE, (backend_id,)).set(status.waiting)
            self._gauge(RUNNING, (backend_id,)).set(status.running)
            self._gauge(UP, (backend_id,)).set(1 if status.healthy else 0)
        for backend_id, state in circuits.items():
            for name in CIRCUIT_STATES:
                self._gauge(CIRCUIT, (backend_id, name)).set(1 if state == name else 0)
            self._gauge(IN_FLIGHT, (backend_id,)).set(in_flight.get(backend_id, 0))


def multiprocess_dir() -> str | None:
    """The directory of prometheus_client's multiprocess mode, if this process is in it."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and getattr(values.ValueClass, "_multiprocess", False):
        return directory
    return None


def _served(record: UsageRecord) -> str:
    return f"{record.model}:{record.adapter}" if record.adapter else record.model


# Read at scrape time from the shared state (gateway/shared_metrics.py).
SHARED_STATE_SAMPLES = (
    "freshet_limits_shared",
    "freshet_redis_up",
    "freshet_redis_outages_total",
    "freshet_limits_local_admissions_total",
    "freshet_ledger_spooled_bytes",
    "freshet_ledger_spool_dropped_total",
)


# Read at scrape time from the backend health model (gateway/state/metrics.py).
HEALTH_SAMPLES = (
    "freshet_backend_ejections_total",
    "freshet_backend_failure_rate",
    "freshet_route_panic_total",
)

# Read at scrape time from the quotes' learned correction (gateway/state/quotes.py).
QUOTE_SAMPLES = (
    "freshet_quote_correction_factor",
    "freshet_quote_correction_offset_seconds",
    "freshet_quote_relative_error",
    "freshet_quote_observations_total",
)


def exposed_names(specs: Iterable[Spec] = SPECS) -> set[str]:
    """Every sample name ``/metrics`` can show (for checking dashboards' queries)."""
    names: set[str] = (
        {*SHARED_STATE_SAMPLES, *HEALTH_SAMPLES, *QUOTE_SAMPLES} if specs is SPECS else set()
    )
    for spec in specs:
        if spec.kind == "histogram":
            names.update(f"{spec.prometheus}_{s}" for s in ("bucket", "sum", "count", "created"))
        elif spec.kind == "counter":
            names.update((f"{spec.prometheus}_total", f"{spec.prometheus}_created"))
        else:
            names.add(spec.prometheus)
    return names


def spec_for(prometheus_name: str, specs: Sequence[Spec] = SPECS) -> Spec | None:
    return next((s for s in specs if s.prometheus == prometheus_name), None)
