"""From the Responses API's input items to the chat a backend sees, and back.

The input is a string (one user message) or a list of items; each item is checked here
and normalised (a message's text parts joined into one string), so what is stored for
``previous_response_id`` is small and already valid. A continued conversation is the
stored one (its input and its output, as items) followed by the new input; the
``instructions`` are the new request's only (OpenAI does not carry them over).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from gateway.api.responses import protocol as r
from gateway.backend import (
    GenerationRequest,
    Message,
    NamedTool,
    ResponseFormat,
    ToolCall,
    ToolChoice,
    ToolSpec,
)
from gateway.errors import InvalidRequest
from gateway.flow.json_schema import check_schema

TEXT_PARTS = frozenset(("input_text", "output_text", "text", "refusal"))
# OpenAI's ``developer`` role is the system prompt to a chat template.
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def _text(content: r.ItemContent, param: str) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        if part.type not in TEXT_PARTS:
            raise InvalidRequest(
                f"content part type {part.type!r} is not supported; only 'input_text'",
                param=f"{param}[{j}].type",
            )
        parts.append(part.text or "")
    return "".join(parts)


def _message(item: r.InputItem, param: str) -> r.InputItem:
    if item.role is None:
        raise InvalidRequest("a message item needs a 'role'", param=f"{param}.role")
    if item.content is None:
        raise InvalidRequest("a message item needs 'content'", param=f"{param}.content")
    text = _text(item.content, f"{param}.content")
    return r.InputItem(type="message", role=item.role, content=text)


def input_items(value: r.Input) -> list[r.InputItem]:
    """The request's ``input`` as checked, normalised items."""
    if isinstance(value, str):
        return [r.InputItem(type="message", role="user", content=value)]
    items = []
    for i, item in enumerate(value):
        param = f"input[{i}]"
        kind = item.type or "message"
        if kind == "message":
            items.append(_message(item, param))
        elif kind in ("function_call", "function_call_output"):
            items.append(_tool_item(item, kind, param))
        else:
            raise InvalidRequest(
                f"input item type {kind!r} is not supported; "
                "'message', 'function_call' and 'function_call_output' are",
                param=f"{param}.type",
            )
    return items


def _tool_item(item: r.InputItem, kind: str, param: str) -> r.InputItem:
    if not item.call_id:
        raise InvalidRequest(f"a {kind} item needs a 'call_id'", param=f"{param}.call_id")
    if kind == "function_call":
        if not item.name:
            raise InvalidRequest("a function_call item needs a 'name'", param=f"{param}.name")
        return r.InputItem(
            type=kind, call_id=item.call_id, name=item.name, arguments=item.arguments or "{}"
        )
    if item.output is None:
        raise InvalidRequest(
            "a function_call_output item needs an 'output'", param=f"{param}.output"
        )
    return r.InputItem(
        type=kind, call_id=item.call_id, output=_text(item.output, f"{param}.output")
    )


def output_items(response: r.Response) -> list[r.InputItem]:
    """A response's output as input items, for the conversation that continues it."""
    items = []
    for out in response.output:
        if isinstance(out, r.OutputMessage):
            text = "".join(part.text for part in out.content)
            items.append(r.InputItem(type="message", role="assistant", content=text))
        else:
            items.append(
                r.InputItem(
                    type="function_call",
                    call_id=out.call_id,
                    name=out.name,
                    arguments=out.arguments,
                )
            )
    return items


def to_messages(instructions: str | None, items: Sequence[r.InputItem]) -> list[Message]:
    """The conversation as chat messages: the instructions first, as the system message;
    function calls on the assistant's message before them (consecutive calls on one
    message, as a model makes parallel calls), their outputs as ``tool`` messages."""
    messages: list[Message] = []
    if instructions:
        messages.append(Message(role="system", content=instructions))
    for item in items:
        if item.type == "message":
            assert item.role is not None
            assert isinstance(item.content, str)
            messages.append(Message(role=ROLES[item.role], content=item.content))
        elif item.type == "function_call":
            assert item.call_id is not None
            assert item.name is not None
            call = ToolCall(id=item.call_id, name=item.name, arguments=item.arguments or "{}")
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":
                messages[-1] = msgspec.structs.replace(last, tool_calls=[*last.tool_calls, call])
            else:
                messages.append(Message(role="assistant", tool_calls=[call]))
        else:
            assert isinstance(item.output, str)
            messages.append(Message(role="tool", content=item.output, tool_call_id=item.call_id))
    return messages


