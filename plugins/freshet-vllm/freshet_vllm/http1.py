"""A small pooled HTTP/1.1 client for the request path to OpenAI-compatible servers.

Why not aiohttp's ClientSession here: under load its per-request machinery (URL and
header objects, tracing signals, timeouts as tasks, payload writers) cost ~0.17 ms of CPU
per request on the 2-core benchmark machine, against ~0.06 ms for this client, and the
gateway's throughput is CPU-bound (benchmarks/peers.py). This one does only what the
request path needs: POST a JSON body on a keep-alive connection, read the status, and
hand the body on as it arrives (httptools parses the framing, chunked included, in C).

Failures raise aiohttp's exception types, so callers keep one set of ``except`` clauses
(aiohttp still serves vLLM's ``/metrics`` polling).
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httptools


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one response in flight on it."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport
        self.response: Response | None = None
        self.idle_since = 0.0
        self.lost = False
        self.used = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.response is not None:
            self.response.on_lost(exc)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes while idle: the server broke the protocol
            self.transport.close()
            return
        response.last_read = response.loop.time()
        response.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response.fail(aiohttp.ClientPayloadError(f"malformed HTTP response: {exc}"))
            self.transport.close()
            return
        response._wake()  # once a read, however many body chunks it held

    # httptools callbacks
    def on_headers_complete(self) -> None:
        if self.response is not None:
            self.response.on_headers(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        response = self.response
        if response is not None:  # kept for the reader, woken once the read is parsed
            response._pieces.append(body)

    def on_message_complete(self) -> None:
        if self.response is not None:
            self.response.on_complete(self.parser.should_keep_alive())


class Response:
    """A response whose body is read as it arrives: :meth:`next_lines` gives its lines."""

    def __init__(self, conn: _Connection, pool: Pool, read_timeout_s: float) -> None:
        self.loop = pool.loop
        self.status = 0
        self.last_read = self.loop.time()
        self.received = False  # any byte of it yet
        self._conn = conn
        self._pool = pool
        self._pieces: list[bytes] = []
        self._rest = b""  # a line begun in the last read (next_lines)
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._headers = False
        self._complete = False
        self._keep_alive = False
        self._done = False
        self._timeout = read_timeout_s
        self._timer: asyncio.TimerHandle | None = self.loop.call_later(
            read_timeout_s, self._check_silence
        )

    # -- fed by the connection -----------------------------------------------------------

    def on_headers(self, status: int) -> None:
        self.status = status
        self._headers = True
        self._wake()

    def on_complete(self, keep_alive: bool) -> None:
        self._complete = True
        self._keep_alive = keep_alive
        self._stop_timer()
        self._wake()

    def on_lost(self, exc: Exception | None) -> None:
        if not self._complete:
            reason = f": {exc}" if exc else ""
            self.fail(aiohttp.ServerDisconnectedError(f"upstream closed the connection{reason}"))

    def fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._stop_timer()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _check_silence(self) -> None:
        # One timer per response, re-armed only when it fires: no timer work per chunk.
        silent = self.loop.time() - self.last_read
        if silent >= self._timeout:
            self._timer = None
            self.fail(TimeoutError(f"no data from upstream for {self._timeout:g} s"))
        else:
            self._timer = self.loop.call_later(self._timeout - silent, self._check_silence)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        waiter = self.loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    # -- read by the caller --------------------------------------------------------------

    @property
    def has_headers(self) -> bool:
        return self._headers

    async def next_lines(self) -> list[bytes] | None:
        """The body's next lines, without their line ends, as they arrive: the lines one
        read completed come together (an upstream that sent 32 events at once is one
        list); None once the body is over. A method, not an async generator: a response
        is read by one loop, and a generator would add its own step to every read."""
        while True:
            if self._pieces:
                data = b"".join(self._pieces)
                self._pieces.clear()
                rest = self._rest
                lines = (rest + data if rest else data).split(b"\n")
                self._rest = lines.pop()
                if lines:
                    return lines
                continue
            if self._complete:
                rest, self._rest = self._rest, b""
                return [rest] if rest else None
            await self._wait()

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in the pieces it arrives in."""
        while True:
            if self._pieces:
                data = b"".join(self._pieces)
                self._pieces.clear()
                yield data
                continue
            if self._complete:
                return
            await self._wait()

    async def read(self) -> bytes:
        while not self._complete:
            await self._wait()
        data = b"".join(self._pieces)
        self._pieces.clear()
        return data

    def release(self) -> None:
        """Done with a response read to its end: its connection goes back to the pool."""
        if self._done:
            return
        if not self._complete or not self._keep_alive or self._error is not None:
            self.close()
            return
        self._done = True
        self._conn.response = None
        self._pool.put_back(self._conn)

    def close(self) -> None:
        """Drop the connection (a response not read to its end: the server stops)."""
        if self._done:
            return
        self._done = True
        self._stop_timer()
        self._conn.response = None
        self._conn.transport.close()


