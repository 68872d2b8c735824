"""A backend stream as the Responses API's server-sent events.

Order, as OpenAI sends it, each event with the stream's ``sequence_number``:
``response.created``, ``response.in_progress``; for the text, the assistant message's
``response.output_item.added`` and ``response.content_part.added`` when its first piece
comes, ``response.output_text.delta`` for each piece; for each function call the model
makes, its ``response.output_item.added`` and ``response.function_call_arguments.delta``
pieces; at the end each item's closing events (``output_text.done``,
``content_part.done``, ``output_item.done``; ``function_call_arguments.done``,
``output_item.done``), then ``response.completed`` (or ``response.incomplete`` when the
output reached ``max_output_tokens``) with the whole response and its usage. A failure
after the first event is ``response.failed`` with the error; the stream ends there (the
Responses API has no ``[DONE]``). Metering and the usage record are the
flow's (:func:`gateway.flow.streaming.drive`); the finished response is stored (when
asked) before its last event, so a client that reads it can ``GET`` it at once.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

import msgspec
from msgspec import Struct

from gateway import protocol as p
from gateway.api.responses import build
from gateway.api.responses import protocol as r
from gateway.backend import Chunk, ToolCallDelta
from gateway.errors import FreshetError
from gateway.flow.streaming import Ended, drive
from gateway.outcome import Outcome

_encode = msgspec.json.Encoder().encode


def _event(name: str, payload: Struct) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encode(payload) + b"\n\n"


def error_event(error: FreshetError, sequence_number: int = 0) -> bytes:
    """``error`` as the stream's ``error`` event (the gateway stopping past its grace)."""
    payload = r.ErrorEvent(
        code=error.code, message=error.message, param=error.param, sequence_number=sequence_number
    )
    return _event("error", payload)


def _frame(payload: Struct) -> bytes:
    tag = type(payload).__struct_config__.tag
    assert isinstance(tag, str)
    return _event(tag, payload)


class _Stream:
    """The output items of one stream as they open (each with its ``output_index``)."""

    def __init__(self, response_id: str) -> None:
        self.response_id = response_id
        self.seq = itertools.count()
        self.opened = 0  # output items so far
        self.message_index: int | None = None
        self.calls: dict[int, tuple[int, str]] = {}  # the backend's index -> output index, id

    def text(self, text: str) -> Iterator[bytes]:
        item_id = build.message_id(self.response_id)
        if self.message_index is None:
            yield from self._open_message(item_id)
        assert self.message_index is not None
        yield _frame(
            r.TextDelta(
                content_index=0,
                delta=text,
                item_id=item_id,
                logprobs=[],
                output_index=self.message_index,
                sequence_number=next(self.seq),
            )
        )

    def _open_message(self, item_id: str) -> Iterator[bytes]:
        index = self.message_index = self.opened
        self.opened += 1
        message = r.OutputMessage(id=item_id, content=[], status="in_progress")
        yield _frame(
            r.OutputItemAdded(item=message, output_index=index, sequence_number=next(self.seq))
        )
        yield _frame(
            r.ContentPartAdded(
                content_index=0,
                item_id=item_id,
                output_index=index,
                part=r.OutputText(),
                sequence_number=next(self.seq),
            )
        )

    def tool_calls(self, parts: Sequence[ToolCallDelta]) -> Iterator[bytes]:
        for part in parts:
            if part.index not in self.calls:
                item_id = build.call_item_id(self.response_id, len(self.calls))
                index = self.opened
                self.opened += 1
                self.calls[part.index] = (index, item_id)
                call = r.FunctionCall(
                    id=item_id,
                    arguments="",
                    call_id=part.id or "",
                    name=part.name or "",
                    status="in_progress",
                )
                yield _frame(
                    r.OutputItemAdded(item=call, output_index=index, sequence_number=next(self.seq))
                )
            index, item_id = self.calls[part.index]
            if part.arguments:
                yield _frame(
                    r.ArgumentsDelta(
                        delta=part.arguments,
                        item_id=item_id,
                        output_index=index,
                        sequence_number=next(self.seq),
                    )
                )

    def close(self, outcome: Outcome) -> tuple[list[bytes], list[r.OutputItem]]:
        """Each item's closing events, and the output in ``output_index`` order (an empty
        message when the model said nothing and called nothing)."""
        frames: list[bytes] = []
        made = build.calls(self.response_id, outcome)
        if self.message_index is None and not made:
            frames.extend(self._open_message(build.message_id(self.response_id)))
        items: list[tuple[int, r.OutputItem]] = []
        if self.message_index is not None:
            message = build.message(self.response_id, outcome)
            frames.extend(self._close_message(message, self.message_index))
            items.append((self.message_index, message))
        for (index, _), call in zip(sorted(self.calls.values()), made, strict=False):
            frames.append(
                _frame(
                    r.ArgumentsDone(
                        arguments=call.arguments,
                        item_id=call.id,
                        output_index=index,
                        sequence_number=next(self.seq),
                    )
                )
            )
            frames.append(
                _frame(
                    r.OutputItemDone(item=call, output_index=index, sequence_number=next(self.seq))
                )
            )
            items.append((index, call))
        return frames, [item for _, item in sorted(items, key=lambda pair: pair[0])]

    def _close_message(self, message: r.OutputMessage, index: int) -> list[bytes]:
        part = message.content[0]
        return [
            _frame(
                r.TextDone(
                    content_index=0,
                    item_id=message.id,
                    logprobs=[],
                    output_index=index,
                    sequence_number=next(self.seq),
                    text=part.text,
                )
            ),
            _frame(
                r.ContentPartDone(
                    content_index=0,
                    item_id=message.id,
                    output_index=index,
                    part=part,
                    sequence_number=next(self.seq),
                )
            ),
            _frame(
                r.OutputItemDone(item=message, output_index=index, sequence_number=next(self.seq))
            ),
        ]


async def events(
    chunks: AsyncIterator[Chunk],
    outcome: Outcome,
    base: r.Response,
    finalize: Callable[[Outcome], p.Usage],
    save: Callable[[r.Response], Awaitable[None]],
    first: Chunk | None = None,
) -> AsyncIterator[bytes]:
    """Encode a backend stream as the Responses API's events (from ``first``, the chunk
    that opened it); ``base`` is the response as it starts
    (:func:`gateway.api.responses.build.start`), ``save`` stores the finished one (and
    logs rather than raises when it cannot: the client has its answer either way)."""
    out = _Stream(base.id)
    items = drive(chunks, outcome, finalize, first)
    try:
        yield _frame(r.Created(response=base, sequence_number=next(out.seq)))
        yield _frame(r.InProgress(response=base, sequence_number=next(out.seq)))
        async for item in items:
            if isinstance(item, Ended):
                if outcome.error is not None:
                    final = build.finish(base, outcome, item.usage, build.output(base.id, outcome))
                    await save(final)
                    yield _frame(r.Failed(response=final, sequence_number=next(out.seq)))
                    return
                frames, output = out.close(outcome)
                for frame in frames:
                    yield frame
                final = build.finish(base, outcome, item.usage, output)
                await save(final)
                if final.status == "incomplete":
                    yield _frame(r.Incomplete(response=final, sequence_number=next(out.seq)))
                else:
                    yield _frame(r.Completed(response=final, sequence_number=next(out.seq)))
                return
            if item.text:
                for frame in out.text(item.text):
                    yield frame
            if item.tool_calls:
                for frame in out.tool_calls(item.tool_calls):
                    yield frame
    finally:
        await items.aclose()
