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
from gateway.errors import BackendError, FreshetError
from gateway.flow.dispatch import aclose
from gateway.flow.streaming import _absorb as absorb  # the one absorption of a chunk
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
    return a.Usage(
        input_tokens=usage.prompt_tokens,
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
    """Encode a backend stream as Anthropic's events; ``start`` is the empty message of
    ``message_start``. When the client leaves, the server cancels this generator, whose
    ``finally`` closes the backend's stream (which stops the generation)."""
    try:
        yield event(a.MessageStart(message=start))
        yield event(a.ContentBlockStart(index=0, content_block=a.TextBlock()))
        yield event(a.Ping())
        try:
            async for chunk in chunks:
                absorb(chunk, outcome)
                if chunk.text:
                    delta = a.TextDelta(text=chunk.text)
                    yield event(a.ContentBlockDelta(index=0, delta=delta))
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
        usage = finalize(outcome)
        if outcome.error is not None:
            yield error_event(outcome.error)
            return
        yield event(a.ContentBlockStop(index=0))
        body = a.MessageDeltaBody(stop_reason=stop_reason(outcome.finish_reason))
        yield event(a.MessageDelta(delta=body, usage=wire_usage(usage)))
        yield event(a.MessageStop())
    except BaseException:
        # GeneratorExit or cancellation: the client went away mid-stream.
        outcome.client_disconnected = True
        raise
    finally:
        if not outcome.finalized:
            outcome.finalized = True
            finalize(outcome)
