"""OpenAI's Responses API on the real gateway, driven by the real `openai` SDK: the embedded
default (SmolLM2 on llama.cpp) for responses, streams, stored responses, conversations,
freshness and the usage record; a second gateway with a key per caller, a deterministic
backend and the default gateway as an ``openai-compatible`` upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFailedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseIncompleteEvent,
    ResponseInProgressEvent,
    ResponseItemList,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)
from pydantic import TypeAdapter

from gateway.state.keys import new_key
from gateway.state.keys_sqlite import SQLiteKeyStore
from tests.support.server import Server, running_server, usage_record

MODEL = "smollm2-135m"
HI = "Say hi."  # SmolLM2 answers it in one short sentence and stops
STORY = "Write a long story about a river and a mountain."
TIMEOUT = 120  # seconds: a busy machine may take long for a first token


@pytest.fixture(scope="module")
def client(default_gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=default_gateway.url + "/v1", api_key="unused", max_retries=0)


def test_string_input_with_instructions(client: openai.OpenAI, default_gateway: Server) -> None:
    raw = client.responses.with_raw_response.create(
        model=MODEL, input=HI, instructions="You are terse.", max_output_tokens=60, temperature=0
    )
    response = raw.parse()
    assert raw.headers["x-freshet-backend"] == "cpu"
    assert raw.headers["x-freshet-knowledge-cutoff"] == "2024-06-01"
    assert float(raw.headers["x-freshet-cost-usd"]) > 0
    assert response.id.startswith("resp_")
    assert response.object == "response"
    assert response.model == MODEL
    assert response.instructions == "You are terse."
    assert response.status == "completed"
    assert response.incomplete_details is None
    assert response.error is None
    message = response.output[0]
    assert isinstance(message, ResponseOutputMessage)
    assert message.role == "assistant"
    assert message.status == "completed"
    assert message.content[0].type == "output_text"
    assert response.output_text.strip()
    usage = response.usage
    assert usage is not None
    assert usage.input_tokens > 5
    assert 0 < usage.output_tokens < 60
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    extra = usage.model_extra or {}
    assert extra["cost"] > 0
    assert extra["energy_joules"] > 0
    record = usage_record(default_gateway, raw.headers["x-request-id"])
    assert record["operation"] == "responses"
    assert record["status"] == "ok"
    assert not record["stream"]
    assert record["prompt_tokens"] == usage.input_tokens
    assert record["completion_tokens"] == usage.output_tokens
    # The instructions are the system message.
    system: Any = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": HI}]
    same = client.responses.create(model=MODEL, input=system, max_output_tokens=1)
    assert same.usage is not None
    assert same.usage.input_tokens == usage.input_tokens


def test_max_output_tokens_makes_it_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input=STORY, max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.max_output_tokens == 3
    assert response.usage is not None
    assert response.usage.output_tokens == 3
    message = response.output[0]
    assert isinstance(message, ResponseOutputMessage)
    assert message.status == "incomplete"


def test_a_list_of_messages(client: openai.OpenAI) -> None:
    items: Any = [
        {"role": "developer", "content": "Answer with one word."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi."}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Hello."}]},
        {"role": "user", "content": "Name a colour."},
    ]
    response = client.responses.create(model=MODEL, input=items, max_output_tokens=8)
    assert response.output_text.strip()
    assert response.usage is not None
    # The same conversation as chat messages (developer is the system message): same prompt.
    chat = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Answer with one word."},
            {"role": "user", "content": "Hi."},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Name a colour."},
        ],
        max_tokens=1,
    )
    assert chat.usage is not None
    assert response.usage.input_tokens == chat.usage.prompt_tokens


def _check_stream(events: list[ResponseStreamEvent]) -> Response:
    """Every event as the SDK typed it, numbered from 0, in OpenAI's order; the final
    response, whose text is the deltas'."""
    assert [e.sequence_number for e in events] == list(range(len(events)))
    head = [type(e) for e in events[:4]]
    assert head == [
        ResponseCreatedEvent,
        ResponseInProgressEvent,
        ResponseOutputItemAddedEvent,
        ResponseContentPartAddedEvent,
    ]
    deltas = [e for e in events[4:-4] if isinstance(e, ResponseTextDeltaEvent)]
    assert len(deltas) == len(events) - 8 >= 1
    tail = events[-4:]
    assert isinstance(tail[0], ResponseTextDoneEvent)
    assert isinstance(tail[1], ResponseContentPartDoneEvent)
    assert isinstance(tail[2], ResponseOutputItemDoneEvent)
    assert isinstance(tail[3], ResponseCompletedEvent | ResponseIncompleteEvent)
    text = "".join(d.delta for d in deltas)
    assert tail[0].text == text
    assert tail[1].part.type == "output_text"
    assert tail[1].part.text == text
    final = tail[3].response
    assert final.output_text == text
    created = events[0]
    assert isinstance(created, ResponseCreatedEvent)
    assert created.response.status == "in_progress"
    assert created.response.id == final.id
    return final