def tools(given: Sequence[r.FunctionTool] | None) -> list[ToolSpec]:
    """The request's function tools, checked as chat's are (names unique, parameters an
    object schema); any other kind of tool (web search, files...) is a 400 naming it."""
    out: list[ToolSpec] = []
    seen: set[str] = set()
    for i, tool in enumerate(given or ()):
        if tool.type != "function":
            raise InvalidRequest(
                f"tool type {tool.type!r} is not supported; only 'function'",
                param=f"tools[{i}].type",
            )
        if not tool.name:
            raise InvalidRequest("a function tool needs a 'name'", param=f"tools[{i}].name")
        if tool.name in seen:
            raise InvalidRequest(f"two tools are named {tool.name!r}", param=f"tools[{i}].name")
        seen.add(tool.name)
        parameters = tool.parameters if tool.parameters is not None else {"type": "object"}
        check_schema(parameters, f"tools[{i}].parameters", object_root=True)
        out.append(
            ToolSpec(
                name=tool.name,
                description=tool.description,
                parameters=parameters,
                strict=tool.strict,
            )
        )
    return out


def tool_choice(choice: r.ToolChoice | None, specs: Sequence[ToolSpec]) -> ToolChoice | None:
    if choice is None or choice in ("none", "auto"):
        return choice
    if not specs:
        raise InvalidRequest("tool_choice requires tools: none were given", param="tool_choice")
    if isinstance(choice, r.ToolChoiceFunction):
        if choice.name not in {t.name for t in specs}:
            raise InvalidRequest(
                f"tool_choice names {choice.name!r}, which is not one of the tools",
                param="tool_choice.name",
            )
        return NamedTool(name=choice.name)
    return choice


def response_format(text: r.TextConfig | None) -> ResponseFormat | None:
    """``text.format`` as chat's ``response_format`` (``None``: text)."""
    fmt = text.format if text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return ResponseFormat(type="json_object")
    if not fmt.name:
        raise InvalidRequest("a json_schema format needs a 'name'", param="text.format.name")
    if fmt.schema is None:
        raise InvalidRequest("a json_schema format needs a 'schema'", param="text.format.schema")
    check_schema(fmt.schema, "text.format.schema")
    return ResponseFormat(type="json_schema", schema=fmt.schema, name=fmt.name, strict=fmt.strict)


def to_generation(
    data: r.ResponseCreateParams, items: Sequence[r.InputItem], request_id: str
) -> GenerationRequest:
    specs = tools(data.tools)
    return GenerationRequest(
        request_id=request_id,
        operation="chat",
        model=data.model,
        messages=to_messages(data.instructions, items),
        max_tokens=data.max_output_tokens,
        temperature=data.temperature,
        top_p=data.top_p,
        tools=specs,
        tool_choice=tool_choice(data.tool_choice, specs),
        parallel_tool_calls=data.parallel_tool_calls,
        response_format=response_format(data.text),
    )


def listed(response_id: str, items: Sequence[r.InputItem]) -> list[r.ListedItem]:
    """A response's own input items as ``GET .../input_items`` lists them, each with an id
    made of the response's and its place (stable: the same item has the same id)."""
    tail = response_id.removeprefix("resp_")
    out = []
    for n, item in enumerate(items):
        if item.type == "message":
            assert item.role is not None
            assert isinstance(item.content, str)
            assistant = item.role == "assistant"
            part = (
                r.ListedPart(type="output_text", text=item.content, annotations=[])
                if assistant
                else r.ListedPart(type="input_text", text=item.content)
            )
            out.append(
                r.ListedItem(
                    id=f"msg_{tail}_{n}",
                    type="message",
                    role=item.role,
                    content=[part],
                    status="completed",
                )
            )
        elif item.type == "function_call":
            out.append(
                r.ListedItem(
                    id=f"fc_{tail}_in{n}",
                    type="function_call",
                    call_id=item.call_id,
                    name=item.name,
                    arguments=item.arguments,
                    status="completed",
                )
            )
        else:
            assert isinstance(item.output, str)
            out.append(
                r.ListedItem(
                    id=f"fco_{tail}_{n}",
                    type="function_call_output",
                    call_id=item.call_id,
                    output=item.output,
                    status="completed",
                )
            )
    return out
