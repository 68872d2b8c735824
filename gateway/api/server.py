"""The HTTP server: uvicorn on uvloop and httptools, with connection hygiene.

uvicorn's httptools protocol trusts every client: it buffers a header of any size (and
httptools joins a header's pieces by copying, so a 64 MiB header stalls the event loop for
seconds), keeps a connection that sends half a request open forever, and accepts
connections until the process runs out of file descriptors. :class:`FreshetHttpProtocol`
adds what nginx and Envoy have (README, "Connection limits"), each limit from
``server.connections`` in the config file:

- the request line and headers together (``max_header_bytes``) and each line
  (``max_header_line_bytes``): counted as bytes arrive, and the parser is never fed past
  the limit; beyond it a 431 (414 for the URL), and the connection is closed;
- the headers must arrive within ``header_timeout_s`` of the connection (or of the first
  byte of a later request), the body's reads may pause at most ``body_timeout_s``: 408;
- an idle connection between requests is closed after ``keep_alive_s``;
- at most ``max_connections`` open connections per process: the next one gets a 503 with
  ``Retry-After`` and is closed at once, before any request is read.

An answer that ends a connection is followed by a short lingering close (as nginx does):
the server sends FIN and reads and drops what the client still sends (for at most 2 s and
8 MiB), so a client still sending reads the answer rather than a reset. Refusals and
timeouts are logged at most once per kind every few seconds, with a count, never once per
connection.

The cost on the request path is one counter, one phase and one timer handle per
connection; a request that arrives in one read arms no timer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn

import httptools
import msgspec
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.api.cycle import WHOLE_RESPONSE, Cycle
from gateway.api.drain import CONNECTION
from gateway.settings import ConnectionSettings

__all__ = ["ConnectionGuard", "FreshetHttpProtocol", "ServerConfig"]

log = logging.getLogger(__name__)

# Where a connection is. Bytes are counted against the header limit in every phase but
# _BODY; the single timer means the header timeout in _WAIT and _HEAD, the body timeout in
# _BODY and the end of the lingering close in _LINGER.
_WAIT = 0  # connected, no request begun
_HEAD = 1  # a request's line and headers are arriving
_BODY = 2  # its body is arriving
_IDLE = 3  # the request was read whole: being answered, or waiting for the next one
_LINGER = 4  # answered with an error or refused: what arrives is dropped until the close

_LINGER_S = 2.0  # how long a rejected request's connection drains before it is closed
_REFUSED_LINGER_S = 1.0  # the same for a connection refused at the cap
_LINGER_BYTES = 8 * 1024 * 1024  # and how much it drops at most before closing anyway
_RETRY_AFTER_S = 1
_NOTICE_EVERY_S = 10.0


class _Rejected(Exception):
    """Raised in a parser callback to stop parsing; the status is on the protocol."""


class Notices:
    """Log lines about refused and timed-out connections: one per kind every interval,
    with the number left out since the last one, so a flood of bad clients is not a flood
    of log lines."""

    def __init__(self, every_s: float = _NOTICE_EVERY_S) -> None:
        self._every_s = every_s
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def note(self, level: int, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._every_s:
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return
        self._last[kind] = now
        left_out = self._left_out.pop(kind, 0)
        if left_out:
            message += " (and %d more since the last such line)"
            args = (*args, left_out)
        log.log(level, message, *args)


def _answer(code: str, message: str, type_: str = "invalid_request_error") -> bytes:
    """What follows the status line and uvicorn's default headers: an OpenAI-shaped error."""
    error = {"message": message, "type": type_, "param": None, "code": code}
    body = msgspec.json.encode({"error": error})
    retry = b"retry-after: %d\r\n" % _RETRY_AFTER_S if type_ == "server_error" else b""
    head = b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    return head + retry + b"connection: close\r\n\r\n" + body


class ConnectionGuard:
    """The connection limits of one server, its canned answers and its :class:`Notices`."""

    def __init__(self, limits: ConnectionSettings, max_connections: int) -> None:
        self.max_header_bytes = head = limits.max_header_bytes
        self.max_header_line_bytes = line = limits.max_header_line_bytes
        self.header_timeout_s = limits.header_timeout_s
        self.body_timeout_s = limits.body_timeout_s
        self.keep_alive_s = limits.keep_alive_s
        self.max_connections = max_connections
        self.notices = Notices()
        timeouts = f"headers within {limits.header_timeout_s:g} s, body pauses under "
        timeouts += f"{limits.body_timeout_s:g} s"
        self.answers: dict[int, bytes] = {
            408: _answer("request_timeout", f"the request did not arrive in time ({timeouts})"),
            414: _answer("uri_too_long", f"the request URL is longer than {line} bytes"),
            431: _answer(
                "request_header_fields_too_large",
                f"the request headers are over {head} bytes (or a header line over {line})",
            ),
            503: _answer(
                "too_many_connections",
                "the server has too many open connections; retry later",
                "server_error",
            ),
        }


