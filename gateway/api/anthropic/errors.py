"""Freshet's errors in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``,
with Anthropic's error types chosen by status (the status itself is Freshet's)."""

from __future__ import annotations

import msgspec

from gateway.api.anthropic.protocol import ErrorBody, ErrorResponse
from gateway.errors import FreshetError

_encode = msgspec.json.Encoder().encode

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(error: FreshetError) -> str:
    """Anthropic's name for ``error``'s kind: by status; ``api_error`` for the rest."""
    return TYPES.get(error.status, "api_error")


def error_body(error: FreshetError) -> ErrorResponse:
    message = error.message
    if error.code and error.code not in message:
        message = f"{message} ({error.code})"
    return ErrorResponse(error=ErrorBody(type=error_type(error), message=message))


def error_event(error: FreshetError) -> bytes:
    """``error`` as the stream's ``error`` event."""
    return b"event: error\ndata: " + _encode(error_body(error)) + b"\n\n"
