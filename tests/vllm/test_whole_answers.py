"""A request the client takes whole (non-streaming): the upstream still streams (its usage,
first token and cancellation stay exact), but what one read brings is handed over as one
chunk whose ``pieces`` count its tokens, instead of a chunk a token through every layer
of the flow. Text, calls, usage and the tokens counted are what a token-by-token stream
gives."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from gateway.backend import Chunk, GenerationRequest
from gateway.errors import BackendError
from gateway.flow.streaming import collect as absorb_all
from gateway.outcome import Outcome
from tests.vllm.fake_upstream import FakeVllm
from tests.vllm.kit import RawServer, collect, request


def whole(operation: str = "chat") -> GenerationRequest:
    return msgspec.structs.replace(request(operation), whole=True)


def sse(*payloads: dict[str, Any], done: bool = True) -> bytes:
    """A reply whose events all come in one write (so in one read)."""
    body = b"".join(b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads)
    body += b"data: [DONE]\n\n" if done else b""
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: %d\r\n\r\n"
    return head % len(body) + body


def word(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


END = {
    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 4},
}


@pytest.mark.asyncio
async def test_what_one_read_brings_is_one_chunk(make: Any) -> None:
    reply = sse(word("One"), word(" two"), word(" three"), word(" four"), END)
    raw = RawServer([reply])
    async with raw as url:
        backend = await make(url=url)
        chunks = await collect(backend.stream(whole()))
        streamed = await collect(backend.stream(request()))
    assert [(c.text, c.pieces) for c in chunks[:-1]] == [("One two three four", 4)]
    assert [c.text for c in streamed[:-1]] == ["One", " two", " three", " four"]
    assert all(c.pieces == 1 for c in streamed)
    for last in (chunks[-1], streamed[-1]):
        assert last.finish_reason == "stop"
        assert last.usage is not None
        assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (5, 4)
        assert last.usage.time_to_first_token_s is not None


@pytest.mark.asyncio
async def test_chunks_and_counts_equal_a_token_by_token_stream(fake: FakeVllm, make: Any) -> None:
    """Against a server that writes each event apart: the same text, the upstream still
    asked to stream with its usage, every token counted once."""
    backend = await make(url=fake.url)
    fake.words = ["a", "b", "c", "d", "e"]
    chunks = await collect(backend.stream(whole()))
    assert fake.requests[-1]["stream"] is True
    assert fake.requests[-1]["stream_options"] == {"include_usage": True}
    assert "".join(c.text for c in chunks) == "abcde"
    assert sum(c.pieces for c in chunks[:-1]) == 5
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


@pytest.mark.asyncio
async def test_tool_call_pieces_come_in_order_and_are_counted(make: Any) -> None:
    def call(index: int, **piece: Any) -> dict[str, Any]:
        delta = {"tool_calls": [{"index": index, **piece}]}
        return {"choices": [{"index": 0, "delta": delta}]}

    reply = sse(
        word("Let me look."),
        call(0, id="call-0", type="function", function={"name": "weather", "arguments": ""}),
        call(0, function={"arguments": '{"city": '}),
        call(0, function={"arguments": '"Paris"}'}),
        {**END, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    )
    raw = RawServer([reply])
    async with raw as url:
        backend = await make(url=url)
        chunks = await collect(backend.stream(whole()))
    (batch, last) = chunks
    assert batch.text == "Let me look."
    assert batch.pieces == 4
    assert [(p.index, p.id, p.name, p.arguments) for p in batch.tool_calls] == [
        (0, "call-0", "weather", ""),
        (0, None, None, '{"city": '),
        (0, None, None, '"Paris"}'),
    ]
    assert last.finish_reason == "tool_calls"  # an answer with calls, as vLLM ends it


@pytest.mark.asyncio
async def test_tokens_before_an_error_event_are_handed_over_first(make: Any) -> None:
    error = {"error": {"message": "engine died", "code": 500}}
    raw = RawServer([sse(word("Half"), word(" an"), error, done=False)])
    async with raw as url:
        backend = await make(url=url)
        got: list[Chunk] = []

        async def read_all() -> None:
            async for chunk in backend.stream(whole()):
                got.append(chunk)

        with pytest.raises(BackendError, match="engine died"):
            await read_all()
    assert [(c.text, c.pieces) for c in got] == [("Half an", 2)]
    assert backend.upstreams[0].in_flight == 0


@pytest.mark.asyncio
async def test_the_flow_counts_pieces_as_output() -> None:
    """A request that ends without the backend's usage is recorded with the tokens its
    chunks carried, many to a chunk or one each."""

    async def chunks() -> Any:
        yield Chunk(text="abc", pieces=3)
        yield Chunk(text="d")
        yield Chunk(finish_reason="stop")

    outcome = await absorb_all(chunks(), Outcome())
    assert outcome.chunks == 4
    assert "".join(outcome.text_parts) == "abcd"
