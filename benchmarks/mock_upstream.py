"""A mock OpenAI upstream on 127.0.0.1 for the peer benchmark: answers every chat or
completion request after a fixed delay, as JSON or as an SSE stream, on raw asyncio
(uvloop) so that it costs the shared cores as little as possible.

Non-streaming: one chat completion after ``delay_ms``; ``/v1/embeddings``: a small fixed
vector per input after ``delay_ms``. Streaming: the first content
chunk after ``delay_ms``, then one chunk every ``interval_ms`` up to ``chunks`` (or the
request's ``max_tokens``, when smaller), then the finish chunk, the usage chunk (when
``stream_options.include_usage``) and ``data: [DONE]``; as HTTP/1.1 chunked, keep-alive.

Run:  .venv/bin/python benchmarks/mock_upstream.py --port 9100 [--delay-ms 20]
      [--chunks 16] [--interval-ms 1]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec
import uvloop

_HEAD = b"\r\n\r\n"


class _Options(msgspec.Struct):
    include_usage: bool = False


class _Request(msgspec.Struct):
    model: str = "mock"
    stream: bool = False
    max_tokens: int | None = None
    stream_options: _Options | None = None
    messages: list[msgspec.Raw] | None = None


_decode = msgspec.json.Decoder(_Request).decode


class _EmbeddingRequest(msgspec.Struct):
    model: str = "mock"
    input: str | list[Any] = ""


_decode_embedding = msgspec.json.Decoder(_EmbeddingRequest).decode
_VECTOR = b"[0.5,-0.5,0.5,-0.5,0.5,-0.5,0.5,-0.5]"


def _embedding_reply(body: bytes) -> bytes:
    req = _decode_embedding(body)
    items = req.input
    count = len(items) if items and isinstance(items, list) and not isinstance(items[0], int) else 1
    data = b",".join(
        b'{"object":"embedding","index":%d,"embedding":%s}' % (i, _VECTOR) for i in range(count)
    )
    payload = (
        b'{"object":"list","data":[' + data + b'],"model":"' + req.model.encode() + b'",'
        b'"usage":{"prompt_tokens":%d,"total_tokens":%d}}' % (8 * count, 8 * count)
    )
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(payload)).encode()
        + _HEAD
        + payload
    )


class Settings(msgspec.Struct, frozen=True):
    delay_s: float = 0.020
    chunks: int = 16
    interval_s: float = 0.001


def _json_reply(model: str, chat: bool) -> bytes:
    if chat:
        choice = (
            b'{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}'
        )
        kind = b"chat.completion"
    else:
        choice = b'{"index":0,"text":"Hello","finish_reason":"stop"}'
        kind = b"text_completion"
    body = (
        b'{"id":"chatcmpl-mock","object":"'
        + kind
        + b'","created":1700000000,"model":"'
        + model.encode()
        + b'","choices":['
        + choice
        + b'],"usage":{"prompt_tokens":8,"completion_tokens":1,"total_tokens":9}}'
    )
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + _HEAD
        + body
    )


_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def _http_chunk(event: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(event), event)


def _event(model: str, chat: bool, i: int | None, finish: bool = False) -> bytes:
    if chat:
        delta = b'{"content":" tok%d"}' % i if i is not None else b"{}"
        choice = b'{"index":0,"delta":' + delta
        kind = b"chat.completion.chunk"
    else:
        choice = b'{"index":0,"text":"' + (b" tok%d" % i if i is not None else b"") + b'"'
        kind = b"text_completion"
    choice += b',"finish_reason":' + (b'"length"}' if finish else b"null}")
    return _http_chunk(
        b'data: {"id":"chatcmpl-mock","object":"'
        + kind
        + b'","created":1700000000,"model":"'
        + model.encode()
        + b'","choices":['
        + choice
        + b"]}\n\n"
    )


def _usage_event(model: str, tokens: int) -> bytes:
    return _http_chunk(
        b'data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,'
        b'"model":"' + model.encode() + b'","choices":[],"usage":{"prompt_tokens":8,'
        b'"completion_tokens":%d,"total_tokens":%d}}\n\n' % (tokens, tokens + 8)
    )


_DONE = _http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
_MODELS = b'{"object":"list","data":[{"id":"mock","object":"model","owned_by":"bench"}]}'
_MODELS_REPLY = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_MODELS)).encode()
    + _HEAD
    + _MODELS
)


class MockProtocol(asyncio.Protocol):
    """One connection; requests are answered one at a time, in order."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.buf = b""
        self.busy = False
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._next()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _next(self) -> None:
        head_end = self.buf.find(_HEAD)
        if head_end < 0:
            return
        head = self.buf[:head_end].decode("latin-1")
        lines = head.split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        start = head_end + 4
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body, consumed = _dechunk(self.buf, start)
            if body is None:
                return
        else:
            length = int(headers.get("content-length", "0"))
            if len(self.buf) - start < length:
                return
            body, consumed = self.buf[start : start + length], start + length
        self.buf = self.buf[consumed:]
        self.busy = True
        if method == "GET":
            self._finish(_MODELS_REPLY if path.endswith("/models") else _NOT_FOUND)
            return
        if path.endswith("/embeddings"):
            self.loop.call_later(self.s.delay_s, self._finish, _embedding_reply(body))
            return
        chat = path.endswith("/chat/completions")
        if not chat and not path.endswith("/completions"):
            self._finish(_NOT_FOUND)
            return
        req = _decode(body)
        if not req.stream:
            self.loop.call_later(self.s.delay_s, self._finish, _json_reply(req.model, chat))
            return
        n = self.s.chunks if req.max_tokens is None else max(1, min(self.s.chunks, req.max_tokens))
        usage = req.stream_options is not None and req.stream_options.include_usage
        self.loop.call_later(self.s.delay_s, self._stream, req.model, chat, 0, n, usage, True)

    def _stream(self, model: str, chat: bool, i: int, n: int, usage: bool, first: bool) -> None:
        out = _STREAM_HEAD if first else b""
        out += _event(model, chat, i)
        if i + 1 < n and self.s.interval_s > 0:
            self._write(out)
            self.loop.call_later(
                self.s.interval_s, self._stream, model, chat, i + 1, n, usage, False
            )
            return
        for j in range(i + 1, n):  # unpaced: the rest at once
            out += _event(model, chat, j)
        out += _event(model, chat, None, finish=True)
        if usage:
            out += _usage_event(model, n)
        self._finish(out + _DONE)

    def _finish(self, data: bytes) -> None:
        self._write(data)
        self.busy = False
        if self.buf:
            self._next()


def _dechunk(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    out = b""
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None, pos
        size = int(buf[pos:line_end].split(b";")[0], 16)
        start = line_end + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n", start)
            return (out, trailer_end + 2) if trailer_end >= 0 else (None, pos)
        if len(buf) < start + size + 2:
            return None, pos
        out += buf[start : start + size]
        pos = start + size + 2


async def serve(port: int, settings: Settings, ready: Callable[[], None] | None = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: MockProtocol(settings), "127.0.0.1", port, backlog=4096, reuse_address=True
    )
    if ready is not None:
        ready()
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--interval-ms", type=float, default=1.0)
    args = parser.parse_args()
    settings = Settings(args.delay_ms / 1000, args.chunks, args.interval_ms / 1000)
    started = time.time()
    uvloop.run(serve(args.port, settings, lambda: print(f"mock ready {started:.0f}", flush=True)))


if __name__ == "__main__":
    main()
