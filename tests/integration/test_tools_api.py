"""Tools, structured output and capabilities in routing, on the real gateway with the real
`openai` SDK: the embedded default (SmolLM2 on llama.cpp, constrained by grammars), and a
fleet that reaches the same model through an ``openai-compatible`` upstream beside a
deterministic backend that has neither tools nor structured output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from tests.support.server import Server, running_server

MODEL = "smollm2-135m"
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": WEATHER,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The local time in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 40}},
                "required": ["city"],
            },
        },
    },
]
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
}


def _valid(instance: Any, schema: dict[str, Any]) -> None:
    """``instance`` against ``schema``: by ``jsonschema`` where installed, else the
    required keys and their JSON types."""
    try:
        import jsonschema
    except ImportError:
        types = {"string": str, "integer": int, "object": dict, "array": list, "number": float}
        assert isinstance(instance, dict)
        for key in schema.get("required", []):
            assert key in instance, key
            want = schema["properties"][key].get("type")
            assert want is None or isinstance(instance[key], types[want]), (key, instance)
        return
    jsonschema.validate(instance, schema)


@pytest.fixture(scope="module")
def client(default_gateway: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=default_gateway.url + "/v1", api_key="unused", max_retries=0
    ) as client:
        yield client


@pytest.fixture(scope="module")
def fleet(default_gateway: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``m`` on a deterministic backend (text only); SmolLM2 behind an openai-compatible
    upstream (the default gateway); the group ``mixed`` holds both."""
    config = {
        "backends": [
            {"id": "d", "type": "deterministic", "model": "m", "knowledge_cutoff": "2024-01-01"},
            {
                "id": "up",
                "type": "openai-compatible",
                "model": MODEL,
                "knowledge_cutoff": "2024-06-01",
                "url": default_gateway.url + "/v1",
            },
        ],
        "groups": {"mixed": ["d", "up"]},
    }
    tmp: Path = tmp_path_factory.mktemp("tools-fleet")
    with running_server(tmp, config) as server:
        yield server


@pytest.fixture(scope="module")
def fleet_client(fleet: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fleet.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def _forced_call(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=80,
    )
    completion = raw.parse()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None
    assert len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    _valid(json.loads(call.function.arguments), WEATHER)
    assert choice.message.content is None
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 0


def test_forced_tool_call(client: openai.OpenAI) -> None:
    _forced_call(client)


def test_forced_tool_call_through_an_openai_compatible_upstream(
    fleet_client: openai.OpenAI,
) -> None:
    _forced_call(fleet_client)


def _streamed_call(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=80
    ) as stream:
        pieces = [
            event.arguments_delta
            for event in stream
            if event.type == "tool_calls.function.arguments.delta"
        ]
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None
    assert len(calls) == 1
    name = calls[0].function.name
    assert name in {"get_weather", "get_time"}
    arguments = json.loads(calls[0].function.arguments)
    assert "".join(pieces) == calls[0].function.arguments
    assert choice.message.content is None  # as OpenAI's: the stream carried no content
    _valid(arguments, TOOLS[0 if name == "get_weather" else 1]["function"]["parameters"])


def test_streamed_tool_call(client: openai.OpenAI) -> None:
    _streamed_call(client)


def test_streamed_tool_call_through_an_openai_compatible_upstream(
    fleet_client: openai.OpenAI,
) -> None:
    _streamed_call(fleet_client)


@pytest.mark.parametrize(
    "question", ["What is the weather in Paris?", "Write one sentence about rivers."]
)
def test_auto_answers_with_a_valid_call_or_text(client: openai.OpenAI, question: str) -> None:
    """With ``auto`` the model chooses; whichever it chose is well formed."""
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": question}],
        tools=TOOLS,
        tool_choice="auto",
        max_tokens=80,
    )
    choice = completion.choices[0]
    if choice.finish_reason == "tool_calls":
        calls = choice.message.tool_calls
        assert calls is not None
        [call] = calls
        schema = TOOLS[0 if call.function.name == "get_weather" else 1]["function"]["parameters"]
        _valid(json.loads(call.function.arguments), schema)
        assert choice.message.content is None
    else:
        assert choice.finish_reason in {"stop", "length"}
        assert choice.message.tool_calls is None
        assert choice.message.content
        assert not choice.message.content.startswith("{")


