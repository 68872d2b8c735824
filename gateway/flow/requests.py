"""From OpenAI request bodies to the normalised :class:`GenerationRequest` backends see."""

from __future__ import annotations

from collections.abc import Sequence

from gateway import protocol as p
from gateway.backend import (
    ContentPart,
    GenerationRequest,
    ImagePart,
    Message,
    NamedTool,
    ResponseFormat,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolSpec,
)
from gateway.errors import InvalidRequest
from gateway.flow.json_schema import check_schema


def _stop(stop: p.Stop | None) -> Sequence[str]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(s for s in stop if s)


def _single_choice(n: int | None) -> None:
    if n not in (None, 1):
        raise InvalidRequest("only n=1 is supported", param="n")


def from_chat(body: p.ChatCompletionRequest, request_id: str) -> GenerationRequest:
    _single_choice(body.n)
    if body.logprobs:
        raise InvalidRequest("logprobs are not supported", param="logprobs")
    tools = _tools(body.tools)
    messages = [_message(i, msg) for i, msg in enumerate(body.messages)]
    return GenerationRequest(
        request_id=request_id,
        operation="chat",
        model=body.model,
        messages=messages,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=_stop(body.stop),
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
        tools=tools,
        tool_choice=_tool_choice(body.tool_choice, tools),
        parallel_tool_calls=body.parallel_tool_calls,
        response_format=_response_format(body.response_format),
    )


def _message(i: int, msg: p.ChatMessage) -> Message:
    """One chat message; image parts are kept in order (only a ``vision`` deployment is
    sent them), tool calls and tool results as such."""
    parts: list[ContentPart] = []
    if isinstance(msg.content, list):
        for j, part in enumerate(msg.content):
            if part.type == "text":
                parts.append(TextPart(text=part.text or ""))
            elif part.type == "image_url":
                if part.image_url is None:
                    raise InvalidRequest(
                        "an image_url part needs image_url: {url}",
                        param=f"messages[{i}].content[{j}].image_url",
                    )
                parts.append(ImagePart(url=part.image_url.url, detail=part.image_url.detail))
            else:
                raise InvalidRequest(
                    f"content part type {part.type!r} is not supported; only 'text' and "
                    "'image_url'",
                    param=f"messages[{i}].content[{j}].type",
                )
    calls: list[ToolCall] = []
    if msg.tool_calls:
        if msg.role != "assistant":
            raise InvalidRequest(
                "only assistant messages carry tool_calls", param=f"messages[{i}].tool_calls"
            )
        calls = [
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
            for c in msg.tool_calls
        ]
    if msg.role == "tool" and not msg.tool_call_id:
        raise InvalidRequest(
            "a tool message needs the tool_call_id of the call it answers",
            param=f"messages[{i}].tool_call_id",
        )
    has_image = any(isinstance(part, ImagePart) for part in parts)
    return Message(
        role=msg.role,
        content=msg.text(),
        parts=parts if has_image else (),
        tool_calls=calls,
        tool_call_id=msg.tool_call_id if msg.role == "tool" else None,
    )


def _tools(tools: list[p.ChatTool] | None) -> list[ToolSpec]:
    out: list[ToolSpec] = []
    seen: set[str] = set()
    for i, tool in enumerate(tools or ()):
        fn = tool.function
        if fn.name in seen:
            raise InvalidRequest(
                f"two tools are named {fn.name!r}", param=f"tools[{i}].function.name"
            )
        seen.add(fn.name)
        parameters = fn.parameters if fn.parameters is not None else {"type": "object"}
        check_schema(parameters, f"tools[{i}].function.parameters", object_root=True)
        out.append(
            ToolSpec(
                name=fn.name, description=fn.description, parameters=parameters, strict=fn.strict
            )
        )
    return out


def _tool_choice(choice: p.ToolChoiceParam | None, tools: list[ToolSpec]) -> ToolChoice | None:
    if choice is None or choice in ("none", "auto"):
        return choice
    if not tools:
        raise InvalidRequest("tool_choice requires tools: none were given", param="tool_choice")
    if isinstance(choice, p.NamedToolChoice):
        name = choice.function.name
        if name not in {t.name for t in tools}:
            raise InvalidRequest(
                f"tool_choice names {name!r}, which is not one of the tools",
                param="tool_choice.function.name",
            )
        return NamedTool(name=name)
    return choice


def _response_format(fmt: p.ResponseFormatParam | None) -> ResponseFormat | None:
    if fmt is None or isinstance(fmt, p.ResponseFormatText):
        return None
    if isinstance(fmt, p.ResponseFormatJsonObject):
        return ResponseFormat(type="json_object")
    spec = fmt.json_schema
    if spec.schema is not None:
        check_schema(spec.schema, "response_format.json_schema.schema")
    return ResponseFormat(
        type="json_schema", schema=spec.schema, name=spec.name, strict=spec.strict
    )


def from_completion(body: p.CompletionRequest, request_id: str) -> GenerationRequest:
    _single_choice(body.n)
    if body.echo:
        raise InvalidRequest("echo is not supported", param="echo")
    if body.suffix:
        raise InvalidRequest("suffix is not supported", param="suffix")
    prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
    return GenerationRequest(
        request_id=request_id,
        operation="text_completion",
        model=body.model,
        prompt=prompt,
        # OpenAI's documented default for legacy completions.
        max_tokens=body.max_tokens or 16,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=_stop(body.stop),
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
    )