def test_stream_every_event(client: openai.OpenAI, default_gateway: Server) -> None:
    args: dict[str, Any] = {"model": MODEL, "input": HI, "max_output_tokens": 60, "temperature": 0}
    plain = client.responses.create(**args)
    raw = client.responses.with_raw_response.create(**args, stream=True)
    request_id = raw.headers["x-request-id"]
    assert raw.headers["content-type"] == "text/event-stream"
    events = list(raw.parse())
    final = _check_stream(events)
    assert isinstance(events[-1], ResponseCompletedEvent)
    assert final.status == "completed"
    assert final.output_text == plain.output_text
    assert final.usage is not None
    assert plain.usage is not None
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert (final.usage.model_extra or {})["cost"] > 0
    # The SDK's stream helper agrees, and the streamed response is stored.
    with client.responses.stream(**args) as helper:
        kinds = [event.type for event in helper]
        done = helper.get_final_response()
    assert kinds.count("response.output_text.delta") >= 3
    assert done.output_text == plain.output_text
    assert client.responses.retrieve(done.id).output_text == plain.output_text
    record = usage_record(default_gateway, request_id)
    assert record["operation"] == "responses"
    assert record["stream"]


def test_stream_cut_at_max_output_tokens(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(model=MODEL, input=STORY, max_output_tokens=4, stream=True)
    )
    final = _check_stream(events)
    assert isinstance(events[-1], ResponseIncompleteEvent)
    assert final.status == "incomplete"
    assert final.incomplete_details is not None
    assert final.incomplete_details.reason == "max_output_tokens"
    assert final.usage is not None
    assert final.usage.output_tokens == 4


def test_previous_response_id_continues_the_conversation(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model=MODEL, input="My name is Ada.", instructions="Be brief.", max_output_tokens=12
    )
    second = client.responses.create(
        model=MODEL, input="What is my name?", previous_response_id=first.id, max_output_tokens=12
    )
    assert second.previous_response_id == first.id
    assert first.usage is not None
    assert second.usage is not None
    alone = client.responses.create(model=MODEL, input="What is my name?", max_output_tokens=1)
    assert alone.usage is not None
    # The stored turn (its input and output) comes first; its instructions do not.
    carried = second.usage.input_tokens - alone.usage.input_tokens
    assert carried >= first.usage.output_tokens + 4
    third = client.responses.create(
        model=MODEL, input="And again?", previous_response_id=second.id, max_output_tokens=1
    )
    assert third.usage is not None
    assert third.usage.input_tokens > second.usage.input_tokens + second.usage.output_tokens
    stored = client.responses.retrieve(first.id)
    assert stored.model_dump() == first.model_dump()


def test_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input=HI, max_output_tokens=2, store=False)
    assert (response.model_extra or {})["store"] is False  # on the wire, not in the SDK type
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(
            model=MODEL, input=HI, max_output_tokens=2, previous_response_id=response.id
        )
    body = info.value.body
    assert isinstance(body, dict)
    assert body["type"] == "invalid_request_error"
    assert body["param"] == "previous_response_id"
    assert response.id in body["message"]


def test_unknown_and_deleted_ids_are_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.retrieve("resp_0123456789")
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "invalid_request_error"
    response = client.responses.create(model=MODEL, input=HI, max_output_tokens=1)
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(response.id)


