"""One vLLM server: its pooled connection, its load, its health, and the loop that polls it;
and the outlier rules for servers whose health is inferred from requests (:class:`Outlier`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Annotated

import aiohttp
from msgspec import Meta, Struct
from opentelemetry import baggage, propagate
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from freshet_vllm.http1 import Pool
from freshet_vllm.metrics import Load, MetricsError, parse_load

log = logging.getLogger(__name__)


async def _inject_trace_context(
    session: aiohttp.ClientSession,
    context: object,
    params: aiohttp.TraceRequestStartParams,
) -> None:
    # While the gateway calls a backend, its "backend" span is the current OpenTelemetry
    # context: a request sent then carries it as `traceparent`, so vLLM's own spans (when
    # it traces) join the client's trace. Polls of /metrics run outside any request and
    # carry nothing.
    propagate.inject(params.headers)


def trace_headers() -> dict[str, str]:
    """The current trace context as headers (``traceparent``) for a request to send now.

    With OpenTelemetry's default propagators (W3C trace context and baggage) and no
    baggage, the headers are written here, as ``propagate.inject`` would write them
    (a test holds the two equal), for a fraction of its cost: this runs per request."""
    textmap = propagate.get_global_textmap()
    if textmap is not _default_textmap[0]:
        _default_textmap[:] = [textmap, _is_default(textmap)]
    current = otel_context.get_current()  # read once
    if _default_textmap[1] and not baggage.get_all(current):
        context = otel_trace.get_current_span(current).get_span_context()
        if context == otel_trace.INVALID_SPAN_CONTEXT:
            return {}
        headers = {
            "traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-"
            f"{context.trace_flags:02x}"
        }
        if context.trace_state:
            headers["tracestate"] = context.trace_state.to_header()
        return headers
    carrier: dict[str, str] = {}
    propagate.inject(carrier, current)
    return carrier


# The global propagator last seen, and whether it is OpenTelemetry's default pair.
_default_textmap: list[object] = [None, False]


def _is_default(textmap: object) -> bool:
    inner = getattr(textmap, "_propagators", None)
    return (
        type(textmap) is CompositePropagator
        and isinstance(inner, list)
        and [type(p) for p in inner] == [TraceContextTextMapPropagator, W3CBaggagePropagator]
    )


def _trace_propagation() -> aiohttp.TraceConfig:
    config = aiohttp.TraceConfig()
    config.on_request_start.append(_inject_trace_context)
    return config


class Upstream:
    """A vLLM server by URL. Load = its last polled queue plus what Freshet sent since."""

    def __init__(self, url: str, headers: dict[str, str], connect_timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self._headers = headers
        self._connect_timeout_s = connect_timeout_s
        self.session: aiohttp.ClientSession | None = None  # /metrics
        self.http: Pool | None = None  # generation requests: the lean client
        self.load = Load()
        self.in_flight = 0
        self._in_flight_at_poll = 0
        self.healthy = False
        self.observed_at = 0.0
        self.failures = 0
        self.last_error: str | None = None

    def open(self) -> None:
        # One keep-alive pool per upstream; per-request timeouts are set on each call.
        # Idle connections are dropped before vLLM's own keep-alive (5 s) closes them, so
        # a POST never races the server closing the connection it was about to reuse.
        self.session = aiohttp.ClientSession(
            headers=self._headers,
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0),
            timeout=aiohttp.ClientTimeout(total=None, connect=self._connect_timeout_s),
            raise_for_status=False,
            trace_configs=[_trace_propagation()],
        )
        self.http = Pool(self.url, self._headers, self._connect_timeout_s, idle_timeout_s=4.0)

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
            self.http = None
        if self.session is not None:
            await self.session.close()
            self.session = None

    @property
    def estimated_load(self) -> int:
        # The poll already counts the requests Freshet had in flight then; add only those
        # started since, and never estimate below what Freshet itself has in flight.
        polled = self.load.running + self.load.waiting
        return max(self.in_flight, polled + self.in_flight - self._in_flight_at_poll)

    def mark_down(self, reason: str) -> None:
        if self.healthy:
            log.warning("vLLM at %s is down: %s", self.url, reason)
        self.healthy = False
        self.last_error = reason

    async def poll(self, timeout_s: float) -> bool:
        """Read ``/metrics`` once; True when the server answered with vLLM's metrics."""
        assert self.session is not None
        in_flight = self.in_flight
        try:
            async with self.session.get(
                self.url + "/metrics", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                resp.raise_for_status()
                text = await resp.text()
            load = parse_load(text)
        except (aiohttp.ClientError, TimeoutError, MetricsError, UnicodeDecodeError) as exc:
            self.failures += 1
            self.mark_down(f"{type(exc).__name__}: {exc}".rstrip(": "))
            return False
        self.load = load
        self._in_flight_at_poll = in_flight
        self.observed_at = time.time()
        self.failures = 0
        self.last_error = None
        if not self.healthy:
            log.info("vLLM at %s is up", self.url)
        self.healthy = True
        return True


async def poll_forever(
    upstream: Upstream, interval_s: float, max_backoff_s: float, timeout_s: float
) -> None:
    """Poll at ``interval_s`` while the server answers; back off exponentially when not."""
    while True:
        await upstream.poll(timeout_s)
        delay = interval_s
        if upstream.failures:
            delay = min(max_backoff_s, interval_s * 2 ** min(upstream.failures - 1, 16))
        await asyncio.sleep(delay)


def pick(upstreams: Sequence[Upstream]) -> list[Upstream]:
    """Upstreams in the order to try them: healthy first, then least loaded."""
    return sorted(upstreams, key=lambda u: (not u.healthy, u.estimated_load, u.failures))


async def cancel_all(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


class OutlierRules(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The gateway's health rules (its ``health:`` section, gateway/state/health.py) for the
    servers behind one backend: the same names and defaults."""

    failure_rate: Annotated[float, Meta(gt=0, le=1)] = 0.5
    min_requests: Annotated[int, Meta(ge=1)] = 10
    window_s: Annotated[float, Meta(gt=0)] = 10.0
    consecutive_failures: Annotated[int, Meta(ge=1)] = 5
    ejection_s: Annotated[float, Meta(gt=0)] = 5.0
    max_ejection_s: Annotated[float, Meta(gt=0)] = 30.0
    max_ejection_percent: Annotated[float, Meta(ge=0, le=100)] = 50.0

    def max_ejected(self, members: int) -> int:
        """How many of ``members`` servers may be ejected at once (at least one)."""
        return max(1, math.floor(members * self.max_ejection_percent / 100 + 1e-9))


_SLICES = 10


class Outlier:
    """One server's health as the requests sent to it show it (Envoy's outlier detection).

    A failure before the response's first byte (refused, timed out, garbage, 5xx) counts;
    one after it (a cut stream: :meth:`cut`) is that request's, not the server's, and does
    not. Ejected when at least ``failure_rate`` of at least ``min_requests`` requests in the
    last ``window_s`` failed, or ``consecutive_failures`` in a row did (and the backend's
    share of ejected servers allows it); for ``ejection_s``, doubled for each ejection in a
    row, at most ``max_ejection_s``. Back from an ejection it is *probing*: one request at a
    time until one succeeds (then it is up) or fails (then it is ejected again, for longer).
    """

    def __init__(self, rules: OutlierRules, clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = rules
        self._clock = clock
        self.failures = 0  # in a row
        self.ejections = 0
        self.capped = 0  # ejections the share did not allow
        self.cuts = 0  # failures after the first byte
        self.ejected_until = 0.0  # in the clock
        self.probing = False
        self._streak = 0
        self._up_since = -math.inf
        self._width = rules.window_s / _SLICES
        self._ok = [0] * _SLICES
        self._failed = [0] * _SLICES
        self._stamp = [-_SLICES] * _SLICES

    def ejected(self, now: float | None = None) -> bool:
        return (self._clock() if now is None else now) < self.ejected_until

    @property
    def state(self) -> str:
        if self.ejected():
            return "ejected"
        return "probing" if self.probing else "up"

    def _add(self, now: float, failed: bool) -> None:
        tick = int(now / self._width)
        slot = tick % _SLICES
        if self._stamp[slot] != tick:
            self._stamp[slot] = tick
            self._ok[slot] = self._failed[slot] = 0
        if failed:
            self._failed[slot] += 1
        else:
            self._ok[slot] += 1

    def counts(self) -> tuple[int, int]:
        """(requests, failures) in the window."""
        tick = int(self._clock() / self._width)
        live = [i for i in range(_SLICES) if tick - self._stamp[i] < _SLICES]
        failures = sum(self._failed[i] for i in live)
        return sum(self._ok[i] for i in live) + failures, failures

    def success(self) -> None:
        now = self._clock()
        self._add(now, False)
        self.failures = 0
        if self.probing and not self.ejected(now):
            self.probing = False
            self._up_since = now

    def cut(self) -> None:
        self.cuts += 1

    def failure(self, may_eject: Callable[[], bool]) -> bool:
        """Count a failure; True if it ejected the server."""
        now = self._clock()
        self._add(now, True)
        self.failures += 1
        if self.ejected(now):
            return False
        r = self.rules
        if not self.probing:
            requests, failures = self.counts()
            over = requests >= r.min_requests and failures >= r.failure_rate * requests
            if self.failures < r.consecutive_failures and not over:
                return False
            if not may_eject():
                self.capped += 1
                return False
            if now - self._up_since >= r.max_ejection_s:
                self._streak = 0  # well for long enough: start again
        self.ejected_until = now + min(r.max_ejection_s, r.ejection_s * 2**self._streak)
        self._streak += 1
        self.ejections += 1
        self.probing = True
        self._stamp = [-_SLICES] * _SLICES  # counted afresh when it is back
        return True
