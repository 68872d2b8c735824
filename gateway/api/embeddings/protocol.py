"""OpenAI's embeddings wire types as msgspec Structs, fields ordered as in the OpenAI API
reference. Unknown fields are accepted and ignored, so newer clients keep working; every
value a client sends is bounded as in :mod:`gateway.protocol`. Freshet's own extensions
come last in the request.

``input`` is a string, a list of strings, one array of token ids or a list of them, as
OpenAI takes it. The decoder bounds the sizes (:data:`MAX_TOKENS` for one array, token
ids as C ints); the handler (:func:`gateway.api.embeddings.handler.to_request`) checks
what one type cannot say: no empty input, at most :data:`MAX_INPUTS` inputs, no mixing.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from gateway.protocol import INT32_MAX, Freshness, Name, TtftMs

MAX_INPUTS = 2048  # inputs in one request, as OpenAI allows
MAX_TOKENS = 32768  # token ids in one array (a model's context decides what fits)
MAX_DIMENSIONS = 65536

TokenId = Annotated[int, Meta(ge=0, le=INT32_MAX)]
TokenArray = Annotated[list[TokenId], Meta(max_length=MAX_TOKENS)]
# One list type for every list form: strings, token ids (one array) or token arrays. Its
# bound is that of one token array; the handler holds a list of inputs to MAX_INPUTS.
Input = str | Annotated[list[str | TokenId | TokenArray], Meta(max_length=MAX_TOKENS)]
EncodingFormat = Literal["float", "base64"]


class EmbeddingCreateParams(Struct, kw_only=True):
    input: Input
    model: Name
    dimensions: Annotated[int, Meta(ge=1, le=MAX_DIMENSIONS)] | None = None
    encoding_format: EncodingFormat | None = None
    user: Name | None = None
    # Freshet extensions
    freshness: Freshness | None = None
    max_ttft_ms: TtftMs | None = None


class Embedding(Struct, kw_only=True):
    """One input's vector: a list of floats, or base64 of little-endian float32s."""

    embedding: list[float] | str
    index: int
    object: Literal["embedding"] = "embedding"


class EmbeddingUsage(Struct, kw_only=True):
    prompt_tokens: int
    total_tokens: int
    # Freshet extensions, as in chat's usage: what the request cost and the joules it took.
    cost: float | None = None
    energy_joules: float | None = None


class CreateEmbeddingResponse(Struct, kw_only=True):
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
    object: Literal["list"] = "list"