def test_freshness_extension(client: openai.OpenAI) -> None:
    fresh = client.responses.with_raw_response.create(
        model="auto",
        input=HI,
        max_output_tokens=2,
        extra_body={"freshness": {"min_knowledge_cutoff": "2024-01-01"}},
    )
    assert fresh.headers["x-freshet-knowledge-cutoff"] == "2024-06-01"
    assert fresh.parse().model == MODEL
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.responses.create(
            model="auto",
            input=HI,
            max_output_tokens=2,
            extra_body={"freshness": {"min_knowledge_cutoff": "2099-01-01"}},
        )
    assert isinstance(info.value.body, dict)
    assert info.value.body["code"] == "freshness_unsatisfiable"


def test_bad_input_is_a_400_in_openais_shape(
    client: openai.OpenAI, default_gateway: Server
) -> None:
    url = default_gateway.url + "/v1/responses"
    good = {"model": MODEL, "input": HI, "max_output_tokens": 2}
    image = {"type": "input_image", "image_url": "http://example.invalid/x.png"}
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"model": MODEL}, "input"),
        ({**good, "input": []}, "input"),
        ({**good, "input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
        ({**good, "input": [{"content": "no role"}]}, "input[0].role"),
        ({**good, "input": [{"role": "user", "content": [image]}]}, "input[0].content[0].type"),
        ({**good, "input": [{"role": "robot", "content": "x"}]}, None),
        ({**good, "temperature": 3}, "temperature"),
        ({**good, "max_output_tokens": 0}, "max_output_tokens"),
        ({**good, "previous_response_id": 7}, "previous_response_id"),
    ]
    for body, param in cases:
        resp = httpx.post(url, json=body, timeout=TIMEOUT)
        assert resp.status_code == 400, (body, resp.text)
        error = resp.json()
        assert set(error) == {"error"}
        assert set(error["error"]) == {"message", "type", "param", "code"}
        assert error["error"]["type"] == "invalid_request_error"
        if param is not None:
            assert error["error"]["param"] == param, error
        assert resp.headers["x-request-id"].startswith("req_")
    not_json = httpx.post(
        url, content=b'{"model": ', headers={"content-type": "application/json"}, timeout=TIMEOUT
    )
    assert not_json.status_code == 400
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input=[], max_output_tokens=2)
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="no-such-model", input=HI)
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["code"] == "model_not_found"


def test_the_schema_describes_the_endpoints(default_gateway: Server) -> None:
    status, body = default_gateway.get("/schema/openapi.json")
    assert status == 200
    paths = json.loads(body)["paths"]
    assert "post" in paths["/v1/responses"]
    assert {"get", "delete"} <= set(paths["/v1/responses/{response_id}"])


# A second gateway: keys (auth on), a deterministic backend that fails mid-stream, and the
# default gateway as an openai-compatible upstream.
KEYS: dict[str, str] = {}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, default_gateway: Server) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("responses-keyed")

    async def add() -> None:
        store = SQLiteKeyStore(tmp / "data")
        for name in ("alice", "bob"):
            secret, key = new_key(name)
            KEYS[name] = secret
            await store.add(key)
        await store.aclose()

    asyncio.run(add())
    config = {
        "backends": [
            {"id": "d", "type": "deterministic", "model": "m", "knowledge_cutoff": "2024-01-01"},
            {
                "id": "broken",
                "type": "deterministic",
                "model": "breaks",
                "knowledge_cutoff": "2024-01-01",
                "fail_after_tokens": 2,
            },
            {
                "id": "up",
                "type": "openai-compatible",
                "model": MODEL,
                "knowledge_cutoff": "unknown",
                "url": default_gateway.url + "/v1",
            },
        ]
    }
    with running_server(tmp, config) as server:
        yield server


def _as(server: Server, name: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEYS[name], max_retries=0)


@pytest.mark.parametrize(("model", "backend"), [("m", "d"), (MODEL, "up")])
def test_through_other_backends(keyed: Server, model: str, backend: str) -> None:
    client = _as(keyed, "alice")
    raw = client.responses.with_raw_response.create(model=model, input=STORY, max_output_tokens=3)
    assert raw.headers["x-freshet-backend"] == backend
    response = raw.parse()
    assert response.status == "incomplete"
    assert response.usage is not None
    assert response.usage.output_tokens == 3
    assert response.output_text.strip()
    events = list(
        client.responses.create(model=model, input=STORY, max_output_tokens=3, stream=True)
    )
    final = _check_stream(events)
    assert final.status == "incomplete"
    assert final.usage is not None
    assert final.usage.output_tokens == 3
    follow = client.responses.create(
        model=model, input="More.", previous_response_id=final.id, max_output_tokens=2
    )
    assert follow.usage is not None
    assert follow.usage.input_tokens > final.usage.input_tokens


