"""One exception hierarchy for the whole gateway, mapped once to OpenAI's error JSON.

Every error a client can cause or observe is a :class:`FreshetError`. The HTTP layer turns
it into ``{"error": {"message", "type", "param", "code"}}`` with :attr:`status`; nothing
else in the code builds error responses.
"""

from __future__ import annotations

import math


class FreshetError(Exception):
    """Base of every error the gateway raises on purpose."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def headers(self) -> dict[str, str]:
        """Extra response headers this error implies (e.g. ``Retry-After``)."""
        return {}


class ConfigError(FreshetError):
    """The configuration is invalid; reported at start with file, key and reason."""

    def __init__(self, reason: str, *, file: str | None = None, key: str | None = None) -> None:
        where = ", ".join(part for part in (file, f"key {key}" if key else None) if part)
        super().__init__(f"{where}: {reason}" if where else reason, param=key)
        self.file = file
        self.key = key
        self.reason = reason


class InvalidRequest(FreshetError):
    """The client sent something malformed or unsupported (400)."""

    status = 400
    type = "invalid_request_error"


EMPTY_BODY = "request body is empty; expected a JSON object"


class PayloadTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class ClientDisconnected(InvalidRequest):
    """The client closed its connection before its request was read (nginx's 499)."""

    status = 499
    code = "client_closed_request"


class AuthenticationError(FreshetError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFound(FreshetError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class FreshnessUnsatisfiable(FreshetError):
    status = 422
    type = "invalid_request_error"
    code = "freshness_unsatisfiable"


class InsufficientQuota(FreshetError):
    status = 402
    type = "insufficient_quota"
    code = "insufficient_quota"


class RateLimited(FreshetError):
    """Too many requests, or a backend's queue is full (429 with ``Retry-After``)."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(retry_after_header(self.retry_after_s))}


def retry_after_header(seconds: float) -> int:
    """Whole seconds for ``Retry-After``, rounded *up* (at least 1): a client that waits
    exactly that long finds the capacity free again (a window that ends in 4.33 s says 5,
    never 4)."""
    return max(1, math.ceil(seconds))


class BackendError(FreshetError):
    """A backend failed. Before the first byte this triggers fallback to the next candidate."""

    status = 502
    type = "server_error"
    code = "backend_error"


class BackendUnavailable(BackendError):
    """No backend could take the request (all unhealthy, stopped or dropped)."""

    status = 503
    code = "backend_unavailable"
