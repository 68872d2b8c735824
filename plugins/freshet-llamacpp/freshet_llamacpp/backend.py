"""The ``llamacpp`` backend: asyncio side of a pool of llama.cpp model instances."""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import msgspec
from msgspec import Struct

from freshet_llamacpp.backlog import Backlog, prompt_estimate
from freshet_llamacpp.embed import PooledEmbedder
from freshet_llamacpp.engine import Instance, Sampling, calibrate
from freshet_llamacpp.model_files import (
    DEFAULT_DISTRIBUTION,
    DEFAULT_MODEL_ID,
    gguf_from_distribution,
)
from gateway.plugin_api import (
    DEFAULT_OPERATIONS,
    BackendConfig,
    BackendStatus,
    BackendUnavailable,
    BackendUsage,
    Chunk,
    ConfigError,
    Deployment,
    EmbeddingRequest,
    EmbeddingResult,
    Fleet,
    GenerationRequest,
    HardwareKind,
    HardwareProfile,
    InvalidRequest,
    Operation,
    RateLimited,
    ToolCallDelta,
    convert_params,
    convert_profile,
)

# Output caps of the type (the config's default_output_tokens / max_output_tokens win): a
# request without max_tokens stops at 512 tokens (~4 s at 125 tok/s) instead of running to
# the end of the context and holding a model copy for minutes; none generates over 2,048.
DEFAULT_OUTPUT_TOKENS = 512
MAX_OUTPUT_TOKENS = 2048

# Tools and structured output are enforced by grammars (freshet_llamacpp.tools); no vision.
CAPABILITIES = frozenset(("tools", "json_schema"))

# Defaults measured on this project's 2-vCPU machines (see data/profiles-sources.md);
# replaced by this machine's own figures when `calibrate` is on.
CPU_PROFILE = HardwareProfile(
    kind="cpu",
    watts_idle=1.0,
    watts_active=6.0,
    capex_per_hour=0.08,
    prefill_tokens_per_s=325.0,
    decode_tokens_per_s=125.0,
    max_concurrency=1,
)


class LlamaCppParams(Struct, kw_only=True, forbid_unknown_fields=True):
    model_path: str | None = None
    model_package: str = DEFAULT_DISTRIBUTION
    n_ctx: int = 8192
    n_threads: int | None = None
    n_batch: int = 512
    instances: int = 1
    queue_limit: int = 16
    calibrate: bool = True
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    # /v1/embeddings: the chat model's own pooled embeddings (freshet_llamacpp.embed), from
    # a second instance opened on the first such request ("lazy"), at start ("start"), or
    # not served ("off"); inputs of at most embedding_n_ctx tokens (512, as small embedding
    # models take: every input pays for the whole context, 4x slower at 2,048 on short ones).
    embeddings: Literal["lazy", "start", "off"] = "lazy"
    embedding_n_ctx: int = 512


_END = object()


