"""Anthropic's event stream over a backend's chunks: the order, the usage, a failure
mid-stream as an ``error`` event, and the one finalize (metering and the record)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from gateway import protocol as p
from gateway.api.anthropic import protocol as a
from gateway.api.anthropic.events import events
from gateway.backend import BackendUsage, Chunk
from gateway.errors import BackendError
from gateway.outcome import Outcome

START = a.Message(id="msg_1", content=[], model="m", usage=a.Usage(input_tokens=3, output_tokens=0))


async def _chunks(fail: bool) -> AsyncIterator[Chunk]:
    yield Chunk(text="Hel", prompt_tokens=3)
    yield Chunk(text="lo")
    if fail:
        raise BackendError("upstream went away")
    yield Chunk(finish_reason="length", usage=BackendUsage(prompt_tokens=3, completion_tokens=2))


def _parse(raw: bytes) -> list[tuple[str, dict[str, object]]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if block:
            name, data = block.split("\n")
            out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


async def _run(fail: bool) -> tuple[list[tuple[str, dict[str, object]]], list[Outcome]]:
    finalized: list[Outcome] = []

    def finalize(outcome: Outcome) -> p.Usage:
        finalized.append(outcome)
        return p.Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5, cost=0.5)

    raw = b"".join([e async for e in events(_chunks(fail), Outcome(), START, finalize)])
    return _parse(raw), finalized


@pytest.mark.asyncio
async def test_the_order_and_the_usage() -> None:
    parsed, finalized = await _run(fail=False)
    names = [name for name, _ in parsed]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in parsed)
    assert parsed[3][1]["delta"] == {"type": "text_delta", "text": "Hel"}
    delta = parsed[6][1]
    assert delta["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert delta["usage"] == {"input_tokens": 3, "output_tokens": 2, "cost": 0.5}
    assert len(finalized) == 1
    assert finalized[0].text == "Hello"


@pytest.mark.asyncio
async def test_a_failure_mid_stream_is_an_error_event_after_the_record() -> None:
    parsed, finalized = await _run(fail=True)
    assert [name for name, _ in parsed][-2:] == ["content_block_delta", "error"]
    assert parsed[-1][1] == {
        "type": "error",
        "error": {"type": "api_error", "message": "upstream went away (backend_error)"},
    }
    assert len(finalized) == 1
    assert finalized[0].error is not None