class ServerConfig(uvicorn.Config):
    """uvicorn's config plus the :class:`ConnectionGuard` its connections keep to.

    It travels to ``--workers`` processes pickled, as uvicorn's own config does.
    """

    def __init__(self, app: Any, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard


class FreshetHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header limits, timeouts and a connection cap."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not isinstance(config, ServerConfig):
            raise TypeError("FreshetHttpProtocol needs a ServerConfig (see server_config)")
        super().__init__(config, server_state, app_state, _loop)
        guard = config.guard
        self._guard = guard
        self._phase = _WAIT
        self._room = guard.max_header_bytes  # bytes the current head may still take
        self._head_used = 0  # the current head's URL and header bytes, as parsed
        self._timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0  # when a body's bytes last arrived (while its timer runs)
        self._rejection = 0  # the status a parser callback refused the request with
        self.on_lost: Callable[[], None] | None = None  # the request's, while it runs
        # A float (uvicorn's Config takes whole seconds); call_later takes either.
        self.timeout_keep_alive = guard.keep_alive_s  # type: ignore[assignment]

    # -- the connection --------------------------------------------------------------------

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        guard = self._guard
        if len(self.connections) >= guard.max_connections:
            self._refuse_connection(transport)
            return
        super().connection_made(transport)
        self._timer = self.loop.call_later(guard.header_timeout_s, self._on_timer)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._phase = _LINGER
        super().connection_lost(exc)
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase == _BODY:
            if self._timer is not None:
                self._last_read = self.loop.time()
        elif len(data) <= self._room:  # in _LINGER the room is what may still be dropped
            self._room -= len(data)
            if phase == _LINGER:
                return
        elif phase == _LINGER:
            self.transport.close()
            return
        else:
            self._feed_to_the_limit(data)
            return
        # _feed, inlined: this runs for every read.
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._parse_stopped(exc)
            return
        if self._timer is None and (self._phase == _HEAD or self._phase == _BODY):
            self._start_timer()  # a request that arrived in part

    def _feed_to_the_limit(self, data: bytes) -> None:
        """Feed a read longer than the current head's room in pieces no longer than the
        room, so the parser never holds more than the limit of one head. A head that ends
        inside a piece gives the next one a fresh room (the rest of that piece is not
        counted against it: a pipelined head may run over by at most one piece)."""
        view = memoryview(data)
        while view:
            phase = self._phase
            if phase == _LINGER:
                return
            if phase == _BODY:
                self._feed(view)
                return
            room = self._room
            if len(view) <= room:
                self._room = room - len(view)
                self._feed(view)
                return
            if room == 0:
                self._reject_request(431)
                return
            self._room = 0
            if not self._feed(view[:room]):
                return
            view = view[room:]

    def _feed(self, data: bytes | memoryview) -> bool:
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._parse_stopped(exc)
            return False
        if self._timer is None and (self._phase == _HEAD or self._phase == _BODY):
            self._start_timer()  # a request that arrived in part
        return True

    def _parse_stopped(self, exc: Exception) -> None:
        if isinstance(exc, httptools.HttpParserUpgrade):  # as uvicorn does
            self._stop_timer()
            self._phase = _IDLE
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        elif self._rejection:
            self._reject_request(self._rejection)
        else:  # as uvicorn answers a request httptools cannot parse
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")

    # -- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # The generation endpoints learn here that their client left (drain.Watch), with
        # no task per request reading the ASGI receive for it.
        self.scope[CONNECTION] = self  # type: ignore[literal-required]
        self._phase = _HEAD
        self._head_used = 0
        # The keep-alive wait ends when a request begins, not at any byte (a client
        # sending bare CRLFs cannot hold the connection).
        self._unset_keepalive_if_required()

    # on_url and on_header run uvicorn's few lines themselves: they run for every header.

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._head_used += len(url)
        if len(self.url) > self._guard.max_header_line_bytes:
            self._reject_in_parser(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + 4  # ": " and CRLF
        used = self._head_used + size
        guard = self._guard
        if size > guard.max_header_line_bytes or used > guard.max_header_bytes:
            self._reject_in_parser(431)
        self._head_used = used
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().on_headers_complete()
        # The cycle uvicorn made: ours (its task has not run yet), with the extension.
        self.cycle.__class__ = Cycle
        self.scope.setdefault("extensions", {})[WHOLE_RESPONSE] = {}

    def on_message_complete(self) -> None:
        self._phase = _IDLE
        self._room = self._guard.max_header_bytes
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # uvicorn's on_message_complete, and a keep-alive wait for a request answered
        # before its body ended (on_response_complete left it off then).
        if self.parser.should_upgrade() and self._should_upgrade():
            return
        cycle = self.cycle
        if cycle.response_complete:
            if not self.pipeline:
                self._start_keep_alive()
            return
        cycle.more_body = False
        cycle.message_event.set()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._phase != _IDLE:
            # The next request (or this one's body) is arriving: its own timeout applies.
            self._unset_keepalive_if_required()

    # -- timeouts --------------------------------------------------------------------------

    def _start_timer(self) -> None:
        guard = self._guard
        if self._phase == _BODY:
            self._last_read = self.loop.time()
            self._timer = self.loop.call_later(guard.body_timeout_s, self._on_timer)
        else:
            self._timer = self.loop.call_later(guard.header_timeout_s, self._on_timer)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _start_keep_alive(self) -> None:
        if self.timeout_keep_alive_task is None and not self.transport.is_closing():
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def _on_timer(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        phase = self._phase
        if phase == _BODY:
            guard = self._guard
            now = self.loop.time()
            if self.flow.read_paused or self.cycle.waiting_for_100_continue:
                self._last_read = now  # the server, not the client, holds the body back
            idle = now - self._last_read
            if idle < guard.body_timeout_s:
                self._timer = self.loop.call_later(guard.body_timeout_s - idle, self._on_timer)
            else:
                self._time_out("a request body paused for more than %g s", guard.body_timeout_s)
        elif phase == _HEAD:
            self._time_out("request headers took more than %g s", self._guard.header_timeout_s)
        elif phase in (_WAIT, _LINGER):
            self.transport.close()  # nothing asked (or already answered): no answer

    def _time_out(self, message: str, seconds: float) -> None:
        phase = self._phase
        self._phase = _LINGER
        cycle = self.cycle
        if phase == _BODY:
            answerable = not cycle.response_started and not self.pipeline
            if answerable:
                cycle.disconnected = True  # the app's answer, if any, is dropped
        else:
            answerable = (cycle is None or cycle.response_complete) and not self.pipeline
        if answerable:
            self._write_answer(408)
        self._guard.notices.note(
            logging.INFO, "timeout", "closed a connection: " + message, seconds
        )
        self.transport.close()

    # -- refusals --------------------------------------------------------------------------

    def _reject_in_parser(self, status: int) -> NoReturn:
        self._rejection = status
        raise _Rejected(status)

    def _reject_request(self, status: int) -> None:
        self._stop_timer()
        self._phase = _LINGER
        guard = self._guard
        guard.notices.note(
            logging.INFO,
            "header",
            "refused a request with %d: its URL or headers are over the limit "
            "(server.connections.max_header_bytes %d, max_header_line_bytes %d)",
            status,
            guard.max_header_bytes,
            guard.max_header_line_bytes,
        )
        cycle = self.cycle
        if self.pipeline or not (cycle is None or cycle.response_complete):
            self.transport.close()  # an earlier answer is being written: no room for ours
            return
        self._write_answer(status)
        self._linger(_LINGER_S)

    def _refuse_connection(self, transport: asyncio.Transport) -> None:
        self.transport = transport  # not in self.connections: it does not count
        self._phase = _LINGER
        guard = self._guard
        guard.notices.note(
            logging.WARNING,
            "cap",
            "refused a connection with 503: %d connections are open, the limit "
            "(server.connections.max_connections)",
            guard.max_connections,
        )
        self._write_answer(503)
        self._linger(_REFUSED_LINGER_S)

    def _write_answer(self, status: int) -> None:
        parts = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        parts.append(self._guard.answers[status])
        self.transport.write(b"".join(parts))

    def _linger(self, seconds: float) -> None:
        """Send FIN after the answer and drop what still arrives until the client closes
        (its EOF closes the transport) or ``seconds`` pass, so that unread bytes do not
        turn the close into a reset that can destroy the answer in flight."""
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
        if self.flow is not None:
            self.flow.resume_reading()
        self._room = _LINGER_BYTES
        self._timer = self.loop.call_later(seconds, self._on_timer)
