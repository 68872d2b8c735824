"""Tool calls through a vLLM (or OpenAI-compatible) upstream, as the real vLLM showed them
(tests/vllm/test_vllm_apis.py): a function tool's ``strict`` reaches it as the client sent
it, from chat and from the Responses API (vLLM constrains a strict tool's arguments to its
schema and leaves the others free), and a call forced by name, which vLLM ends with
``stop``, ends with ``tool_calls``."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from freshet_vllm import OpenAICompatibleBackend, VllmServerBackend
from freshet_vllm.wire import request_body

from gateway import protocol as p
from gateway.api.responses import protocol as r
from gateway.api.responses import translate
from gateway.backend import (
    Backend,
    BackendConfig,
    GenerationRequest,
    Message,
    NamedTool,
    ToolSpec,
)
from gateway.flow.requests import from_chat
from tests.vllm.fake_upstream import FakeVllm

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


class NoFleet:
    def get(self, backend_id: str) -> Backend:
        raise KeyError(backend_id)


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


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["vllm", "openai-compatible"])
async def test_calls_forced_by_name_end_with_tool_calls(kind: str) -> None:
    """vLLM ends a call forced by name with finish_reason "stop" (tests/vllm/test_vllm_apis.py
    shows it on the real server); an answer with calls ends with tool_calls here, so
    Anthropic's stop_reason is tool_use."""
    fake = FakeVllm()
    await fake.start()
    fake.words = []
    fake.tool_calls = [("get_weather", ['{"city": "Paris"}'])]
    fake.tool_finish = "stop"
    params: dict[str, Any] = {"urls": [fake.url]} if kind == "vllm" else {"url": fake.url}
    config = BackendConfig(id="b", type=kind, model="m", params=params)
    backend = (
        VllmServerBackend(config, NoFleet())
        if kind == "vllm"
        else OpenAICompatibleBackend(config, NoFleet())
    )
    request = GenerationRequest(
        request_id="req_3",
        operation="chat",
        model="m",
        messages=[Message(role="user", content="Weather in Paris?")],
        tools=[ToolSpec(name="get_weather", parameters=WEATHER)],
        tool_choice=NamedTool(name="get_weather"),
    )
    await backend.start()
    try:
        chunks = [chunk async for chunk in backend.stream(request)]
    finally:
        await backend.aclose()
        await fake.close()
    assert [d.name for c in chunks for d in c.tool_calls if d.name] == ["get_weather"]
    assert chunks[-1].finish_reason == "tool_calls"
