"""A finished request's spans and metrics, made once its response has gone out.

:meth:`Telemetry.end <gateway.telemetry.core.Telemetry.end>` runs on the event loop after the
last byte was sent (or the client left). Building the request's spans there, handing them
to the span processors (the in-memory store; the OTLP batch processor, whose own thread
encodes and sends them) and recording its metrics costs some 25 µs of Python. Without an
exporter, the in-memory store keeps the request's trace and builds its spans only when
they are looked at (``/freshet/traces``, the UI): most kept traces are pushed out unseen.
Doing it in a thread of its own was tried and measured (``benchmarks/tracing_overhead.py``):
passing the GIL back and forth with the event loop cost more latency than the work itself.
"""

from __future__ import annotations

import logging
from functools import partial

from opentelemetry.sdk.trace import SpanProcessor

from gateway.telemetry.metrics import Metrics
from gateway.telemetry.spans import SpanFactory
from gateway.telemetry.store import RecentTraces
from gateway.telemetry.trace import RequestTrace

log = logging.getLogger(__name__)


class SpanPipeline:
    def __init__(self, factory: SpanFactory, recent: RecentTraces, metrics: Metrics) -> None:
        self._factory = factory
        self._recent = recent
        self._metrics = metrics
        self.batch: SpanProcessor | None = None  # the OTLP batch processor, when exporting

    def submit(self, trace: RequestTrace) -> None:
        try:
            self._metrics.request_done(trace)
            if not trace.context.trace_flags.sampled:
                return
            if self.batch is None:  # only the in-memory store: spans when looked at
                self._recent.keep_request(
                    trace.context.trace_id, partial(self._factory.spans, trace)
                )
                return
            spans = self._factory.spans(trace)
            self._recent.keep_spans(spans)  # a request's spans at once: one lock
            for span in spans:
                self.batch.on_end(span)
        except Exception:
            # A bug here must cost one request's telemetry, never the request.
            log.exception("could not record the telemetry of request %s", trace.request_id)
