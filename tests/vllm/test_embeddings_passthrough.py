"""Embeddings on ``openai-compatible`` and ``vllm`` (mode server) backends: a pass-through
to the upstream's ``/v1/embeddings`` (the fake upstream), declared by ``operations``,
inputs as sent, vectors back in input order, errors mapped as a generation's are."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from freshet_vllm import OpenAICompatibleBackend, VllmServerBackend

from gateway.backend import (
    Backend,
    BackendConfig,
    Embedder,
    EmbeddingRequest,
    GenerationRequest,
    Message,
)
from gateway.errors import BackendError, InvalidRequest, RateLimited
from tests.vllm.fake_upstream import FakeVllm

pytestmark = pytest.mark.asyncio


class NoFleet:
    def get(self, backend_id: str) -> Backend:
        raise KeyError(backend_id)


def texts(*inputs: str, **kw: Any) -> EmbeddingRequest:
    return EmbeddingRequest(request_id="req_e", model="m", texts=inputs, **kw)


@pytest.fixture
def make(fake: FakeVllm, started: Callable[[Any], Awaitable[Any]]) -> Callable[..., Any]:
    async def build(type_: str = "openai-compatible", **params: Any) -> Any:
        cls = OpenAICompatibleBackend if type_ == "openai-compatible" else VllmServerBackend
        params = {"url": fake.url, **params} if type_ == "openai-compatible" else params
        if type_ == "vllm":
            params = {"urls": [fake.url], **params}
        config = BackendConfig(id="api", type=type_, model="m", params=params, index=0)
        return await started(cls(config, NoFleet()))

    return build


async def test_declared_by_operations(make: Callable[..., Any]) -> None:
    plain = await make()
    assert "embeddings" not in plain.deployments[0].operations
    both = await make(operations=["chat", "embeddings"])
    assert both.deployments[0].operations == frozenset({"chat", "embeddings"})
    assert isinstance(both, Embedder)


async def test_texts_pass_through(make: Callable[..., Any], fake: FakeVllm) -> None:
    backend = await make(operations=["embeddings"], served_model="served")
    result = await backend.embed(texts("one two three", "four", user="u1"))
    sent = fake.embedding_requests[-1]
    assert sent["model"] == "served"
    assert sent["input"] == ["one two three", "four"]
    assert sent["encoding_format"] == "float"  # the gateway encodes for its own client
    assert sent["user"] == "u1"
    assert "dimensions" not in sent
    assert [list(v) for v in result.vectors] == [[3.0, 0.0, 1.0, 0.5], [1.0, 1.0, 1.0, 0.5]]
    assert result.usage.prompt_tokens == 4
    assert result.usage.completion_tokens == 0
    assert result.usage.duration_s is not None
    assert result.usage.duration_s > 0


async def test_token_arrays_are_sent_as_they_are(make: Callable[..., Any], fake: FakeVllm) -> None:
    backend = await make("vllm", operations=["embeddings"])
    request = EmbeddingRequest(request_id="r", model="m", tokens=[[5, 6, 7], [8]], dimensions=4)
    result = await backend.embed(request)
    assert fake.embedding_requests[-1]["input"] == [[5, 6, 7], [8]]
    assert fake.embedding_requests[-1]["dimensions"] == 4
    assert result.usage.prompt_tokens == 4
    assert len(result.vectors) == 2


@pytest.mark.parametrize("mode", ["base64", "reversed"])
async def test_base64_or_out_of_order_answers(
    make: Callable[..., Any], fake: FakeVllm, mode: str
) -> None:
    backend = await make(operations=["embeddings"])
    fake.embedding_mode = mode
    result = await backend.embed(texts("a b", "c", "d e f"))
    assert [v[0] for v in result.vectors] == [2.0, 1.0, 3.0]  # input order, floats
    assert [v[1] for v in result.vectors] == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("mode", ["short", "garbage"])
async def test_a_broken_answer_is_the_backends_fault(
    make: Callable[..., Any], fake: FakeVllm, mode: str
) -> None:
    backend = await make(operations=["embeddings"])
    fake.embedding_mode = mode
    with pytest.raises(BackendError):
        await backend.embed(texts("a", "b"))


async def test_upstream_errors_are_mapped(make: Callable[..., Any], fake: FakeVllm) -> None:
    backend = await make(operations=["embeddings"])
    with pytest.raises(InvalidRequest) as refused:  # the upstream's 400: the client's fault
        await backend.embed(texts("a", dimensions=2))
    assert "dimensions" in refused.value.message
    fake.mode, fake.status = "status", 429
    with pytest.raises(RateLimited):
        await backend.embed(texts("a"))
    fake.status = 503
    with pytest.raises(BackendError):
        await backend.embed(texts("a"))


async def test_a_pooling_model_does_not_chat(make: Callable[..., Any]) -> None:
    backend = await make("vllm", operations=["embeddings"])
    chat = GenerationRequest(
        request_id="r", operation="chat", model="m", messages=[Message(role="user", content="x")]
    )
    with pytest.raises(InvalidRequest):
        await anext(backend.stream(chat))