class Pool:
    """Keep-alive connections to one server (``base_url`` may carry a path prefix)."""

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str],
        connect_timeout_s: float,
        idle_timeout_s: float = 4.0,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if url.scheme == "https" else None
        self._prefix = url.path.rstrip("/")
        default_port = self.port == (443 if self._ssl else 80)
        host_header = self.host if default_port else f"{self.host}:{self.port}"
        if ":" in self.host:  # IPv6 literal
            host_header = f"[{self.host}]" + ("" if default_port else f":{self.port}")
        lines = {
            "Host": host_header,
            "User-Agent": "freshet",
            "Accept": "*/*",
            "Content-Type": "application/json",
            **headers,
        }
        for name, value in lines.items():
            if any(c in name + value for c in "\r\n\0"):
                raise ValueError(f"header {name!r} has a line break in it")
        self._header_block = "".join(f"{k}: {v}\r\n" for k, v in lines.items()).encode()
        self._heads: dict[str, bytes] = {}
        self._connect_timeout = connect_timeout_s
        self._idle_timeout = idle_timeout_s
        self._idle: collections.deque[_Connection] = collections.deque()
        self.loop = asyncio.get_running_loop()

    def _head(self, path: str) -> bytes:
        head = self._heads.get(path)
        if head is None:
            head = f"POST {self._prefix}{path} HTTP/1.1\r\n".encode() + self._header_block
            self._heads[path] = head
        return head

    async def post(
        self,
        path: str,
        body: bytes,
        read_timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send; return once the status line and headers are in (the body follows)."""
        head = self._head(path)
        if headers:
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
        head += b"Content-Length: %d\r\n\r\n" % len(body)
        while True:
            conn = await self._acquire()
            if conn.lost or conn.transport.is_closing():
                # A new connection the server reset as it opened (writing to it would
                # raise the event loop's RuntimeError): a connection failure like a refusal.
                raise aiohttp.ServerDisconnectedError("upstream closed the connection as it opened")
            response = Response(conn, self, read_timeout_s)
            conn.response = response
            reused, conn.used = conn.used, True
            conn.transport.write(head + body)
            try:
                while not response.has_headers:
                    await response._wait()
            except aiohttp.ServerDisconnectedError:
                response.close()
                # A kept-alive connection the server closed as we wrote: it never saw
                # the request, so it is sent again on a new connection (once).
                if reused and not response.received:
                    continue
                raise
            except BaseException:
                response.close()
                raise
            return response

    async def _acquire(self) -> _Connection:
        now = self.loop.time()
        idle = self._idle
        while idle and now - idle[0].idle_since > self._idle_timeout:
            idle.popleft().transport.close()
        while idle:
            conn = idle.pop()  # the most recently used: least likely closed by the server
            if not conn.lost and not conn.transport.is_closing():
                return conn
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(
                    _Connection,
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                ),
                self._connect_timeout,
            )
        except OSError as exc:
            raise aiohttp.ClientConnectionError(
                f"cannot connect to {self.host}:{self.port}: {exc}"
            ) from exc
        return conn

    def put_back(self, conn: _Connection) -> None:
        if conn.lost or conn.transport.is_closing():
            return
        conn.idle_since = self.loop.time()
        self._idle.append(conn)

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().transport.close()
