"""freshet-llamacpp's tools and structured output without generating: the grammar for each
request (every one parsed by llama.cpp itself, on the default model's vocabulary), what
cannot be enforced, the prompt the model sees, and the reading of a streamed call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import llama_cpp
import pytest
from freshet_llamacpp.model_files import DEFAULT_DISTRIBUTION, gguf_from_distribution
from freshet_llamacpp.tools import MAX_REPEAT, CallReader, EitherReader, chat_messages, plan

from gateway.backend import (
    GenerationRequest,
    Message,
    NamedTool,
    ResponseFormat,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
)
from gateway.errors import InvalidRequest

WEATHER = ToolSpec(
    name="get_weather",
    description="Weather in a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = ToolSpec(name="get_time", parameters={})
ASK = [Message(role="user", content="Weather in Paris?")]


def chat(**fields: Any) -> GenerationRequest:
    messages = fields.pop("messages", ASK)
    return GenerationRequest(
        request_id="r", operation="chat", model="m", messages=messages, **fields
    )


@pytest.fixture(scope="module")
def vocab() -> Iterator[Any]:
    llama = llama_cpp.Llama(
        model_path=str(gguf_from_distribution(DEFAULT_DISTRIBUTION)),
        vocab_only=True,
        verbose=False,
    )
    yield llama._model.vocab
    llama.close()


def parses(vocab: Any, grammar: str | None) -> bool:
    assert grammar is not None
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def test_plain_requests_have_no_grammar() -> None:
    assert plan(chat()).grammar is None
    assert plan(chat(response_format=ResponseFormat(type="text"))).mode == "text"
    # tool_choice none: the tools are ignored, not even described.
    ignored = chat(tools=[WEATHER], tool_choice="none")
    assert (plan(ignored).mode, plan(ignored).grammar) == ("text", None)
    assert "get_weather" not in json.dumps(chat_messages(ignored))


def test_json_object_and_json_schema(vocab: Any) -> None:
    obj = plan(chat(response_format=ResponseFormat(type="json_object")))
    assert obj.mode == "json"
    assert parses(vocab, obj.grammar)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    fixed = plan(chat(response_format=ResponseFormat(type="json_schema", schema=schema)))
    assert fixed.mode == "json"
    assert fixed.grammar is not None
    assert '\\"n\\"' in fixed.grammar
    assert parses(vocab, fixed.grammar)


def test_required_and_named_calls(vocab: Any) -> None:
    required = plan(chat(tools=[WEATHER, TIME], tool_choice="required"))
    assert required.mode == "call"
    assert required.grammar is not None
    assert "get_weather" in required.grammar
    assert "get_time" in required.grammar
    assert parses(vocab, required.grammar)
    named = plan(chat(tools=[WEATHER, TIME], tool_choice=NamedTool(name="get_time")))
    assert named.grammar is not None
    assert "get_time" in named.grammar
    assert "get_weather" not in named.grammar
    assert parses(vocab, named.grammar)


def test_auto_allows_a_call_or_text(vocab: Any) -> None:
    auto = plan(chat(tools=[WEATHER]))
    assert auto.mode == "auto"
    assert auto.grammar is not None
    assert "root ::= freshet-call | freshet-text" in auto.grammar
    assert auto.grammar.count("root ::=") == 1
    assert parses(vocab, auto.grammar)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "maxLength": MAX_REPEAT + 1},
        {"type": "array", "items": {"type": "integer"}, "minItems": 5000},
        {"$ref": "https://example.com/schema.json"},
        {"type": "string", "pattern": "^(a|b"},  # the converter's own refusal
        {"$ref": "#/$defs/missing"},
        {"type": "string", "pattern": "^a{2000}$"},
        {"type": "string", "pattern": "^a{1,5000}$"},
        {"type": "integer", "minimum": 0},  # one-sided: llama_cpp's converter has no ranges
        {"type": "integer", "minimum": 0, "maximum": 5000},
        {"type": "number", "minimum": 0, "maximum": 1},
        {"type": "integer", "minimum": 3, "maximum": 2},
        {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
    ],
)
def test_what_cannot_be_enforced_is_a_400(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        plan(chat(response_format=ResponseFormat(type="json_schema", schema=schema)))
    assert caught.value.param == "response_format.json_schema.schema"
    with pytest.raises(InvalidRequest) as caught:
        plan(
            chat(
                tools=[
                    ToolSpec(name="f", parameters={"type": "object", "properties": {"a": schema}})
                ]
            )
        )
    assert caught.value.param == "tools"


def test_the_prompt_describes_tools_and_renders_history() -> None:
    history = [
        Message(role="system", content="Be brief."),
        *ASK,
        Message(
            role="assistant",
            tool_calls=[ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')],
        ),
        Message(role="tool", content="21 C", tool_call_id="call_1"),
    ]
    system, user, assistant, tool = chat_messages(chat(messages=history, tools=[WEATHER]))
    assert system["role"] == "system"
    assert system["content"].startswith("Be brief.\n\nYou can call these functions:")
    assert (
        json.dumps(
            {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": dict(WEATHER.parameters),
            }
        )
        in system["content"]
    )
    assert user == {"role": "user", "content": "Weather in Paris?"}
    assert json.loads(assistant["content"]) == {
        "name": "get_weather",
        "arguments": {"city": "Paris"},
    }
    assert tool == {"role": "tool", "content": "21 C"}
    # Without a system message one is added; a template that refuses role tool gets a user
    # message that says what it is.
    added = chat_messages(chat(messages=history[1:], tools=[WEATHER]), tool_role=False)
    assert added[0]["role"] == "system"
    assert added[-1] == {"role": "user", "content": "Result of tool call call_1: 21 C"}


def _read(text: str, step: int) -> list[ToolCallDelta]:
    out: list[ToolCallDelta] = []
    reader = CallReader(out.append)
    for i in range(0, len(text), step):
        reader.feed(text[i : i + step])
    reader.close()
    return out


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_a_streamed_call_is_read_as_pieces(step: int) -> None:
    arguments = '{"city": "Paris }", "n": {"deep": [1, 2]}}'
    out = _read('{"name": "get_weather", "arguments": ' + arguments + "} ", step)
    head, *rest = out
    assert head.index == 0
    assert head.id is not None
    assert head.id.startswith("call_")
    assert (head.name, head.arguments) == ("get_weather", "")
    assert all(p.id is None and p.name is None and p.index == 0 for p in rest)
    assert "".join(p.arguments for p in rest) == arguments


def test_a_call_cut_short_keeps_what_came() -> None:
    out = _read('{"name": "get_time", "arguments": {"ci', 2)
    assert out[0].name == "get_time"
    assert "".join(p.arguments for p in out[1:]) == '{"ci'
    assert _read('{"name": "get_ti', 1) == []


def test_small_integer_ranges_become_enums(vocab: Any) -> None:
    schema = {
        "type": "object",
        "properties": {
            "age": {"type": "integer", "minimum": 0, "maximum": 150, "title": "Age"},
            "odd": {
                "type": "integer",
                "exclusiveMinimum": 0,
                "exclusiveMaximum": 8,
                "multipleOf": 3,
            },
        },
    }
    grammar = plan(chat(response_format=ResponseFormat(type="json_schema", schema=schema))).grammar
    assert grammar is not None
    assert 'age ::= "0" | "1" | "2"' in grammar
    assert '"150"' in grammar
    assert '"151"' not in grammar
    assert 'odd ::= "3" | "6"\n' in grammar
    assert parses(vocab, grammar)


def test_strings_hold_no_raw_control_characters(vocab: Any) -> None:
    """JSON forbids them inside strings; the converter's own rule allowed them."""
    schema = {
        "type": "object",
        "properties": {"s": {"type": "string"}, "p": {"type": "string", "pattern": "^a.b$"}},
    }
    for request in (
        chat(response_format=ResponseFormat(type="json_schema", schema=schema)),
        chat(response_format=ResponseFormat(type="json_object")),
        chat(tools=[WEATHER], tool_choice="required"),
        chat(tools=[WEATHER]),
    ):
        grammar = plan(request).grammar
        assert grammar is not None
        assert 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |' in grammar
        assert 'char ::= [^"\\\\] |' not in grammar
        assert parses(vocab, grammar)
    patterned = plan(
        chat(response_format=ResponseFormat(type="json_schema", schema=schema))
    ).grammar
    assert patterned is not None
    assert 'dot ::= [^"\\\\\\x7F\\x00-\\x1F]' in patterned


