"""A backend stream as Anthropic's server-sent events.

Order, as Anthropic sends it: ``message_start``, ``content_block_start`` (``ping`` after
the first), ``content_block_delta`` for each piece (``text_delta`` in a text block,
``input_json_delta`` in a ``tool_use`` block), ``content_block_stop`` before the next block
starts, ``message_delta`` (``stop_reason``, ``usage`` with Freshet's cost and joules),
``message_stop``. A block opens when its first piece comes (a text block, empty, when the
answer has nothing at all). A failure after the first event is an ``error`` event, and the stream
ends there (Anthropic has no ``[DONE]``). Metering and the usage record are the flow's:
``finalize`` runs exactly once, when the backend is done or the client leaves.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

import msgspec
from msgspec import Struct

from gateway import protocol as p
from gateway.api.anthropic import protocol as a
from gateway.api.anthropic.errors import error_event
from gateway.backend import FINISH_TOOL_CALLS, Chunk, ToolCallDelta
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


def stop_reason(finish: str | None, stop_sequence: str | None = None) -> a.StopReason | None:
    """OpenAI's finish reason as Anthropic's stop reason; ``stop_sequence``: the stop string
    that ended the text, when the backend said which."""
    if finish is None:
        return None
    if stop_sequence is not None:
        return "stop_sequence"
    if finish == FINISH_TOOL_CALLS:
        return "tool_use"
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


class _Blocks:
    """The content blocks of one stream: one open at a time, numbered as they open."""

    def __init__(self) -> None:
        self.count = 0
        self.open: tuple[str, int] | None = None  # ("text", -1) or ("tool", its call index)

    def _start(self, kind: str, key: int, block: a.ResponseBlock) -> Iterator[bytes]:
        if self.open is not None:
            yield event(a.ContentBlockStop(index=self.count - 1))
        self.open = (kind, key)
        self.count += 1
        yield event(a.ContentBlockStart(index=self.count - 1, content_block=block))
        if self.count == 1:
            yield event(a.Ping())

    def text(self, text: str) -> Iterator[bytes]:
        if self.open != ("text", -1):
            yield from self._start("text", -1, a.TextBlock())
        yield event(a.ContentBlockDelta(index=self.count - 1, delta=a.TextDelta(text=text)))

    def tool_calls(self, parts: Sequence[ToolCallDelta]) -> Iterator[bytes]:
        for part in parts:
            if self.open != ("tool", part.index):
                block = a.ToolUseBlock(id=part.id or "", name=part.name or "", input={})
                yield from self._start("tool", part.index, block)
            if part.arguments:
                delta = a.InputJsonDelta(partial_json=part.arguments)
                yield event(a.ContentBlockDelta(index=self.count - 1, delta=delta))

    def close(self) -> Iterator[bytes]:
        if self.open is None:
            yield from self._start("text", -1, a.TextBlock())
        yield event(a.ContentBlockStop(index=self.count - 1))


async def events(
    chunks: AsyncIterator[Chunk],
    outcome: Outcome,
    start: a.Message,
    finalize: Callable[[Outcome], p.Usage],
    first: Chunk | None = None,
) -> AsyncIterator[bytes]:
    """Encode a backend stream as Anthropic's events (:func:`gateway.flow.streaming.drive`
    runs it, from ``first``, the chunk that opened it); ``start`` is the empty message of
    ``message_start``."""
    items = drive(chunks, outcome, finalize, first)
    blocks = _Blocks()
    try:
        yield event(a.MessageStart(message=start))
        async for item in items:
            if isinstance(item, Ended):
                if outcome.error is not None:
                    yield error_event(outcome.error)
                    return
                for frame in blocks.close():
                    yield frame
                body = a.MessageDeltaBody(
                    stop_reason=stop_reason(outcome.finish_reason, outcome.stop_sequence),
                    stop_sequence=outcome.stop_sequence,
                )
                yield event(a.MessageDelta(delta=body, usage=wire_usage(item.usage)))
                yield event(a.MessageStop())
                return
            if item.text:
                for frame in blocks.text(item.text):
                    yield frame
            if item.tool_calls:
                for frame in blocks.tool_calls(item.tool_calls):
                    yield frame
    finally:
        await items.aclose()
