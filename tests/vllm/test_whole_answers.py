"""A request the client takes whole (non-streaming) is asked of an OpenAI-compatible
upstream as one answer (``"stream": false``), read as one chunk; an upstream that streams
anyway is read as a stream; broken answers are the upstream's failure, never the client's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from freshet_vllm import OpenAICompatibleBackend, wire

from gateway.backend import GenerationRequest
from gateway.errors import BackendError, ConfigError
from tests.support.server import Server, running_server
from tests.vllm.fake_upstream import FakeVllm
from tests.vllm.kit import NoFleet, RawServer, collect, config, fake_in_thread, request, sse_reply


def whole(operation: str = "chat") -> GenerationRequest:
    return msgspec.structs.replace(request(operation), whole=True)


def json_reply(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n"
        % (len(body), extra)
    ) + body


@pytest.mark.asyncio
async def test_one_answer_asked_and_given_as_one_chunk(fake: FakeVllm, make: Any) -> None:
    backend = await make(url=fake.url)
    fake.stop_reason = "!"
    chunks = await collect(backend.stream(whole()))
    sent = fake.requests[-1]
    assert sent["stream"] is False
    assert "stream_options" not in sent
    assert len(chunks) == 1
    (chunk,) = chunks
    assert (chunk.text, chunk.finish_reason, chunk.stop_sequence) == ("Hello there!", "stop", "!")
    assert chunk.usage is not None
    assert (chunk.usage.prompt_tokens, chunk.usage.completion_tokens) == (7, 3)
    assert chunk.usage.time_to_first_token_s is None  # no first token was seen
    assert chunk.usage.duration_s is not None
    assert chunk.usage.duration_s > 0
    text = await collect(backend.stream(whole("text_completion")))
    assert fake.requests[-1]["stream"] is False
    assert [c.text for c in text] == ["Hello there!"]
    # A streaming request still streams, with its usage asked for.
    streamed = await collect(backend.stream(request()))
    assert fake.requests[-1]["stream"] is True
    assert fake.requests[-1]["stream_options"] == {"include_usage": True}
    assert len(streamed) == 4
    assert streamed[-1].usage is not None
    assert streamed[-1].usage.time_to_first_token_s is not None


@pytest.mark.asyncio
async def test_tool_calls_come_whole_in_their_order(fake: FakeVllm, make: Any) -> None:
    backend = await make(url=fake.url)
    fake.words = []
    fake.tool_calls = [("get_weather", ['{"city":', ' "Paris"}']), ("get_time", ["{}"])]
    fake.tool_finish = "stop"  # a call forced by name ends with "stop" in vLLM
    (chunk,) = await collect(backend.stream(whole()))
    assert chunk.text == ""
    assert chunk.finish_reason == "tool_calls"
    assert [(c.index, c.id, c.name, c.arguments) for c in chunk.tool_calls] == [
        (0, "chatcmpl-tool-0", "get_weather", '{"city": "Paris"}'),
        (1, "chatcmpl-tool-1", "get_time", "{}"),
    ]


@pytest.mark.asyncio
async def test_an_upstream_that_streams_anyway_is_read_as_a_stream(
    fake: FakeVllm, make: Any
) -> None:
    backend = await make(url=fake.url)
    fake.always_stream = True
    chunks = await collect(backend.stream(whole()))
    assert fake.requests[-1]["stream"] is False
    assert "".join(c.text for c in chunks) == "Hello there!"
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    assert chunks[-1].usage.time_to_first_token_s is not None


@pytest.mark.asyncio
async def test_an_answer_cut_halfway_is_a_backend_error(fake: FakeVllm, make: Any) -> None:
    backend = await make(url=fake.url)
    fake.mode = "drop"
    with pytest.raises(BackendError, match="failed mid-stream"):
        await collect(backend.stream(whole()))
    assert backend.upstreams[0].in_flight == 0
    fake.mode = "ok"
    (chunk,) = await collect(backend.stream(whole()))
    assert chunk.text == "Hello there!"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b'{"choices": [{"message": {"content": "Hi"', "malformed answer"),
        (b'{"error": {"message": "engine dead"}}', "engine dead"),
        (b'{"object": "error", "message": "overloaded"}', "overloaded"),
        (b'{"choices": []}', "without a choice"),
        (b'{"choices": [{"message": {"content": "Hi"}}]}', "without finishing"),
        (b'{"choices": [{"message": {"content": 7}, "finish_reason": "stop"}]}', "malformed"),
        (b"", "without finishing"),
    ],
)
@pytest.mark.asyncio
async def test_broken_answers_are_the_upstreams_failure(make: Any, body: bytes, match: str) -> None:
    raw = RawServer([json_reply(body)])
    async with raw as url:
        backend = await make(url=url)
        with pytest.raises(BackendError, match=match):
            await collect(backend.stream(whole()))
        assert backend.upstreams[0].in_flight == 0


@pytest.mark.asyncio
async def test_a_whole_answer_may_take_longer_than_a_streams_silence(make: Any) -> None:
    """A whole answer comes only once all of it is generated: it waits answer_timeout_s,
    not request_timeout_s (a stream's longest silence); past that, the upstream failed."""
    answer = b'{"choices": [{"message": {"content": "Hi"}, "finish_reason": "stop"}]}'
    raw = RawServer([(0.6, json_reply(answer)), (0.6, sse_reply()), "hang"])
    async with raw as url:
        backend = await make(url=url, request_timeout_s=0.3, answer_timeout_s=3.0)
        (chunk,) = await collect(backend.stream(whole()))
        assert chunk.text == "Hi"
        with pytest.raises(BackendError, match="TimeoutError"):
            await collect(backend.stream(request()))  # a stream 0.6 s silent: too long
        started = time.monotonic()
        with pytest.raises(BackendError, match="no data from upstream for 3 s"):
            await collect(backend.stream(whole()))
        assert time.monotonic() - started >= 2.9
        assert backend.upstreams[0].in_flight == 0


def test_answer_timeout_is_a_positive_setting() -> None:
    backend = OpenAICompatibleBackend(config(url="http://a"), NoFleet())
    assert (backend.params.answer_timeout_s, backend.params.request_timeout_s) == (600.0, 120.0)
    assert backend.params.timeout_s(whole()) == 600.0
    assert backend.params.timeout_s(request()) == 120.0
    with pytest.raises(ConfigError):
        OpenAICompatibleBackend(config(url="http://a", answer_timeout_s=0), NoFleet())


@pytest.mark.asyncio
async def test_whole_answers_keep_the_connection_alive(make: Any) -> None:
    answer = {
        "choices": [{"message": {"content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1},
    }
    raw = RawServer([json_reply(b"\n " + json.dumps(answer).encode())])
    async with raw as url:
        backend = await make(url=url)
        for _ in range(3):
            (chunk,) = await collect(backend.stream(whole()))
            assert chunk.text == "Hi"
            assert chunk.usage is not None
            assert chunk.usage.completion_tokens == 1
    assert (raw.connections, raw.requests) == (1, 3)


@pytest.mark.asyncio
async def test_an_answer_without_usage_counts_one_piece(make: Any) -> None:
    answer = b'{"choices": [{"text": "Hi there", "finish_reason": "length"}]}'
    raw = RawServer([json_reply(answer)])
    async with raw as url:
        backend = await make(url=url)
        (chunk,) = await collect(backend.stream(whole("text_completion")))
    assert (chunk.text, chunk.finish_reason) == ("Hi there", "length")
    assert chunk.usage is not None
    assert (chunk.usage.prompt_tokens, chunk.usage.completion_tokens) == (0, 1)


def test_whole_body_and_answer_detection() -> None:
    body = wire.request_body(whole(), "served")
    assert (body["model"], body["stream"]) == ("served", False)
    assert "stream_options" not in body
    assert wire.is_answer(b'{"choices": []}')
    assert wire.is_answer(b'\r\n\t {"choices": []}')
    assert not wire.is_answer(b'data: {"choices": []}\n\n')
    assert not wire.is_answer(b": keep-alive\n\n")
    assert not wire.is_answer(b"")


def test_through_the_gateway_a_cut_answer_falls_back_and_teaches_no_ttft(tmp_path: Path) -> None:
    """Non-streaming requests through ``freshet serve``: asked whole of the upstream; one
    cut halfway falls back to the next backend unnoticed; whole answers teach the quotes
    their duration, not a time to first token (which only streams show)."""
    import openai

    with fake_in_thread(2) as (cheap, dear):
        cfg = {
            "backends": [
                {
                    "id": name,
                    "type": "openai-compatible",
                    "knowledge_cutoff": "unknown",
                    "model": "m",
                    "url": fake.url,
                    "list_price": {"input_per_mtok": price, "output_per_mtok": price},
                }
                for name, fake, price in (("cheap", cheap, 1.0), ("dear", dear, 5.0))
            ],
            "groups": {"chat": ["cheap", "dear"]},
        }
        with (
            running_server(tmp_path, cfg) as server,
            openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client,
        ):
            ask = [{"role": "user", "content": "hi"}]
            for _ in range(3):
                raw = client.chat.completions.with_raw_response.create(model="chat", messages=ask)
                assert raw.headers["x-freshet-backend"] == "cheap"
                assert raw.parse().choices[0].message.content == "Hello there!"
            assert [r["stream"] for r in cheap.requests] == [False] * 3
            quotes = backend_quotes(server, "cheap")
            assert quotes["observed"] == 3
            assert quotes["ttft_error_p50"] is None
            assert quotes["duration_error_p50"] is not None
            streamed = client.chat.completions.create(model="chat", messages=ask, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
            assert backend_quotes(server, "cheap")["ttft_error_p50"] is not None

            cheap.mode = "drop"
            raw = client.chat.completions.with_raw_response.create(model="chat", messages=ask)
            assert raw.headers["x-freshet-backend"] == "dear"
            assert raw.parse().choices[0].message.content == "Hello there!"
            assert dear.requests[-1]["stream"] is False


def backend_quotes(server: Server, backend_id: str) -> dict[str, Any]:
    status, body = server.get("/freshet/backends")
    assert status == 200
    view = next(v for v in json.loads(body) if v["id"] == backend_id)
    quotes: dict[str, Any] = view["quotes"]
    return quotes
