"""Helpers for tests of the ``openai-compatible`` backend against fake and raw upstreams
(fixtures ``fake`` and ``make`` are in this folder's conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from gateway.backend import Backend, BackendConfig, Chunk, GenerationRequest, Message
from tests.vllm.fake_upstream import FakeVllm


class NoFleet:
    def get(self, backend_id: str) -> Backend:
        raise KeyError(backend_id)


def request(operation: str = "chat") -> GenerationRequest:
    return GenerationRequest(
        request_id="req_t",
        operation=operation,  # type: ignore[arg-type]
        model="m",
        messages=[Message(role="user", content="hi")] if operation == "chat" else (),
        prompt="once" if operation != "chat" else None,
        max_tokens=4,
    )


def config(**params: Any) -> BackendConfig:
    extra = {k: params.pop(k) for k in ("profile", "list_price") if k in params}
    return BackendConfig(
        id="api", type="openai-compatible", model="m", params=params, index=1, **extra
    )


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


async def collect(stream: AsyncIterator[Chunk]) -> list[Chunk]:
    return [chunk async for chunk in stream]


SSE_BODY = (
    b'data: {"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}\n\n'
    b'data: {"choices":[{"delta":{},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":2,"completion_tokens":1}}\n\ndata: [DONE]\n\n'
)


def sse_reply(extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n%s\r\n"
        % (len(SSE_BODY), extra)
    ) + SSE_BODY


class RawServer:
    """A loopback server answering each request on a connection per ``script``: a list of
    replies (bytes to send, None to close without answering, "hang" to say nothing, or
    (seconds, bytes): the reply after that long)."""

    def __init__(self, script: list[bytes | str | tuple[float, bytes] | None]) -> None:
        self.script = script
        self.connections = 0
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                step = self.script[min(self.requests, len(self.script) - 1)]
                self.requests += 1
                if step is None:
                    break
                if step == "hang":
                    await asyncio.sleep(30)
                if isinstance(step, tuple):
                    await asyncio.sleep(step[0])
                    step = step[1]
                assert isinstance(step, bytes)
                writer.write(step)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.contextmanager
def fake_in_thread(count: int = 1) -> Iterator[list[FakeVllm]]:
    """``count`` fake upstreams served by an event loop of their own thread (for a real
    ``freshet serve`` in front of them)."""
    loop = asyncio.new_event_loop()
    fakes: list[FakeVllm] = []
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        for _ in range(count):
            fakes.append(FakeVllm())
            loop.run_until_complete(fakes[-1].start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(30)
    try:
        yield fakes
    finally:
        for fake in fakes:
            asyncio.run_coroutine_threadsafe(fake.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
