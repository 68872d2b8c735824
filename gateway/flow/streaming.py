"""Backend chunks to OpenAI wire format: SSE streams and assembled non-stream bodies.

Stream order (DESIGN §10.8): the role chunk first, then content deltas, then a chunk with
``finish_reason``, then the usage chunk when asked, errors as an error event, and always
``data: [DONE]``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import NamedTuple

import msgspec
from msgspec import Struct

from gateway import protocol as p
from gateway.backend import BackendUsage, Chunk, ToolCallDelta
from gateway.cost import Costing
from gateway.errors import BackendError, FreshetError
from gateway.flow.dispatch import aclose
from gateway.outcome import Outcome

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
DONE = b"data: [DONE]\n\n"


def event(payload: Struct) -> bytes:
    return b"data: " + _encode(payload) + b"\n\n"


def error_body(error: FreshetError) -> p.ErrorResponse:
    return p.ErrorResponse(
        error=p.ErrorBody(
            message=error.message, type=error.type, param=error.param, code=error.code
        )
    )


def to_usage(usage: BackendUsage | None, costing: Costing | None = None) -> p.Usage:
    prompt = usage.prompt_tokens if usage else 0
    completion = usage.completion_tokens if usage else 0
    return p.Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        completion_tokens_details=(
            p.CompletionTokensDetails(reasoning_tokens=usage.reasoning_tokens)
            if usage is not None and usage.reasoning_tokens
            else None
        ),
        prompt_tokens_details=(
            p.PromptTokensDetails(
                cached_tokens=usage.cached_prompt_tokens,
                cache_write_tokens=usage.cache_write_tokens,
            )
            if usage is not None and (usage.cached_prompt_tokens or usage.cache_write_tokens)
            else None
        ),
        cost=round(costing.usd_total, 12) if costing else None,
        energy_joules=(
            round(costing.joules, 9) if costing is not None and costing.joules is not None else None
        ),
    )


async def collect(
    chunks: AsyncIterator[Chunk], outcome: Outcome, first: Chunk | None = None
) -> Outcome:
    """Absorb a whole backend stream (after ``first``, the chunk that opened it, if given);
    the stream is closed however this ends (a client that leaves cancels it, and closing
    the backend's stream stops its generation)."""
    try:
        if first is not None:
            _absorb(first, outcome)
        async for chunk in chunks:
            _absorb(chunk, outcome)
    finally:
        await aclose(chunks)
    if outcome.finish_reason is None:
        raise BackendError("backend stream ended without a finish reason")
    return outcome


def _absorb(chunk: Chunk, outcome: Outcome) -> None:
    if chunk.text or chunk.tool_calls:
        # A tool call's pieces are output like text (metered, counted) but kept apart.
        if chunk.text:
            outcome.text_parts.append(chunk.text)
        if chunk.tool_calls:
            outcome.tool_call_parts.extend(chunk.tool_calls)
        outcome.chunks += chunk.pieces
        if outcome.metering is not None:
            outcome.metering.tokens += chunk.pieces
    if chunk.finish_reason is not None:
        outcome.finish_reason = chunk.finish_reason
        outcome.stop_sequence = chunk.stop_sequence
    if chunk.usage is not None:
        outcome.usage = chunk.usage
    if chunk.prompt_tokens is not None:
        outcome.prompt_tokens = chunk.prompt_tokens


class Ended(NamedTuple):
    """The last item of :func:`drive`: the stream is over and its record is made."""

    usage: p.Usage


async def drive(
    chunks: AsyncIterator[Chunk],
    outcome: Outcome,
    finalize: Callable[[Outcome], p.Usage],
    first: Chunk | None = None,
) -> AsyncGenerator[Chunk | Ended, None]:
    """Run a backend stream for a client: ``first`` (the chunk that opened it, if given)
    and each chunk (absorbed into ``outcome``), then :class:`Ended` with what ``finalize``
    (metering and the usage record) returned. Taking the opening chunk here, rather than
    from a generator that puts it back in front of the stream, spares every chunk of every
    stream one generator's step.

    Every API's stream encoder iterates this, so what a stream does is written once:
    ``finalize`` runs exactly once, when the backend is done or when the client leaves (the
    server cancels or closes the encoder, which must close this generator: ``finally``
    then closes the backend's stream, which stops the generation); a backend that fails
    mid-stream, or ends without a finish reason, leaves its error in ``outcome.error``.
    """
    try:
        try:
            if first is not None:
                _absorb(first, outcome)
                yield first
            async for chunk in chunks:
                _absorb(chunk, outcome)
                yield chunk
        except FreshetError as exc:
            outcome.error = exc
        except Exception as exc:
            log.exception("backend failed mid-stream")
            outcome.error = BackendError(f"backend failed mid-stream: {type(exc).__name__}")
        finally:
            await aclose(chunks)
        if outcome.error is None and outcome.finish_reason is None:
            outcome.error = BackendError("backend stream ended without a finish reason")
        outcome.finalized = True
        yield Ended(finalize(outcome))
    except BaseException:
        # GeneratorExit or cancellation: the client went away mid-stream.
        outcome.client_disconnected = True
        raise
    finally:
        if not outcome.finalized:
            outcome.finalized = True
            finalize(outcome)


async def sse(
    chunks: AsyncIterator[Chunk],
    outcome: Outcome,
    *,
    make_delta: Callable[[str | None, str | None, bool], Struct],
    make_usage: Callable[[p.Usage], Struct],
    include_usage: bool,
    finalize: Callable[[Outcome], p.Usage],
    make_tool_delta: Callable[[Sequence[ToolCallDelta], bool], Struct] | None = None,
    first_chunk: Chunk | None = None,
) -> AsyncIterator[bytes]:
    """Encode a backend stream as OpenAI's server-sent events (:func:`drive` runs it).

    ``make_delta(text, finish_reason, first)`` builds one wire chunk;
    ``make_tool_delta(pieces, first)`` one of tool-call pieces (the first chunk of an answer
    that opens with a call carries the role too, and no content, as OpenAI's do; without
    it, pieces are not streamed); ``make_usage`` the trailing usage chunk from what
    ``finalize`` returns; errors are an error event; always ``data: [DONE]``;
    ``first_chunk``: the chunk that opened the backend's stream (:func:`drive`).
    """
    first = True
    items = drive(chunks, outcome, finalize, first_chunk)
    try:
        async for item in items:
            if isinstance(item, Ended):
                if outcome.error is not None:
                    yield event(error_body(outcome.error))
                elif include_usage:
                    yield event(make_usage(item.usage))
                yield DONE
                return
            if item.tool_calls and make_tool_delta is not None and not item.text:
                yield event(make_tool_delta(item.tool_calls, first))
                first = False
            else:
                if first or item.text:
                    yield event(make_delta(item.text or None, None, first))
                    first = False
                if item.tool_calls and make_tool_delta is not None:
                    yield event(make_tool_delta(item.tool_calls, False))
            if item.finish_reason is not None:
                yield event(make_delta(None, item.finish_reason, False))
    finally:
        await items.aclose()
