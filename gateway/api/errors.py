"""The single mapping from exceptions to OpenAI-shaped error responses."""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from gateway.api.request_id import new_request_id
from gateway.errors import EMPTY_BODY, FreshetError, InvalidRequest, NotFound, PayloadTooLarge
from gateway.streaming import error_body

log = logging.getLogger(__name__)

_MISSING = re.compile(r"missing required field `([^`]+)`")


def _response(request: Request[Any, Any, Any], error: FreshetError) -> Response[Any]:
    headers = dict(error.headers())
    if "request_id" not in request.scope.get("state", {}):
        # Routing errors (404, 405) are raised before the request-id middleware runs.
        headers["x-request-id"] = new_request_id()
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
        error = NotFound(f"no route for {request.method} {request.url.path}")
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
    param = None if key in (None, "data") else str(key)
    missing = _MISSING.search(message)
    if missing:
        param = f"{param}.{missing.group(1)}" if param else missing.group(1)
    return InvalidRequest(
        f"invalid request: {message}" + (f" (at {param})" if param else ""), param=param
    )


def server_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _response(request, FreshetError("internal error; see the gateway's log"))
