"""A function tool's ``strict`` reaches a vLLM (or OpenAI-compatible) upstream as the
client sent it, from chat and from the Responses API: vLLM constrains a strict tool's
arguments to its schema and leaves the others free (tests/vllm/test_vllm_apis.py shows
both on the real server)."""

from __future__ import annotations

from typing import Any

import msgspec
from freshet_vllm.wire import request_body

from gateway import protocol as p
from gateway.api.responses import protocol as r
from gateway.api.responses import translate
from gateway.backend import GenerationRequest, Message
from gateway.flow.requests import from_chat

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def sent_functions(request: GenerationRequest) -> list[dict[str, Any]]:
    body = request_body(request, "served")
    return [tool["function"] for tool in body["tools"]]


def test_chat_tools_keep_strict() -> None:
    tools = [
        {"type": "function", "function": {"name": name, "parameters": WEATHER, **strict}}
        for name, strict in (("a", {"strict": True}), ("b", {"strict": False}), ("c", {}))
    ]
    body = msgspec.convert(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": tools},
        p.ChatCompletionRequest,
    )
    functions = sent_functions(from_chat(body, "req_1"))
    assert [f.get("strict") for f in functions] == [True, False, None]
    assert "strict" not in functions[2]  # not sent when the client did not say
    assert all(f["parameters"] == WEATHER for f in functions)


def test_responses_tools_keep_strict() -> None:
    given = [
        r.FunctionTool(type="function", name="a", parameters=WEATHER, strict=True),
        r.FunctionTool(type="function", name="b", parameters=WEATHER),
    ]
    request = GenerationRequest(
        request_id="req_2",
        operation="chat",
        model="m",
        messages=[Message(role="user", content="hi")],
        tools=translate.tools(given),
    )
    functions = sent_functions(request)
    assert [f.get("strict") for f in functions] == [True, None]
