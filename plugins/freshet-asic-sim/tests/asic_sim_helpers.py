"""Helpers shared by the asic-sim tests (a uniquely named module, not conftest, so that
other plugins' test folders cannot shadow it)."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

from gateway.plugin_api import Chunk, GenerationRequest, Message

_ids = itertools.count()


class NoFleet:
    """For backends without a twin: nothing to look up."""

    def get(self, backend_id: str) -> Any:
        raise AssertionError(f"unexpected fleet lookup of {backend_id!r}")


def completion(prompt_tokens: int, max_tokens: int | None, **extra: Any) -> GenerationRequest:
    """A text completion whose prompt counts ``prompt_tokens`` (begin-of-text + words)."""
    return GenerationRequest(
        request_id=f"req-{next(_ids)}",
        operation="text_completion",
        model="llama-3.1-8b",
        prompt=" ".join(["word"] * (prompt_tokens - 1)),
        max_tokens=max_tokens,
        **extra,
    )


def chat(text: str, max_tokens: int | None, **extra: Any) -> GenerationRequest:
    return GenerationRequest(
        request_id=f"req-{next(_ids)}",
        operation="chat",
        model="llama-3.1-8b",
        messages=[Message(role="user", content=text)],
        max_tokens=max_tokens,
        **extra,
    )


async def timed(stream: AsyncIterator[Chunk]) -> list[tuple[float, Chunk]]:
    """Every chunk with the ``time.monotonic()`` at which the consumer received it."""
    out = []
    async for chunk in stream:
        out.append((time.monotonic(), chunk))
    return out
