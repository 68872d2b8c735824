"""Freshet's other APIs through a ``vllm`` backend in front of the real vLLM (CPU build,
SmolLM2-135M-Instruct, the session's server from conftest), each checked against what the
same vLLM answers directly: Anthropic's Messages API with the ``anthropic`` SDK, OpenAI's
Responses API and structured output with the ``openai`` SDK, and vLLM's prefix-cache hits
(``prompt_tokens_details.cached_tokens``) carried to the client and the ledger and priced at
the backend's cached-input list price.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import jsonschema
import openai
import pytest
from openai.types.responses import (
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseTextDeltaEvent,
)

from tests.support.server import Server, running_server
from tests.vllm.vllm_process import SERVED_MODEL, VllmServer

# USD per million tokens: what this test prices the self-hosted model at, so the ledger's
# list-price dollars can be checked to the arithmetic (cache hits a tenth of the input).
PRICE = {"input_per_mtok": 1.0, "cached_input_per_mtok": 0.1, "output_per_mtok": 2.0}

ASK = "Name three rivers in Europe."
TERSE = "You are terse."

CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "country": {"type": "string", "maxLength": 24},
        "is_capital": {"type": "boolean"},
    },
    "required": ["city", "country", "is_capital"],
    "additionalProperties": False,
}
CITY_FORMAT: Any = {
    "type": "json_schema",
    "json_schema": {"name": "city", "schema": CITY, "strict": True},
}
CAPITAL: Any = [{"role": "user", "content": "What is the capital of France? Answer in JSON."}]


@pytest.fixture(scope="module")
def gateway(vllm_server: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = {
        "backends": [
            {
                "id": "gpu",
                "type": "vllm",
                "model": SERVED_MODEL,
                "knowledge_cutoff": "2024-06-01",
                "urls": [vllm_server.url],
                "poll_interval_s": 0.2,
                "profile": {"max_context": 2048},
                "list_price": PRICE,
                # The session's vLLM runs with --enable-auto-tool-choice and a tool parser.
                "capabilities": ["tools", "json_schema"],
            }
        ]
    }
    with running_server(tmp_path_factory.mktemp("gateway-vllm-apis"), config) as server:
        yield server


@pytest.fixture(scope="module")
def client(gateway: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def claude(gateway: Server) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def direct(vllm_server: VllmServer) -> Iterator[openai.OpenAI]:
    """The same vLLM server without Freshet in between."""
    with openai.OpenAI(base_url=vllm_server.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def record_of(gateway: Server, request_id: str) -> dict[str, Any]:
    """The ledger's record of one request (written just after the answer)."""
    deadline = time.monotonic() + 10
    while True:
        status, body = gateway.get("/freshet/usage?backend=gpu")
        assert status == 200, body
        found = [r for r in json.loads(body)["data"] if r["request_id"] == request_id]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, request_id
            record: dict[str, Any] = found[0]
            return record
        time.sleep(0.1)


def vllms_own(direct: openai.OpenAI, messages: Any, max_tokens: int) -> tuple[str, int, int]:
    """vLLM's own answer to the same chat: text, prompt and completion tokens."""
    theirs = direct.chat.completions.create(
        model=SERVED_MODEL, messages=messages, max_tokens=max_tokens, temperature=0.0
    )
    assert theirs.usage is not None
    text = theirs.choices[0].message.content or ""
    return text, theirs.usage.prompt_tokens, theirs.usage.completion_tokens


