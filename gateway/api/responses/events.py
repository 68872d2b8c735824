"""A backend stream as the Responses API's server-sent events.

Order, as OpenAI sends it, each event with the stream's ``sequence_number``:
``response.created``, ``response.in_progress``, ``response.output_item.added`` (the
assistant message), ``response.content_part.added``, ``response.output_text.delta`` for
each piece of text, ``response.output_text.done``, ``response.content_part.done``,
``response.output_item.done``, then ``response.completed`` (or ``response.incomplete``
when the output reached ``max_output_tokens``) with the whole response and its usage. A
failure after the first event is ``response.failed`` with the error; the stream ends
there (the Responses API has no ``[DONE]``). Metering and the usage record are the
flow's (:func:`gateway.flow.streaming.drive`); the finished response is stored (when
asked) before its last event, so a client that reads it can ``GET`` it at once.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import msgspec
from msgspec import Struct

from gateway import protocol as p
from gateway.api.responses import build
from gateway.api.responses import protocol as r
from gateway.backend import Chunk
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


async def events(
    chunks: AsyncIterator[Chunk],
    outcome: Outcome,
    base: r.Response,
    finalize: Callable[[Outcome], p.Usage],
    save: Callable[[r.Response], Awaitable[None]],
) -> AsyncIterator[bytes]:
    """Encode a backend stream as the Responses API's events; ``base`` is the response as
    it starts (:func:`gateway.api.responses.build.start`), ``save`` stores the finished one
    (and logs rather than raises when it cannot: the client has its answer either way)."""
    seq = itertools.count()
    items = drive(chunks, outcome, finalize)
    item_id = build.message_id(base.id)
    message = r.OutputMessage(id=item_id, content=[], status="in_progress")
    try:
        yield _frame(r.Created(response=base, sequence_number=next(seq)))
        yield _frame(r.InProgress(response=base, sequence_number=next(seq)))
        yield _frame(r.OutputItemAdded(item=message, output_index=0, sequence_number=next(seq)))
        yield _frame(
            r.ContentPartAdded(
                content_index=0,
                item_id=item_id,
                output_index=0,
                part=r.OutputText(),
                sequence_number=next(seq),
            )
        )
        async for item in items:
            if isinstance(item, Ended):
                output = build.output(base.id, outcome)
                final = build.finish(base, outcome, item.usage, output)
                if outcome.error is not None:
                    await save(final)
                    yield _frame(r.Failed(response=final, sequence_number=next(seq)))
                    return
                for frame in _closing(seq, item_id, output[0]):
                    yield frame
                await save(final)
                if final.status == "incomplete":
                    yield _frame(r.Incomplete(response=final, sequence_number=next(seq)))
                else:
                    yield _frame(r.Completed(response=final, sequence_number=next(seq)))
                return
            if item.text:
                yield _frame(
                    r.TextDelta(
                        content_index=0,
                        delta=item.text,
                        item_id=item_id,
                        logprobs=[],
                        output_index=0,
                        sequence_number=next(seq),
                    )
                )
    finally:
        await items.aclose()


def _closing(seq: Iterator[int], item_id: str, message: r.OutputItem) -> list[bytes]:
    """``output_text.done``, ``content_part.done`` and ``output_item.done`` of the message."""
    assert isinstance(message, r.OutputMessage)
    part = message.content[0]
    return [
        _frame(
            r.TextDone(
                content_index=0,
                item_id=item_id,
                logprobs=[],
                output_index=0,
                sequence_number=next(seq),
                text=part.text,
            )
        ),
        _frame(
            r.ContentPartDone(
                content_index=0,
                item_id=item_id,
                output_index=0,
                part=part,
                sequence_number=next(seq),
            )
        ),
        _frame(r.OutputItemDone(item=message, output_index=0, sequence_number=next(seq))),
    ]
