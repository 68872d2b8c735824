"""vLLM's OpenAI-compatible wire format, read minimally: SSE events in, errors mapped.

Only what Freshet needs is decoded from each event (text delta, finish reason, usage,
error); everything else in vLLM's chunks is skipped by msgspec without building objects.
"""

from __future__ import annotations

import base64
import re
import sys
from array import array
from typing import Any

import msgspec
from msgspec import Struct

from freshet_vllm.chat_wire import ToolCallPiece, chat_fields
from gateway.plugin_api import (
    BackendError,
    BackendUsage,
    ContextLengthExceeded,
    EmbeddingRequest,
    FreshetError,
    GenerationRequest,
    InvalidRequest,
    ModelNotFound,
    RateLimited,
    ToolCallDelta,
)


class _Delta(Struct):
    content: str | None = None
    tool_calls: list[ToolCallPiece] | None = None


class _Choice(Struct):
    delta: _Delta | None = None  # chat
    text: str | None = None  # completions
    finish_reason: str | None = None
    # vLLM's: the stop string (or stop token id) that ended the output.
    stop_reason: str | int | None = None


class _PromptDetails(Struct):
    cached_tokens: int | None = None


class _CompletionDetails(Struct):
    reasoning_tokens: int | None = None


class Usage(Struct):
    """An upstream's ``usage``: OpenAI's shape (vLLM with ``--enable-prompt-tokens-details``
    sends ``prompt_tokens_details.cached_tokens``), or Anthropic's counts where a proxy
    passes them on (``cache_read_input_tokens``, ``cache_creation_input_tokens``; with
    ``input_tokens``/``output_tokens`` when it sends no OpenAI counts)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None


def _count(value: int | None) -> int:
    return value if value is not None and value > 0 else 0


def backend_usage(
    usage: Usage | None, pieces: int, time_to_first_token_s: float, duration_s: float
) -> BackendUsage:
    """The request's usage from the upstream's last ``usage`` (``pieces``: the completion
    tokens counted from the stream, when it sent none).

    Cache reads and writes are parts of the prompt, as OpenAI counts them. Anthropic's
    ``input_tokens`` leaves them out, so the prompt is its sum with them; an OpenAI-shaped
    ``prompt_tokens`` smaller than the cache counts it reports (a proxy that kept
    Anthropic's counting) is treated the same way.
    """
    if usage is None:
        return BackendUsage(
            prompt_tokens=0,
            completion_tokens=pieces,
            time_to_first_token_s=time_to_first_token_s,
            duration_s=duration_s,
        )
    details = usage.prompt_tokens_details
    cached = _count(details.cached_tokens if details is not None else None) or _count(
        usage.cache_read_input_tokens
    )
    written = _count(usage.cache_creation_input_tokens)
    prompt = _count(usage.prompt_tokens)
    completion = _count(usage.completion_tokens)
    if not prompt and usage.input_tokens is not None:  # Anthropic's counts only
        prompt = _count(usage.input_tokens) + cached + written
        completion = completion or _count(usage.output_tokens)
    elif cached + written > prompt:
        prompt += cached + written
    reasoning = usage.completion_tokens_details
    return BackendUsage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_prompt_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=min(
            _count(reasoning.reasoning_tokens if reasoning is not None else None), completion
        ),
        time_to_first_token_s=time_to_first_token_s,
        duration_s=duration_s,
    )


class _ErrorBody(Struct):
    message: str = ""
    type: str | None = None
    code: Any = None


class Event(Struct):
    """One ``data:`` payload of vLLM's stream."""

    choices: list[_Choice] = msgspec.field(default_factory=list)
    usage: Usage | None = None
    # vLLM reports errors inside a stream either as {"error": {...}} or, in older
    # releases, as a top-level {"object": "error", "message": ..., "code": ...}.
    error: _ErrorBody | None = None
    object: str | None = None
    message: str | None = None
    code: Any = None

    @property
    def text(self) -> str:
        out = ""
        for choice in self.choices:
            if choice.delta is not None and choice.delta.content:
                out += choice.delta.content
            elif choice.text:
                out += choice.text
        return out

    @property
    def tool_calls(self) -> list[ToolCallDelta]:
        """The pieces of tool calls in this event (chat)."""
        return [
            piece.as_delta()
            for choice in self.choices
            if choice.delta is not None and choice.delta.tool_calls
            for piece in choice.delta.tool_calls
        ]

    @property
    def finish_reason(self) -> str | None:
        for choice in self.choices:
            if choice.finish_reason is not None:
                return choice.finish_reason
        return None

    @property
    def stop_sequence(self) -> str | None:
        """The stop string that ended the output, where the server says it (vLLM's
        ``stop_reason``; a stop token id is not a stop string)."""
        for choice in self.choices:
            if isinstance(choice.stop_reason, str):
                return choice.stop_reason
        return None


def plain_text(event: Event) -> str | None:
    """The text of the commonest event, one token of one choice and nothing else (no call,
    finish, usage or error): read without :class:`Event`'s general properties."""
    if len(event.choices) != 1 or event.usage is not None or event.error is not None:
        return None
    choice = event.choices[0]
    delta = choice.delta
    if (
        delta is None
        or not delta.content
        or delta.tool_calls
        or choice.finish_reason is not None
        or choice.stop_reason is not None
        or event.object == "error"
    ):
        return None
    return delta.content


_decode_event = msgspec.json.Decoder(Event).decode
_decode_events = msgspec.json.Decoder(list[Event]).decode
DONE = b"[DONE]"


def _payload(line: bytes) -> bytes | None:
    """A ``data:`` line's payload; None for blank lines, comments, other fields and [DONE]."""
    if not line.startswith(b"data:"):
        return None
    payload = line[5:].strip()
    return payload if payload and payload != DONE else None


def parse_lines(lines: list[bytes], label: str = "vLLM") -> list[Event]:
    """The events in these SSE lines (what one read brought), as :func:`parse_line` reads
    each, decoded in one call: every payload an object (``{...}``), joined as one array,
    so each element is exactly one line's. A malformed line is named by parsing them one
    by one."""
    payloads = [p for p in map(_payload, lines) if p is not None]
    if len(payloads) > 1 and all(p[:1] == b"{" and p[-1:] == b"}" for p in payloads):
        try:
            events = _decode_events(b"[" + b",".join(payloads) + b"]")
        except msgspec.DecodeError:
            pass
        else:
            if len(events) == len(payloads):
                return events
    return [_parse_payload(p, label) for p in payloads]


def _parse_payload(payload: bytes, label: str) -> Event:
    try:
        return _decode_event(payload)
    except msgspec.DecodeError as exc:
        raise BackendError(f"malformed event from {label}: {payload[:200]!r}") from exc


def parse_line(line: bytes, label: str = "vLLM") -> Event | None:
    """The event in one SSE line; None for blank lines, comments, other fields and [DONE]."""
    payload = _payload(line)
    return None if payload is None else _parse_payload(payload, label)


def stream_error(event: Event, label: str = "vLLM") -> FreshetError | None:
    """The error an event reports mid-stream, if any."""
    if event.error is not None:
        return BackendError(f"{label} error mid-stream: {event.error.message}")
    if event.object == "error":
        return BackendError(f"{label} error mid-stream: {event.message or ''}")
    return None


class _HttpError(Struct):
    error: _ErrorBody | None = None
    message: str | None = None  # older vLLM: the error fields at the top level


# vLLM 0.32 says "This model's maximum context length is N tokens. However, ..." for long
# prompts and "max_tokens=N cannot be greater than max_model_len=M" for long outputs.
_CONTEXT = re.compile(r"maximum context length|max_model_len|maximum model length", re.I)


def error_message(body: bytes) -> str:
    try:
        parsed = msgspec.json.decode(body, type=_HttpError)
    except msgspec.DecodeError:
        return body[:500].decode(errors="replace").strip()
    if parsed.error is not None:
        return parsed.error.message
    return parsed.message or body[:500].decode(errors="replace").strip()


def map_http_error(
    status: int,
    body: bytes,
    request: GenerationRequest,
    upstream_model: str,
    url: str,
    label: str = "vLLM",
) -> FreshetError:
    """An upstream HTTP error as the gateway error the client should see (or fall back on)."""
    message = error_message(body)
    param = {"chat": "messages", "embeddings": "input"}.get(request.operation, "prompt")
    if status == 400 and _CONTEXT.search(message):
        return ContextLengthExceeded(message, param=param)
    if status == 404:
        return ModelNotFound(
            f"the {label} server does not serve {upstream_model!r}: {message}", param="model"
        )
    if status == 429:
        return RateLimited(f"{label} at {url} is overloaded: {message}")
    if status in (400, 422):
        return InvalidRequest(message)
    # 401/403 (our api_key is wrong), 5xx and anything else: the upstream failed, not the
    # client, so the gateway may fall back to another backend.
    return BackendError(f"{label} at {url} answered HTTP {status}: {message}")


def request_body(request: GenerationRequest, upstream_model: str) -> dict[str, Any]:
    """The OpenAI request vLLM gets: streamed, with exact usage at the end."""
    body: dict[str, Any] = {
        "model": upstream_model,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.operation == "chat":
        body.update(chat_fields(request))
    else:
        body["prompt"] = request.prompt or ""
    optional = {
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "seed": request.seed,
        "frequency_penalty": request.frequency_penalty,
        "presence_penalty": request.presence_penalty,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if request.stop:
        body["stop"] = list(request.stop)
    return body


def embedding_body(request: EmbeddingRequest, upstream_model: str) -> dict[str, Any]:
    """The OpenAI embeddings request upstream: the inputs as the client sent them (token
    arrays too), floats back (the gateway encodes them as its own client asked)."""
    inputs: list[Any] = list(request.texts) if request.texts else [list(t) for t in request.tokens]
    body: dict[str, Any] = {"model": upstream_model, "input": inputs, "encoding_format": "float"}
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    if request.user is not None:
        body["user"] = request.user
    return body


class _Embedding(Struct):
    embedding: list[float] | str
    index: int = 0


class _EmbeddingUsage(Struct):
    prompt_tokens: int = 0


class EmbeddingList(Struct):
    data: list[_Embedding]
    usage: _EmbeddingUsage | None = None


_decode_embeddings = msgspec.json.Decoder(EmbeddingList).decode


def parse_embeddings(body: bytes, count: int, label: str = "vLLM") -> tuple[list[list[float]], int]:
    """An upstream's embeddings answer: one vector per input, in input order (by
    ``index``), and its prompt tokens. Base64 (float32, little-endian) is read too, for a
    server that ignores ``encoding_format``."""
    try:
        parsed = _decode_embeddings(body)
    except msgspec.DecodeError as exc:
        raise BackendError(f"malformed embeddings from {label}: {body[:200]!r}") from exc
    items = sorted(parsed.data, key=lambda d: d.index)
    if [d.index for d in items] != list(range(count)):
        raise BackendError(f"{label} returned {len(items)} embeddings for {count} inputs")
    vectors = [_floats(d.embedding, label) for d in items]
    return vectors, parsed.usage.prompt_tokens if parsed.usage else 0


def _floats(embedding: list[float] | str, label: str) -> list[float]:
    if isinstance(embedding, list):
        return embedding
    try:
        packed = array("f", base64.b64decode(embedding, validate=True))
    except ValueError as exc:
        raise BackendError(f"{label} sent an embedding that is not base64 float32") from exc
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tolist()
