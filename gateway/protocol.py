"""OpenAI wire types as msgspec Structs, fields ordered as in the OpenAI API reference.

Unknown fields are accepted and ignored (msgspec's default), so newer clients keep working.
Constraints are declared on the types so that a bad value is a 400 naming the field, and
every value a client sends is bounded: numbers by what the backends can take, names and
identifiers by :data:`MAX_NAME` characters (they are echoed in errors and kept in traces),
text by the body's size limit (``server.max_body_bytes``). Where OpenAI documents a limit
(``n``, ``metadata``, ``logit_bias`` values) it is the one used here.
Freshet's own extensions come last in each request type.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

MAX_NAME = 256  # model names, message names, ids, ``user``
INT32_MAX = 2**31 - 1  # token counts: backends hold them in C ints

Name = Annotated[str, Meta(max_length=MAX_NAME)]
Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
TopP = Annotated[float, Meta(ge=0.0, le=1.0)]
TokenCount = Annotated[int, Meta(ge=1, le=INT32_MAX)]
Choices = Annotated[int, Meta(ge=1, le=128)]
Seed = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
Stop = str | Annotated[list[str], Meta(max_length=4)]
LogitBias = dict[Annotated[str, Meta(max_length=32)], Annotated[float, Meta(ge=-100, le=100)]]
Metadata = Annotated[
    dict[Annotated[str, Meta(max_length=64)], Annotated[str, Meta(max_length=512)]],
    Meta(max_length=16),
]
TtftMs = Annotated[float, Meta(gt=0)]  # finite: JSON has no infinity, msgspec refuses 1e400


class Freshness(Struct, kw_only=True):
    """What a request demands of the serving model's knowledge cutoff (Freshet extension)."""

    min_knowledge_cutoff: dt.date | None = None
    max_staleness_days: Annotated[int, Meta(ge=0)] | None = None


class StreamOptions(Struct, kw_only=True):
    include_usage: bool = False


class ImageURL(Struct, kw_only=True):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(Struct, kw_only=True):
    type: Annotated[str, Meta(max_length=64)]
    text: str | None = None
    image_url: ImageURL | None = None


# OpenAI: a function's name is a-z, A-Z, 0-9, underscores and dashes, at most 64.
FunctionName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
JsonObject = dict[str, Any]


class FunctionCall(Struct, kw_only=True):
    """A call the assistant made: arguments as JSON text."""

    name: FunctionName
    arguments: str


class ToolCall(Struct, kw_only=True):
    id: Name
    function: FunctionCall
    type: Literal["function"] = "function"


