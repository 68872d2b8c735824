"""A backend stream as Anthropic's server-sent events.

Order, as Anthropic sends it: ``message_start``, ``content_block_start``, ``ping``,
``content_block_delta`` (``text_delta``) for each piece of text, ``content_block_stop``,
``message_delta`` (``stop_reason``, ``usage`` with Freshet's cost and joules),
``message_stop``. A failure after the first event is an ``error`` event, and the stream
ends there (Anthropic has no ``[DONE]``). Metering and the usage record are the flow's:
``finalize`` runs exactly once, when the backend is done or the client leaves.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import msgspec
from msgspec import Struct

from gateway import protocol as p
from gateway.api.anthropic import protocol as a
from gateway.api.anthropic.errors import error_event
from gateway.backend import Chunk
from gateway.flow.streaming import Ended, drive
from gateway.outcome import Outcome

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_NAMES = {
    a.MessageStart: b"message_start",
    a.ContentBlockStart: b"content_block_start",
    a.Ping: b"ping",
    a.ContentBlockDelta: b"content_block_delta",
    a.ContentBlockStop: b"content_block_stop",
    a.MessageDelta: b"message_delta",
    a.MessageStop: b"message_stop",
}


def event(payload: Struct) -> bytes:
    return b"event: " + _NAMES[type(payload)] + b"\ndata: " + _encode(payload) + b"\n\n"


def stop_reason(finish: str | None) -> a.StopReason | None:
    """OpenAI's finish reason as Anthropic's stop reason."""
    if finish is None:
        return None
    return "max_tokens" if finish == "length" else "end_turn"


def wire_usage(usage: p.Usage) -> a.Usage:
    """OpenAI's usage as Anthropic's: cache reads and writes are parts of OpenAI's
    ``prompt_tokens`` and apart from Anthropic's ``input_tokens``."""
    details = usage.prompt_tokens_details
    read = details.cached_tokens if details is not None else 0
    written = details.cache_write_tokens if details is not None else 0
    return a.Usage(
        cache_creation_input_tokens=written or None,
        cache_read_input_tokens=read or None,
        input_tokens=max(0, usage.prompt_tokens - read - written),
        output_tokens=usage.completion_tokens,
        cost=usage.cost,
        energy_joules=usage.energy_joules,
    )


async def events(
    chunks: AsyncIterator[Chunk],
    outcome: Outcome,
    start: a.Message,
    finalize: Callable[[Outcome], p.Usage],
) -> AsyncIterator[bytes]:
    """Encode a backend stream as Anthropic's events (:func:`gateway.flow.streaming.drive`
    runs it); ``start`` is the empty message of ``message_start``."""
    items = drive(chunks, outcome, finalize)
    try:
        yield event(a.MessageStart(message=start))
        yield event(a.ContentBlockStart(index=0, content_block=a.TextBlock()))
        yield event(a.Ping())
        async for item in items:
            if isinstance(item, Ended):
                if outcome.error is not None:
                    yield error_event(outcome.error)
                    return
                yield event(a.ContentBlockStop(index=0))
                body = a.MessageDeltaBody(stop_reason=stop_reason(outcome.finish_reason))
                yield event(a.MessageDelta(delta=body, usage=wire_usage(item.usage)))
                yield event(a.MessageStop())
                return
            if item.text:
                yield event(a.ContentBlockDelta(index=0, delta=a.TextDelta(text=item.text)))
    finally:
        await items.aclose()