class LlamaCppBackend:
    kind: HardwareKind = "cpu"

    def __init__(self, config: BackendConfig, fleet: Fleet) -> None:
        self.id = config.id
        self.params = p = convert_params(config, LlamaCppParams)
        if p.instances < 1 or p.queue_limit < 0:
            raise ConfigError(
                "instances must be >= 1 and queue_limit >= 0",
                file=config.source,
                key=f"backends[{config.index}].instances",
            )
        self.model_path = (
            Path(p.model_path) if p.model_path else gguf_from_distribution(p.model_package)
        )
        if not self.model_path.is_file():
            raise ConfigError(
                f"model file not found: {self.model_path}",
                file=config.source,
                key=f"backends[{config.index}].model_path",
            )
        self._config = config
        self._model_id = config.model or (
            DEFAULT_MODEL_ID if not p.model_path else self.model_path.stem
        )
        self._profile = convert_profile(
            config, msgspec_replace(CPU_PROFILE, max_concurrency=p.instances, max_context=p.n_ctx)
        )
        self._sampling = Sampling(p.temperature, p.top_p, p.top_k, p.min_p)
        self._free: asyncio.Queue[Instance] | None = None
        self._calibrated: list[dict[str, Any]] = []  # what start() measured
        self._executor = ThreadPoolExecutor(
            max_workers=p.instances, thread_name_prefix=f"llama-{self.id}"
        )
        self._waiting = 0
        self._running = 0
        self._backlog = Backlog()
        self._n_ctx = p.n_ctx
        self._output_caps = config.output_caps(DEFAULT_OUTPUT_TOKENS, MAX_OUTPUT_TOKENS)
        self._loaded = False
        self._counter: Instance | None = None  # whose tokenizer count_tokens uses
        self._capabilities = config.capabilities_or(CAPABILITIES)
        self._operations: frozenset[Operation] = (
            DEFAULT_OPERATIONS
            if p.embeddings == "off"
            else DEFAULT_OPERATIONS | frozenset(("embeddings",))
        )
        # Embeddings run in a thread of their own, one request at a time, so they never
        # wait behind a long generation for a model instance.
        self._embedder: PooledEmbedder | None = None
        self._embedder_lock = asyncio.Lock()
        self._embed_executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"llama-{self.id}-embed"
        )
        self._embedding = 0  # embedding requests in flight (waiting included)

    @property
    def deployments(self) -> Sequence[Deployment]:
        default, ceiling = self._output_caps
        return (
            Deployment(
                backend_id=self.id,
                model=self._model_id,
                knowledge_cutoff=self._config.knowledge_cutoff,
                max_context=self._n_ctx,
                default_output_tokens=default,
                max_output_tokens=ceiling,
                # chat (the GGUF's template), completions and (unless off) embeddings
                operations=self._operations,
                capabilities=self._capabilities,
            ),
        )

    @property
    def profile(self) -> HardwareProfile:
        return self._profile

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        threads = self.params.n_threads or max(1, (os.cpu_count() or 1) // self.params.instances)
        free: asyncio.Queue[Instance] = asyncio.Queue()
        for _ in range(self.params.instances):
            instance = await loop.run_in_executor(
                self._executor,
                Instance,
                self.model_path,
                self.params.n_ctx,
                threads,
                self.params.n_batch,
            )
            free.put_nowait(instance)
            self._counter = instance
        self._n_ctx = instance.n_ctx
        if self.params.calibrate and "prefill_tokens_per_s" not in self._config.profile:
            measured = await loop.run_in_executor(self._executor, calibrate, instance)
            self._profile = msgspec_replace(self._profile, **measured)
            self._calibrated.append(measured)
        self._profile = msgspec_replace(self._profile, max_context=self._n_ctx)
        if self.params.embeddings == "start":
            await self._open_embedder()
        self._free = free
        self._loaded = True

    async def status(self) -> BackendStatus:
        return BackendStatus(
            healthy=self._loaded,
            running=self._running,
            waiting=self._waiting,
            observed_at=time.time(),
            detail=None if self._loaded else "model not loaded",
            saturated=self._free is not None
            and self._free.empty()
            and self._waiting >= self.params.queue_limit,
            # Tokens left of the running requests and the queued ones, at the calibrated
            # rates (freshet_llamacpp.backlog).
            busy_s=self._backlog.busy_s(
                self.params.instances,
                self._profile.prefill_tokens_per_s,
                self._profile.decode_tokens_per_s,
                time.monotonic(),
            )
            if self._loaded
            else None,
        )

    async def calibrate(self) -> dict[str, float]:
        """This machine's prefill and decode tokens/s on the loaded model (``freshet
        calibrate``, :class:`~gateway.plugin_api.Calibratable`): the median of three short
        runs on one free instance, as its requests run (its threads, alone on it); the run
        :meth:`start` made, if it made one, is the first."""
        instance = await self._acquire()
        loop = asyncio.get_running_loop()
        runs = list(self._calibrated)
        try:
            while len(runs) < 3:
                runs.append(await loop.run_in_executor(self._executor, calibrate, instance))
        finally:
            assert self._free is not None
            self._free.put_nowait(instance)
        return {key: float(statistics.median(r[key] for r in runs)) for key in runs[0]}

    async def aclose(self) -> None:
        self._loaded = False
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._embed_executor.shutdown(wait=False, cancel_futures=True)

    async def _acquire(self) -> Instance:
        if self._free is None:
            raise BackendUnavailable(f"backend {self.id} has not loaded its model")
        if self._free.empty() and self._waiting >= self.params.queue_limit:
            # Expected wait: the queue ahead of us at the calibrated decode rate, roughly.
            raise RateLimited(
                f"backend {self.id} is busy: {self._running} running, {self._waiting} queued",
                retry_after_s=1.0 + self._waiting,
            )
        self._waiting += 1
        try:
            return await self._free.get()
        finally:
            self._waiting -= 1

    async def count_tokens(self, request: GenerationRequest) -> int:
        """The prompt's exact tokens, chat template included, by the model's own tokenizer
        (:class:`TokenCounter`); tokenising reads only the vocabulary, so it needs no free
        instance and runs beside generations."""
        counter = self._counter
        if counter is None:
            raise BackendUnavailable(f"backend {self.id} has not loaded its model")
        return len(await asyncio.to_thread(counter.prompt_tokens, request))

    async def _open_embedder(self) -> PooledEmbedder:
        async with self._embedder_lock:  # one instance, however many ask at once
            if self._embedder is None:
                threads = self.params.n_threads or max(1, os.cpu_count() or 1)
                self._embedder = await asyncio.get_running_loop().run_in_executor(
                    self._embed_executor,
                    PooledEmbedder,
                    self.model_path,
                    min(self.params.embedding_n_ctx, self._n_ctx),
                    threads,
                )
            return self._embedder

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """The chat model's mean-pooled, L2-normalised embeddings (:class:`Embedder`);
        ``dimensions`` only as the model's own (no truncation)."""
        if "embeddings" not in self._operations:  # the router never sends one
            raise InvalidRequest(f"{self.id} does not serve embeddings (embeddings: off)")
        if not self._loaded:
            raise BackendUnavailable(f"backend {self.id} has not loaded its model")
        if self._embedding >= max(1, self.params.queue_limit):
            raise RateLimited(
                f"backend {self.id} is busy: {self._embedding} embedding requests in flight",
                retry_after_s=1.0,
            )
        self._embedding += 1
        self._running += 1
        cancel = threading.Event()
        try:
            embedder = await self._open_embedder()
            if request.dimensions is not None and request.dimensions != embedder.dimensions:
                raise InvalidRequest(
                    f"model {request.model!r} embeds in {embedder.dimensions} dimensions and "
                    "cannot shorten them ('dimensions' is not supported here)",
                    param="dimensions",
                )
            loop = asyncio.get_running_loop()
            vectors, usage = await loop.run_in_executor(
                self._embed_executor, embedder.embed, request.texts, request.tokens, cancel
            )
            return EmbeddingResult(vectors=vectors, usage=usage)
        finally:
            cancel.set()  # a client gone stops the thread before its next input
            self._running -= 1
            self._embedding -= 1

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        caps = self.deployments[0]
        planned = caps.output_limit(request.max_tokens) or DEFAULT_OUTPUT_TOKENS
        key = self._backlog.add(prompt_estimate(request), planned)
        try:
            instance = await self._acquire()
        except BaseException:
            self._backlog.remove(key)
            raise
        job = self._backlog.job(key)
        assert job is not None
        job.started = time.monotonic()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()
        self._running += 1

        prompt_tokens: list[int] = []

        def emit(item: str | ToolCallDelta) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def counted(n: int) -> None:
            # Scheduled before the first text: the first chunk carries the real count.
            loop.call_soon_threadsafe(prompt_tokens.append, n)

        matched: list[str] = []  # the stop sequence that ended the text (set by the thread)

        def run() -> tuple[str | None, BackendUsage]:
            try:
                return instance.generate(
                    request, self._sampling, emit, cancel, caps, counted, matched.append
                )
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _END)

        future = loop.run_in_executor(self._executor, run)

        def release(_: object) -> None:
            # The instance goes back only when its thread has really stopped.
            self._backlog.remove(key, time.monotonic())
            self._running -= 1
            assert self._free is not None
            self._free.put_nowait(instance)

        future.add_done_callback(release)
        try:
            first = True
            while (item := await queue.get()) is not _END:
                if isinstance(item, ToolCallDelta):
                    chunk = Chunk(tool_calls=(item,))
                else:
                    chunk = Chunk(text=item)
                if job.first_at is None:
                    job.first_at = time.monotonic()
                job.produced += 1
                if first and prompt_tokens:
                    first = False
                    chunk.prompt_tokens = prompt_tokens[0]
                    self._backlog.counted(key, prompt_tokens[0])
                yield chunk
            finish, usage = await future  # re-raises the thread's error, if any
            stop = matched[0] if matched else None
            yield Chunk(finish_reason=finish or "stop", usage=usage, stop_sequence=stop)
        finally:
            cancel.set()


def msgspec_replace(profile: HardwareProfile, **changes: Any) -> HardwareProfile:
    return msgspec.structs.replace(profile, **changes)
