"""The request/response cycle of Freshet's server: uvicorn's, with two ways for the
generation endpoints to spend fewer system calls (:data:`WHOLE_RESPONSE`, :data:`COALESCE`).
:class:`gateway.api.server.FreshetHttpProtocol` gives every request this cycle."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

__all__ = ["COALESCE", "WHOLE_RESPONSE", "Cycle"]

WHOLE_RESPONSE = "freshet.whole_response"
"""The ASGI extension (``scope["extensions"]``) of this server: an ``http.response.start``
message may carry the whole body under ``"body"``, and the response is written in one
write, status line, headers and body together. Only for headers the gateway made itself
(names and values are not checked again; see :meth:`Cycle.send`)."""


COALESCE = "freshet.coalesce"
"""With :data:`WHOLE_RESPONSE`: an ``http.response.start`` message with this key set starts
a stream whose body pieces sent within one turn of the event loop go out in one write (an
upstream read that brought 32 events is one write to the client, not 32)."""


class Cycle(RequestResponseCycle):
    """uvicorn's request/response cycle, with the :data:`WHOLE_RESPONSE` extension."""

    _pieces: list[bytes] | None = None  # a coalescing stream's pieces not yet written
    _flush_due = False

    async def send(self, message: Any) -> None:
        pieces = self._pieces
        if pieces is not None and message["type"] == "http.response.body":
            if message.get("more_body", False) and not self.response_complete:
                if self.flow.write_paused and not self.disconnected:
                    await self.flow.drain()  # the client's pace holds the stream back
                piece = message.get("body", b"")
                if piece and not self.disconnected:
                    pieces.append(piece)
                    if not self._flush_due:
                        self._flush_due = True
                        asyncio.get_running_loop().call_soon(self._flush)
                return
            self._flush()
            await super().send(message)
            return
        whole = "body" in message and message["type"] == "http.response.start"
        if not whole or self.response_started:
            await super().send(message)
            if message.get(COALESCE) and self.response_started and self.chunked_encoding:
                self._pieces = []
            return
        # The generation endpoints' JSON answers: every header name is the gateway's own,
        # every value is made by the gateway or is a request header httptools accepted (no
        # CR, LF or NUL), so uvicorn's two regular expressions a header are skipped, and
        # one write instead of two is one system call less a request.
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        self.response_started = True
        self.waiting_for_100_continue = False
        body: bytes = message["body"]
        content = [STATUS_LINE[message["status"]]]
        for name, value in self.default_headers:
            content += (name, b": ", value, b"\r\n")
        for name, value in message["headers"]:
            content += (name, b": ", value, b"\r\n")
        if not self.keep_alive:
            content.append(b"connection: close\r\n")
        content += (b"content-length: %d\r\n\r\n" % len(body), body)
        self.transport.write(b"".join(content))
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()

    def _flush(self) -> None:
        """Write what a coalescing stream sent since the last write, as one chunk."""
        self._flush_due = False
        pieces = self._pieces
        if not pieces:
            return
        data = b"".join(pieces)
        pieces.clear()
        if self.disconnected or self.response_complete:
            return
        self.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
