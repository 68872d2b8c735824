"""Tracing middleware, ``GET /metrics`` and the recent traces: ``GET /freshet/traces``,
``GET /freshet/traces/{trace_id}``.

The middleware wraps the OpenAI endpoints: the server span starts when a request arrives
and ends when the ASGI call returns, which is after the last byte of a stream (or after
the client left, which cancels it): never before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.enums import ScopeType
from litestar.params import FromPath, QueryParameter
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client.exposition import choose_encoder

from gateway.api.runtime import Runtime
from gateway.errors import NotFound
from gateway.telemetry.core import Telemetry
from gateway.telemetry.store import TraceSummary, TraceView

TRACED = {"/v1/chat/completions": "chat", "/v1/completions": "text_completion"}
_ERROR_BODY_LIMIT = 64 * 1024


class _ErrorBody(msgspec.Struct):
    code: str | None = None
    type: str | None = None


class _ErrorResponse(msgspec.Struct):
    error: _ErrorBody


_decode_error = msgspec.json.Decoder(_ErrorResponse).decode


def _error_type(status: int, body: bytes) -> str | None:
    """``error.type``: the OpenAI error's code (or type) from the response, else the status."""
    if status < 400:
        return None
    try:
        error = _decode_error(body).error
    except msgspec.DecodeError:
        return str(status)
    return error.code or error.type or str(status)


def server_address(scope: Mapping[str, Any], headers: Mapping[str, str]) -> tuple[str, int | None]:
    """``server.address`` and ``server.port``: what the client connected to."""
    host = headers.get("host")
    if host:
        if host.startswith("["):  # an IPv6 literal
            name, _, rest = host[1:].partition("]")
            port = rest[1:]
        else:
            name, _, port = host.partition(":")
        return name, int(port) if port.isdigit() else None
    server = scope.get("server")
    if server:
        return str(server[0]), server[1]
    return "", None


def tracing_middleware(telemetry: Telemetry) -> Callable[[ASGIApp], ASGIApp]:
    """Middleware factory; it must run inside the request-id middleware."""

    def factory(app: ASGIApp) -> ASGIApp:
        async def traced(scope: Scope, receive: Receive, send: Send) -> None:
            operation = TRACED.get(scope["path"]) if scope["type"] == ScopeType.HTTP else None
            if operation is None or scope.get("method") != "POST":
                await app(scope, receive, send)
                return
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            request_id: str = scope["state"]["request_id"]
            trace = telemetry.begin(request_id, operation, headers, server_address(scope, headers))
            status = 0
            error_body = bytearray()

            async def send_traced(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                elif status >= 400 and len(error_body) < _ERROR_BODY_LIMIT:
                    error_body.extend(message.get("body", b""))  # type: ignore[arg-type]
                await send(message)

            error: str | None = None
            try:
                await app(scope, receive, send_traced)
            except BaseException as exc:
                if status == 0:  # nothing sent: the client left, or the server is stopping
                    error = type(exc).__name__
                raise
            finally:
                telemetry.end(trace, status, error or _error_type(status, bytes(error_body)))

        return traced

    return factory


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
        view = _telemetry(request).recent_trace(trace_id)
        if view is None:
            raise NotFound(f"no trace {trace_id!r} is kept (only the most recent are)")
        return view
