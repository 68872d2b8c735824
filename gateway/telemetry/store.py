"""The last N traces, kept in memory so ``/freshet/ui`` shows traces with nothing installed.

A span processor like any other: it receives every finished span of this process's
tracer provider, groups them by trace and forgets the oldest trace beyond ``keep``.
Ending a span costs an append under a lock; the JSON views are built when asked for.

Under ``freshet serve --workers N`` each worker keeps its own: every summary says whose it
is (``worker``, 1..N; 0 in a single process), and ``/freshet/traces`` lists those of the
worker that answered.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from msgspec import Struct
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode, format_span_id, format_trace_id

log = logging.getLogger(__name__)

MAX_SPANS_PER_TRACE = 256
WORKER_ENV = "FRESHET_WORKER_ID"  # set by freshet serve (gateway.cli.logs)
_MS = 1_000_000


class TraceSummary(Struct, kw_only=True):
    """One row of the trace list: the request(s) in the trace, summed."""

    trace_id: str
    time: str  # ISO 8601 UTC, when the trace's first span started
    start_unix_ms: float
    name: str
    model: str | None
    response_model: str | None
    backend: str | None
    # The usage record's status when the request reached a backend (ok | error |
    # client_disconnected | shutdown, as in the ledger), else error when it was refused.
    status: str
    http_status: int | None
    error_type: str | None
    key: str | None  # the API key's name (requests that reached a backend with one)
    input_tokens: int | None
    output_tokens: int | None
    ttft_ms: float | None
    duration_ms: float
    joules: float | None
    energy_source: str | None  # how the joules were obtained; "mixed" across requests
    usd: float | None
    requests: int
    spans: int
    worker: int = 0  # the --workers process that kept it (0: a single process)


class EventView(Struct, kw_only=True):
    name: str
    time_ms: float  # from the trace's start
    attributes: dict[str, Any]


class SpanView(Struct, kw_only=True):
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ms: float  # from the trace's start
    duration_ms: float
    status: str  # unset | ok | error
    status_message: str | None
    attributes: dict[str, Any]
    events: list[EventView]


class TraceView(Struct, kw_only=True):
    summary: TraceSummary
    spans: list[SpanView]  # by start time


class _Later:
    """A request's spans, to be built when first looked at."""

    __slots__ = ("build",)

    def __init__(self, build: Callable[[], Sequence[ReadableSpan]]) -> None:
        self.build = build


class RecentTraces(SpanProcessor):
    def __init__(self, keep: int, max_spans: int = MAX_SPANS_PER_TRACE) -> None:
        self.keep = keep
        self._max_spans = max_spans
        self._traces: OrderedDict[int, list[ReadableSpan | _Later]] = OrderedDict()
        self._lock = threading.Lock()
        worker = os.environ.get(WORKER_ENV, "0")
        self.worker = int(worker) if worker.isdigit() else 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        self.keep_spans((span,))

    def keep_spans(self, spans: Sequence[ReadableSpan]) -> None:
        """Keep finished spans (a request's are handed over together: one lock)."""
        if self.keep <= 0:
            return
        with self._lock:
            for span in spans:
                context = span.context
                if context is not None:
                    self._kept(context.trace_id).append(span)

    def keep_request(self, trace_id: int, build: Callable[[], Sequence[ReadableSpan]]) -> None:
        """Keep a request's spans, built by ``build`` only when someone looks at them: most
        kept traces are pushed out unseen, so a request costs a list append here, not its
        spans (when no exporter needs them at once)."""
        if self.keep > 0:
            with self._lock:
                self._kept(trace_id).append(_Later(build))

    def _kept(self, trace_id: int) -> list[ReadableSpan | _Later]:
        kept = self._traces.get(trace_id)
        if kept is None:
            kept = self._traces[trace_id] = []
            if len(self._traces) > self.keep:
                self._traces.popitem(last=False)
        else:
            self._traces.move_to_end(trace_id)
            if len(kept) >= self._max_spans:
                return []  # full: what is added goes nowhere
        return kept

    def _built(self, kept: list[ReadableSpan | _Later]) -> list[ReadableSpan]:
        """``kept`` with every span built (in place, once), under the lock."""
        if all(type(s) is not _Later for s in kept):
            return kept  # type: ignore[return-value]
        spans: list[ReadableSpan] = []
        for item in kept:
            if type(item) is _Later:
                try:
                    spans.extend(item.build())
                except Exception:  # a bug costs the trace's view, never the page
                    log.exception("could not build a kept trace's spans")
            else:
                spans.append(item)  # type: ignore[arg-type]
        del spans[self._max_spans :]
        kept[:] = spans
        return spans

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def _snapshot(self) -> list[tuple[int, list[ReadableSpan]]]:
        with self._lock:
            built = [(tid, list(self._built(kept))) for tid, kept in reversed(self._traces.items())]
        return [(tid, spans) for tid, spans in built if spans]

    def summaries(
        self, limit: int, match: Callable[[TraceSummary], bool] | None = None
    ) -> list[TraceSummary]:
        """Newest first: one row per trace, from its server span(s); only those ``match``
        accepts, when given (up to ``limit`` of them, looking through every kept trace)."""
        if match is None:
            return [_summary(tid, spans, self.worker) for tid, spans in self._snapshot()[:limit]]
        out: list[TraceSummary] = []
        for tid, spans in self._snapshot():
            summary = _summary(tid, spans, self.worker)
            if match(summary):
                out.append(summary)
                if len(out) >= limit:
                    break
        return out

    def trace(self, trace_id: str) -> TraceView | None:
        try:
            wanted = int(trace_id, 16)
        except ValueError:
            return None
        with self._lock:
            kept = self._traces.get(wanted)
            spans = list(self._built(kept)) if kept is not None else []
        if not spans:
            return None
        spans.sort(key=lambda s: s.start_time or 0)
        origin = spans[0].start_time or 0
        summary = _summary(wanted, spans, self.worker)
        return TraceView(summary=summary, spans=[_span_view(s, origin) for s in spans])


