"""OpenTelemetry traces and Prometheus/OTLP metrics for every request (DESIGN §9).

:class:`Telemetry` is created with the app's runtime (never at import). It observes the
request flow without the flow knowing it: the edge (:mod:`gateway.api.edge`) calls
:meth:`Telemetry.begin` when a request arrives (honouring its ``traceparent``), which
returns the request's :class:`TracedRequest`; the edge hands that to the flow as the
request's observer (:class:`gateway.flow.observer.RequestObserver`: requested, routing,
routed, attempting, answered, recorded), and calls :meth:`Telemetry.end` once the response
has ended or its client has left.

The observer only notes references and timestamps. At :meth:`end` the spans are built and
handed to the span processors (the in-memory :class:`RecentTraces` behind
``/freshet/traces``, and the OTLP batch processor when configured), and the metrics are
recorded. While a backend is being called its span is the current OpenTelemetry context,
so an HTTP backend injects it as the ``traceparent`` of its own request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import SpanLimits, SynchronousMultiSpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from gateway.backend import Backend, BackendStatus, Deployment, GenerationRequest, is_remote
from gateway.outcome import Attempt, Outcome, UsageRecord
from gateway.plugins import core_version
from gateway.routing import Decision
from gateway.settings import Settings
from gateway.telemetry.export import (
    METRIC_LOGGERS,
    SPAN_LOGGERS,
    GuardedSpanExporter,
    IdleGate,
    env_int,
    in_daemon_thread,
    quiet,
    service_resource,
    span_exporter,
    wanted,
)
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.otlp_metrics import MetricsExport
from gateway.telemetry.pipeline import SpanPipeline
from gateway.telemetry.spans import SpanFactory
from gateway.telemetry.store import RecentTraces, TraceSummary, TraceView
from gateway.telemetry.trace import BackendCall, RequestTrace, RouteStep

log = logging.getLogger(__name__)

DEFAULT_TRACES_KEPT = 200
SHUTDOWN_TIMEOUT_S = 5.0
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_NO_SPAN = SpanContext(0, 0, is_remote=False)  # tracing off (immutable, shared)
_NO_CONTEXT = otel_context.Context()  # no incoming trace context (immutable, shared)


class Telemetry:
    def __init__(
        self,
        settings: Settings,
        backends: Mapping[str, Backend],
        circuit_state: Callable[[str], str],
        ready: Callable[[], bool],
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        self._backends = backends
        self._remote = frozenset(i for i, b in backends.items() if is_remote(b))
        self._circuit_state = circuit_state
        self._ready = ready
        # OTEL_SDK_DISABLED=true turns tracing off (no spans, no propagation); metrics stay.
        self.tracing = env.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"
        self.resource = service_resource(core_version())
        self.scope = InstrumentationScope("freshet", core_version())
        self.recent = RecentTraces(keep=env_int(env, "FRESHET_TRACES_KEPT", DEFAULT_TRACES_KEPT))
        self.processors = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]
        self.processors.add_span_processor(self.recent)
        # The provider owns the sampler (OTEL_TRACES_SAMPLER), the id generator and the
        # processors; plugins may make their own spans with ``telemetry.tracer``.
        self.provider = TracerProvider(
            resource=self.resource, shutdown_on_exit=False, active_span_processor=self.processors
        )
        self.tracer = self.provider.get_tracer("freshet", core_version())
        self._ids = self.provider.id_generator
        self._propagated = frozenset(propagate.get_global_textmap().fields)
        self._sampler = self.provider.sampler
        self._parent_based = is_default_sampler(self._sampler)
        self.metrics = Metrics()
        self._spans = SpanFactory(
            self.resource,
            self.scope,
            {config.id: config.type for config in settings.backends},
            settings.capture_content,
            SpanLimits().max_span_attribute_length,
        )
        self.pipeline = SpanPipeline(self._spans, self.recent, self.metrics)
        self.active: set[RequestTrace] = set()  # requests begun and not yet ended
        # Quiet while no request has work for the loop (none in flight, or all waiting
        # on a backend's first byte): the exporter thread encodes and sends then, so that
        # its Python work does not take the GIL from a request (telemetry_export.IdleGate).
        self.idle = IdleGate(armed=False)  # armed when an exporter starts (start())
        self._export_traces = self.tracing and wanted(env, "traces")
        self._export_metrics = wanted(env, "metrics")
        self._metrics_interval_s = env_int(env, "OTEL_METRIC_EXPORT_INTERVAL", 60000) / 1000
        self._batch: BatchSpanProcessor | None = None
        self._exporter: GuardedSpanExporter | None = None
        self._metrics_export: MetricsExport | None = None
        self._metrics_task: asyncio.Task[None] | None = None
        self._undo: list[Callable[[], None]] = []

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Start the OTLP exporters that the environment asks for (in the lifespan)."""
        if self._export_traces and self._batch is None:
            self.idle.arm()
            exporter = span_exporter(self.idle)
            self._undo.append(quiet(SPAN_LOGGERS, [exporter.health]))
            self._exporter = exporter
            self._batch = BatchSpanProcessor(exporter)  # OTEL_BSP_* apply
            self.processors.add_span_processor(self._batch)
            self.pipeline.batch = self._batch
            log.info("exporting traces over OTLP to %s", exporter.health.endpoint)
        if self._export_metrics and self._metrics_export is None:
            export = MetricsExport(
                self.metrics.registry, self.resource, self.scope, self._metrics_interval_s
            )
            self._undo.append(quiet(METRIC_LOGGERS, [export.health]))
            self._metrics_export = export
            self._metrics_task = asyncio.create_task(
                export.run(self.refresh), name="freshet-otlp-metrics"
            )
            log.info("exporting metrics over OTLP to %s", export.health.endpoint)

    async def aclose(self) -> None:
        """Flush what is left, within :data:`SHUTDOWN_TIMEOUT_S` each; never hang the exit."""
        if self._metrics_task is not None:
            self._metrics_task.cancel()
            await asyncio.gather(self._metrics_task, return_exceptions=True)
            self._metrics_task = None
        export = self._metrics_export
        if export is not None:
            if export.health.ok:  # a collector known to be down gets no last attempt
                await self.refresh()
                data = export.collect()
                work = lambda: export.exporter.export(data)  # noqa: E731
                if not await in_daemon_thread(work, "metrics", SHUTDOWN_TIMEOUT_S):
                    log.warning("OTLP metrics: the last export did not finish in time")
            export.exporter.shutdown()
        if self._batch is not None:
            if self._exporter is not None and not self._exporter.health.ok:
                self._exporter.inner.shutdown()  # type: ignore[no-untyped-call]
            if not await in_daemon_thread(self.provider.shutdown, "spans", SHUTDOWN_TIMEOUT_S):
                log.warning("OTLP spans: the last export did not finish in time")
        for undo in self._undo:
            undo()
        self._undo.clear()

    # -- the request path -----------------------------------------------------------

    def begin(
        self,
        request_id: str,
        operation: str,
        headers: Mapping[str, str],
        server: tuple[str, int | None],
    ) -> TracedRequest:
        """A request arrived: its trace id (the client's, from ``traceparent``, or new), and
        the observer the request flow reports to."""
        start_ns = time.time_ns()
        if not self.tracing:
            trace = RequestTrace(request_id, operation, start_ns, _NO_SPAN, None, server)
            return self._activate(trace)
        parent: SpanContext | None = None
        if self._propagated.isdisjoint(headers):
            incoming = _NO_CONTEXT  # no header the propagators read: nothing to extract
        else:
            incoming = propagate.extract(headers)
            parent = otel_trace.get_current_span(incoming).get_span_context()
            if not parent.is_valid:
                parent = None
        trace_id = parent.trace_id if parent is not None else self._ids.generate_trace_id()
        if self._parent_based:  # the SDK's default sampler, as it decides, without its calls
            sampled = parent.trace_flags.sampled if parent is not None else True
            trace_state = parent.trace_state if parent is not None else None
        else:
            sampling = self._sampler.should_sample(incoming, trace_id, operation, SpanKind.SERVER)
            sampled = sampling.decision.is_sampled()  # type: ignore[no-untyped-call]
            trace_state = sampling.trace_state
        context = SpanContext(
            trace_id,
            self._ids.generate_span_id(),
            is_remote=False,
            trace_flags=_SAMPLED if sampled else _NOT_SAMPLED,
            trace_state=trace_state,
        )
        trace = RequestTrace(request_id, operation, start_ns, context, parent, server)
        traced = self._activate(trace)
        current = otel_trace.set_span_in_context(NonRecordingSpan(context), incoming)
        trace.context_token = otel_context.attach(current)
        return traced

    def _activate(self, trace: RequestTrace) -> TracedRequest:
        self.active.add(trace)
        self.idle.enter()
        return TracedRequest(self, trace)

    def end(self, traced: TracedRequest, http_status: int, error_type: str | None) -> None:
        """The response has ended (or the client left): its spans and metrics follow."""
        trace = traced.trace
        trace.end_ns = time.time_ns()
        trace.http_status = http_status
        outcome = trace.outcome
        if error_type is None and outcome is not None and outcome.error is not None:
            error_type = outcome.error.code or outcome.error.type
        trace.error_type = error_type
        if trace in self.active:
            self.active.discard(trace)
            if not trace.waiting:
                self.idle.leave()
        if trace.context_token is not None:
            otel_context.detach(trace.context_token)  # type: ignore[arg-type]
        self.pipeline.submit(trace)

    def new_span_id(self) -> int:
        return self._ids.generate_span_id()

    def is_remote(self, backend_id: str) -> bool:
        return backend_id in self._remote

    # -- reading ------------------------------------------------------------------

    def recent_traces(self, limit: int) -> list[TraceSummary]:
        return self.recent.summaries(limit)

    def recent_trace(self, trace_id: str) -> TraceView | None:
        return self.recent.trace(trace_id)

    def in_flight(self) -> Counter[str]:
        """Requests of this process waiting on each backend (open, no record yet)."""
        return Counter(
            t.calls[-1].deployment.backend_id
            for t in list(self.active)
            if t.calls and t.record is None
        )

    async def refresh(self) -> None:
        """Bring the per-backend gauges up to date (before a scrape or an export)."""
        statuses: dict[str, BackendStatus] = {}
        if self._ready():
            for backend_id, backend in self._backends.items():
                statuses[backend_id] = await backend.status()
        circuits = {backend_id: self._circuit_state(backend_id) for backend_id in self._backends}
        self.metrics.backends(statuses, circuits, self.in_flight())


