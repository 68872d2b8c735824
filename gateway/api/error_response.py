"""The single mapping from exceptions to OpenAI-shaped error responses."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from gateway.api.request_id import new_request_id
from gateway.errors import EMPTY_BODY, FreshetError, InvalidRequest, NotFound, PayloadTooLarge
from gateway.flow.streaming import error_body

log = logging.getLogger(__name__)

_MISSING = re.compile(r"missing required field `([^`]+)`")
# msgspec's validation messages: "<what> - at `$.messages[0].role`" (no path at the top).
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.DOTALL)
_encode = msgspec.json.Encoder().encode
_JSON = (b"content-type", b"application/json")


# An error's message may quote what the client sent; it is cut to this many characters.
MAX_MESSAGE = 1024
_LOGGED = 200


def bounded(error: FreshetError) -> FreshetError:
    """``error`` with its message cut to :data:`MAX_MESSAGE` characters."""
    if len(error.message) > MAX_MESSAGE:
        error.message = error.message[:MAX_MESSAGE] + "..."
    return error


def log_refusal(scope: Any, error: FreshetError, request_id: str | None) -> None:
    """A request answered with an error: one line (no traceback; the message quoted and
    cut, so a client cannot write lines of its own into the log)."""
    if log.isEnabledFor(logging.INFO):
        log.info(
            "%s %s %s: %d %s %r",
            request_id or "-",
            scope.get("method", "-"),
            str(scope.get("path", "-"))[:_LOGGED],
            error.status,
            error.code or error.type,
            error.message[:_LOGGED],
        )


def _response(
    request: Request[Any, Any, Any], error: FreshetError, logged: bool = False
) -> Response[Any]:
    headers = dict(error.headers())
    state = request.scope.get("state", {})
    request_id = state.get("request_id")
    if request_id is None:
        # Routing errors (404, 405) are raised before the request-id middleware runs.
        request_id = headers["x-request-id"] = new_request_id()
    if not logged:
        log_refusal(request.scope, error, request_id)
    bounded(error)
    return Response(error_body(error), status_code=error.status, headers=headers)


def freshet_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, FreshetError)
    return _response(request, exc)


def http_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Litestar's own errors (bad JSON, validation, 404/405/413) in OpenAI's shape."""
    assert isinstance(exc, HTTPException)
    error: FreshetError
    if isinstance(exc, ValidationException):
        error = _validation_error(exc)
    elif exc.status_code == 413:
        error = PayloadTooLarge("request body is larger than the configured limit")
    elif exc.status_code == 404:
        # The scope's path: building request.url parses the client's Host, which may not parse.
        error = NotFound(f"no route for {request.method} {str(request.scope['path'])[:200]}")
    elif exc.status_code == 400 and _is_decode_error(str(exc.detail)):
        error = InvalidRequest(f"request body is not valid JSON: {exc.detail}")
    else:
        error = InvalidRequest(str(exc.detail))
        error.status = exc.status_code
    return _response(request, error)


def _is_decode_error(detail: str) -> bool:
    return any(word in detail for word in ("JSON", "truncated", "malformed", "decode"))


def _validation_error(exc: ValidationException) -> FreshetError:
    extra = exc.extra if isinstance(exc.extra, list) else []
    item = extra[0] if extra and isinstance(extra[0], dict) else {}
    message = str(item.get("message") or exc.detail)
    key = item.get("key")
    if key == "data" and message == "'data'":  # Litestar's word for a body with nothing in it
        return InvalidRequest(EMPTY_BODY)
    return invalid_field(message, None if key in (None, "data") else str(key))


def invalid_field(message: str, param: str | None) -> InvalidRequest:
    """A 400 for a body that failed validation; ``param`` names the field (a missing
    field's own name is added to its parent's path)."""
    missing = _MISSING.search(message)
    if missing:
        param = f"{param}.{missing.group(1)}" if param else missing.group(1)
    return InvalidRequest(
        f"invalid request: {message}" + (f" (at {param})" if param else ""), param=param
    )


def decode_error(exc: msgspec.MsgspecError) -> InvalidRequest:
    """A body msgspec could not decode, as a 400 whose ``param`` names the field."""
    if not isinstance(exc, msgspec.ValidationError):
        return InvalidRequest(f"request body is not valid JSON: {exc}")
    match = _AT.match(str(exc))
    if match is None:
        return invalid_field(str(exc), None)
    return invalid_field(match.group("message"), match.group("path") or None)


ErrorShape = Callable[[FreshetError], msgspec.Struct]
"""How an API writes an error's body: OpenAI's (:func:`error_body`) unless an endpoint of
another API says (e.g. :func:`gateway.api.anthropic.errors.error_body`)."""


def error_response(
    exc: FreshetError, request_id: str | None, shape: ErrorShape = error_body
) -> tuple[dict[str, Any], bytes]:
    """An error as raw ASGI: the ``http.response.start`` message and the body."""
    body = _encode(shape(bounded(exc)))
    headers = [_JSON, (b"content-length", b"%d" % len(body))]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers().items()]
    if exc.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if request_id is not None:
        headers.append((b"x-request-id", request_id.encode()))
    return {"type": "http.response.start", "status": exc.status, "headers": headers}, body


async def send_error(
    send: Callable[[Any], Awaitable[None]],
    exc: FreshetError,
    request_id: str | None,
    shape: ErrorShape = error_body,
) -> None:
    """Answer with ``exc`` from raw ASGI code (the fast path, middleware), in ``shape``."""
    start, body = error_response(exc, request_id, shape)
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


def server_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    path = request.scope["path"]
    log.exception("unhandled error on %s %s", request.method, path, exc_info=exc)
    return _response(request, FreshetError("internal error; see the gateway's log"), logged=True)
