"""Anthropic Messages API wire types as msgspec Structs, fields ordered as in Anthropic's
API reference. Unknown fields are accepted and ignored, so newer clients keep working;
every value a client sends is bounded as in :mod:`gateway.protocol`. Freshet's own
extensions come last in each request type.

Content blocks served: ``text``, ``tool_use`` (an assistant's call) and ``tool_result`` (a
user's answer to one); an ``image`` block or another kind is a 400 naming it (see
:func:`gateway.api.anthropic.messages.to_generation`). Tools are client tools (``name``,
``description``, ``input_schema``); Anthropic's server tools are refused the same way.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from gateway.protocol import Freshness, Name, TokenCount, TopP, TtftMs

BlockType = Annotated[str, Meta(max_length=64)]
StopSequences = Annotated[list[str], Meta(max_length=16)]


class ResultBlock(Struct, kw_only=True):
    """A block of a ``tool_result``'s content; only ``text`` is served."""

    type: BlockType
    text: str | None = None


class ContentBlock(Struct, kw_only=True):
    """A request's content block: ``text`` (``text``), ``tool_use`` (``id``, ``name``,
    ``input``) or ``tool_result`` (``tool_use_id``, ``content``, ``is_error``)."""

    type: BlockType
    text: str | None = None
    id: Name | None = None
    name: Name | None = None
    input: Any = None
    tool_use_id: Name | None = None
    content: str | Annotated[list[ResultBlock], Meta(max_length=4096)] | None = None
    is_error: bool | None = None


class TextBlock(Struct, kw_only=True, tag="text", tag_field="type"):
    text: str = ""


class ToolUseBlock(Struct, kw_only=True, tag="tool_use", tag_field="type"):
    id: str
    input: dict[str, Any]
    name: str


ResponseBlock = TextBlock | ToolUseBlock


Content = str | Annotated[list[ContentBlock], Meta(max_length=4096)]


class MessageParam(Struct, kw_only=True):
    role: Literal["user", "assistant"]
    content: Content


System = str | Annotated[list[ContentBlock], Meta(max_length=4096)]


class Metadata(Struct, kw_only=True):
    user_id: Name | None = None


class Tool(Struct, kw_only=True):
    """A tool the model may use; ``type`` is absent or ``custom`` for a client tool."""

    name: Name
    input_schema: dict[str, Any] | None = None  # required of a client tool
    description: str | None = None
    type: BlockType | None = None


class ToolChoice(Struct, kw_only=True):
    type: Literal["auto", "any", "tool", "none"]
    name: Name | None = None
    disable_parallel_tool_use: bool | None = None


Tools = Annotated[list[Tool], Meta(max_length=128)]


class MessageCreateParams(Struct, kw_only=True):
    model: Name
    messages: Annotated[list[MessageParam], Meta(min_length=1)]
    max_tokens: TokenCount
    metadata: Metadata | None = None
    stop_sequences: StopSequences | None = None
    stream: bool | None = None
    system: System | None = None
    temperature: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    tool_choice: ToolChoice | None = None
    tools: Tools | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    top_p: TopP | None = None
    # Freshet's extensions.
    freshness: Freshness | None = None
    max_ttft_ms: TtftMs | None = None


class CountTokensParams(Struct, kw_only=True):
    model: Name
    messages: Annotated[list[MessageParam], Meta(min_length=1)]
    system: System | None = None
    tool_choice: ToolChoice | None = None
    tools: Tools | None = None
    # Freshet's extensions: the deployment counted on is the one a request would get.
    freshness: Freshness | None = None


class Usage(Struct, kw_only=True, omit_defaults=True):
    """As Anthropic counts: ``input_tokens`` leaves out the prompt tokens read from and
    written to the prompt cache (given apart, when there are any)."""

    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    input_tokens: int
    output_tokens: int
    # Freshet's extension (as on OpenAI's usage): USD and joules of this request.
    cost: float | None = None
    energy_joules: float | None = None


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class Message(Struct, kw_only=True):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[ResponseBlock]
    model: str
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: Usage


class CountTokens(Struct, kw_only=True):
    input_tokens: int


# Stream events, in the order they come.


class MessageStart(Struct, kw_only=True, tag="message_start", tag_field="type"):
    message: Message


class ContentBlockStart(Struct, kw_only=True, tag="content_block_start", tag_field="type"):
    index: int
    content_block: ResponseBlock


class Ping(Struct, kw_only=True, tag="ping", tag_field="type"):
    pass


class TextDelta(Struct, kw_only=True, tag="text_delta", tag_field="type"):
    text: str


class InputJsonDelta(Struct, kw_only=True, tag="input_json_delta", tag_field="type"):
    partial_json: str


class ContentBlockDelta(Struct, kw_only=True, tag="content_block_delta", tag_field="type"):
    index: int
    delta: TextDelta | InputJsonDelta


class ContentBlockStop(Struct, kw_only=True, tag="content_block_stop", tag_field="type"):
    index: int


class MessageDeltaBody(Struct, kw_only=True):
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None


class MessageDelta(Struct, kw_only=True, tag="message_delta", tag_field="type"):
    delta: MessageDeltaBody
    usage: Usage


class MessageStop(Struct, kw_only=True, tag="message_stop", tag_field="type"):
    pass


class ErrorBody(Struct, kw_only=True):
    type: str
    message: str


class ErrorResponse(Struct, kw_only=True, tag="error", tag_field="type"):
    error: ErrorBody
