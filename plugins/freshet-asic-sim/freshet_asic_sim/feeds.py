"""Where the card's text comes from: the synthetic filler, or a functional twin backend.

A feed hands over pieces of text as they become available, each stamped with the moment
it was produced; the backend delivers piece ``i`` no earlier than the card's schedule for
output token ``i`` and no earlier than it was produced.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from msgspec import Struct

from gateway.plugin_api import Backend, BackendError, BackendUsage, FreshetError, GenerationRequest


class Piece(Struct, kw_only=True, frozen=True):
    text: str = ""
    produced_at: float = 0.0  # time.monotonic() when the source produced it
    final: bool = False
    finish_reason: str | None = None
    usage: BackendUsage | None = None
    stop_sequence: str | None = None  # the twin's, when a stop string ended its text


class Feed(Protocol):
    def ready(self) -> bool:
        """A piece can be taken without waiting."""
        ...

    async def next(self) -> Piece: ...

    def raise_if_failed(self) -> None:
        """Raise the source's error now if it has already failed."""

    async def aclose(self) -> None: ...


class SyntheticFeed:
    """Exactly ``n`` filler tokens, all available at once; finishes with ``length``."""

    def __init__(self, pieces: Iterator[str]) -> None:
        self._pieces = pieces

    def ready(self) -> bool:
        return True

    async def next(self) -> Piece:
        text = next(self._pieces, None)
        if text is None:
            return Piece(final=True, finish_reason="length")
        return Piece(text=text)

    def raise_if_failed(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class TwinFeed:
    """Runs the twin's stream in a task from the start, so it works while the card queues."""

    def __init__(
        self, twin: Backend, request: GenerationRequest, on_piece: Callable[[], None]
    ) -> None:
        self._twin_id = twin.id
        self._stream = twin.stream(request)
        self._queue: asyncio.Queue[Piece | None] = asyncio.Queue()
        self._on_piece = on_piece
        self._task = asyncio.create_task(self._pump(), name=f"twin {twin.id} {request.request_id}")

    async def _pump(self) -> None:
        try:
            async for chunk in self._stream:
                now = time.monotonic()
                if chunk.text:
                    self._queue.put_nowait(Piece(text=chunk.text, produced_at=now))
                if chunk.finish_reason is not None or chunk.usage is not None:
                    self._queue.put_nowait(
                        Piece(
                            produced_at=now,
                            final=True,
                            finish_reason=chunk.finish_reason or "stop",
                            usage=chunk.usage,
                            stop_sequence=chunk.stop_sequence,
                        )
                    )
                self._on_piece()
        finally:
            self._queue.put_nowait(None)
            self._on_piece()

    def ready(self) -> bool:
        return not self._queue.empty()

    async def next(self) -> Piece:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # stay at the end for any later call
            await self._result()
            # The twin ended without a finish reason: end the answer where it stopped.
            return Piece(produced_at=time.monotonic(), final=True, finish_reason="stop")
        return item

    def raise_if_failed(self) -> None:
        if self._task.done() and not self._task.cancelled():
            error = self._task.exception()
            if isinstance(error, FreshetError):
                raise error
            if error is not None:
                raise _twin_failed(self._twin_id, error) from error

    async def _result(self) -> None:
        try:
            await self._task
        except FreshetError:
            raise
        except Exception as exc:
            raise _twin_failed(self._twin_id, exc) from exc

    async def aclose(self) -> None:
        """Stop the twin: cancel the pump if it is still running, then close its stream."""
        if not self._task.done():
            self._task.cancel()
        await asyncio.wait([self._task])
        if not self._task.cancelled():
            self._task.exception()  # retrieved: the consumer is gone, nobody else will
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()


def _twin_failed(twin_id: str, error: BaseException) -> BackendError:
    return BackendError(f"twin backend {twin_id} failed: {type(error).__name__}")
