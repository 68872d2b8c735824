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
from collections.abc import Callable, Mapping, Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from gateway.telemetry.wire import TraceWriter

log = logging.getLogger(__name__)

# The SDK's exporters log every failed batch (and every retry); Health reports instead.
SPAN_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
)
METRIC_LOGGERS = ("opentelemetry.exporter.otlp.proto.http.metric_exporter",)


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
        self._messages: list[str] = []  # the SDK's, since the last result

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            if len(self._messages) < 8:
                self._messages.append(record.getMessage())
            return False
        return True

    def result(self, ok: bool, reason: str | None = None) -> None:
        # The first message says why (the connection was refused...), the last only
        # that the SDK gave up.
        reason = reason or (self._messages[0] if self._messages else "no answer")
        self._messages.clear()
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
                    reason,
                    self.what,
                )
        self.ok = ok


class GuardedSpanExporter(SpanExporter):
    """The SDK's OTLP span exporter for the transport (endpoint, headers, TLS, compression,
    retries: all from the environment), with requests written by :class:`TraceWriter`
    and results reported through :class:`Health`."""

    def __init__(
        self, inner: OTLPSpanExporter, health: Health, gate: IdleGate | None = None
    ) -> None:
        self.inner = inner
        self.health = health
        self.gate = gate or IdleGate()
        self._writer = TraceWriter()
        # The exporter's transport: private in the SDK, so checked for, with its own
        # (slower) encoding as the fallback.
        client = getattr(inner, "_client", None)
        self._send = getattr(client, "export", None)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._send is None:
            result = self.inner.export(spans)
        else:
            pacer = Pacer(self.gate)
            body = self._writer.request(spans, pause=pacer)
            pacer.between()
            sent = self._send(body)
            ok = bool(getattr(sent, "success", False))
            why = getattr(sent, "error", None) or getattr(sent, "reason", None)
            if why is not None and not isinstance(why, str):
                why = f"{type(why).__name__}: {why}"
            self.health.result(ok, why or None)
            return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE
        self.health.result(result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class IdleGate:
    """Whether the event loop has work in hand, for the exporter thread.

    Encoding and sending spans is Python work in another thread: while it holds the GIL,
    a request that needs the loop waits, up to the interpreter's switch interval (5 ms).
    So the exporter works when the loop has nothing to do: it waits, with the GIL
    released, until no request is in flight or waiting for the loop (the ones waiting
    on a backend's first byte do not count). The loop thread counts them in and out
    (``enter``/``leave``); the event flips only when the count leaves or reaches zero.
    """

    def __init__(self, max_wait_s: float = 0.05, armed: bool = True) -> None:
        self._quiet = threading.Event()
        self._quiet.set()
        self._busy = 0
        self.max_wait_s = max_wait_s
        # Unarmed (no exporter thread waits on it), only the count is kept: flipping the
        # event takes a lock, twice a request at the rate a busy loop goes quiet.
        self._armed = armed

    def arm(self) -> None:
        """An exporter waits on the gate from now on (called on the loop's thread)."""
        self._armed = True
        if self._busy:
            self._quiet.clear()
        else:
            self._quiet.set()

    def enter(self) -> None:
        self._busy += 1
        if self._busy == 1 and self._armed:
            self._quiet.clear()

    def leave(self) -> None:
        self._busy -= 1
        if self._busy == 0 and self._armed:
            self._quiet.set()

    @property
    def busy(self) -> int:
        return self._busy

    def wait(self) -> bool:
        """Wait for a quiet loop, at most ``max_wait_s``; False: timed out."""
        deadline = time.monotonic() + self.max_wait_s
        quiet = self._quiet
        # Woken, this thread needs the GIL again, and the loop may have taken up work
        # meanwhile: the flag is read once more after each wake.
        while not quiet.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            quiet.wait(left)
        return True


class Pacer:
    """Paces one export: called before each span it encodes and before it sends.

    Every few spans it sleeps a moment (the loop, if it waits for the GIL, gets it) and
    then waits for the gate. Under sustained load there is no quiet moment; once a wait
    times out, the rest of this export only sleeps, less often, so that exports keep up.
    """

    QUIET_EVERY = 4  # spans between pauses while waiting for quiet: ~50 us of encoding
    BUSY_EVERY = 24  # spans between pauses once the loop has had no quiet moment

    def __init__(self, gate: IdleGate) -> None:
        self._gate = gate
        self._patient = True
        self._count = 0

    def __call__(self) -> None:
        self._count += 1
        if self._count >= (self.QUIET_EVERY if self._patient else self.BUSY_EVERY):
            self.between()

    def between(self) -> None:
        self._count = 0
        time.sleep(0.0001)
        if self._patient and not self._gate.wait():
            self._patient = False


def span_exporter(gate: IdleGate | None = None) -> GuardedSpanExporter:
    inner = OTLPSpanExporter()
    return GuardedSpanExporter(inner, Health("spans", getattr(inner, "_endpoint", "?")), gate)


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


async def in_daemon_thread(
    work: Callable[[], object], what: str, timeout_s: float | None = None
) -> bool:
    """Run blocking export work in a daemon thread, so that a collector that does not
    answer can hold up neither the event loop nor the process's exit. False: it did not
    finish within ``timeout_s`` (it goes on, and is dropped at exit)."""
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
        return False
    return True


def service_resource(version: str) -> Resource:
    """``service.name`` freshet unless the environment names it; ``service.version``."""
    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME.
    resource = Resource.create({"service.version": version})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "freshet"}))
    return resource


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        log.warning("%s=%r is not an integer; using %d", name, raw, default)
        return default