def test_messages_equal_vllms_own_chat(
    claude: anthropic.Anthropic, direct: openai.OpenAI, gateway: Server
) -> None:
    text, prompt, completion = vllms_own(
        direct, [{"role": "system", "content": TERSE}, {"role": "user", "content": ASK}], 24
    )
    args: dict[str, Any] = {
        "model": SERVED_MODEL,
        "system": TERSE,
        "messages": [{"role": "user", "content": ASK}],
        "max_tokens": 24,
        "extra_body": {"temperature": 0.0},
    }
    raw = claude.messages.with_raw_response.create(**args)
    message = raw.parse()
    assert raw.headers["x-freshet-backend"] == "gpu"
    assert message.model == SERVED_MODEL
    assert message.content[0].type == "text"
    assert message.content[0].text == text
    u = message.usage
    # Anthropic's input_tokens leave out what the prompt cache served (vLLM's cache has
    # the prompt now: the direct request above put it there).
    read = u.cache_read_input_tokens or 0
    assert u.input_tokens + read + (u.cache_creation_input_tokens or 0) == prompt
    assert u.output_tokens == completion
    assert message.stop_reason == ("max_tokens" if completion == 24 else "end_turn")
    record = record_of(gateway, raw.headers["x-request-id"])
    assert record["operation"] == "messages"
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, completion)
    assert record["cached_prompt_tokens"] == read

    with claude.messages.stream(**args) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds.count("text") >= 3  # token by token, not in one piece
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert final.content[0].type == "text"
    assert final.content[0].text == text
    assert final.stop_reason == message.stop_reason
    f = final.usage
    streamed_read = f.cache_read_input_tokens or 0
    assert f.input_tokens + streamed_read + (f.cache_creation_input_tokens or 0) == prompt
    assert f.output_tokens == completion
    record = record_of(gateway, request_id)
    assert record["stream"]
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, completion)
    assert record["cached_prompt_tokens"] == streamed_read


def test_count_tokens_estimates_vllms_prompt(claude: anthropic.Anthropic) -> None:
    asked: Any = [{"role": "user", "content": ASK}]
    raw = claude.messages.with_raw_response.count_tokens(model=SERVED_MODEL, messages=asked)
    assert raw.headers["x-freshet-backend"] == "gpu"
    assert raw.headers["x-freshet-token-count"] == "estimate"
    assert raw.parse().input_tokens > 0


def test_responses_equal_vllms_own_chat(
    client: openai.OpenAI, direct: openai.OpenAI, gateway: Server
) -> None:
    text, prompt, completion = vllms_own(
        direct, [{"role": "system", "content": TERSE}, {"role": "user", "content": ASK}], 24
    )
    args: dict[str, Any] = {
        "model": SERVED_MODEL,
        "input": ASK,
        "instructions": TERSE,
        "max_output_tokens": 24,
        "temperature": 0.0,
    }
    raw = client.responses.with_raw_response.create(**args)
    response = raw.parse()
    assert raw.headers["x-freshet-backend"] == "gpu"
    assert response.model == SERVED_MODEL
    assert response.output_text == text
    assert response.status == ("incomplete" if completion == 24 else "completed")
    usage = response.usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (prompt, completion)
    assert usage.total_tokens == prompt + completion
    record = record_of(gateway, raw.headers["x-request-id"])
    assert record["operation"] == "responses"
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, completion)
    assert record["cached_prompt_tokens"] == usage.input_tokens_details.cached_tokens

    events = list(client.responses.create(stream=True, **args))
    deltas = [e.delta for e in events if isinstance(e, ResponseTextDeltaEvent)]
    assert len(deltas) >= 3
    assert "".join(deltas) == text
    done = [e for e in events if e.type in ("response.completed", "response.incomplete")]
    assert len(done) == 1
    streamed = done[0].response
    assert streamed.output_text == text
    assert streamed.usage is not None
    assert (streamed.usage.input_tokens, streamed.usage.output_tokens) == (prompt, completion)


def test_responses_stream_completes(client: openai.OpenAI) -> None:
    """An answer that ends by itself: the stream's last event is response.completed."""
    events = list(
        client.responses.create(
            model=SERVED_MODEL, input="Say hi.", max_output_tokens=200, temperature=0.0, stream=True
        )
    )
    assert events[0].type == "response.created"
    last = events[-1]
    assert isinstance(last, ResponseCompletedEvent)
    assert last.response.status == "completed"
    assert last.response.output_text.strip()


