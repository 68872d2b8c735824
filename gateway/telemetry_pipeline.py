"""Finished requests to spans and metrics, off the request path.

The request path hands each finished :class:`RequestTrace` over with a deque append. A
thread of this module builds its spans (about 15 µs of Python per request), gives them to
the span processors (the in-memory store, the OTLP batch processor) and records its
metrics. Done there, the work runs while the event loop waits on the network rather than
in front of the next request, and it gives the GIL back after each request. Whoever
reads the results (``/metrics``, ``/freshet/traces``, the OTLP metrics export, shutdown)
calls :meth:`SpanPipeline.flush` first, so what they see is complete.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from opentelemetry.sdk.trace import SpanProcessor

from gateway.telemetry_metrics import Metrics
from gateway.telemetry_spans import SpanFactory
from gateway.telemetry_store import RecentTraces
from gateway.telemetry_trace import RequestTrace

log = logging.getLogger(__name__)

INTERVAL_S = 0.05  # the longest a finished request waits to be built
BATCH = 64  # or as soon as this many are waiting
MAX_PENDING = 10_000  # beyond this (a stalled builder), the oldest are dropped


class SpanPipeline:
    def __init__(self, factory: SpanFactory, recent: RecentTraces, metrics: Metrics) -> None:
        self._factory = factory
        self._recent = recent
        self._metrics = metrics
        self.batch: SpanProcessor | None = None  # the OTLP batch processor, when exporting
        self._pending: deque[RequestTrace] = deque(maxlen=MAX_PENDING)
        # One request is built at a time, so a flush() returns only after every request
        # handed over before it is in the store, whichever thread built it.
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def submit(self, trace: RequestTrace) -> None:
        """A request ended (on the event loop: cheap)."""
        if self._thread is None:  # not started (or stopped): build it now
            self._build(trace)
            return
        self._pending.append(trace)
        if len(self._pending) >= BATCH:
            self._wake.set()

    def flush(self) -> None:
        """Build every request handed over so far."""
        while True:
            with self._lock:
                try:
                    trace = self._pending.popleft()
                except IndexError:
                    return
                self._build(trace)

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="freshet-spans", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping = True
            self._wake.set()
            thread.join(timeout=5)
        self.flush()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(INTERVAL_S)
            self._wake.clear()
            while self._pending and not self._stopping:
                with self._lock:
                    try:
                        trace = self._pending.popleft()
                    except IndexError:
                        break
                    self._build(trace)
                time.sleep(0)  # let the event loop have the GIL between requests

    def _build(self, trace: RequestTrace) -> None:
        try:
            self._metrics.request_done(trace)
            if trace.context.trace_flags.sampled:
                spans = self._factory.spans(trace)
                self._recent.keep_spans(spans)
                if self.batch is not None:
                    for span in spans:
                        self.batch.on_end(span)
        except Exception:
            # A bug here must cost one request's telemetry, not the thread.
            log.exception("could not record the telemetry of request %s", trace.request_id)
