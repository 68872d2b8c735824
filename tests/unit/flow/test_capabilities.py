"""Capabilities in routing (#19): a request that needs tools, structured output or vision
is never routed to a deployment without it (dropped as ``capability(...)``), and one that
no deployment can serve is a 400 naming what is missing; what a chat request needs; the
config's ``capabilities``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pytest

from gateway import protocol as p
from gateway.backend import (
    KNOWN_CAPABILITIES,
    BackendStatus,
    Deployment,
    GenerationRequest,
    ImagePart,
    Message,
    NamedTool,
    ResponseFormat,
    TextPart,
    ToolCall,
    ToolSpec,
)
from gateway.builtins.routers import CheapestFresh
from gateway.errors import ConfigError, FreshnessUnsatisfiable, InvalidRequest
from gateway.flow.decision import CapabilityUnsupported, decide
from gateway.flow.estimate import estimate_prompt_tokens
from gateway.flow.requests import from_chat
from gateway.routing import NO_NEED, Decision, Need
from gateway.settings import Settings, load_settings
from tests.security.gateways import gateway
from tests.unit.flow.test_decision import SHAPE, FixedCost

TOOL = ToolSpec(name="f", parameters={"type": "object"})
ASK = [Message(role="user", content="hi")]


def dep(backend: str, *capabilities: str, cutoff: dt.date = dt.date(2024, 1, 1)) -> Deployment:
    return Deployment(
        backend_id=backend,
        model=f"m-{backend}",
        knowledge_cutoff=cutoff,
        max_context=4096,
        capabilities=frozenset(capabilities),
    )


def run(deployments: list[Deployment], needs: frozenset[str], need: Need = NO_NEED) -> Decision:
    return decide(
        "g",
        deployments,
        SHAPE,
        need,
        {d.backend_id: BackendStatus(healthy=True) for d in deployments},
        {d.backend_id: FixedCost(1 + i) for i, d in enumerate(deployments)},  # type: ignore[misc]
        frozenset(),
        CheapestFresh(),
        "cheapest-fresh",
        operation="chat",
        needs=needs,
    )


def request(**fields: object) -> GenerationRequest:
    return GenerationRequest(
        request_id="r",
        operation="chat",
        model="m",
        messages=fields.pop("messages", ASK),  # type: ignore[arg-type]
        **fields,  # type: ignore[arg-type]
    )


def test_what_a_request_needs() -> None:
    assert request().needs() == frozenset()
    assert request(tools=[TOOL]).needs() == {"tools"}  # tool_choice absent: auto
    assert request(tools=[TOOL], tool_choice="required").needs() == {"tools"}
    assert request(tools=[TOOL], tool_choice=NamedTool(name="f")).needs() == {"tools"}
    assert request(tools=[TOOL], tool_choice="none").needs() == frozenset()
    assert request(response_format=ResponseFormat(type="text")).needs() == frozenset()
    assert request(response_format=ResponseFormat(type="json_object")).needs() == {"json_schema"}
    image = Message(role="user", content="x", parts=[TextPart(text="x"), ImagePart(url="data:,")])
    assert request(messages=[image]).needs() == {"vision"}
    # Tool calls and results in the history need nothing by themselves.
    history = [
        Message(role="assistant", tool_calls=[ToolCall(id="c", name="f", arguments="{}")]),
        Message(role="tool", content="1", tool_call_id="c"),
    ]
    assert request(messages=history).needs() == frozenset()
    assert set(KNOWN_CAPABILITIES) >= {"tools", "json_schema", "vision", "embeddings"}


def test_a_deployment_without_the_capability_is_dropped_with_a_reason() -> None:
    d = run([dep("plain"), dep("tooled", "tools")], frozenset({"tools"}))
    assert [c.deployment.backend_id for c in d.ordered] == ["tooled"]
    assert [(c.deployment.backend_id, c.dropped) for c in d.dropped] == [
        ("plain", "capability(tools)")
    ]
    assert "dropped=plain:capability(tools)" in d.header()
    # Without the need, the cheaper plain deployment wins as before.
    assert [
        c.deployment.backend_id
        for c in run([dep("plain"), dep("tooled", "tools")], frozenset()).ordered
    ] == [
        "plain",
        "tooled",
    ]


def test_every_missing_capability_is_named_in_the_reason() -> None:
    d = run(
        [dep("a", "tools"), dep("b", "tools", "json_schema", "vision")],
        frozenset({"vision", "json_schema"}),
    )
    assert [(c.deployment.backend_id, c.dropped) for c in d.dropped] == [
        ("a", "capability(json_schema,vision)")
    ]


def test_no_deployment_with_the_capability_is_a_400_naming_it() -> None:
    with pytest.raises(CapabilityUnsupported) as caught:
        run([dep("a", "json_schema"), dep("b")], frozenset({"tools"}))
    exc = caught.value
    assert isinstance(exc, InvalidRequest)
    assert exc.status == 400
    assert exc.code == "capability_unsupported"
    assert exc.param == "tools"
    assert "needs tools" in exc.message
    assert "json_schema" in exc.message  # what they can do
    with pytest.raises(CapabilityUnsupported) as caught:
        run([dep("a")], frozenset({"vision"}))
    assert caught.value.param == "messages"
    assert "text only" in caught.value.message


def test_each_lacking_a_different_one_is_still_a_400() -> None:
    with pytest.raises(CapabilityUnsupported) as caught:
        run([dep("a", "tools"), dep("b", "json_schema")], frozenset({"tools", "json_schema"}))
    assert "json_schema, tools" in caught.value.message


def test_freshness_is_judged_among_the_capable_deployments() -> None:
    fresh_plain = dep("new", cutoff=dt.date(2025, 6, 1))
    need = Need(min_cutoff=dt.date(2025, 1, 1), source="body")
    with pytest.raises(FreshnessUnsatisfiable) as caught:
        run([fresh_plain, dep("old", "tools")], frozenset({"tools"}), need)
    assert "the freshest available is 2024-01-01" in caught.value.message


def _chat(**fields: object) -> p.ChatCompletionRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return msgspec.convert(body, p.ChatCompletionRequest)


def test_from_chat_maps_tools_choice_format_and_history() -> None:
    gen = from_chat(
        _chat(
            tools=[{"type": "function", "function": {"name": "f", "description": "d"}}],
            tool_choice={"type": "function", "function": {"name": "f"}},
            parallel_tool_calls=False,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
            },
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "see"}]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "done"},
            ],
        ),
        "r",
    )
    assert gen.tools == [ToolSpec(name="f", description="d", parameters={"type": "object"})]
    assert gen.tool_choice == NamedTool(name="f")
    assert gen.parallel_tool_calls is False
    assert gen.response_format == ResponseFormat(
        type="json_schema", schema={"type": "object"}, name="out", strict=True
    )
    user, assistant, tool = gen.messages
    assert (user.content, user.parts) == ("see", ())  # text parts only: plain text
    assert assistant.content == ""
    assert assistant.tool_calls == [ToolCall(id="c1", name="f", arguments="{}")]
    assert (tool.role, tool.content, tool.tool_call_id) == ("tool", "done", "c1")
    assert from_chat(_chat(response_format={"type": "text"}), "r").response_format is None


def test_image_parts_are_kept_in_order() -> None:
    gen = from_chat(
        _chat(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "a"},
                        {"type": "image_url", "image_url": {"url": "data:,", "detail": "low"}},
                        {"type": "text", "text": "b"},
                    ],
                }
            ]
        ),
        "r",
    )
    [message] = gen.messages
    assert message.content == "ab"
    assert list(message.parts) == [
        TextPart(text="a"),
        ImagePart(url="data:,", detail="low"),
        TextPart(text="b"),
    ]
    with pytest.raises(InvalidRequest) as caught:
        from_chat(_chat(messages=[{"role": "user", "content": [{"type": "input_audio"}]}]), "r")
    assert caught.value.param == "messages[0].content[0].type"


@pytest.mark.parametrize(
    ("schema", "param"),
    [
        ({"type": "object", "properties": {"a": {"type": "text"}}}, "properties.a.type"),
        ({"type": "object", "properties": {"a": 3}}, "properties.a"),
        ({"anyOf": []}, "anyOf"),
        ({"items": {"type": ["string", 3]}}, "items.type"),
        ({"enum": []}, "enum"),
        ({"$defs": {"x": {"required": [1]}}}, "$defs.x.required"),
    ],
)
def test_a_malformed_schema_is_a_400_naming_where(schema: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        from_chat(
            _chat(
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": schema},
                }
            ),
            "r",
        )
    assert caught.value.param == f"response_format.json_schema.schema.{param}"


def test_a_too_deep_schema_is_a_400() -> None:
    schema: dict[str, object] = {"type": "string"}
    for _ in range(40):
        schema = {"type": "array", "items": schema}
    with pytest.raises(InvalidRequest) as caught:
        from_chat(
            _chat(
                tools=[
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "object", "properties": {"a": schema}},
                        },
                    }
                ]
            ),
            "r",
        )
    assert "deeper than" in caught.value.message


def _settings(tmp_path: Path, backend: dict[str, object]) -> Settings:
    path = tmp_path / "freshet.yaml"
    path.write_text(msgspec.json.encode({"backends": [backend]}).decode())
    return load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp_path / "data")})


BASE = {"id": "d", "type": "deterministic", "model": "m", "knowledge_cutoff": "2024-01-01"}


def test_config_capabilities_replace_the_types_default(tmp_path: Path) -> None:
    settings = _settings(tmp_path, {**BASE, "capabilities": ["tools", "json_schema"]})
    [backend] = settings.backends
    assert backend.capabilities == {"tools", "json_schema"}
    assert backend.capabilities_or(frozenset({"vision"})) == {"tools", "json_schema"}
    [plain] = _settings(tmp_path, BASE).backends
    assert plain.capabilities is None
    assert plain.capabilities_or(frozenset({"vision"})) == {"vision"}
    [none] = _settings(tmp_path, {**BASE, "capabilities": []}).backends
    assert none.capabilities_or(frozenset({"vision"})) == frozenset()


@pytest.mark.parametrize(
    ("value", "key", "says"),
    [
        (["tool"], "backends[0].capabilities[0]", "did you mean 'tools'"),
        ("tools", "backends[0].capabilities", "must be a list"),
        (["tools", "telepathy"], "backends[0].capabilities[1]", "unknown capability"),
    ],
)
def test_config_capabilities_are_checked(
    tmp_path: Path, value: object, key: str, says: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, {**BASE, "capabilities": value})
    assert caught.value.key == key
    assert says in caught.value.reason


@pytest.mark.asyncio
async def test_the_gateway_drops_and_refuses_by_capability(tmp_path: Path) -> None:
    backends = [
        {**BASE, "id": "plain", "model": "plain-model"},
        {**BASE, "id": "tooled", "model": "tooled-model", "capabilities": ["tools"]},
    ]
    tools = [{"type": "function", "function": {"name": "f"}}]
    ask = [{"role": "user", "content": "hi"}]
    async with gateway(tmp_path, backends=backends, groups={"auto": ["plain", "tooled"]}) as client:
        routed = await client.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": ask, "tools": tools, "max_tokens": 3},
        )
        assert routed.status_code == 200, routed.text
        assert routed.headers["x-freshet-backend"] == "tooled"
        assert "plain:capability(tools)" in routed.headers["x-freshet-route"]
        refused = await client.post(
            "/v1/chat/completions",
            json={"model": "plain-model", "messages": ask, "tools": tools, "max_tokens": 3},
        )
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert (error["code"], error["param"], error["type"]) == (
            "capability_unsupported",
            "tools",
            "invalid_request_error",
        )


def test_the_prompt_estimate_counts_tools_and_calls() -> None:
    weather = ToolSpec(
        name="get_weather",
        description="The weather now",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    )
    plain = estimate_prompt_tokens(request())
    with_tools = estimate_prompt_tokens(request(tools=[weather]))
    assert with_tools > plain + 20  # the schema's JSON: some 30 tokens
    assert estimate_prompt_tokens(request(tools=[weather], tool_choice="none")) == plain
    call = ToolCall(id="c", name="get_weather", arguments='{"city": "Paris"}')
    history = [*ASK, Message(role="assistant", tool_calls=[call])]
    assert estimate_prompt_tokens(request(messages=history)) > plain + 10