def test_a_response_is_its_keys_only(keyed: Server) -> None:
    alice, bob = _as(keyed, "alice"), _as(keyed, "bob")
    mine = alice.responses.create(model="m", input="one two three", max_output_tokens=2)
    assert alice.responses.retrieve(mine.id).id == mine.id
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.create(model="m", input="x", previous_response_id=mine.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.delete(mine.id)
    nobody = httpx.get(keyed.url + f"/v1/responses/{mine.id}", timeout=TIMEOUT)
    assert nobody.status_code == 401
    assert nobody.json()["error"]["type"] == "authentication_error"
    assert alice.responses.retrieve(mine.id).id == mine.id  # still there


def test_a_backend_failing_mid_stream_is_response_failed(keyed: Server) -> None:
    client = _as(keyed, "alice")
    events = list(
        client.responses.create(model="breaks", input=STORY, max_output_tokens=8, stream=True)
    )
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert sum(isinstance(e, ResponseTextDeltaEvent) for e in events) == 2
    failed = events[-1]
    assert isinstance(failed, ResponseFailedEvent)
    assert failed.response.status == "failed"
    assert failed.response.error is not None
    assert failed.response.error.code == "server_error"
    assert "mid-stream" in failed.response.error.message


WEATHER: Any = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
PARIS = "What is the weather in Paris?"


def _call(response: Response) -> ResponseFunctionToolCall:
    calls = [item for item in response.output if isinstance(item, ResponseFunctionToolCall)]
    assert len(calls) == 1, response.output
    return calls[0]


def test_function_tools_and_their_results(client: openai.OpenAI) -> None:
    asked = client.responses.create(
        model=MODEL,
        input=PARIS,
        tools=WEATHER,
        tool_choice="required",
        max_output_tokens=60,
        temperature=0,
    )
    assert asked.status == "completed"
    call = _call(asked)
    assert call.name == "get_weather"
    assert call.call_id.startswith("call_")
    assert call.id is not None
    assert call.id.startswith("fc_")
    assert call.status == "completed"
    assert isinstance(json.loads(call.arguments)["city"], str)
    assert asked.tools[0].type == "function"
    assert asked.tool_choice == "required"
    # The result goes back as a function_call_output item, after the stored call.
    result: Any = [
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 21}'}
    ]
    answered = client.responses.create(
        model=MODEL,
        previous_response_id=asked.id,
        input=result,
        tools=WEATHER,
        tool_choice="none",  # text now (with "auto" a small model may well call again)
        max_output_tokens=16,
    )
    assert answered.output_text.strip()
    assert not [i for i in answered.output if isinstance(i, ResponseFunctionToolCall)]
    # The same history sent in full, without the store: the same prompt.
    history: Any = [
        {"role": "user", "content": PARIS},
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        *result,
    ]
    again = client.responses.create(
        model=MODEL, input=history, tools=WEATHER, tool_choice="none", max_output_tokens=1
    )
    assert again.usage is not None
    assert answered.usage is not None
    assert again.usage.input_tokens == answered.usage.input_tokens


def test_a_function_call_streamed(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(
            model=MODEL,
            input=PARIS,
            tools=WEATHER,
            tool_choice={"type": "function", "name": "get_weather"},
            temperature=0,
            max_output_tokens=60,
            stream=True,
        )
    )
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert isinstance(events[2], ResponseOutputItemAddedEvent)
    assert isinstance(events[2].item, ResponseFunctionToolCall)
    assert events[2].item.name == "get_weather"
    deltas = [e for e in events if isinstance(e, ResponseFunctionCallArgumentsDeltaEvent)]
    assert deltas
    done = [e for e in events if isinstance(e, ResponseFunctionCallArgumentsDoneEvent)]
    assert len(done) == 1
    assert done[0].arguments == "".join(d.delta for d in deltas)
    assert isinstance(events[-2], ResponseOutputItemDoneEvent)
    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent)
    call = _call(completed.response)
    assert call.arguments == done[0].arguments
    assert call.id == events[2].item.id == done[0].item_id
    assert json.loads(call.arguments)["city"]


