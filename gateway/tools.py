"""What a chat request may carry beyond text, and a backend answer beyond text: function
tools and the choice among them, the output's required shape, the calls a model made
(whole, and streamed in pieces), and a message's content parts. Part of the backend
contract (:mod:`gateway.backend` re-exports every name)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from msgspec import Struct, field


class ToolSpec(Struct, kw_only=True, frozen=True):
    """A function the model may call: its name, what it does, and its arguments' JSON
    Schema (an object schema, as the client sent it)."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    # The client's ``strict`` (OpenAI's: arguments must follow the schema exactly), passed
    # on to an upstream that enforces it (vLLM constrains a strict tool's arguments).
    strict: bool | None = None


class NamedTool(Struct, kw_only=True, frozen=True):
    """``tool_choice`` naming one function: the model must call exactly that one."""

    name: str


ToolChoice = Literal["none", "auto", "required"] | NamedTool
"""Whether and which tools the model calls: ``none`` (tools ignored), ``auto`` (text or a
call, the model decides), ``required`` (a call of any of the tools), or one
:class:`NamedTool`. ``GenerationRequest.tool_choice = None`` means OpenAI's default:
``auto`` when there are tools (:meth:`GenerationRequest.effective_tool_choice`)."""


class ResponseFormat(Struct, kw_only=True, frozen=True):
    """What shape the output must have: ``text`` (anything), ``json_object`` (one JSON
    object), ``json_schema`` (JSON valid against ``schema``; ``name`` and ``strict`` as the
    client sent them)."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: Mapping[str, Any] | None = None
    name: str | None = None
    strict: bool | None = None


class ToolCall(Struct, kw_only=True, frozen=True):
    """A call the model made: an id (``call_...``) that the tool's result refers to, the
    function's name and its arguments as JSON text (as OpenAI carries them)."""

    id: str
    name: str
    arguments: str


class TextPart(Struct, kw_only=True, frozen=True, tag="text"):
    text: str


class ImagePart(Struct, kw_only=True, frozen=True, tag="image_url"):
    """An image: an ``https:`` or ``data:`` URL, with OpenAI's ``detail``."""

    url: str
    detail: str | None = None


ContentPart = TextPart | ImagePart


class ToolCallDelta(Struct, kw_only=True, frozen=True):
    """A piece of a streamed tool call, as OpenAI streams them: ``index`` says which call
    of the answer; its first piece carries ``id`` and ``name``, and every piece may carry a
    fragment of the ``arguments`` JSON text (joined in order they are the arguments)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


FINISH_TOOL_CALLS = "tool_calls"
"""The ``finish_reason`` of an answer that ends with tool calls."""