def test_auto_with_a_response_format_is_a_call_or_the_formats_json(vocab: Any) -> None:
    fmt = ResponseFormat(
        type="json_schema", schema={"type": "object", "properties": {"answer": {"type": "string"}}}
    )
    either = plan(chat(tools=[WEATHER], response_format=fmt))
    assert either.mode == "call_or_json"
    assert list(either.tools) == ["get_weather"]
    assert parses(vocab, either.grammar)
    # Forced calls ignore the format: the answer is the call.
    assert plan(chat(tools=[WEATHER], tool_choice="required", response_format=fmt)).mode == "call"


def _either(text: str) -> tuple[bool, list[object]]:
    out: list[object] = []
    reader = EitherReader(out.append, ["get_weather"])
    for i in range(0, len(text), 4):
        reader.feed(text[i : i + 4])
    return reader.close(), out


def test_either_reader_tells_a_call_from_an_answer() -> None:
    called, out = _either('{"name": "get_weather", "arguments": {"city": "Oslo"}}')
    assert called
    assert isinstance(out[0], ToolCallDelta)
    assert out[0].name == "get_weather"
    assert "".join(p.arguments for p in out if isinstance(p, ToolCallDelta)) == '{"city": "Oslo"}'
    # An answer that only looks like a call (another name, more keys) stays text.
    for answer in (
        '{"answer": "4"}',
        '{"name": "other", "arguments": {}}',
        '{"name": "get_weather", "arguments": {}, "x": 1}',
    ):
        called, out = _either(answer)
        assert not called
        assert out == [answer]
