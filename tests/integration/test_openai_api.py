"""The real gateway (embedded default: SmolLM2 on llama.cpp) driven by the `openai` client."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.support.server import Server

PROMPT = [{"role": "user", "content": "Write a long story about a river and a mountain."}]


@pytest.fixture(scope="module")
def client(default_gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=default_gateway.url + "/v1", api_key="unused", max_retries=0)


def test_chat_non_streaming(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        seed=3,
    )
    completion = raw.parse()
    assert raw.headers["x-freshet-backend"] == "cpu"
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-freshet-knowledge-cutoff"] == "2024-06-01"
    assert completion.object == "chat.completion"
    assert completion.model == "smollm2-135m"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.message.content.strip()
    assert choice.finish_reason in {"stop", "length"}
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 5
    assert 0 < usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_chat_streaming_order_and_usage_match_non_streaming(client: openai.OpenAI) -> None:
    args = {"model": "auto", "messages": PROMPT, "max_tokens": 20, "seed": 11, "temperature": 0.0}
    plain = client.chat.completions.create(**args)  # type: ignore[call-overload]
    chunks = list(
        client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True})  # type: ignore[call-overload]
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) >= 5  # streamed token by token, not in one piece
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert finish[0].choices[0].finish_reason == plain.choices[0].finish_reason
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == plain.choices[0].message.content  # greedy decoding, same process


def test_stream_without_usage_option_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model="auto", messages=PROMPT, max_tokens=5, stream=True)
    )
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stop_sequence_is_honoured(client: openai.OpenAI) -> None:
    out = client.completions.create(
        model="smollm2-135m", prompt="1, 2, 3, 4, 5,", max_tokens=30, temperature=0.0, stop=["8"]
    )
    assert "8" not in out.choices[0].text
    assert out.choices[0].finish_reason == "stop"


def test_legacy_completions(client: openai.OpenAI) -> None:
    out = client.completions.create(model="smollm2-135m", prompt="Once upon a time", max_tokens=8)
    assert out.object == "text_completion"
    assert out.choices[0].text
    assert out.usage is not None
    assert out.usage.completion_tokens == 8
    assert out.choices[0].finish_reason == "length"
    stream = list(
        client.completions.create(
            model="smollm2-135m",
            prompt="Once upon a time",
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert stream[-1].usage is not None
    assert stream[-1].usage.completion_tokens == 6
    assert "".join(c.choices[0].text for c in stream if c.choices)


def test_models_lists_models_and_groups_with_cutoffs(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert {"smollm2-135m", "auto"} <= set(models)
    extra = models["smollm2-135m"].model_extra or {}
    assert extra["knowledge_cutoff"] == "2024-06-01"
    assert extra["backends"] == ["cpu"]
    assert (models["auto"].model_extra or {})["kind"] == "group"


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-99", messages=PROMPT)
    assert info.value.code == "model_not_found"
    assert info.value.response.headers["x-request-id"]


def test_context_length_exceeded(client: openai.OpenAI) -> None:
    long = "river " * 9000
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="smollm2-135m", messages=[{"role": "user", "content": long}]
        )
    assert info.value.code == "context_length_exceeded"
    assert "8192" in info.value.message


def _post(server: Server, body: bytes, path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(
        server.url + path, content=body, headers={"content-type": "application/json"}, timeout=30
    )


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        (b'{"model": "auto", "messages": [', None, "not valid JSON"),
        (b'{"model": "auto", ', None, "not valid JSON"),
        (b'{"model": "auto"}', "messages", "missing required field"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model", "missing required field"),
        (
            b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": 7}',
            "temperature",
            "<= 2.0",
        ),
        (
            b'{"model": "auto", "messages": [{"role": "wizard", "content": "hi"}]}',
            "messages[0].role",
            "Invalid enum value",
        ),
        (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "n": 3}', "n", "n=1"),
        (b'{"model": "auto", "messages": []}', "messages", "length >= 1"),
        (b"[1, 2]", None, "Expected `object`"),
    ],
)
def test_client_mistakes_are_openai_400s(
    default_gateway: Server, body: bytes, param: str | None, fragment: str
) -> None:
    resp = _post(default_gateway, body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in error["message"]


def test_unknown_fields_are_ignored(default_gateway: Server) -> None:
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
        "some_future_field": {"x": 1},
        "service_tier": "auto",
    }
    resp = _post(default_gateway, json.dumps(body).encode())
    assert resp.status_code == 200, resp.text


def test_body_over_limit_is_413(default_gateway: Server) -> None:
    big = json.dumps(
        {"model": "auto", "messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]}
    ).encode()
    resp = _post(default_gateway, big)
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "request_too_large"


def test_unknown_route_and_method_are_openai_shaped(default_gateway: Server) -> None:
    resp = httpx.get(default_gateway.url + "/v1/nothing-here")
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "invalid_request_error"
    resp = httpx.get(default_gateway.url + "/v1/chat/completions")
    assert resp.status_code == 405
    assert "error" in resp.json()


def test_health_ready_and_openapi(default_gateway: Server) -> None:
    assert default_gateway.get("/health") == (200, b'{"status":"ok"}')
    status, body = default_gateway.get("/ready")
    assert status == 200
    assert json.loads(body)["ready"] is True
    status, body = default_gateway.get("/schema/openapi.json")
    assert status == 200
    schema = json.loads(body)
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/ready"):
        assert path in schema["paths"], path
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    assert {"200", "400", "404", "413"} <= set(chat["responses"])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/health"),
        ("GET", "/v1/models"),
        ("GET", "/nope"),
        ("GET", "/v1/chat/completions"),
        ("POST", "/v1/chat/completions"),
    ],
)
def test_every_response_has_a_request_id(default_gateway: Server, method: str, path: str) -> None:
    resp = httpx.request(method, default_gateway.url + path, content=b"{")
    assert resp.headers["x-request-id"].startswith("req_")