def test_tools_through_an_openai_compatible_upstream(keyed: Server) -> None:
    client = _as(keyed, "alice")
    raw = client.responses.with_raw_response.create(
        model=MODEL,
        input=PARIS,
        tools=WEATHER,
        tool_choice="required",
        max_output_tokens=60,
        temperature=0,
    )
    assert raw.headers["x-freshet-backend"] == "up"
    call = _call(raw.parse())
    assert call.name == "get_weather"
    with client.responses.stream(
        model=MODEL,
        input=PARIS,
        tools=WEATHER,
        tool_choice="required",
        max_output_tokens=60,
        temperature=0,
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert _call(final).name == "get_weather"


def test_bad_tools_are_400s(default_gateway: Server) -> None:
    url = default_gateway.url + "/v1/responses"
    good: dict[str, Any] = {"model": MODEL, "input": PARIS, "tools": WEATHER}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**good, "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({**good, "tools": [{"type": "function"}]}, "tools[0].name"),
        ({**good, "tools": [*WEATHER, *WEATHER]}, "tools[1].name"),
        ({**good, "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice.name"),
        ({**good, "tools": None, "tool_choice": "required"}, "tool_choice"),
        ({**good, "input": [{"type": "function_call_output", "output": "1"}]}, "input[0].call_id"),
        ({**good, "input": [{"type": "function_call", "call_id": "c"}]}, "input[0].name"),
    ]
    for body, param in cases:
        resp = httpx.post(url, json=body, timeout=TIMEOUT)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["error"]["param"] == param, resp.text


def _sse(resp: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    events, name = [], ""
    for line in resp.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
    return events


@pytest.mark.parametrize("tools", [False, True])
def test_every_field_as_the_sdks_types_require(default_gateway: Server, tools: bool) -> None:
    """The SDK builds its objects without validating them; pydantic, validating the wire
    JSON against the SDK's own types, finds any required field missing or mistyped."""
    url = default_gateway.url + "/v1/responses"
    body: dict[str, Any] = {"model": MODEL, "input": PARIS, "max_output_tokens": 40}
    if tools:
        body |= {"tools": WEATHER, "tool_choice": "required", "metadata": {"run": "1"}}
    plain = httpx.post(url, json=body, timeout=TIMEOUT)
    assert plain.status_code == 200
    response = Response.model_validate(plain.json(), strict=False)
    assert response.output
    event_type: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)
    with httpx.stream("POST", url, json={**body, "stream": True}, timeout=TIMEOUT) as resp:
        assert resp.status_code == 200
        events = _sse(resp)
    assert len(events) > 5
    for name, data in events:
        assert name == data["type"]
        event_type.validate_python(data)
    stored = httpx.get(url + "/" + response.id, timeout=TIMEOUT)
    Response.model_validate(stored.json())


def test_through_the_simulated_asic(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model="llama-3.1-8b", input=STORY, max_output_tokens=3
    )
    assert raw.headers["x-freshet-backend"] == "asic"
    response = raw.parse()
    assert response.status == "incomplete"
    assert response.usage is not None
    assert response.usage.output_tokens == 3
    events = list(
        client.responses.create(model="llama-3.1-8b", input=STORY, max_output_tokens=3, stream=True)
    )
    assert _check_stream(events).status == "incomplete"
    # The ASIC is text only: a request with tools goes to the CPU model of "auto".
    tooled = client.responses.with_raw_response.create(
        model="auto",
        input=PARIS,
        tools=WEATHER,
        tool_choice="required",
        max_output_tokens=60,
        temperature=0,
    )
    assert tooled.headers["x-freshet-backend"] == "cpu"


CITY: Any = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
    "additionalProperties": False,
}