def test_json_schema_through_vllms_structured_outputs(
    client: openai.OpenAI, direct: openai.OpenAI
) -> None:
    args: dict[str, Any] = {
        "model": SERVED_MODEL,
        "messages": CAPITAL,
        "max_tokens": 80,
        "temperature": 0.0,
        "response_format": CITY_FORMAT,
    }
    raw = client.chat.completions.with_raw_response.create(**args)
    reply = raw.parse()
    assert raw.headers["x-freshet-backend"] == "gpu"
    assert reply.choices[0].finish_reason == "stop"
    content = reply.choices[0].message.content or ""
    answer = json.loads(content)
    jsonschema.validate(answer, CITY)
    theirs = direct.chat.completions.create(**args)
    assert content == theirs.choices[0].message.content
    # Without the schema the same question is not answered in that JSON.
    free = client.chat.completions.create(
        model=SERVED_MODEL, messages=CAPITAL, max_tokens=80, temperature=0.0
    )
    assert free.choices[0].message.content != content

    chunks = list(client.chat.completions.create(stream=True, **args))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == content


WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 24}},
    "required": ["city"],
    "additionalProperties": False,
}
PARIS: Any = [{"role": "user", "content": "What is the weather in Paris?"}]


def weather(strict: bool | None = True) -> Any:
    fn: dict[str, Any] = {"name": "get_weather", "description": "The weather in a city"}
    fn["parameters"] = WEATHER_PARAMS
    if strict is not None:
        fn["strict"] = strict
    return [{"type": "function", "function": fn}]


def test_forced_tool_calls_through_vllms_parser(client: openai.OpenAI) -> None:
    """vLLM constrains a forced call's arguments to their schema when the tool is strict:
    the gateway has to pass ``strict`` on (it once dropped it, and vLLM's answer was the
    arguments ``"Paris"``, a JSON string, not the object the schema asks for)."""
    named: Any = {"type": "function", "function": {"name": "get_weather"}}
    raw = client.chat.completions.with_raw_response.create(
        model=SERVED_MODEL,
        messages=PARIS,
        tools=weather(),
        tool_choice=named,
        max_tokens=60,
        temperature=0.0,
    )
    assert raw.headers["x-freshet-backend"] == "gpu"
    message = raw.parse().choices[0].message
    assert message.tool_calls is not None
    assert len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER_PARAMS)
    assert call.id

    chunks = list(
        client.chat.completions.create(
            model=SERVED_MODEL,
            messages=PARIS,
            tools=weather(),
            tool_choice="required",
            max_tokens=60,
            temperature=0.0,
            stream=True,
        )
    )
    pieces = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or ()) if tc]
    assert pieces[0].function is not None
    assert pieces[0].function.name == "get_weather"
    streamed = "".join(p.function.arguments or "" for p in pieces if p.function)
    assert json.loads(streamed) == arguments
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["tool_calls"]

    # The tool's result in the history: vLLM answers in words.
    history: Any = [
        *PARIS,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21, "sky": "sunny"}'},
    ]
    answer = client.chat.completions.create(
        model=SERVED_MODEL, messages=history, tools=weather(), max_tokens=30, temperature=0.0
    )
    assert answer.choices[0].message.content
    assert not answer.choices[0].message.tool_calls


def test_forced_tool_use_with_anthropics_sdk(claude: anthropic.Anthropic) -> None:
    """Anthropic's tools carry no ``strict``: vLLM constrains the call's envelope (the tool
    named) but not its arguments, so the input is whatever object SmolLM2 writes, or
    ``{}`` when it writes none."""
    tools: Any = [
        {
            "name": "get_weather",
            "description": "The weather in a city",
            "input_schema": WEATHER_PARAMS,
        }
    ]
    message = claude.messages.create(
        model=SERVED_MODEL,
        messages=PARIS,
        tools=tools,
        tool_choice={"type": "tool", "name": "get_weather"},
        max_tokens=60,
    )
    assert message.stop_reason == "tool_use"
    use = message.content[-1]
    assert use.type == "tool_use"
    assert use.name == "get_weather"
    assert isinstance(use.input, dict)


