"""Anthropic's tool use in the gateway's terms, and back.

Request: client ``tools`` (``name``, ``description``, ``input_schema``) as
:class:`ToolSpec` (checked as chat's are: unique names, an object schema; Anthropic's
server tools are a 400), ``tool_choice`` (``auto``, ``any`` -> ``required``, ``tool`` ->
the named one, ``none``; ``disable_parallel_tool_use`` -> ``parallel_tool_calls:
false``). A message's ``tool_use`` blocks are its assistant's calls (``input`` as JSON
text), ``tool_result`` blocks the ``tool`` messages answering them.

Answer: the model's calls as ``tool_use`` blocks, their arguments parsed to the JSON
object Anthropic's ``input`` is; ``stop_reason`` ``tool_use``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from gateway.api.anthropic import protocol as a
from gateway.backend import Message, NamedTool, ToolCall, ToolChoice, ToolSpec
from gateway.errors import InvalidRequest
from gateway.flow.json_schema import check_schema

CLIENT_TOOL = (None, "custom")


def tools(given: Sequence[a.Tool] | None) -> list[ToolSpec]:
    out: list[ToolSpec] = []
    seen: set[str] = set()
    for i, tool in enumerate(given or ()):
        if tool.type not in CLIENT_TOOL:
            raise InvalidRequest(
                f"tool type {tool.type!r} is not supported; only client tools "
                "(name, description, input_schema)",
                param=f"tools[{i}].type",
            )
        if tool.input_schema is None:
            raise InvalidRequest("a tool needs an 'input_schema'", param=f"tools[{i}].input_schema")
        if tool.name in seen:
            raise InvalidRequest(f"two tools are named {tool.name!r}", param=f"tools[{i}].name")
        seen.add(tool.name)
        check_schema(tool.input_schema, f"tools[{i}].input_schema", object_root=True)
        out.append(
            ToolSpec(name=tool.name, description=tool.description, parameters=tool.input_schema)
        )
    return out


def tool_choice(
    choice: a.ToolChoice | None, specs: Sequence[ToolSpec]
) -> tuple[ToolChoice | None, bool | None]:
    """``(tool_choice, parallel_tool_calls)`` as a :class:`GenerationRequest` has them."""
    if choice is None:
        return None, None
    parallel = False if choice.disable_parallel_tool_use else None
    if choice.type in ("auto", "none"):
        return choice.type, parallel
    if not specs:
        raise InvalidRequest("tool_choice requires tools: none were given", param="tool_choice")
    if choice.type == "any":
        return "required", parallel
    if choice.name is None:
        raise InvalidRequest("tool_choice of type 'tool' needs a 'name'", param="tool_choice.name")
    if choice.name not in {t.name for t in specs}:
        raise InvalidRequest(
            f"tool_choice names {choice.name!r}, which is not one of the tools",
            param="tool_choice.name",
        )
    return NamedTool(name=choice.name), parallel


def _result_text(content: str | list[a.ResultBlock] | None, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for k, block in enumerate(content):
        if block.type != "text":
            raise InvalidRequest(
                f"tool_result content block type {block.type!r} is not supported; only 'text'",
                param=f"{param}[{k}].type",
            )
        parts.append(block.text or "")
    return "".join(parts)


def message(msg: a.MessageParam, i: int) -> list[Message]:
    """One of Anthropic's messages as chat messages: its ``tool_result`` blocks as ``tool``
    messages first, then its text (and, an assistant's, its calls)."""
    if isinstance(msg.content, str):
        return [Message(role=msg.role, content=msg.content)]
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for j, block in enumerate(msg.content):
        param = f"messages[{i}].content[{j}]"
        if block.type == "text":
            texts.append(block.text or "")
        elif block.type == "tool_use":
            calls.append(_call(block, msg.role, param))
        elif block.type == "tool_result":
            if msg.role != "user":
                raise InvalidRequest("tool_result blocks are the user's", param=f"{param}.type")
            if not block.tool_use_id:
                raise InvalidRequest(
                    "a tool_result block needs the tool_use_id it answers",
                    param=f"{param}.tool_use_id",
                )
            text = _result_text(block.content, f"{param}.content")
            if block.is_error:
                text = f"Error: {text}"
            results.append(Message(role="tool", content=text, tool_call_id=block.tool_use_id))
        else:
            raise InvalidRequest(
                f"content block type {block.type!r} is not supported; "
                "only 'text', 'tool_use' and 'tool_result'",
                param=f"{param}.type",
            )
    if texts or calls or not results:
        results.append(Message(role=msg.role, content="".join(texts), tool_calls=calls))
    return results


def _call(block: a.ContentBlock, role: str, param: str) -> ToolCall:
    if role != "assistant":
        raise InvalidRequest("tool_use blocks are the assistant's", param=f"{param}.type")
    if not block.id:
        raise InvalidRequest("a tool_use block needs an 'id'", param=f"{param}.id")
    if not block.name:
        raise InvalidRequest("a tool_use block needs a 'name'", param=f"{param}.name")
    given = block.input if block.input is not None else {}
    if not isinstance(given, dict):
        raise InvalidRequest("a tool_use block's input is a JSON object", param=f"{param}.input")
    return ToolCall(id=block.id, name=block.name, arguments=json.dumps(given))


def tool_input(arguments: str) -> dict[str, Any]:
    """A call's arguments as Anthropic's ``input`` object; arguments cut short (at
    ``max_tokens``) or not an object are ``{}``."""
    try:
        value = json.loads(arguments) if arguments else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def blocks(text: str, calls: Sequence[ToolCall]) -> list[a.ResponseBlock]:
    """An answer's content: its text (also when empty, unless it only made calls), then a
    ``tool_use`` block per call."""
    out: list[a.ResponseBlock] = []
    if text or not calls:
        out.append(a.TextBlock(text=text))
    out.extend(a.ToolUseBlock(id=c.id, name=c.name, input=tool_input(c.arguments)) for c in calls)
    return out