def _is_request(span: ReadableSpan) -> bool:
    return span.kind is SpanKind.SERVER and "freshet.request.id" in (span.attributes or {})


def _summary(trace_id: int, spans: list[ReadableSpan], worker: int = 0) -> TraceSummary:
    requests = sorted((s for s in spans if _is_request(s)), key=lambda s: s.start_time or 0)
    roots = requests or sorted(spans, key=lambda s: s.start_time or 0)[:1]
    first = roots[0]
    a: Mapping[str, Any] = first.attributes or {}
    start = min(s.start_time or 0 for s in spans)
    end = max(s.end_time or 0 for s in spans)

    def total(key: str) -> float | None:
        values = [_number((r.attributes or {}).get(key)) for r in requests]
        numbers = [v for v in values if v is not None]
        return sum(numbers) if numbers else None

    ttft = a.get("gen_ai.server.time_to_first_token")
    errors = [(r.attributes or {}).get("error.type") for r in requests]
    errors = [e for e in errors if e is not None]
    tokens_in, tokens_out = total("gen_ai.usage.input_tokens"), total("gen_ai.usage.output_tokens")
    sources = {(r.attributes or {}).get("freshet.energy_source") for r in requests} - {None}
    return TraceSummary(
        trace_id=format_trace_id(trace_id),
        time=dt.datetime.fromtimestamp(start / 1e9, dt.UTC).isoformat(timespec="milliseconds"),
        start_unix_ms=start / _MS,
        name=first.name,
        model=a.get("gen_ai.request.model"),
        response_model=a.get("gen_ai.response.model"),
        backend=a.get("freshet.backend.id"),
        status=_status(requests),
        http_status=a.get("http.response.status_code"),
        error_type=str(errors[0]) if errors else None,
        key=_text(a.get("freshet.key")),
        input_tokens=None if tokens_in is None else int(tokens_in),
        output_tokens=None if tokens_out is None else int(tokens_out),
        ttft_ms=ttft * 1000 if isinstance(ttft, int | float) else None,
        duration_ms=(end - start) / _MS,
        joules=total("freshet.energy_joules"),
        energy_source=(str(sources.pop()) if len(sources) == 1 else "mixed") if sources else None,
        usd=total("freshet.cost_usd"),
        requests=len(requests),
        spans=len(spans),
        worker=worker,
    )


def _number(value: object) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


# When a trace holds several requests, the worst status wins.
_WORST_FIRST = ("error", "shutdown", "client_disconnected")


def _status(requests: list[ReadableSpan]) -> str:
    """Each request's usage record status (``freshet.status``) when it has one, so the
    traces count what the ledger counts; a request refused before any backend (no record)
    is an error when it has an ``error.type``."""
    statuses: set[str] = set()
    for r in requests:
        a = r.attributes or {}
        recorded = a.get("freshet.status")
        if isinstance(recorded, str):
            statuses.add(recorded)
        elif "error.type" in a:
            statuses.add("error")
    for status in _WORST_FIRST:
        if status in statuses:
            return status
    return next(iter(statuses - {"ok"}), "ok")


def _span_view(span: ReadableSpan, origin: int) -> SpanView:
    context = span.context
    start, end = span.start_time or origin, span.end_time or origin
    error = span.status.status_code is StatusCode.ERROR
    return SpanView(
        span_id=format_span_id(context.span_id) if context else "",
        parent_span_id=format_span_id(span.parent.span_id) if span.parent else None,
        name=span.name,
        kind=span.kind.name.lower(),
        start_ms=(start - origin) / _MS,
        duration_ms=(end - start) / _MS,
        status=span.status.status_code.name.lower(),
        status_message=span.status.description if error else None,
        attributes=dict(span.attributes or {}),
        events=[
            EventView(
                name=e.name,
                time_ms=((e.timestamp or start) - origin) / _MS,
                attributes=dict(e.attributes or {}),
            )
            for e in span.events
        ],
    )
