"""The chat parts of an OpenAI request as an upstream gets them: messages with their tool
calls, tool results and image parts; ``tools``, ``tool_choice``, ``parallel_tool_calls``
and ``response_format``, in OpenAI's shape (which vLLM's structured outputs and tool
calling read as they are); and the tool-call pieces of its stream read back.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct

from gateway.plugin_api import GenerationRequest, ImagePart, Message, NamedTool, ToolCallDelta


def chat_fields(request: GenerationRequest) -> dict[str, Any]:
    """``messages`` and, when the request has them, the tool and format fields."""
    body: dict[str, Any] = {"messages": [_message(m) for m in request.messages]}
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": dict(t.parameters),
                    **({"strict": t.strict} if t.strict is not None else {}),
                },
            }
            for t in request.tools
        ]
        choice = request.tool_choice
        if isinstance(choice, NamedTool):
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        elif choice is not None:
            body["tool_choice"] = choice
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        spec: dict[str, Any] = {"name": fmt.name or "response"}
        spec["schema"] = dict(fmt.schema) if fmt.schema is not None else {"type": "object"}
        if fmt.strict is not None:
            spec["strict"] = fmt.strict
        body["response_format"] = {"type": "json_schema", "json_schema": spec}
    return body


def _message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role}
    if m.parts:
        out["content"] = [
            {"type": "image_url", "image_url": _image(part)}
            if isinstance(part, ImagePart)
            else {"type": "text", "text": part.text}
            for part in m.parts
        ]
    else:
        # An assistant message that only calls tools has no content (OpenAI: null).
        out["content"] = m.content if m.content or not m.tool_calls else None
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _image(part: ImagePart) -> dict[str, str]:
    return {"url": part.url, **({"detail": part.detail} if part.detail else {})}


class FunctionPiece(Struct):
    name: str | None = None
    arguments: str | None = None


class ToolCallPiece(Struct):
    """One entry of a stream chunk's ``delta.tool_calls``."""

    index: int = 0
    id: str | None = None
    function: FunctionPiece | None = None

    def as_delta(self) -> ToolCallDelta:
        fn = self.function
        return ToolCallDelta(
            index=self.index,
            id=self.id,
            name=fn.name if fn is not None else None,
            arguments=(fn.arguments or "") if fn is not None else "",
        )