# About 900 tokens of a prompt no other test sends.
LONG = " ".join(
    f"Stage {i}: the river leaves the gorge at mile {i * 7} and turns toward the old mill."
    for i in range(40)
)


BLOCK = 128  # vLLM's default KV-cache block size on CPU


def test_prefix_cache_hits_are_reported_and_priced(client: openai.OpenAI, gateway: Server) -> None:
    ask: Any = [{"role": "user", "content": LONG + " Where does the river go?"}]
    args: dict[str, Any] = {
        "model": SERVED_MODEL,
        "messages": ask,
        "max_tokens": 8,
        "temperature": 0.0,
    }
    first = client.chat.completions.create(**args)
    raw = client.chat.completions.with_raw_response.create(**args)
    second = raw.parse()
    assert first.usage is not None
    assert second.usage is not None
    prompt = second.usage.prompt_tokens
    assert prompt > 6 * BLOCK
    assert first.usage.prompt_tokens == prompt
    before = first.usage.prompt_tokens_details  # absent when nothing came from the cache
    # vLLM's CPU build caches whole blocks of 128 tokens: nothing of this prompt the first
    # time (the default system prompt before it is shorter than a block).
    assert before is None or not before.cached_tokens
    details = second.usage.prompt_tokens_details
    assert details is not None
    cached = details.cached_tokens
    assert cached is not None
    # The second time, every whole block but the one with the last prompt token, which
    # vLLM computes again for the first output token.
    assert cached == (prompt - 1) // BLOCK * BLOCK

    record = record_of(gateway, raw.headers["x-request-id"])
    completion = second.usage.completion_tokens
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, completion)
    assert record["cached_prompt_tokens"] == cached
    usd_in = ((prompt - cached) * 1.0 + cached * 0.1) / 1e6
    usd_out = completion * 2.0 / 1e6
    assert record["usd_list"] == pytest.approx(usd_in + usd_out, abs=1e-15)
    # The same request unpriced by the cache would have cost input_per_mtok on every token.
    assert record["usd_list"] < (prompt * 1.0 + completion * 2.0) / 1e6

    # Streamed: the usage chunk carries it too.
    chunks = list(
        client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **args)
    )
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == cached


def test_responses_function_call_keeps_strict(client: openai.OpenAI) -> None:
    """A strict function on the Responses API: vLLM constrains its arguments too."""
    tools: Any = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": WEATHER_PARAMS,
            "strict": True,
        }
    ]
    events = list(
        client.responses.create(
            model=SERVED_MODEL,
            input="What is the weather in Paris?",
            tools=tools,
            tool_choice={"type": "function", "name": "get_weather"},
            max_output_tokens=60,
            temperature=0.0,
            stream=True,
        )
    )
    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent)
    calls = [i for i in completed.response.output if isinstance(i, ResponseFunctionToolCall)]
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER_PARAMS)


def test_stop_sequence_that_ended_it(claude: anthropic.Anthropic) -> None:
    """vLLM says which stop string ended the output: Anthropic's stop_sequence."""
    args: dict[str, Any] = {
        "model": SERVED_MODEL,
        "messages": [{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
        "max_tokens": 60,
        "stop_sequences": ["never said", "5"],
        "extra_body": {"temperature": 0.0},
    }
    message = claude.messages.create(**args)
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "5"
    assert message.content[0].type == "text"
    text = message.content[0].text
    assert "4" in text
    assert "5" not in text
    with claude.messages.stream(**args) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "5")
    assert final.content[0].type == "text"
    assert final.content[0].text == text