def is_default_sampler(sampler: object) -> bool:
    """Whether ``sampler`` is the SDK's default, ``parentbased_always_on``: a request with
    a valid parent follows the parent's sampled flag and trace state, one without is
    sampled (a test holds :meth:`Telemetry.begin`'s shortcut to the SDK's decisions)."""
    if type(sampler) is not ParentBased:
        return False
    rules = vars(sampler)
    on, off = (ALWAYS_ON,) * 3, (ALWAYS_OFF,) * 2
    return (
        tuple(rules.get(k) for k in ("_root", "_remote_parent_sampled", "_local_parent_sampled"))
        == on
        and tuple(rules.get(k) for k in ("_remote_parent_not_sampled", "_local_parent_not_sampled"))
        == off
    )


class TracedRequest:
    """One request's observer (:class:`gateway.flow.observer.RequestObserver`): what the
    flow reports is noted on the request's trace; spans are made after it has ended."""

    __slots__ = ("_telemetry", "trace")

    def __init__(self, telemetry: Telemetry, trace: RequestTrace) -> None:
        self._telemetry = telemetry
        self.trace = trace

    @property
    def request_id(self) -> str:
        return self.trace.request_id

    def requested(self, model: str) -> None:
        self.trace.model = model

    def routing(self, request: GenerationRequest) -> None:
        trace = self.trace
        trace.gen = request
        step = RouteStep(self._telemetry.new_span_id(), time.time_ns())
        trace.end_calls(step.start_ns, failed_only=False)  # routing again: they are done
        trace.routes.append(step)

    def routed(self, decision: Decision | None, error: BaseException | None) -> None:
        step = self.trace.routes[-1]
        step.decision = decision
        step.error = error
        step.end_ns = time.time_ns()

    def attempting(self, deployment: Deployment, attempts: list[Attempt]) -> None:
        """The ``backend`` span becomes the current context (an HTTP backend sends it on as
        its request's ``traceparent``)."""
        telemetry = self._telemetry
        trace = self.trace
        now = time.time_ns()
        trace.end_calls(now, failed_only=True)  # the dispatcher moves on after a failure
        call = BackendCall(deployment, telemetry.new_span_id(), now, attempts)
        trace.calls.append(call)
        remote = telemetry.is_remote(deployment.backend_id)
        if remote != trace.waiting and trace in telemetry.active:
            # Waiting on a remote backend: the loop is free for the exporter.
            trace.waiting = remote
            if remote:
                telemetry.idle.leave()
            else:
                telemetry.idle.enter()
        if telemetry.tracing:
            # Left attached: the request's own token, detached at its end, undoes it.
            span = NonRecordingSpan(trace.child(call.span_id))
            otel_context.attach(otel_trace.set_span_in_context(span))

    def answered(self) -> None:
        """A backend's first byte is in: the request has the loop's work to do again."""
        trace = self.trace
        if trace.waiting:
            trace.waiting = False
            if trace in self._telemetry.active:
                self._telemetry.idle.enter()

    def recorded(self, record: UsageRecord, outcome: Outcome) -> None:
        trace = self.trace
        trace.record = record
        trace.outcome = outcome
        trace.record_ns = time.time_ns()
        trace.end_calls(trace.record_ns, failed_only=True)
