"""``GET /metrics`` and the recent traces: ``GET /freshet/traces``,
``GET /freshet/traces/{trace_id}``; :func:`server_address` for the server span.

The server span of a generation request starts at the edge when the request arrives and
ends after the last byte of its response, or when its client left (never before).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from litestar import Controller, Request, Response, get
from litestar.params import FromPath, QueryParameter
from prometheus_client.exposition import choose_encoder

from gateway.api.runtime import Runtime
from gateway.errors import NotFound
from gateway.telemetry.core import Telemetry
from gateway.telemetry.store import TraceSummary, TraceView

MAX_HOST = 253  # the longest DNS name


def server_address(scope: Mapping[str, Any], headers: Mapping[str, str]) -> tuple[str, int | None]:
    """``server.address`` and ``server.port``: what the client connected to."""
    host = headers.get("host")
    if host:
        if host.startswith("["):  # an IPv6 literal
            name, _, rest = host[1:].partition("]")
            port = rest[1:]
        else:
            name, _, port = host.partition(":")
        # The client wrote it: kept only as long as a host name can be, a port only if one.
        number = int(port) if port.isascii() and port.isdigit() and len(port) <= 5 else None
        return name[:MAX_HOST], number
    server = scope.get("server")
    if server:
        return str(server[0]), server[1]
    return "", None


def _telemetry(request: Request[Any, Any, Any]) -> Telemetry:
    runtime: Runtime = request.app.state.runtime
    return runtime.telemetry


class TelemetryController(Controller):
    tags = ["Freshet"]

    @get(
        "/metrics",
        summary="Prometheus metrics (text format; OpenMetrics when the Accept header asks)",
        media_type="text/plain",
    )
    async def metrics(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        telemetry = _telemetry(request)
        await telemetry.refresh()
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(
            encode(telemetry.metrics.registry),
            media_type=content_type,
            headers={"cache-control": "no-store"},
        )

    @get("/freshet/traces", summary="The most recent traces kept in memory, newest first")
    async def traces(
        self,
        request: Request[Any, Any, Any],
        limit: Annotated[int, QueryParameter(ge=1, le=10_000)] = 100,
    ) -> list[TraceSummary]:
        return _telemetry(request).recent_traces(limit)

    @get("/freshet/traces/{trace_id:str}", summary="One kept trace, with all its spans")
    async def trace(self, request: Request[Any, Any, Any], trace_id: FromPath[str]) -> TraceView:
        view = _telemetry(request).recent_trace(trace_id) if len(trace_id) <= 32 else None
        if view is None:
            raise NotFound(f"no trace {trace_id[:32]!r} is kept (only the most recent are)")
        return view
