"""``GET /metrics`` and the recent traces: ``GET /freshet/traces`` (filtered by model,
backend, status, key or HTTP status), ``GET /freshet/traces/{trace_id}``;
:func:`server_address` for the server span.

The server span of a generation request starts at the edge when the request arrives and
ends after the last byte of its response, or when its client left (never before).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from litestar import Controller, Request, Response, get
from litestar.params import FromPath, Parameter, QueryParameter
from prometheus_client.exposition import choose_encoder

from gateway.api.runtime import Runtime
from gateway.errors import InvalidRequest, NotFound
from gateway.telemetry.core import Telemetry
from gateway.telemetry.store import TraceSummary, TraceView

MAX_HOST = 253  # the longest DNS name
MAX_FILTER = 256
TRACE_STATUSES = ("ok", "error", "client_disconnected", "shutdown", "not_ok")
OptionalText = str | None


def _text(description: str) -> Any:
    return Parameter(description=description, max_length=MAX_FILTER)


def trace_filter(
    model: str | None = None,
    backend: str | None = None,
    status: str | None = None,
    key: str | None = None,
    http_status: int | None = None,
) -> Callable[[TraceSummary], bool] | None:
    """What ``/freshet/traces`` keeps: every filter given must match (``None``: all).
    ``model`` matches the model asked for or the one that answered; ``status`` may be
    ``not_ok`` (anything but ok)."""
    if status is not None and status not in TRACE_STATUSES:
        raise InvalidRequest(
            f"status must be one of {', '.join(TRACE_STATUSES)}; got {status!r}", param="status"
        )
    if all(v is None for v in (model, backend, status, key, http_status)):
        return None

    def match(t: TraceSummary) -> bool:
        if model is not None and model not in (t.model, t.response_model):
            return False
        if backend is not None and t.backend != backend:
            return False
        if status == "not_ok":
            if t.status == "ok":
                return False
        elif status is not None and t.status != status:
            return False
        if key is not None and t.key != key:
            return False
        return http_status is None or t.http_status == http_status

    return match


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
        model: Annotated[OptionalText, _text("Only this model (asked for or answering)")] = None,
        backend: Annotated[OptionalText, _text("Only this backend id")] = None,
        status: Annotated[
            OptionalText, _text("ok, error, client_disconnected, shutdown or not_ok")
        ] = None,
        key: Annotated[OptionalText, _text("Only this API key (by name)")] = None,
        http_status: Annotated[
            int | None, QueryParameter(ge=100, le=599, description="Only this HTTP status")
        ] = None,
    ) -> list[TraceSummary]:
        match = trace_filter(model, backend, status, key, http_status)
        return _telemetry(request).recent.summaries(limit, match)

    @get("/freshet/traces/{trace_id:str}", summary="One kept trace, with all its spans")
    async def trace(self, request: Request[Any, Any, Any], trace_id: FromPath[str]) -> TraceView:
        view = _telemetry(request).recent_trace(trace_id) if len(trace_id) <= 32 else None
        if view is None:
            raise NotFound(f"no trace {trace_id[:32]!r} is kept (only the most recent are)")
        return view
