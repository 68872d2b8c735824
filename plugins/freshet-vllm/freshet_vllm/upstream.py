"""One vLLM server: its pooled connection, its load, its health, and the loop that polls it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import aiohttp
from opentelemetry import propagate

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
    """The current trace context as headers (``traceparent``) for a request to send now."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


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
