"""Anthropic's Messages API on the real gateway, driven by the real `anthropic` SDK: the
embedded default (SmolLM2 on llama.cpp) for messages, streams, count_tokens, freshness
and the usage record; a deterministic fleet with a key for auth by ``x-api-key``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import Message, RawMessageStreamEvent, ToolUseBlock
from pydantic import TypeAdapter

from gateway.state.keys import new_key
from gateway.state.keys_sqlite import SQLiteKeyStore
from tests.support.server import Server, running_server, usage_record

MODEL = "smollm2-135m"
SLOW: list[str] = []  # the secret of the keyed gateway's key allowed one request a minute
ASK = [{"role": "user", "content": "Write a long story about a river and a mountain."}]


@pytest.fixture(scope="module")
def client(default_gateway: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=default_gateway.url, api_key="unused", max_retries=0)


def test_message_non_streaming(client: anthropic.Anthropic, default_gateway: Server) -> None:
    raw = client.messages.with_raw_response.create(
        model=MODEL,
        system="You are terse.",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Name a river."}]}],
        max_tokens=8,
        extra_body={"temperature": 0.0},  # no longer in the SDK's signature; still on the wire
    )
    message = raw.parse()
    assert raw.headers["x-freshet-backend"] == "cpu"
    assert raw.headers["x-freshet-knowledge-cutoff"] == "2024-06-01"
    assert float(raw.headers["x-freshet-cost-usd"]) > 0
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == MODEL
    assert message.id.startswith("msg_")
    assert message.content[0].type == "text"
    assert message.content[0].text.strip()
    assert message.stop_reason in {"end_turn", "max_tokens"}
    assert message.stop_sequence is None
    assert message.usage.input_tokens > 5
    assert 0 < message.usage.output_tokens <= 8
    extra = message.usage.model_extra or {}
    assert extra["cost"] > 0
    assert extra["energy_joules"] > 0
    record = usage_record(default_gateway, raw.headers["x-request-id"])
    assert record["operation"] == "messages"
    assert record["status"] == "ok"
    assert record["prompt_tokens"] == message.usage.input_tokens
    assert record["completion_tokens"] == message.usage.output_tokens


def test_max_tokens_is_the_stop_reason(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=MODEL, messages=ASK, max_tokens=3)  # type: ignore[arg-type]
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3


def test_stream_parses_and_matches(client: anthropic.Anthropic, default_gateway: Server) -> None:
    args: dict[str, Any] = {"model": MODEL, "messages": ASK, "max_tokens": 12}
    args["extra_body"] = {"temperature": 0.0}
    plain = client.messages.create(**args)
    with client.messages.stream(**args) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds.count("text") >= 3  # streamed piece by piece, not in one
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert final.content[0].type == "text"
    assert final.content[0].text == plain.content[0].text
    assert final.stop_reason == plain.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 12
    assert final.usage.input_tokens == plain.usage.input_tokens
    record = usage_record(default_gateway, request_id)
    assert record["operation"] == "messages"
    assert record["stream"]
    assert record["completion_tokens"] == 12


def test_the_wire_events_in_order(default_gateway: Server) -> None:
    body = {"model": MODEL, "messages": ASK, "max_tokens": 4, "stream": True}
    url = default_gateway.url + "/v1/messages"
    with httpx.stream("POST", url, json=body, timeout=120) as resp:
        assert resp.headers["content-type"] == "text/event-stream"
        lines = [line for line in resp.iter_lines() if line.startswith("event: ")]
    names = [line.removeprefix("event: ") for line in lines]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_count_tokens_is_the_backends_exact_count(client: anthropic.Anthropic) -> None:
    plain = client.messages.create(model=MODEL, messages=ASK, max_tokens=1, system="Be brief.")  # type: ignore[arg-type]
    raw = client.messages.with_raw_response.count_tokens(
        model=MODEL,
        messages=ASK,  # type: ignore[arg-type]
        system="Be brief.",
    )
    assert raw.headers["x-freshet-token-count"] == "exact"
    assert raw.headers["x-freshet-backend"] == "cpu"
    assert raw.parse().input_tokens == plain.usage.input_tokens


def test_freshness_extension(client: anthropic.Anthropic) -> None:
    fresh = client.messages.with_raw_response.create(
        model="auto",
        messages=ASK,  # type: ignore[arg-type]
        max_tokens=2,
        extra_body={"freshness": {"min_knowledge_cutoff": "2024-01-01"}},
    )
    assert fresh.headers["x-freshet-knowledge-cutoff"] == "2024-06-01"
    with pytest.raises(anthropic.UnprocessableEntityError) as info:
        client.messages.create(
            model="auto",
            messages=ASK,  # type: ignore[arg-type]
            max_tokens=2,
            extra_headers={"X-Freshet-Min-Knowledge-Cutoff": "2099-01-01"},
        )
    body = info.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "freshness_unsatisfiable" in body["error"]["message"]


def test_errors_in_anthropics_shape(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:  # the SDK's own post, without max_tokens
        client.post("/v1/messages", body={"model": MODEL, "messages": ASK}, cast_to=Message)
    assert isinstance(bad.value.body, dict)
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in bad.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="no-such-model", messages=ASK, max_tokens=2)  # type: ignore[arg-type]
    assert isinstance(missing.value.body, dict)
    assert missing.value.body == {"type": "error", "error": missing.value.body["error"]}
    assert missing.value.body["error"]["type"] == "not_found_error"
    block = {"type": "image", "source": {"type": "url", "url": "http://x"}}
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(
            model=MODEL,
            messages=[{"role": "user", "content": [block]}],  # type: ignore[list-item]
            max_tokens=2,
        )
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="no-such-model", messages=ASK)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def keyed(
    tmp_path_factory: pytest.TempPathFactory, default_gateway: Server
) -> Iterator[tuple[Server, str]]:
    tmp = tmp_path_factory.mktemp("anthropic-auth")
    secret, key = new_key("claude-code")
    slow_secret, slow = new_key("slow", rpm=1)

    async def add() -> None:
        store = SQLiteKeyStore(tmp / "data")
        await store.add(key)
        await store.add(slow)
        await store.aclose()

    asyncio.run(add())
    config = {
        "backends": [
            {"id": "d", "type": "deterministic", "model": "m", "knowledge_cutoff": "2024-01-01"},
            {"id": "asic", "type": "asic-sim", "model": "asic", "knowledge_cutoff": "unknown"},
            {  # the default gateway as a paid API would be
                "id": "up",
                "type": "openai-compatible",
                "model": MODEL,
                "knowledge_cutoff": "unknown",
                "url": default_gateway.url + "/v1",
            },
        ]
    }
    with running_server(tmp, config) as server:
        SLOW.append(slow_secret)
        yield server, secret


def test_auth_by_x_api_key(keyed: tuple[Server, str]) -> None:
    server, secret = keyed
    good = anthropic.Anthropic(base_url=server.url, api_key=secret, max_retries=0)
    message = good.messages.create(model="m", messages=ASK, max_tokens=3)  # type: ignore[arg-type]
    assert message.content[0].type == "text"
    assert message.usage.output_tokens == 3
    assert good.messages.count_tokens(model="m", messages=ASK).input_tokens > 0  # type: ignore[arg-type]
    bearer = anthropic.Anthropic(base_url=server.url, auth_token=secret, max_retries=0)
    assert bearer.messages.create(model="m", messages=ASK, max_tokens=1).usage.output_tokens == 1  # type: ignore[arg-type]
    wrong = anthropic.Anthropic(base_url=server.url, api_key="fk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        wrong.messages.create(model="m", messages=ASK, max_tokens=1)  # type: ignore[arg-type]
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.count_tokens(model="m", messages=ASK)  # type: ignore[arg-type]
    none = httpx.post(
        server.url + "/v1/messages", json={"model": "m", "messages": ASK, "max_tokens": 1}
    )
    assert none.status_code == 401
    assert none.json() == {"type": "error", "error": none.json()["error"]}
    assert none.json()["error"]["type"] == "authentication_error"
    # Both headers, naming different keys: which caller is it? A 400, in Anthropic's shape.
    both = httpx.post(
        server.url + "/v1/messages",
        json={"model": "m", "messages": ASK, "max_tokens": 1},
        headers={"x-api-key": secret, "authorization": "Bearer fk-other"},
    )
    assert both.status_code == 400
    assert both.json()["error"]["type"] == "invalid_request_error"
    same = httpx.post(
        server.url + "/v1/messages",
        json={"model": "m", "messages": ASK, "max_tokens": 1},
        headers={"x-api-key": secret, "authorization": f"Bearer {secret}"},
    )
    assert same.status_code == 200
    assert same.headers["x-freshet-backend"] == "d"


def test_deterministic_counts_exactly_and_chat_is_unchanged(keyed: tuple[Server, str]) -> None:
    server, secret = keyed
    count = httpx.post(
        server.url + "/v1/messages/count_tokens",
        json={"model": "m", "messages": [{"role": "user", "content": "one two three"}]},
        headers={"x-api-key": secret},
    )
    assert count.status_code == 200
    assert count.headers["x-freshet-token-count"] == "exact"
    assert count.json() == {"input_tokens": 4}  # the deterministic backend's own count
    # x-api-key is Anthropic's: OpenAI's paths still want Authorization, in OpenAI's shape.
    chat = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": secret},
    )
    assert chat.status_code == 401
    assert chat.json()["error"]["type"] == "authentication_error"
    assert "code" in chat.json()["error"]


@pytest.mark.parametrize(
    ("model", "backend", "count"),
    [("m", "d", "exact"), ("asic", "asic", "estimate"), (MODEL, "up", "estimate")],
)
def test_every_backend_type_serves_messages(
    keyed: tuple[Server, str], model: str, backend: str, count: str
) -> None:
    server, secret = keyed
    client = anthropic.Anthropic(base_url=server.url, api_key=secret, max_retries=0)
    raw = client.messages.with_raw_response.create(model=model, messages=ASK, max_tokens=3)  # type: ignore[arg-type]
    assert raw.headers["x-freshet-backend"] == backend
    message = raw.parse()
    assert message.content[0].type == "text"
    assert message.usage.output_tokens == 3
    assert message.stop_reason == "max_tokens"
    with client.messages.stream(model=model, messages=ASK, max_tokens=3) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
    assert final.usage.output_tokens == 3
    counted = client.messages.with_raw_response.count_tokens(model=model, messages=ASK)  # type: ignore[arg-type]
    assert counted.headers["x-freshet-token-count"] == count
    assert counted.parse().input_tokens > 0


def test_the_edges_refusals_are_in_anthropics_shape(default_gateway: Server) -> None:
    url = default_gateway.url + "/v1/messages"
    body = {"model": MODEL, "messages": ASK, "max_tokens": 2}
    cases = [
        (httpx.post(url, content=b"{}", headers={"content-type": "text/plain"}), 415),
        (httpx.post(url, content=b'{"model": ', headers={"content-type": "application/json"}), 400),
        (httpx.post(url, json={**body, "max_tokens": 0}), 400),
        (httpx.post(url, json={**body, "tools": [{"type": "bash_20250124", "name": "bash"}]}), 400),
        (httpx.post(url, json={**body, "tools": [{"name": "f", "input_schema": []}]}), 400),
        (httpx.post(url, json={**body, "temperature": 1.5}), 400),  # Anthropic's range is 0..1
        (httpx.post(url + "/count_tokens", json={"model": MODEL}), 400),
    ]
    for resp, status in cases:
        assert resp.status_code == status, resp.text
        error = resp.json()
        assert set(error) == {"type", "error"}, error
        assert error["type"] == "error"
        assert set(error["error"]) == {"type", "message"}
        assert error["error"]["type"] in {"invalid_request_error", "api_error"}
        assert resp.headers["x-request-id"].startswith("req_")
    # OpenAI's paths keep OpenAI's shape.
    chat = httpx.post(default_gateway.url + "/v1/chat/completions", json={"model": MODEL})
    assert chat.status_code == 400
    assert set(chat.json()) == {"error"}


def test_over_the_keys_rate_is_a_rate_limit_error(keyed: tuple[Server, str]) -> None:
    server, _ = keyed
    client = anthropic.Anthropic(base_url=server.url, api_key=SLOW[0], max_retries=0)
    client.messages.create(model="m", messages=ASK, max_tokens=1)  # type: ignore[arg-type]
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="m", messages=ASK, max_tokens=1)  # type: ignore[arg-type]
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"]["type"] == "rate_limit_error"
    assert int(info.value.response.headers["retry-after"]) >= 1


def test_a_client_that_leaves_mid_stream_stops_it(default_gateway: Server) -> None:
    body = {"model": MODEL, "messages": ASK, "max_tokens": 400, "stream": True}
    url = default_gateway.url + "/v1/messages"
    with httpx.stream("POST", url, json=body, timeout=120) as resp:
        request_id = resp.headers["x-request-id"]
        deltas = 0
        for line in resp.iter_lines():
            deltas += line == "event: content_block_delta"
            if deltas == 3:
                break  # leave: the connection closes
    record = usage_record(default_gateway, request_id)
    assert record["status"] == "client_disconnected"
    assert record["operation"] == "messages"
    assert 3 <= record["completion_tokens"] < 400


WEATHER: Any = [
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
PARIS: Any = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_tool_use_and_its_result(client: anthropic.Anthropic, default_gateway: Server) -> None:
    raw = client.messages.with_raw_response.create(
        model=MODEL,
        messages=PARIS,
        tools=WEATHER,
        tool_choice={"type": "any"},
        max_tokens=60,
        extra_body={"temperature": 0.0},
    )
    asked = raw.parse()
    assert asked.stop_reason == "tool_use"
    uses = [block for block in asked.content if isinstance(block, ToolUseBlock)]
    assert len(uses) == 1
    use = uses[0]
    assert use.type == "tool_use"
    assert use.name == "get_weather"
    assert use.id
    assert isinstance(use.input, dict)
    assert isinstance(use.input["city"], str)
    record = usage_record(default_gateway, raw.headers["x-request-id"])
    assert record["operation"] == "messages"
    assert record["completion_tokens"] == asked.usage.output_tokens
    # The answer goes back as a tool_result block after the assistant's tool_use.
    history: Any = [
        *PARIS,
        {"role": "assistant", "content": [block.model_dump() for block in asked.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": use.id, "content": '{"temp_c": 21}'},
                {"type": "text", "text": "Answer in one sentence."},
            ],
        },
    ]
    answered = client.messages.create(
        model=MODEL,
        messages=history,
        tools=WEATHER,
        tool_choice={"type": "none"},  # text now (with "auto" a small model may call again)
        max_tokens=24,
    )
    assert answered.stop_reason in {"end_turn", "max_tokens"}
    assert answered.content[0].type == "text"
    assert answered.content[0].text.strip()
    counted = client.messages.count_tokens(
        model=MODEL, messages=history, tools=WEATHER, tool_choice={"type": "none"}
    )
    assert counted.input_tokens == answered.usage.input_tokens


def test_tool_use_streamed(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL,
        messages=PARIS,
        tools=WEATHER,
        tool_choice={"type": "tool", "name": "get_weather"},
        extra_body={"temperature": 0.0},
        max_tokens=60,
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    kinds = [event.type for event in events]
    assert kinds[:3] == ["message_start", "content_block_start", "content_block_delta"]
    start = events[1]
    assert start.type == "content_block_start"
    assert start.content_block.type == "tool_use"
    assert start.content_block.name == "get_weather"
    pieces = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert pieces
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert final.stop_reason == "tool_use"
    use = final.content[-1]
    assert isinstance(use, ToolUseBlock)
    assert use.id == start.content_block.id
    assert use.input == json.loads("".join(pieces))
    assert use.input["city"]


def test_tool_use_through_an_openai_compatible_upstream(keyed: tuple[Server, str]) -> None:
    server, secret = keyed
    client = anthropic.Anthropic(base_url=server.url, api_key=secret, max_retries=0)
    raw = client.messages.with_raw_response.create(
        model=MODEL,
        messages=PARIS,
        tools=WEATHER,
        tool_choice={"type": "any"},
        max_tokens=60,
        extra_body={"temperature": 0.0},
    )
    assert raw.headers["x-freshet-backend"] == "up"
    message = raw.parse()
    assert message.stop_reason == "tool_use"
    assert isinstance(message.content[-1], ToolUseBlock)
    assert message.content[-1].name == "get_weather"
    with client.messages.stream(
        model=MODEL,
        messages=PARIS,
        tools=WEATHER,
        tool_choice={"type": "any"},
        max_tokens=60,
        extra_body={"temperature": 0.0},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert isinstance(final.content[-1], ToolUseBlock)


def test_bad_tool_use_is_a_400(default_gateway: Server) -> None:
    url = default_gateway.url + "/v1/messages"
    body: dict[str, Any] = {"model": MODEL, "messages": PARIS, "max_tokens": 2, "tools": WEATHER}
    use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
    cases: list[tuple[dict[str, Any], str]] = [  # and what the message says
        ({**body, "tool_choice": {"type": "tool", "name": "nope"}}, "not one of the tools"),
        ({**body, "tools": [*WEATHER, *WEATHER]}, "two tools are named"),
        ({**body, "tools": [{"name": "f"}]}, "needs an 'input_schema'"),
        ({**body, "messages": [{"role": "user", "content": [use]}]}, "the assistant's"),
        (
            {**body, "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
            "needs the tool_use_id",
        ),
        (
            {**body, "messages": [{"role": "assistant", "content": [{**use, "input": [1]}]}]},
            "input is a JSON object",
        ),
    ]
    for case, says in cases:
        resp = httpx.post(url, json=case, timeout=120)
        assert resp.status_code == 400, (case, resp.text)
        error = resp.json()
        assert error["type"] == "error"
        assert error["error"]["type"] == "invalid_request_error"
        assert says in error["error"]["message"], (says, error)


def test_the_stop_sequence_that_ended_it(client: anthropic.Anthropic) -> None:
    args: dict[str, Any] = {"model": MODEL, "messages": ASK, "max_tokens": 200}
    args["extra_body"] = {"temperature": 0.0}
    free = client.messages.create(**args)
    assert free.content[0].type == "text"
    text = free.content[0].text
    stops = ["zzz-never", " the ", "."]  # which one comes first in this text decides
    first = min((text.find(s), s) for s in stops if s in text)[1]
    stopped = client.messages.create(**args, stop_sequences=stops)
    assert stopped.stop_reason == "stop_sequence"
    assert stopped.stop_sequence == first
    assert stopped.content[0].type == "text"
    assert stopped.content[0].text == text[: text.find(first)]
    with client.messages.stream(**args, stop_sequences=stops) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence"
    assert final.stop_sequence == first
    assert final.content[0].type == "text"
    assert final.content[0].text == stopped.content[0].text
    # Cut at max_tokens before any stop: max_tokens, no stop_sequence.
    short = client.messages.create(**{**args, "max_tokens": 1}, stop_sequences=["zzz-never"])
    assert short.stop_reason == "max_tokens"
    assert short.stop_sequence is None
    # The simulated ASIC's text is its CPU twin's, and so is the stop that ended it.
    asic = client.messages.create(**{**args, "model": "llama-3.1-8b"}, stop_sequences=["."])
    assert asic.stop_reason == "stop_sequence"
    assert asic.stop_sequence == "."


@pytest.mark.parametrize("tools", [False, True])
def test_every_field_as_the_sdks_types_require(default_gateway: Server, tools: bool) -> None:
    """The SDK builds its objects without validating them; pydantic, validating the wire
    JSON against the SDK's own types, finds any required field missing or mistyped."""
    url = default_gateway.url + "/v1/messages"
    body: dict[str, Any] = {"model": MODEL, "messages": PARIS, "max_tokens": 40}
    body["stop_sequences"] = ["zzz-never"]
    if tools:
        body |= {"tools": WEATHER, "tool_choice": {"type": "any"}}
    plain = httpx.post(url, json=body, timeout=120)
    assert plain.status_code == 200
    message = Message.model_validate(plain.json())
    assert message.stop_reason in ({"tool_use"} if tools else {"end_turn", "max_tokens"})
    event_type: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
    names = []
    with httpx.stream("POST", url, json={**body, "stream": True}, timeout=120) as resp:
        assert resp.status_code == 200
        name = ""
        for line in resp.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                assert data["type"] == name
                names.append(name)
                if name != "ping":
                    event_type.validate_python(data)
    assert names[-1] == "message_stop"