def test_raw_stream_has_openai_tool_call_chunks(default_gateway: Server) -> None:
    body = {
        "model": MODEL,
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": "required",
        "max_tokens": 80,
        "stream": True,
    }
    with httpx.stream(
        "POST", default_gateway.url + "/v1/chat/completions", json=body, timeout=120
    ) as resp:
        assert resp.status_code == 200
        events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    # The first chunk opens the call and carries the role, as OpenAI's do; no content.
    assert deltas[0]["role"] == "assistant"
    assert "tool_calls" in deltas[0]
    assert all("content" not in d for d in deltas)
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["index"] == 0
    assert calls[0]["type"] == "function"
    assert calls[0]["id"].startswith("call_")
    assert calls[0]["function"]["name"] in {"get_weather", "get_time"}
    assert all(set(c) <= {"index", "function"} for c in calls[1:])
    json.loads("".join(c["function"].get("arguments", "") for c in calls))
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_response_format_json_schema(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a person."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON},
        },
        max_tokens=120,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.content is not None
    _valid(json.loads(choice.message.content), PERSON)


def test_response_format_json_schema_through_an_openai_compatible_upstream(
    fleet_client: openai.OpenAI,
) -> None:
    completion = fleet_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a person."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON},
        },
        max_tokens=120,
    )
    content = completion.choices[0].message.content
    assert content is not None
    _valid(json.loads(content), PERSON)


class Person(BaseModel):
    name: str = Field(max_length=24)
    age: int = Field(ge=0, le=150)


class GetWeather(BaseModel):
    """The current weather in a city."""

    city: str = Field(max_length=40)


def test_sdk_parse_with_pydantic_models(client: openai.OpenAI) -> None:
    """The SDK's own structured-output helpers: strict schemas from pydantic models."""
    person = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a person."}],
        response_format=Person,
        max_tokens=60,
    )
    parsed = person.choices[0].message.parsed
    assert isinstance(parsed, Person)
    assert 0 <= parsed.age <= 150
    call = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Oslo?"}],
        tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice="required",
        max_tokens=60,
    )
    calls = call.choices[0].message.tool_calls
    assert calls is not None
    assert isinstance(calls[0].function.parsed_arguments, GetWeather)


def test_response_format_json_object(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Give a JSON object with a cat's name and age."}],
        response_format={"type": "json_object"},
        # Any object may nest without end: greedy decoding on this prompt closes it early
        # (16 tokens), where sampling may let a 135M model ramble past max_tokens.
        temperature=0.0,
        max_tokens=120,
    )
    content = completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert content is not None
    assert isinstance(json.loads(content), dict)


def test_tool_results_in_history(client: openai.OpenAI, fleet_client: openai.OpenAI) -> None:
    history: list[Any] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Paris", "unit": "celsius"}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "21 degrees and sunny"},
    ]
    for c in (client, fleet_client):
        alone = c.chat.completions.create(model=MODEL, messages=ASK, max_tokens=1)
        completion = c.chat.completions.create(
            model=MODEL, messages=history, tools=TOOLS, tool_choice="none", max_tokens=16
        )
        choice = completion.choices[0]
        assert choice.finish_reason in {"stop", "length"}
        assert choice.message.tool_calls is None
        assert choice.message.content
        # The call and its result reached the model: the prompt holds more than the
        # question (the call's arguments and the result are 20 tokens or so).
        assert alone.usage is not None
        assert completion.usage is not None
        assert completion.usage.prompt_tokens > alone.usage.prompt_tokens + 15


