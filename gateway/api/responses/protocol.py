"""OpenAI Responses API wire types as msgspec Structs, fields ordered as in OpenAI's API
reference (and the ``openai`` SDK's ``types/responses``). Unknown fields are accepted and
ignored, so newer clients keep working; every value a client sends is bounded as in
:mod:`gateway.protocol`. Freshet's own extensions come last in the request type.

An input item is one permissive :class:`InputItem` (as OpenAI's ``type`` says what it is:
``message``, or a bare ``{role, content}``, ``function_call``, ``function_call_output``);
:mod:`gateway.api.responses.translate` checks each kind's fields and names the bad one.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct, field

from gateway.protocol import Freshness, Metadata, Name, Temperature, TokenCount, TopP, TtftMs

ItemType = Annotated[str, Meta(max_length=64)]
Id = Annotated[str, Meta(max_length=128)]


class InputContent(Struct, kw_only=True, omit_defaults=True):
    """A part of an input message: ``input_text`` (``output_text`` and ``refusal`` in an
    assistant's turn of the history); images and files are refused."""

    type: ItemType
    text: str | None = None


Role = Literal["user", "assistant", "system", "developer"]
ItemContent = str | Annotated[list[InputContent], Meta(max_length=4096)]


class InputItem(Struct, kw_only=True, omit_defaults=True):
    """One input item: a message (``role``, ``content``), a function call the model made
    (``call_id``, ``name``, ``arguments``) or its result (``call_id``, ``output``)."""

    type: ItemType | None = None  # None: a message
    id: Id | None = None
    role: Role | None = None
    content: ItemContent | None = None
    call_id: Id | None = None
    name: Name | None = None
    arguments: str | None = None
    output: ItemContent | None = None
    status: ItemType | None = None


Input = str | Annotated[list[InputItem], Meta(min_length=1, max_length=4096)]


class FunctionTool(Struct, kw_only=True, omit_defaults=True):
    """A tool, flat as the Responses API has it (not under ``function`` as chat has);
    only ``function`` tools are served (:mod:`gateway.api.responses.translate`)."""

    type: ItemType
    name: Name | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolChoiceFunction(Struct, kw_only=True):
    """``tool_choice`` naming one function."""

    type: Literal["function"]
    name: Name


ToolChoice = Literal["none", "auto", "required"] | ToolChoiceFunction


class TextFormat(Struct, kw_only=True, omit_defaults=True):
    """``text.format``: ``text``, ``json_object``, or ``json_schema`` (``name``,
    ``schema``, ``strict``): structured output, as chat's ``response_format``."""

    type: Literal["text", "json_object", "json_schema"]  # no default: always on the wire
    name: Name | None = None
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class TextConfig(Struct, kw_only=True):
    format: TextFormat = field(default_factory=lambda: TextFormat(type="text"))


class ResponseCreateParams(Struct, kw_only=True):
    model: Name
    input: Input
    instructions: str | None = None
    max_output_tokens: TokenCount | None = None
    metadata: Metadata | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: Id | None = None
    store: bool | None = None
    stream: bool | None = None
    temperature: Temperature | None = None
    text: TextConfig | None = None
    tool_choice: ToolChoice | None = None
    tools: Annotated[list[FunctionTool], Meta(max_length=128)] | None = None
    top_p: TopP | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: Name | None = None
    # Freshet's extensions.
    freshness: Freshness | None = None
    max_ttft_ms: TtftMs | None = None


# The response.


class OutputText(Struct, kw_only=True, tag="output_text", tag_field="type"):
    annotations: list[Any] = field(default_factory=list)
    logprobs: list[Any] = field(default_factory=list)
    text: str = ""


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputMessage(Struct, kw_only=True, tag="message", tag_field="type"):
    id: str
    content: list[OutputText]
    role: Literal["assistant"] = "assistant"
    status: ItemStatus = "completed"


class FunctionCall(Struct, kw_only=True, tag="function_call", tag_field="type"):
    id: str
    arguments: str
    call_id: str
    name: str
    status: ItemStatus = "completed"


OutputItem = OutputMessage | FunctionCall


class InputTokensDetails(Struct, kw_only=True):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(Struct, kw_only=True):
    reasoning_tokens: int = 0


class Usage(Struct, kw_only=True, omit_defaults=True):
    input_tokens: int
    input_tokens_details: InputTokensDetails = field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = field(default_factory=OutputTokensDetails)
    total_tokens: int
    # Freshet's extension (as on chat's usage): USD and joules of this request.
    cost: float | None = None
    energy_joules: float | None = None


class IncompleteDetails(Struct, kw_only=True):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseError(Struct, kw_only=True):
    code: str  # "server_error", "rate_limit_exceeded", ... (the SDK's ResponseError.code)
    message: str


Status = Literal["completed", "failed", "in_progress", "incomplete"]


class Response(Struct, kw_only=True):
    id: str
    object: Literal["response"] = "response"
    created_at: float
    status: Status
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem] = field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    store: bool = True
    temperature: float | None = None
    text: TextConfig = field(default_factory=TextConfig)
    tool_choice: ToolChoice = "auto"
    tools: list[FunctionTool] = field(default_factory=list)
    top_p: float | None = None
    truncation: Literal["auto", "disabled"] = "disabled"
    usage: Usage | None = None
    user: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class ListedPart(Struct, kw_only=True, omit_defaults=True):
    type: str  # input_text, or output_text in an assistant's message
    text: str
    annotations: list[Any] | None = None  # output_text's


