"""The edge: what every request goes through before the domain sees it, written once.

Both ways in use it: the generation endpoints (:mod:`gateway.api.generation`, raw ASGI
in front of Litestar) and everything else (:func:`front_door` before Litestar routes it,
:func:`edge_middleware` on its routes). Here a request
gets its id, its headers are read once (a repeated ``Authorization`` or ``Host`` is refused
rather than guessed at), its ``Host`` is checked and CORS answered
(:class:`gateway.api.browser.BrowserGuard`), the caller is authorised by one decision for
every path (:func:`authorize`), the ``X-Freshet-*`` headers become typed, checked options
(:func:`request_options`; the domain never sees raw headers), the body is read within its
size limit (:func:`read_body`) and decoded by one function (:func:`decode_body`: UTF-8,
nesting, the wire types' bounds). Every failure is answered in OpenAI's error shape by
:func:`gateway.api.error_response.send_error` and logged as one line.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple, TypeVar

import msgspec
from litestar import Request

from gateway import protocol as p
from gateway.api.browser import BrowserGuard
from gateway.api.error_response import decode_error, log_refusal, send_error
from gateway.api.request_id import new_request_id
from gateway.errors import ClientDisconnected, FreshetError, InvalidRequest, PayloadTooLarge
from gateway.state.auth import Auth, bearer
from gateway.state.keys import ApiKey

T = TypeVar("T")

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
# Headers that two readers could read differently when repeated: refused (400).
SINGLE = frozenset({b"authorization", b"host", b"x-api-key"})
API_KEY_HEADER = "x-api-key"  # Anthropic's clients send the key here


def _repeated(name: bytes) -> InvalidRequest:
    header = name.decode("latin-1")
    return InvalidRequest(f"the request has more than one {header} header", param=header)


def read_headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name; a second ``Authorization`` or ``Host`` is
    a 400 (two readers could otherwise pick different ones)."""
    raw = scope["headers"]
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in raw}
    if len(headers) < len(raw):  # some name is repeated: which?
        seen: set[bytes] = set()
        for name, _ in raw:
            if name in SINGLE and name in seen:
                raise _repeated(name)
            seen.add(name)
    return headers


def authorization(scope: Scope) -> str | None:
    """The one ``Authorization`` header (a repeated one is a 400)."""
    found: str | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            if found is not None:
                raise _repeated(name)
            found = value.decode("latin-1")
    return found


def credential(headers: Mapping[str, str], api_key_header: bool = False) -> str | None:
    """The ``Authorization`` the caller sent; where the API allows it (Anthropic's), an
    ``x-api-key`` stands for ``Authorization: Bearer <key>``. Both, naming different keys,
    are a 400 (which one would be the caller?)."""
    header = headers.get("authorization")
    if not api_key_header:
        return header
    key = headers.get(API_KEY_HEADER)
    if key is None:
        return header
    if header is not None and bearer(header) != key.strip():
        raise InvalidRequest(
            "the request has both x-api-key and Authorization, naming different keys; send one",
            param=API_KEY_HEADER,
        )
    return f"Bearer {key.strip()}"


def is_schema(path: str) -> bool:
    """The OpenAPI document and its views: ``/schema``, ``/schema/...``."""
    return path == "/schema" or path.startswith("/schema/")


async def authorize(
    auth: Auth, path: str, header: str | None, open_schema: bool = False
) -> ApiKey | None:
    """The auth decision for every path: a client key on ``/v1/*``, the admin key on
    ``/freshet/*`` (but the UI page) and ``/schema*`` (unless ``server.open_schema``),
    nothing elsewhere. Raises 401 when refused."""
    if path.startswith("/v1/"):
        return await auth.client(header)
    if (path.startswith("/freshet/") and path not in OPEN_ADMIN) or (
        not open_schema and is_schema(path)
    ):
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


def check_utf8(body: bytes) -> None:
    """JSON is UTF-8 (RFC 8259): anything else is a 400 naming the first bad byte. Most
    bodies are ASCII, which one C pass over the bytes says without decoding anything."""
    if body.isascii():
        return
    try:
        body.decode()
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"request body is not valid UTF-8: {exc.reason} at byte {exc.start}"
        ) from None


def check_query(query: bytes) -> None:
    """A query string is percent-encoded ASCII; raw bytes that are not UTF-8 are a 400
    (Litestar would fail decoding them)."""
    if query.isascii():
        return
    try:
        query.decode()
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"the query string is not valid UTF-8: {exc.reason} at byte {exc.start}",
            param="query",
        ) from None


def decode_body(decode: Callable[[bytes], T], body: bytes) -> T:
    """The one decoding of a request body: UTF-8, then ``decode`` (msgspec, into the wire
    types with their bounds), every failure a 400.

    Nesting is bounded by the wire types (a few levels); what they ignore is skipped by
    msgspec, recursively, so a body nested past the interpreter's recursion limit (some
    900 levels) raises ``RecursionError`` there: a 400 too. Counting brackets first would
    cost about three msgspec decodes of the same body.
    """
    check_utf8(body)
    try:
        return decode(body)
    except msgspec.MsgspecError as exc:
        raise decode_error(exc) from None
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply") from None


class CheckedRequest(Request[Any, Any, Any]):
    """Litestar's request, whose JSON body is decoded by the edge's rules (UTF-8 checked,
    too deep a nesting a 400 rather than a 500)."""

    async def json(self) -> Any:
        check_utf8(await self.body())
        try:
            return await super().json()
        except RecursionError:
            raise InvalidRequest("request body is nested too deeply") from None


def with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    """``send``, adding ``extra`` to the response's headers."""

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*(message.get("headers") or ()), *extra]
        await send(message)

    return sending


async def front_door(guard: BrowserGuard, scope: Scope, send: Send) -> Send | None:
    """Before Litestar routes anything (unknown paths included): the ``Host`` check, the
    answer to an allowed origin's CORS preflight, CORS headers on what follows. Returns
    the ``send`` to answer with, or ``None`` when the request has been answered here.
    (The generation endpoints do the same in :mod:`gateway.api.generation`.)"""
    host = origin = requested = None
    preflight = False
    try:
        for name, value in scope["headers"]:
            if name == b"host":
                if host is not None:
                    raise _repeated(name)
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"access-control-request-method":
                preflight = True
            elif name == b"access-control-request-headers":
                requested = value.decode("latin-1")
        guard.check_host(host, scope.get("server"))
        check_query(scope.get("query_string", b""))
    except FreshetError as exc:
        request_id = new_request_id()
        log_refusal(scope, exc, request_id)
        await send_error(send, exc, request_id)
        return None
    cors = guard.cors_headers(origin) if origin is not None and guard.cors else []
    if not cors:
        return send
    if preflight and scope["method"] == "OPTIONS":
        assert origin is not None
        start = guard.preflight(origin, requested)
        start["headers"].append((REQUEST_ID, new_request_id().encode()))
        await send(start)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return None
    return with_headers(send, cors)


def edge_middleware(
    auth: Callable[[], Auth], open_schema: bool = False
) -> Callable[[ASGIApp], ASGIApp]:
    """The edge for Litestar's routes (after :func:`front_door`): an id on every response,
    then :func:`authorize`.

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
                state[STATE_KEY] = await authorize(
                    auth(), scope["path"], authorization(scope), open_schema
                )
            except FreshetError as exc:
                # Answered here (Litestar's exception handlers sit outside every middleware).
                log_refusal(scope, exc, request_id)
                await send_error(send, exc, request_id)
                return
            await app(scope, receive, send_with_id)

        return middleware

    return factory
