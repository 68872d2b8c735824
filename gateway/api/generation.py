"""The generation endpoints, ``POST /v1/chat/completions``, ``POST /v1/completions``,
``POST /v1/responses`` and Anthropic's ``POST /v1/messages`` (and its ``count_tokens``), as
raw ASGI in front of Litestar.

Every request a client makes for tokens comes through here, so these endpoints skip
Litestar's routing, middleware stack, signature model and response classes, and do only
what the request needs, with the edge's pieces (:mod:`gateway.api.edge`): an id, the
trace, the caller's key, the typed ``X-Freshet-*`` options, the body (size-limited and
decoded by msgspec straight into the wire types), the call into
:mod:`gateway.api.completions`, and the response with pre-encoded headers. Everything
else (``/v1/models``, ``/freshet/*``, errors of routing such as 405) is Litestar's, behind
the same edge (:func:`gateway.api.edge.edge_middleware`).

The server span ends after the last byte or when the client leaves, ``x-request-id`` is
on every response, and a client that leaves mid-stream stops the generation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from gateway import protocol as p
from gateway.api.anthropic import errors as anthropic_errors
from gateway.api.anthropic import protocol as anthropic
from gateway.api.anthropic.messages import count_tokens, messages
from gateway.api.browser import BrowserGuard
from gateway.api.completions import EdgeRequest, JsonReply, Reply, StreamReply, chat, completion
from gateway.api.cycle import COALESCE, WHOLE_RESPONSE
from gateway.api.drain import CONNECTION, Drain, ShuttingDown, Watch
from gateway.api.edge import (
    Receive,
    Scope,
    Send,
    authorize,
    credential,
    decode_body,
    read_body,
    read_headers,
    request_options,
    with_headers,
)
from gateway.api.embeddings import protocol as embedding
from gateway.api.embeddings.handler import embeddings
from gateway.api.error_response import ErrorShape, log_refusal, send_error
from gateway.api.request_id import new_request_id
from gateway.api.responses import events as response_events
from gateway.api.responses import protocol as responses
from gateway.api.responses.create import create as create_response
from gateway.api.runtime import Runtime
from gateway.api.traces import server_address
from gateway.errors import (
    EMPTY_BODY,
    FreshetError,
    InvalidRequest,
)
from gateway.flow.dispatch import aclose
from gateway.flow.service import Service
from gateway.flow.streaming import DONE, error_body
from gateway.flow.streaming import event as sse_event

log = logging.getLogger(__name__)

Handler = Callable[[Service, Any, EdgeRequest], Awaitable[Reply]]

_encode = msgspec.json.Encoder().encode
_JSON = (b"content-type", b"application/json")
_SSE = (b"content-type", b"text/event-stream")
EXTENSIONS = "extensions"


def _openai_stream_error(error: FreshetError) -> bytes:
    return sse_event(error_body(error)) + DONE


class Endpoint:
    """One generation endpoint: its operation name, body decoder and handler, and the
    API's ways: its error shape (every refusal on this path, the edge's included), how a
    stream it started ends in an error, and whether ``x-api-key`` carries the key."""

    __slots__ = ("api_key_header", "decode", "error_shape", "handler", "operation", "stream_error")

    def __init__(
        self,
        operation: str,
        body: type[msgspec.Struct],
        handler: Handler,
        error_shape: ErrorShape = error_body,
        stream_error: Callable[[FreshetError], bytes] = _openai_stream_error,
        api_key_header: bool = False,
    ) -> None:
        self.operation = operation
        self.decode = msgspec.json.Decoder(body).decode
        self.handler = handler
        self.error_shape = error_shape
        self.stream_error = stream_error
        self.api_key_header = api_key_header


def _encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]


class Generation:
    def __init__(
        self, runtime: Runtime, max_body_bytes: int, guard: BrowserGuard | None = None
    ) -> None:
        self._rt = runtime
        self.drain: Drain = runtime.drain
        self._limit = max_body_bytes
        self._guard = guard or BrowserGuard("0.0.0.0")
        self._endpoints = {
            "/v1/chat/completions": Endpoint("chat", p.ChatCompletionRequest, chat),
            "/v1/completions": Endpoint("text_completion", p.CompletionRequest, completion),
            "/v1/embeddings": Endpoint("embeddings", embedding.EmbeddingCreateParams, embeddings),
            # OpenAI's Responses API: OpenAI's error shape; its own events in a stream.
            "/v1/responses": Endpoint(
                "responses",
                responses.ResponseCreateParams,
                create_response(runtime.responses),
                stream_error=response_events.error_event,
            ),
            # Anthropic's Messages API: its error shape and event stream, x-api-key.
            "/v1/messages": Endpoint(
                "messages",
                anthropic.MessageCreateParams,
                messages,
                anthropic_errors.error_body,
                anthropic_errors.error_event,
                api_key_header=True,
            ),
            "/v1/messages/count_tokens": Endpoint(
                "count_tokens",
                anthropic.CountTokensParams,
                count_tokens(runtime.fleet),
                anthropic_errors.error_body,
                anthropic_errors.error_event,
                api_key_header=True,
            ),
        }

    def endpoint(self, scope: Scope) -> Endpoint | None:
        """The endpoint this request is for, if the fast path serves it."""
        if scope["method"] != "POST":
            return None
        return self._endpoints.get(scope["path"])

    async def serve(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = new_request_id()
        telemetry = self._rt.telemetry
        guard = self._guard
        try:
            headers = read_headers(scope)
            guard.check_host(headers.get("host"), scope.get("server"))
        except FreshetError as exc:
            log_refusal(scope, exc, request_id)
            await send_error(send, exc, request_id, endpoint.error_shape)
            return
        if guard.cors and "origin" in headers:
            cors = guard.cors_headers(headers["origin"])
            if cors:
                send = with_headers(send, cors)
        trace = telemetry.begin(
            request_id, endpoint.operation, headers, server_address(scope, headers)
        )
        status = 0
        error_type: str | None = None
        task = asyncio.current_task()
        assert task is not None
        watch = Watch(task)
        drain = self.drain
        drain.enter(watch)
        try:
            try:
                if drain.stopping:
                    raise ShuttingDown()
                sent = credential(headers, endpoint.api_key_header)
                key = await authorize(self._rt.auth, scope["path"], sent)
                guard.check_json(headers.get("content-type"))
                options = request_options(headers)
                body = await read_body(receive, headers, self._limit)
                if not body:
                    raise InvalidRequest(EMPTY_BODY)
                data = decode_body(endpoint.decode, body)
                edge = EdgeRequest(request_id, key, options, trace)
                # From here the work may take long: a client that leaves stops it.
                watch.listen(receive, scope.get(CONNECTION))
                reply = await endpoint.handler(self._rt.service, data, edge)
            except asyncio.CancelledError:
                if not (watch.left or watch.shutdown) or task.uncancel() > 0:
                    raise
                if watch.left:  # nobody to answer; the flow recorded the disconnect
                    status, error_type = 499, "client_disconnected"
                    return
                stopped = ShuttingDown()
                status, error_type = stopped.status, stopped.code
                await send_error(send, stopped, request_id, endpoint.error_shape)
                return
            except FreshetError as exc:
                status = exc.status
                error_type = exc.code or exc.type or str(status)
                log_refusal(scope, exc, request_id)
                await send_error(send, exc, request_id, endpoint.error_shape)
                return
            status = 200
            one_write = WHOLE_RESPONSE in scope.get(EXTENSIONS, ())  # the server's extension
            if isinstance(reply, JsonReply):
                await self._json(reply, request_id, send, one_write)
            else:
                await self._stream(reply, request_id, send, watch, endpoint.stream_error, one_write)
        except Exception:
            if status != 0:
                raise  # the response has started: the server closes the connection
            log.exception("unhandled error on POST %s", scope["path"])
            status = 500
            error = FreshetError("internal error; see the gateway's log")
            error_type = error.type
            await send_error(send, error, request_id, endpoint.error_shape)
        except BaseException as exc:
            if status == 0:  # nothing sent: the client left, or the server is stopping
                error_type = type(exc).__name__
            raise
        finally:
            watch.stop()
            drain.leave(watch)
            telemetry.end(trace, status, error_type)

    @staticmethod
    async def _json(reply: JsonReply, request_id: str, send: Send, whole: bool) -> None:
        """``whole``: the server takes the response in one message (one write)."""
        body = _encode(reply.body)
        headers = [_JSON, *_encoded(reply.headers), (b"x-request-id", request_id.encode())]
        if whole:
            await send({"type": "http.response.start", "status": 200, "headers": headers,
                        "body": body})  # fmt: skip
            return
        headers.append((b"content-length", b"%d" % len(body)))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    @staticmethod
    async def _stream(
        reply: StreamReply,
        request_id: str,
        send: Send,
        watch: Watch,
        stream_error: Callable[[FreshetError], bytes],
        coalesce: bool = False,
    ) -> None:
        """Events as they come; a client that leaves cancels the stream, which closes the
        backend's (``sse`` records the request as the client's disconnect). When the
        shutdown grace ends, the stream gets an error event and ``[DONE]``."""
        headers = [_SSE, *_encoded(reply.headers), (b"x-request-id", request_id.encode())]
        task = watch.task
        try:
            start = {"type": "http.response.start", "status": 200, "headers": headers}
            if coalesce:  # events from one upstream read: one write (server.COALESCE)
                start[COALESCE] = True
            await send(start)
            async for event in reply.body:
                await send({"type": "http.response.body", "body": event, "more_body": True})
            watch.stop()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not (watch.left or watch.shutdown) or task.uncancel() > 0:
                raise
            if watch.shutdown:
                end = stream_error(ShuttingDown())
                await send({"type": "http.response.body", "body": end, "more_body": False})
        finally:
            watch.stop()
            await aclose(reply.body)
