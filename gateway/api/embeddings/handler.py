"""``POST /v1/embeddings``: OpenAI's request as an :class:`EmbeddingRequest`, served by
:meth:`Service.embed` (the flow of every other request: routing with freshness to the
deployments that declare ``embeddings``, admission, limits and budgets, metering, the one
usage record with ``operation: embeddings`` and no completion tokens, traces, fallback),
answered as OpenAI's list of embeddings, as float lists or base64 (little-endian float32,
as OpenAI sends it; the ``openai`` SDK asks for base64 unless told otherwise).
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Sequence

from gateway.api.completions import EdgeRequest, JsonReply, Reply, route_headers
from gateway.api.embeddings import protocol as e
from gateway.backend import EmbeddingRequest
from gateway.errors import InvalidRequest
from gateway.flow.estimate import estimate_text_tokens
from gateway.flow.service import Service, cost_headers

OPERATION = "embeddings"


class Sized:
    """An embeddings request and its size for the router: every input's tokens (estimated
    for texts, exact for token arrays) and the longest input's."""

    __slots__ = ("longest", "request", "tokens")

    def __init__(self, request: EmbeddingRequest, tokens: int, longest: int) -> None:
        self.request = request
        self.tokens = tokens
        self.longest = longest


def to_request(data: e.EmbeddingCreateParams, request_id: str) -> Sized:
    """Check ``input`` (a 400 naming what is wrong, as OpenAI answers) and size it."""
    raw = data.input

    def request(
        texts: Sequence[str] = (), tokens: Sequence[Sequence[int]] = ()
    ) -> EmbeddingRequest:
        return EmbeddingRequest(
            request_id=request_id,
            model=data.model,
            texts=texts,
            tokens=tokens,
            dimensions=data.dimensions,
            user=data.user,
        )

    if isinstance(raw, str):
        if not raw:
            raise InvalidRequest("'input' must not be an empty string", param="input")
        raw = [raw]
    if not raw:
        raise InvalidRequest("'input' must not be empty", param="input")
    if all(isinstance(x, int) for x in raw):  # one array of token ids
        tokens = [x for x in raw if isinstance(x, int)]
        return Sized(request(tokens=(tokens,)), len(tokens), len(tokens))
    if len(raw) > e.MAX_INPUTS:
        raise InvalidRequest(
            f"'input' has {len(raw)} items; at most {e.MAX_INPUTS} may be embedded at once",
            param="input",
        )
    if all(isinstance(x, str) for x in raw):
        texts = [x for x in raw if isinstance(x, str)]
        sizes = []
        for i, text in enumerate(texts):
            if not text:
                raise InvalidRequest(f"'input[{i}]' is an empty string", param=f"input[{i}]")
            sizes.append(estimate_text_tokens(text))
        return Sized(request(texts=texts), sum(sizes), max(sizes))
    if all(isinstance(x, list) for x in raw):
        arrays = [x for x in raw if isinstance(x, list)]
        for i, array_ in enumerate(arrays):
            if not array_:
                raise InvalidRequest(f"'input[{i}]' is an empty token array", param=f"input[{i}]")
        return Sized(request(tokens=arrays), sum(map(len, arrays)), max(map(len, arrays)))
    raise InvalidRequest(
        "'input' must be a string, a list of strings, an array of token ids or a list of "
        "token arrays, not a mix",
        param="input",
    )


def encode(vector: Sequence[float], encoding_format: e.EncodingFormat | None) -> list[float] | str:
    """A vector as the client asked: floats, or base64 of little-endian float32s."""
    if encoding_format == "base64":
        packed = array("f", vector)
        if sys.byteorder != "little":
            packed.byteswap()
        return base64.b64encode(packed.tobytes()).decode("ascii")
    return vector if isinstance(vector, list) else list(vector)


async def embeddings(service: Service, data: e.EmbeddingCreateParams, edge: EdgeRequest) -> Reply:
    sized = to_request(data, edge.request_id)
    options = edge.options
    ctx = service.context(
        edge.request_id,
        data.model,
        OPERATION,
        False,
        freshness=data.freshness,
        header_freshness=options.freshness,
        max_ttft_ms=data.max_ttft_ms if data.max_ttft_ms is not None else options.max_ttft_ms,
        api_key=edge.api_key,
        observer=edge.observer,
    )
    routed, usage, result = await service.embed(ctx, sized.request, sized.tokens, sized.longest)
    headers = route_headers(routed)
    cost_headers(headers, usage)
    fmt = data.encoding_format
    body = e.CreateEmbeddingResponse(
        data=[
            e.Embedding(embedding=encode(vector, fmt), index=i)
            for i, vector in enumerate(result.vectors)
        ],
        model=routed.opened.deployment.name,
        usage=e.EmbeddingUsage(
            prompt_tokens=usage.prompt_tokens,
            total_tokens=usage.prompt_tokens,
            cost=usage.cost,
            energy_joules=usage.energy_joules,
        ),
    )
    return JsonReply(body, headers)