def test_structured_output_by_text_format(client: openai.OpenAI, default_gateway: Server) -> None:
    fmt: Any = {"format": {"type": "json_schema", "name": "place", "schema": CITY, "strict": True}}
    response = client.responses.create(
        model=MODEL, input="Name a city in France.", text=fmt, max_output_tokens=60, temperature=0
    )
    assert response.status == "completed"
    value = json.loads(response.output_text)
    assert set(value) == {"city", "country"}
    assert response.text is not None
    assert response.text.format is not None
    assert response.text.format.type == "json_schema"
    events = list(
        client.responses.create(
            model=MODEL,
            input="Name a city in France.",
            text={"format": {"type": "json_object"}},
            temperature=0,
            max_output_tokens=60,
            stream=True,
        )
    )
    final = _check_stream(events)
    assert isinstance(json.loads(final.output_text), dict)
    url = default_gateway.url + "/v1/responses"
    body: dict[str, Any] = {"model": MODEL, "input": "x"}
    for text, param in [
        ({"format": {"type": "json_schema", "schema": CITY}}, "text.format.name"),
        ({"format": {"type": "json_schema", "name": "p"}}, "text.format.schema"),
        ({"format": {"type": "json_schema", "name": "p", "schema": {"type": 7}}}, None),
        ({"format": {"type": "xml"}}, "text.format.type"),
    ]:
        resp = httpx.post(url, json={**body, "text": text}, timeout=TIMEOUT)
        assert resp.status_code == 400, resp.text
        if param is not None:
            assert resp.json()["error"]["param"] == param


def test_a_client_that_leaves_mid_stream_stops_it(default_gateway: Server) -> None:
    body = {"model": MODEL, "input": STORY, "max_output_tokens": 400, "stream": True}
    url = default_gateway.url + "/v1/responses"
    with httpx.stream("POST", url, json=body, timeout=TIMEOUT) as resp:
        request_id = resp.headers["x-request-id"]
        deltas = 0
        for line in resp.iter_lines():
            deltas += line == "event: response.output_text.delta"
            if deltas == 3:
                break  # leave: the connection closes
    record = usage_record(default_gateway, request_id)
    assert record["status"] == "client_disconnected"
    assert record["operation"] == "responses"
    assert 3 <= record["completion_tokens"] < 400
    # Nothing was stored: the response never finished.
    stored = httpx.get(url + "/resp_" + request_id[4:], timeout=TIMEOUT)
    assert stored.status_code == 404


def test_input_items_of_a_stored_response(client: openai.OpenAI, default_gateway: Server) -> None:
    items: Any = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "input_text", "text": "Hi."}]},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Name a river."},
    ]
    first = client.responses.create(model=MODEL, input=items, max_output_tokens=2)
    listed = client.responses.input_items.list(first.id, order="asc")
    assert [(i.type, getattr(i, "role", None)) for i in listed.data] == [
        ("message", "developer"),
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
    ]
    texts = [i.content[0].text for i in listed.data]  # type: ignore[union-attr,index]
    assert texts == ["Be brief.", "Hi.", "Hello.", "Name a river."]
    assert len({i.id for i in listed.data}) == 4
    newest = client.responses.input_items.list(first.id)  # desc by default
    assert [i.id for i in newest.data] == [i.id for i in reversed(listed.data)]
    # Pages: the SDK follows `after` through has_more.
    paged = client.responses.input_items.list(first.id, order="asc", limit=3)
    assert paged.has_more
    assert [i.id for i in paged] == [i.id for i in listed.data]
    # A continued response lists its own input only, not the turns before it.
    result: Any = [{"type": "function_call_output", "call_id": "call_1", "output": "42"}]
    calls: Any = [
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
        *result,
    ]
    second = client.responses.create(
        model=MODEL, input=calls, previous_response_id=first.id, max_output_tokens=2
    )
    own = client.responses.input_items.list(second.id, order="asc").data
    assert [i.type for i in own] == ["function_call", "function_call_output"]
    url = default_gateway.url + f"/v1/responses/{second.id}/input_items"
    queries: list[tuple[dict[str, str | int], int]] = [
        ({"limit": 0}, 400),
        ({"after": "nope"}, 400),
        ({"order": "up"}, 400),
    ]
    for query, status in queries:
        resp = httpx.get(url, params=query, timeout=TIMEOUT)
        assert resp.status_code == status, resp.text
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list("resp_nope")
    page = httpx.get(url, timeout=TIMEOUT).json()
    event_type: TypeAdapter[ResponseItemList] = TypeAdapter(ResponseItemList)
    event_type.validate_python(page)