class ListedItem(Struct, kw_only=True, omit_defaults=True):
    """One input item of a stored response, as ``GET .../input_items`` lists it: a
    message, a function call or a function call's output, each with an id."""

    id: str
    type: str
    role: str | None = None
    content: list[ListedPart] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    status: ItemStatus  # no default: always on the wire (the SDK's types require it)


class InputItemList(Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[ListedItem]
    first_id: str
    last_id: str
    has_more: bool


class DeletedResponse(Struct, kw_only=True):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True


# Stream events (each with the stream's sequence_number), in the order they come.


class Created(Struct, kw_only=True, tag="response.created", tag_field="type"):
    response: Response
    sequence_number: int


class InProgress(Struct, kw_only=True, tag="response.in_progress", tag_field="type"):
    response: Response
    sequence_number: int


class OutputItemAdded(Struct, kw_only=True, tag="response.output_item.added", tag_field="type"):
    item: OutputItem
    output_index: int
    sequence_number: int


class ContentPartAdded(Struct, kw_only=True, tag="response.content_part.added", tag_field="type"):
    content_index: int
    item_id: str
    output_index: int
    part: OutputText
    sequence_number: int


class TextDelta(Struct, kw_only=True, tag="response.output_text.delta", tag_field="type"):
    content_index: int
    delta: str
    item_id: str
    logprobs: list[Any]
    output_index: int
    sequence_number: int


class TextDone(Struct, kw_only=True, tag="response.output_text.done", tag_field="type"):
    content_index: int
    item_id: str
    logprobs: list[Any]
    output_index: int
    sequence_number: int
    text: str


class ContentPartDone(Struct, kw_only=True, tag="response.content_part.done", tag_field="type"):
    content_index: int
    item_id: str
    output_index: int
    part: OutputText
    sequence_number: int


class ArgumentsDelta(
    Struct, kw_only=True, tag="response.function_call_arguments.delta", tag_field="type"
):
    delta: str
    item_id: str
    output_index: int
    sequence_number: int


class ArgumentsDone(
    Struct, kw_only=True, tag="response.function_call_arguments.done", tag_field="type"
):
    arguments: str
    item_id: str
    output_index: int
    sequence_number: int


class OutputItemDone(Struct, kw_only=True, tag="response.output_item.done", tag_field="type"):
    item: OutputItem
    output_index: int
    sequence_number: int


class Completed(Struct, kw_only=True, tag="response.completed", tag_field="type"):
    response: Response
    sequence_number: int


class Incomplete(Struct, kw_only=True, tag="response.incomplete", tag_field="type"):
    response: Response
    sequence_number: int


class Failed(Struct, kw_only=True, tag="response.failed", tag_field="type"):
    response: Response
    sequence_number: int


class ErrorEvent(Struct, kw_only=True, tag="error", tag_field="type"):
    code: str | None
    message: str
    param: str | None
    sequence_number: int
