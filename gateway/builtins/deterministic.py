"""The ``deterministic`` backend type: a built-in plugin for tests and smoke checks.

It needs no model: it answers with a fixed, repeatable word sequence at a configurable
pace, and can be told to fail before or during a stream, which is how faults that a real
engine cannot be made to produce are injected in tests. It serves both generation
operations unless its ``operations`` key names fewer (a chat-only backend, for tests of the
router), and embeddings (unit vectors made from the words) when it names them. Plugin
authors get it, with fixtures, from :mod:`gateway.testing`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import AsyncIterator, Sequence

from msgspec import Struct

from gateway.plugin_api import (
    DEFAULT_OPERATIONS,
    BackendConfig,
    BackendError,
    BackendStatus,
    BackendUsage,
    Chunk,
    ContextLengthExceeded,
    Deployment,
    EmbeddingRequest,
    EmbeddingResult,
    Fleet,
    GenerationRequest,
    HardwareKind,
    HardwareProfile,
    InvalidRequest,
    Operation,
    RegisterBackendType,
    convert_params,
    convert_profile,
    hookimpl,
)

WORDS = (
    "the",
    "river",
    "rises",
    "after",
    "rain",
    "and",
    "carries",
    "fresh",
    "water",
    "from",
    "the",
    "hills",
    "down",
    "to",
    "the",
    "sea",
    "where",
    "the",
    "tide",
    "turns",
    "it",
    "back",
    "again",
)


class DeterministicParams(Struct, kw_only=True, forbid_unknown_fields=True):
    tokens_per_s: float = 0.0  # 0 = as fast as possible
    max_context: int = 4096
    default_max_tokens: int = 16  # the type's default_output_tokens (the config's key wins)
    fail_before_first: bool = False
    fail_after_tokens: int | None = None
    operations: frozenset[Operation] = DEFAULT_OPERATIONS
    embedding_dimensions: int = 8  # when operations include embeddings


def count_tokens(text: str) -> int:
    return len(text.split())


class DeterministicBackend:
    """A backend whose output depends only on the request: for tests, not for users."""

    kind: HardwareKind = "cpu"

    def __init__(self, config: BackendConfig, fleet: Fleet) -> None:
        self.id = config.id
        self.params = convert_params(config, DeterministicParams)
        self._profile = convert_profile(
            config, HardwareProfile(kind="cpu", max_context=self.params.max_context)
        )
        # Output caps: 16 tokens by default; the context is the ceiling unless configured.
        default, ceiling = config.output_caps(self.params.default_max_tokens, None)
        self._deployments = (
            Deployment(
                backend_id=config.id,
                model=config.model or config.id,
                knowledge_cutoff=config.knowledge_cutoff,
                max_context=self.params.max_context,
                default_output_tokens=default,
                max_output_tokens=ceiling,
                operations=self.params.operations,
                # None unless the config declares some (it answers with its words anyway).
                capabilities=config.capabilities_or(frozenset()),
            ),
        )
        self.running = 0
        self.served = 0
        self.cancelled = 0

    @property
    def deployments(self) -> Sequence[Deployment]:
        return self._deployments

    @property
    def profile(self) -> HardwareProfile:
        return self._profile

    async def start(self) -> None:
        return None

    async def status(self) -> BackendStatus:
        return BackendStatus(healthy=True, running=self.running, observed_at=time.time())

    async def aclose(self) -> None:
        return None

    def prompt_tokens(self, request: GenerationRequest) -> int:
        if request.prompt is not None:
            return count_tokens(request.prompt)
        return sum(count_tokens(m.content) + 1 for m in request.messages)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """Unit vectors that depend only on each input's words (or token ids), one token a
        word (:class:`gateway.backend.Embedder`); served when ``operations`` include
        ``embeddings``, failing as configured."""
        started = time.perf_counter()
        if "embeddings" not in self.params.operations:  # the router never sends one
            raise InvalidRequest(f"{self.id} does not serve embeddings")
        if self.params.fail_before_first:
            raise BackendError(f"backend {self.id} is configured to fail")
        size = self.params.embedding_dimensions
        if request.dimensions not in (None, size):
            raise InvalidRequest(f"{self.id} embeds in {size} dimensions", param="dimensions")
        inputs = [t.split() for t in request.texts] or [
            [str(i) for i in ids] for ids in request.tokens
        ]
        usage = BackendUsage(
            prompt_tokens=sum(len(words) for words in inputs),
            completion_tokens=0,
            duration_s=time.perf_counter() - started,
        )
        self.served += 1
        return EmbeddingResult(vectors=[_unit(words, size) for words in inputs], usage=usage)

    async def count_tokens(self, request: GenerationRequest) -> int:
        """Exact: the count :meth:`stream` reports (:class:`gateway.backend.TokenCounter`)."""
        return self.prompt_tokens(request)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        started = time.perf_counter()
        if request.operation not in self.params.operations:  # the router never sends one
            raise InvalidRequest(f"{self.id} does not serve {request.operation}")
        prompt_tokens = self.prompt_tokens(request)
        if prompt_tokens >= self.params.max_context:
            raise ContextLengthExceeded(
                f"prompt has {prompt_tokens} tokens; {self.id} accepts at most "
                f"{self.params.max_context - 1}",
                param="messages" if request.operation == "chat" else "prompt",
            )
        if self.params.fail_before_first:
            raise BackendError(f"backend {self.id} is configured to fail")
        room = self.params.max_context - prompt_tokens
        wanted = self._deployments[0].output_limit(request.max_tokens, room) or room
        n = min(wanted, room)
        offset = (request.seed or 0) + prompt_tokens
        delay = 1.0 / self.params.tokens_per_s if self.params.tokens_per_s else 0.0
        self.running += 1
        produced = 0
        first_at: float | None = None
        try:
            for i in range(n):
                if self.params.fail_after_tokens is not None and i >= self.params.fail_after_tokens:
                    raise BackendError(f"backend {self.id} failed mid-stream (as configured)")
                if delay:
                    await asyncio.sleep(delay)
                word = WORDS[(offset + i) % len(WORDS)]
                produced += 1
                if first_at is None:
                    first_at = time.perf_counter() - started
                yield Chunk(text=word if i == 0 else " " + word)
            usage = BackendUsage(
                prompt_tokens=prompt_tokens,
                completion_tokens=produced,
                time_to_first_token_s=first_at,
                duration_s=time.perf_counter() - started,
            )
            self.served += 1
            yield Chunk(finish_reason="length" if n == wanted else "stop", usage=usage)
        except GeneratorExit:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1


def _unit(words: Sequence[str], size: int) -> list[float]:
    digest = hashlib.sha256(" ".join(words).encode()).digest()
    raw = [digest[i % len(digest)] - 127.5 for i in range(size)]
    norm = math.sqrt(math.fsum(x * x for x in raw))
    return [x / norm for x in raw]


@hookimpl
def register_backend_types(register: RegisterBackendType) -> None:
    register("deterministic", DeterministicBackend)
