"""The edge: what every request goes through before the domain sees it, written once.

Both ways in use it: the generation endpoints (:mod:`gateway.api.generation`, raw ASGI
in front of Litestar) and every Litestar route (:func:`edge_middleware`). Here a request
gets its id, its headers are read once (a repeated ``Authorization`` is refused rather
than guessed at), the caller is authorised by one decision for every path
(:func:`authorize`), the ``X-Freshet-*`` headers become typed, checked options
(:func:`request_options`; the domain never sees raw headers), and the body is read within
its size limit (:func:`read_body`). Every failure is answered in OpenAI's error shape by
:func:`gateway.api.error_response.send_error`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple

from gateway import protocol as p
from gateway.api.error_response import send_error
from gateway.api.request_id import new_request_id
from gateway.errors import ClientDisconnected, FreshetError, InvalidRequest, PayloadTooLarge
from gateway.state.auth import Auth
from gateway.state.keys import ApiKey

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID = b"x-request-id"
HEADER_MIN_CUTOFF = "x-freshet-min-knowledge-cutoff"
HEADER_STALENESS = "x-freshet-max-staleness-days"
HEADER_TTFT = "x-freshet-max-ttft-ms"
# The page itself is static; its data calls are guarded like any admin route.
OPEN_ADMIN = frozenset({"/freshet/ui"})
STATE_KEY = "api_key"


def read_headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name; a second ``Authorization`` is a 400 (two
    readers could otherwise pick different ones)."""
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1")
        if key == "authorization" and key in headers:
            raise InvalidRequest(
                "the request has more than one Authorization header", param="authorization"
            )
        headers[key] = value.decode("latin-1")
    return headers


def authorization(scope: Scope) -> str | None:
    """The one ``Authorization`` header (a repeated one is a 400)."""
    found: str | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            if found is not None:
                raise InvalidRequest(
                    "the request has more than one Authorization header", param="authorization"
                )
            found = value.decode("latin-1")
    return found


async def authorize(auth: Auth, path: str, header: str | None) -> ApiKey | None:
    """The auth decision for every path: a client key on ``/v1/*``, the admin key on
    ``/freshet/*`` (but the UI page), nothing elsewhere. Raises 401 when refused."""
    if path.startswith("/v1/"):
        return await auth.client(header)
    if path.startswith("/freshet/") and path not in OPEN_ADMIN:
        auth.admin(header)
    return None


class RequestOptions(NamedTuple):
    """What the ``X-Freshet-*`` request headers ask for, checked."""

    freshness: p.Freshness | None = None
    max_ttft_ms: float | None = None


NO_OPTIONS = RequestOptions()


def request_options(headers: Mapping[str, str]) -> RequestOptions:
    """Parse and check the ``X-Freshet-*`` headers; a bad value is a 400 naming it."""
    raw_min = headers.get(HEADER_MIN_CUTOFF)
    raw_days = headers.get(HEADER_STALENESS)
    raw_ttft = headers.get(HEADER_TTFT)
    if raw_min is None and raw_days is None and raw_ttft is None:
        return NO_OPTIONS
    freshness = None
    if raw_min is not None or raw_days is not None:
        freshness = p.Freshness(
            min_knowledge_cutoff=_date(raw_min) if raw_min is not None else None,
            max_staleness_days=_days(raw_days) if raw_days is not None else None,
        )
    return RequestOptions(freshness, _milliseconds(raw_ttft) if raw_ttft is not None else None)


def _date(raw: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidRequest(
            f"{HEADER_MIN_CUTOFF} must be an ISO date (YYYY-MM-DD), got {raw[:64]!r}",
            param=HEADER_MIN_CUTOFF,
        ) from None


def _days(raw: str) -> int:
    text = raw.strip()
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    if not text or len(text) > 18 or not text.isascii() or not text.isdigit():
        raise InvalidRequest(
            f"{HEADER_STALENESS} must be a whole number of days >= 0, got {raw[:64]!r}",
            param=HEADER_STALENESS,
        )
    return int(text)


def _milliseconds(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise InvalidRequest(
            f"{HEADER_TTFT} must be a number of milliseconds > 0, got {raw[:64]!r}",
            param=HEADER_TTFT,
        )
    return value


async def read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    """The whole request body; 413 as soon as it is known to exceed ``limit``."""
    declared = headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge("request body is larger than the configured limit")
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("the client left before sending its request")
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected("the client left before sending its request")
        part: bytes = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise PayloadTooLarge("request body is larger than the configured limit")
        parts.append(part)
    return b"".join(parts)


def edge_middleware(auth: Callable[[], Auth]) -> Callable[[ASGIApp], ASGIApp]:
    """The edge for Litestar's routes: an id on every response, then :func:`authorize`.

    It runs before the body is read, so an unauthenticated request costs a header lookup
    and a hash. The key it finds is kept in the request's scope state (:data:`STATE_KEY`).
    """

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            request_id = new_request_id()
            state: dict[str, Any] = scope.setdefault("state", {})
            state["request_id"] = request_id
            encoded = request_id.encode()

            async def send_with_id(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    headers = list(message.get("headers") or [])
                    if not any(name.lower() == REQUEST_ID for name, _ in headers):
                        headers.append((REQUEST_ID, encoded))
                        message["headers"] = headers
                await send(message)

            try:
                state[STATE_KEY] = await authorize(auth(), scope["path"], authorization(scope))
            except FreshetError as exc:
                # Answered here (Litestar's exception handlers sit outside every middleware).
                await send_error(send, exc, request_id)
                return
            await app(scope, receive, send_with_id)

        return middleware

    return factory
