"""Tools and structured output through freshet-vllm (no real vLLM): the request body an
upstream gets, tool-call deltas read from its stream, and both backend types against the
fake upstream, with the capabilities each declares."""

from __future__ import annotations

import json
from typing import Any

import pytest
from freshet_vllm import VllmServerBackend
from freshet_vllm.engine import VllmEngineBackend
from freshet_vllm.openai_compatible import OpenAICompatibleBackend
from freshet_vllm.wire import parse_line, request_body

from gateway.backend import (
    Backend,
    BackendConfig,
    Chunk,
    GenerationRequest,
    ImagePart,
    Message,
    NamedTool,
    ResponseFormat,
    TextPart,
    ToolCall,
    ToolSpec,
)
from gateway.errors import ConfigError
from tests.vllm.fake_upstream import FakeVllm

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOL = ToolSpec(name="get_weather", description="Weather in a city", parameters=WEATHER)
HISTORY = [
    Message(role="user", content="Weather in Paris?"),
    Message(
        role="assistant",
        tool_calls=[ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')],
    ),
    Message(role="tool", content="21 C", tool_call_id="call_1"),
    Message(
        role="user",
        content="And here?",
        parts=[TextPart(text="And here?"), ImagePart(url="data:image/png;base64,AA==")],
    ),
]


class NoFleet:
    def get(self, backend_id: str) -> Backend:
        raise KeyError(backend_id)


def chat(**fields: Any) -> GenerationRequest:
    return GenerationRequest(
        request_id="req_t", operation="chat", model="m", messages=HISTORY, **fields
    )


def test_body_carries_tools_choice_and_history() -> None:
    body = request_body(
        chat(tools=[TOOL], tool_choice=NamedTool(name="get_weather"), parallel_tool_calls=False),
        "served",
    )
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": WEATHER,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assert "response_format" not in body
    user, assistant, tool, image = body["messages"]
    assert user == {"role": "user", "content": "Weather in Paris?"}
    assert assistant == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    assert tool == {"role": "tool", "content": "21 C", "tool_call_id": "call_1"}
    assert image["content"] == [
        {"type": "text", "text": "And here?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
    ]


@pytest.mark.parametrize(
    ("fmt", "wire"),
    [
        (ResponseFormat(type="json_object"), {"type": "json_object"}),
        (
            ResponseFormat(type="json_schema", schema=WEATHER, name="w", strict=True),
            {
                "type": "json_schema",
                "json_schema": {"name": "w", "schema": WEATHER, "strict": True},
            },
        ),
        (
            ResponseFormat(type="json_schema"),
            {
                "type": "json_schema",
                "json_schema": {"name": "response", "schema": {"type": "object"}},
            },
        ),
    ],
)
def test_body_carries_response_format(fmt: ResponseFormat, wire: dict[str, Any]) -> None:
    body = request_body(chat(response_format=fmt), "served")
    assert body["response_format"] == wire
    assert "tools" not in body
    assert "tool_choice" not in body


def test_tool_choice_strings_pass_as_they_are() -> None:
    for choice in ("none", "auto", "required"):
        assert request_body(chat(tools=[TOOL], tool_choice=choice), "s")["tool_choice"] == choice
    assert "tool_choice" not in request_body(chat(tools=[TOOL]), "s")


# The shape of vLLM's streamed tool calls (hermes parser): a first delta with the id, type
# and name, then pieces of the arguments.
FIRST = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"tool_calls":[{"id":"chatcmpl-tool-9","type":"function",'
    b'"index":0,"function":{"name":"get_weather","arguments":""}}]},"logprobs":null,'
    b'"finish_reason":null}]}'
)
PIECE = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":'
    b'{"arguments":"{\\"city\\": \\"Paris\\"}"}}]},"logprobs":null,"finish_reason":null}]}'
)


def test_tool_call_deltas_are_read() -> None:
    first, piece = parse_line(FIRST), parse_line(PIECE)
    assert first is not None
    assert piece is not None
    assert first.text == ""
    [head] = first.tool_calls
    assert (head.index, head.id, head.name, head.arguments) == (
        0,
        "chatcmpl-tool-9",
        "get_weather",
        "",
    )
    [rest] = piece.tool_calls
    assert (rest.index, rest.id, rest.name) == (0, None, None)
    assert json.loads(rest.arguments) == {"city": "Paris"}


async def _run(backend: VllmServerBackend, request: GenerationRequest) -> list[Chunk]:
    await backend.start()
    try:
        return [chunk async for chunk in backend.stream(request)]
    finally:
        await backend.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["vllm", "openai-compatible"])
async def test_backend_streams_tool_calls(fake: FakeVllm, kind: str) -> None:
    fake.words = []
    fake.tool_calls = [("get_weather", ['{"city"', ': "Paris"}']), ("get_time", ["{}"])]
    params: dict[str, Any] = {"urls": [fake.url]} if kind == "vllm" else {"url": fake.url}
    config = BackendConfig(id="b", type=kind, model="m", params=params)
    backend: VllmServerBackend = (
        VllmServerBackend(config, NoFleet())
        if kind == "vllm"
        else OpenAICompatibleBackend(config, NoFleet())
    )
    chunks = await _run(backend, chat(tools=[TOOL], tool_choice="required"))
    sent = fake.requests[-1]
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tool_choice"] == "required"
    assert sent["messages"][2] == {"role": "tool", "content": "21 C", "tool_call_id": "call_1"}
    pieces = [d for c in chunks for d in c.tool_calls]
    assert [p.name for p in pieces if p.name] == ["get_weather", "get_time"]
    arguments = {
        i: "".join(p.arguments for p in pieces if p.index == i) for i in {p.index for p in pieces}
    }
    assert json.loads(arguments[0]) == {"city": "Paris"}
    assert json.loads(arguments[1]) == {}
    assert chunks[-1].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None


@pytest.mark.parametrize(
    ("kind", "params", "declared", "expected"),
    [
        ("vllm", {"urls": ["http://127.0.0.1:1"]}, None, {"json_schema"}),
        (
            "vllm",
            {"urls": ["http://127.0.0.1:1"]},
            {"tools", "json_schema"},
            {"tools", "json_schema"},
        ),
        ("openai-compatible", {"url": "http://127.0.0.1:1"}, None, {"tools", "json_schema"}),
        ("openai-compatible", {"url": "http://127.0.0.1:1"}, set(), set()),
        ("openai-compatible", {"url": "http://127.0.0.1:1"}, {"vision"}, {"vision"}),
    ],
)
def test_capabilities_by_type_and_config(
    kind: str, params: dict[str, Any], declared: set[str] | None, expected: set[str]
) -> None:
    config = BackendConfig(
        id="b",
        type=kind,
        model="m",
        params=params,
        adapters=[{"name": "fresh"}],
        capabilities=None if declared is None else frozenset(declared),
    )
    backend = (
        VllmServerBackend(config, NoFleet())
        if kind == "vllm"
        else OpenAICompatibleBackend(config, NoFleet())
    )
    assert [d.capabilities for d in backend.deployments] == [frozenset(expected)] * 2


def test_mode_engine_declares_no_capabilities() -> None:
    config = BackendConfig(
        id="b",
        type="vllm",
        model="m",
        params={"mode": "engine", "model_path": "/nonexistent"},
        capabilities=frozenset({"tools"}),
    )
    with pytest.raises(ConfigError) as caught:
        VllmEngineBackend(config, NoFleet())
    assert caught.value.key == "backends[0].capabilities"
