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
from typing import Annotated, Literal

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


class ContentPart(Struct, kw_only=True):
    type: Annotated[str, Meta(max_length=64)]
    text: str | None = None


class ChatMessage(Struct, kw_only=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: Name | None = None
    tool_call_id: Name | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")


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
    presence_penalty: Penalty | None = None
    seed: Seed | None = None
    stop: Stop | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
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


class Usage(Struct, kw_only=True, omit_defaults=True):
    completion_tokens: int
    prompt_tokens: int
    total_tokens: int
    # Freshet extensions: what this request really cost
    cost: float | None = None
    energy_joules: float | None = None


class AssistantMessage(Struct, kw_only=True):
    content: str | None
    refusal: str | None = None
    role: Literal["assistant"] = "assistant"


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