class ChatMessage(Struct, kw_only=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: Name | None = None
    tool_calls: Annotated[list[ToolCall], Meta(max_length=128)] | None = None
    tool_call_id: Name | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")


class FunctionDefinition(Struct, kw_only=True):
    name: FunctionName
    description: str | None = None
    parameters: JsonObject | None = None  # a JSON Schema; absent: no arguments
    strict: bool | None = None


class ChatTool(Struct, kw_only=True):
    type: Literal["function"]
    function: FunctionDefinition


class ToolChoiceFunction(Struct, kw_only=True):
    name: FunctionName


class NamedToolChoice(Struct, kw_only=True):
    type: Literal["function"]
    function: ToolChoiceFunction


ToolChoiceParam = Literal["none", "auto", "required"] | NamedToolChoice


class JsonSchemaFormat(Struct, kw_only=True):
    name: FunctionName
    description: str | None = None
    schema: JsonObject | None = None
    strict: bool | None = None


class ResponseFormatText(Struct, kw_only=True, tag="text", tag_field="type"):
    pass


class ResponseFormatJsonObject(Struct, kw_only=True, tag="json_object", tag_field="type"):
    pass


class ResponseFormatJsonSchema(Struct, kw_only=True, tag="json_schema", tag_field="type"):
    json_schema: JsonSchemaFormat


ResponseFormatParam = ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema


class ChatCompletionRequest(Struct, kw_only=True):
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    model: Name
    frequency_penalty: Penalty | None = None
    logit_bias: LogitBias | None = None
    logprobs: bool | None = None
    max_completion_tokens: TokenCount | None = None
    max_tokens: TokenCount | None = None
    metadata: Metadata | None = None
    n: Choices | None = None
    parallel_tool_calls: bool | None = None
    presence_penalty: Penalty | None = None
    response_format: ResponseFormatParam | None = None
    seed: Seed | None = None
    stop: Stop | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    tool_choice: ToolChoiceParam | None = None
    tools: Annotated[list[ChatTool], Meta(max_length=128)] | None = None
    top_p: TopP | None = None
    user: Name | None = None
    # Freshet extensions
    freshness: Freshness | None = None
    max_ttft_ms: TtftMs | None = None


class CompletionRequest(Struct, kw_only=True):
    model: Name
    prompt: str | Annotated[list[str], Meta(min_length=1, max_length=1)]
    echo: bool | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: LogitBias | None = None
    max_tokens: TokenCount | None = None
    n: Choices | None = None
    presence_penalty: Penalty | None = None
    seed: Seed | None = None
    stop: Stop | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    suffix: str | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    user: Name | None = None
    # Freshet extensions
    freshness: Freshness | None = None
    max_ttft_ms: TtftMs | None = None


class PromptTokensDetails(Struct, kw_only=True, omit_defaults=True):
    cached_tokens: int  # prompt tokens read from the backend's prompt cache
    # Freshet's extension, when an upstream bills them (Anthropic): prompt tokens written
    # to its cache.
    cache_write_tokens: int = 0


class CompletionTokensDetails(Struct, kw_only=True):
    reasoning_tokens: int  # completion tokens spent reasoning


class Usage(Struct, kw_only=True, omit_defaults=True):
    completion_tokens: int
    prompt_tokens: int
    total_tokens: int
    # OpenAI's parts of the counts, present when the backend reported them (non-zero).
    completion_tokens_details: CompletionTokensDetails | None = None
    prompt_tokens_details: PromptTokensDetails | None = None
    # Freshet extensions: what this request really cost
    cost: float | None = None
    energy_joules: float | None = None


class AssistantMessage(Struct, kw_only=True):
    content: str | None
    refusal: str | None = None
    role: Literal["assistant"] = "assistant"
    tool_calls: list[ToolCall] | None = None


class FunctionCallDelta(Struct, kw_only=True, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(Struct, kw_only=True, omit_defaults=True):
    index: int
    id: str | None = None
    function: FunctionCallDelta | None = None
    type: Literal["function"] | None = None


class ChatChoice(Struct, kw_only=True):
    finish_reason: str | None
    index: int
    message: AssistantMessage
    logprobs: None = None


class ChatCompletion(Struct, kw_only=True):
    id: str
    choices: list[ChatChoice]
    created: int
    model: str
    usage: Usage
    object: Literal["chat.completion"] = "chat.completion"
    system_fingerprint: str | None = None


class ChoiceDelta(Struct, kw_only=True, omit_defaults=True):
    content: str | None = None
    role: Literal["assistant"] | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(Struct, kw_only=True):
    delta: ChoiceDelta
    finish_reason: str | None
    index: int = 0
    logprobs: None = None


class ChatCompletionChunk(Struct, kw_only=True):
    id: str
    choices: list[ChunkChoice]
    created: int
    model: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    system_fingerprint: str | None = None
    usage: Usage | None = None


class CompletionChoice(Struct, kw_only=True):
    finish_reason: str | None
    index: int
    text: str
    logprobs: None = None


class Completion(Struct, kw_only=True):
    id: str
    choices: list[CompletionChoice]
    created: int
    model: str
    object: Literal["text_completion"] = "text_completion"
    system_fingerprint: str | None = None
    usage: Usage | None = None


class Model(Struct, kw_only=True):
    id: str
    created: int
    owned_by: str
    object: Literal["model"] = "model"
    # Freshet extensions
    knowledge_cutoff: dt.date | None = None
    backends: list[str] = msgspec.field(default_factory=list)
    kind: Literal["model", "group", "adapter"] = "model"
    # Output caps: tokens a request without max_tokens may generate (null: until the
    # context is full) and the most any request may (a larger max_tokens is clamped); for
    # a group, the largest of its deployments'.
    default_output_tokens: int | None = None
    max_output_tokens: int | None = None
    # What it can do beyond text (tools, json_schema, vision): for a group, what any of its
    # deployments can (a request needing one is routed to those that have it).
    capabilities: list[str] = msgspec.field(default_factory=list)


class ModelList(Struct, kw_only=True):
    data: list[Model]
    object: Literal["list"] = "list"


class ErrorBody(Struct, kw_only=True):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(Struct, kw_only=True):
    error: ErrorBody
