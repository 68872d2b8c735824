"""Helpers of the backend contract (:mod:`gateway.testing.contract`): the request each check
sends, and how a stream is collected, closed and judged."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from gateway.backend import (
    Backend,
    BackendConfig,
    BackendStatus,
    BackendUsage,
    Chunk,
    Deployment,
    GenerationRequest,
    Message,
    Operation,
)
from gateway.settings import _parse_backends

FINISH_REASONS = frozenset({"stop", "length", "content_filter"})
_ids = itertools.count()


def request_id() -> str:
    """A fresh request id for a check's request."""
    return f"contract-{next(_ids)}"


def as_config(value: BackendConfig | Mapping[str, Any]) -> BackendConfig:
    """A ``BackendConfig`` from a config entry written as in ``freshet.yaml``."""
    if isinstance(value, BackendConfig):
        return value
    return _parse_backends([dict(value)], "<backend contract>")[0]


def expect(condition: object, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def make_request(
    dep: Deployment, operation: Operation, text: str, max_tokens: int | None
) -> GenerationRequest:
    return GenerationRequest(
        request_id=request_id(),
        operation=operation,
        model=dep.model,
        adapter=dep.adapter,
        messages=(Message(role="user", content=text),) if operation == "chat" else (),
        prompt=text if operation == "text_completion" else None,
        max_tokens=max_tokens,
        temperature=0.0,
        seed=1,
    )


async def close_stream(stream: AsyncIterator[Chunk]) -> None:
    aclose: Callable[[], Awaitable[None]] | None = getattr(stream, "aclose", None)
    expect(
        aclose is not None,
        "stream() must return something the gateway can close (an async generator, with aclose())",
    )
    assert aclose is not None
    await aclose()


async def collect(backend: Backend, request: GenerationRequest) -> list[Chunk]:
    stream = backend.stream(request)
    chunks: list[Chunk] = []
    try:
        async for chunk in stream:
            chunks.append(chunk)
    finally:
        await close_stream(stream)
    return chunks


def finished(chunks: list[Chunk]) -> BackendUsage:
    """Check the shape of a whole stream; the usage of its last chunk."""
    expect(chunks, "the stream ended without a single chunk")
    for i, chunk in enumerate(chunks):
        expect(isinstance(chunk, Chunk), f"chunk {i} is a {type(chunk).__name__}, not a Chunk")
    *body, last = chunks
    for i, chunk in enumerate(body):
        expect(
            chunk.finish_reason is None and chunk.usage is None,
            f"chunk {i} of {len(chunks)} has finish_reason or usage: only the last may",
        )
    expect(last.finish_reason is not None, "the last chunk has no finish_reason")
    expect(
        last.finish_reason in FINISH_REASONS,
        f"finish_reason {last.finish_reason!r} is none of {sorted(FINISH_REASONS)}",
    )
    usage = last.usage
    expect(isinstance(usage, BackendUsage), "the last chunk has no usage (a BackendUsage)")
    assert usage is not None
    expect(usage.prompt_tokens > 0, f"usage.prompt_tokens is {usage.prompt_tokens}, not > 0")
    expect(usage.completion_tokens >= 0, "usage.completion_tokens is negative")
    cache = (usage.cached_prompt_tokens, usage.cache_write_tokens)
    expect(
        min(cache) >= 0 and sum(cache) <= usage.prompt_tokens,
        f"usage.cached_prompt_tokens + cache_write_tokens ({cache[0]} + {cache[1]}) are not "
        f"parts of prompt_tokens ({usage.prompt_tokens})",
    )
    expect(
        0 <= usage.reasoning_tokens <= usage.completion_tokens,
        f"usage.reasoning_tokens {usage.reasoning_tokens} is not a part of completion_tokens "
        f"({usage.completion_tokens})",
    )
    early = {c.prompt_tokens for c in chunks if c.prompt_tokens is not None}
    expect(
        early <= {usage.prompt_tokens},
        f"a chunk told prompt_tokens {sorted(early)}, the usage {usage.prompt_tokens}",
    )
    return usage


async def idle(backend: Backend, within_s: float) -> BackendStatus:
    """The backend's status once nothing runs or waits (or the last one seen)."""
    deadline = time.monotonic() + within_s
    while True:
        status = await backend.status()
        if (status.running == 0 and status.waiting == 0) or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.02)