def test_capability_drop_in_route_header(fleet_client: openai.OpenAI) -> None:
    raw = fleet_client.chat.completions.with_raw_response.create(
        model="mixed", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=80
    )
    assert raw.headers["x-freshet-backend"] == "up"
    assert "d:capability(tools)" in raw.headers["x-freshet-route"]
    assert raw.parse().choices[0].finish_reason == "tool_calls"
    raw = fleet_client.chat.completions.with_raw_response.create(
        model="mixed", messages=ASK, response_format={"type": "json_object"}, max_tokens=60
    )
    assert raw.headers["x-freshet-backend"] == "up"
    assert "d:capability(json_schema)" in raw.headers["x-freshet-route"]


def test_models_list_capabilities(fleet_client: openai.OpenAI, client: openai.OpenAI) -> None:
    listed = {m.id: (m.model_extra or {}).get("capabilities") for m in fleet_client.models.list()}
    assert listed["m"] == []
    assert listed[MODEL] == ["json_schema", "tools"]
    assert listed["mixed"] == ["json_schema", "tools"]  # what any of its deployments can
    default = {m.id: (m.model_extra or {}).get("capabilities") for m in client.models.list()}
    assert default[MODEL] == ["json_schema", "tools"]


def test_capability_drop_in_route_dry_run(fleet: Server) -> None:
    body = {"model": "mixed", "messages": ASK, "tools": TOOLS, "tool_choice": "required"}
    view = httpx.post(fleet.url + "/freshet/route", json=body, timeout=60).json()
    reasons = {c["backend"]: c["reason"] for c in view["candidates"]}
    assert view["chosen"] == "up"
    assert reasons["d"] == "capability(tools)"
    assert reasons["up"] is None
    body = {"model": "mixed", "messages": ASK}
    view = httpx.post(fleet.url + "/freshet/route", json=body, timeout=60).json()
    assert all(c["reason"] is None for c in view["candidates"])


def test_no_deployment_with_the_capability_is_a_400(fleet_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        fleet_client.chat.completions.create(model="m", messages=ASK, tools=TOOLS, max_tokens=4)
    error = info.value.body
    assert isinstance(error, dict)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "capability_unsupported"
    assert error["param"] == "tools"
    assert "tools" in error["message"]
    # tool_choice "none": the tools are ignored, so any deployment serves it.
    completion = fleet_client.chat.completions.create(
        model="m", messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=4
    )
    assert completion.choices[0].message.content


def test_images_need_vision(client: openai.OpenAI) -> None:
    image: list[Any] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        }
    ]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=image, max_tokens=4)
    error = info.value.body
    assert isinstance(error, dict)
    assert error["code"] == "capability_unsupported"
    assert "vision" in error["message"]


BAD: list[tuple[dict[str, Any], str]] = [
    (
        {
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "nope"}}}
            ]
        },
        "tools[0].function.parameters.type",
    ),
    (
        {
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}
            ]
        },
        "tools[0].function.parameters.type",
    ),
    (
        {"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
        "tools[0].function.name",
    ),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    ({"tools": TOOLS + TOOLS[:1]}, "tools[2].function.name"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    (
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice.function.name",
    ),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"properties": []}},
            }
        },
        "response_format.json_schema.schema.properties",
    ),
    (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"required": "a"}},
            }
        },
        "response_format.json_schema.schema.required",
    ),
    ({"messages": [{"role": "tool", "content": "21 degrees"}]}, "messages[0].tool_call_id"),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": "hi",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                }
            ]
        },
        "messages[0].tool_calls",
    ),
]


@pytest.mark.parametrize(("extra", "param"), BAD)
def test_bad_input_is_a_400_naming_the_field(
    default_gateway: Server, extra: dict[str, Any], param: str
) -> None:
    body = {"model": MODEL, "messages": ASK, "max_tokens": 4, **extra}
    resp = httpx.post(default_gateway.url + "/v1/chat/completions", json=body, timeout=60)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
