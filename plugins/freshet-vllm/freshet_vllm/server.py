"""Mode ``server``: one or more vLLM OpenAI-compatible servers, reached over HTTP."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence

import aiohttp
import msgspec

from freshet_vllm import wire
from freshet_vllm.http1 import Response
from freshet_vllm.params import (
    GPU_PROFILE,
    SERVER_CAPABILITIES,
    ServerParams,
    build_deployments,
    config_error,
    parse_adapters,
)
from freshet_vllm.upstream import Upstream, cancel_all, pick, poll_forever, trace_headers
from gateway.plugin_api import (
    FINISH_TOOL_CALLS,
    BackendConfig,
    BackendError,
    BackendStatus,
    BackendUnavailable,
    BackendUsage,
    Chunk,
    Deployment,
    EmbeddingRequest,
    EmbeddingResult,
    Fleet,
    FreshetError,
    GenerationRequest,
    HardwareKind,
    HardwareProfile,
    InvalidRequest,
    RateLimited,
    ToolCallDelta,
    convert_params,
    convert_profile,
)

log = logging.getLogger(__name__)

_PATHS = {
    "chat": "/v1/chat/completions",
    "text_completion": "/v1/completions",
    "embeddings": "/v1/embeddings",
}
# Failures that mean "this server did not take the request": try the next one.
_CONNECT_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)
_encode = msgspec.json.Encoder().encode


class VllmServerBackend:
    kind: HardwareKind = "gpu"
    label = "vLLM"  # names the upstream in error messages
    remote = True  # generation happens in another process: the loop is free meanwhile

    def __init__(self, config: BackendConfig, fleet: Fleet) -> None:
        self.id = config.id
        self.params = p = convert_params(config, ServerParams)
        if not p.urls:
            raise config_error(config, "urls", "list at least one vLLM server URL")
        for i, url in enumerate(p.urls):
            if not url.startswith(("http://", "https://")):
                raise config_error(config, f"urls[{i}]", f"not an http(s) URL: {url!r}")
        if p.poll_interval_s <= 0 or p.request_timeout_s <= 0 or p.connect_timeout_s <= 0:
            raise config_error(config, "poll_interval_s", "intervals and timeouts must be > 0")
        self.model = config.model or p.served_model or config.id
        self.served_model = p.served_model or self.model
        self.gpu_indices = tuple(p.gpu_indices)  # for an energy meter on this host
        self._profile = convert_profile(config, GPU_PROFILE)
        self.adapters = parse_adapters(config)
        self._deployments = build_deployments(
            config,
            self.model,
            self._profile.max_context or 131072,
            self.adapters,
            p.operations,
            SERVER_CAPABILITIES,
        )
        headers = {"Authorization": f"Bearer {p.api_key}"} if p.api_key else {}
        self.upstreams = [Upstream(url, headers, p.connect_timeout_s) for url in p.urls]
        self._pollers: list[asyncio.Task[None]] = []

    @property
    def deployments(self) -> Sequence[Deployment]:
        return self._deployments

    @property
    def profile(self) -> HardwareProfile:
        return self._profile

    async def start(self) -> None:
        for upstream in self.upstreams:
            upstream.open()
        # One round before reporting ready, so health is known at once; a server that is
        # down does not stop the gateway (its requests fall back until it comes up).
        timeout = self.params.connect_timeout_s
        await asyncio.gather(*(u.poll(timeout) for u in self.upstreams))
        for upstream in self.upstreams:
            if not upstream.healthy:
                log.warning(
                    "backend %s: vLLM at %s is not answering yet (%s); retrying in the background",
                    self.id,
                    upstream.url,
                    upstream.last_error,
                )
        interval = self.params.poll_interval_s
        self._pollers = [
            asyncio.create_task(
                poll_forever(u, interval, self.params.max_backoff_s, timeout + interval),
                name=f"freshet-vllm-poll-{self.id}-{i}",
            )
            for i, u in enumerate(self.upstreams)
        ]

    async def aclose(self) -> None:
        await cancel_all(self._pollers)
        self._pollers = []
        for upstream in self.upstreams:
            await upstream.close()

    async def status(self) -> BackendStatus:
        up = [u for u in self.upstreams if u.healthy]
        detail = f"{len(up)}/{len(self.upstreams)} vLLM servers up"
        if up:
            kv = max(u.load.kv_cache_usage for u in up)
            detail += f"; KV cache {kv:.0%}"
        errors = [f"{u.url}: {u.last_error}" for u in self.upstreams if u.last_error]
        if errors:
            detail += "; " + "; ".join(errors)
        # The server a request goes to frees first; the profile's concurrency is per server.
        waits = [u.load.busy_s(self._profile.max_concurrency) for u in up]
        known = [w for w in waits if w is not None]
        busy = min(known) if known and (0.0 in known or len(known) == len(waits)) else None
        return BackendStatus(
            healthy=bool(up),
            running=sum(u.load.running for u in up),
            waiting=sum(u.load.waiting for u in up),
            observed_at=min((u.observed_at for u in up), default=0.0),
            detail=detail,
            busy_s=busy,
        )

    def upstream_model(self, request: GenerationRequest) -> str:
        # vLLM serves each LoRA module under its own name (--lora-modules name=path).
        return request.adapter or self.served_model

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        """Pass-through to the server's ``/v1/embeddings`` (:class:`Embedder`): inputs as
        sent (token arrays too), ``dimensions`` for the server to honour or refuse; its
        errors are mapped as a generation's are."""
        started = time.perf_counter()
        routed = GenerationRequest(
            request_id=request.request_id,
            operation="embeddings",
            model=request.model,
            adapter=request.adapter,
        )
        self._serves(routed)
        model = self.upstream_model(routed)
        resp, upstream = await self._open(routed, model, wire.embedding_body(request, model))
        complete = False
        try:
            body = await resp.read()
            complete = True
        except _CONNECT_ERRORS as exc:
            upstream.mark_down(f"{type(exc).__name__}: {exc}")
            raise BackendError(f"{self.label} at {upstream.url} failed: {exc!r}") from exc
        finally:
            if complete:
                resp.release()
            else:
                resp.close()
            upstream.in_flight -= 1
        vectors, prompt_tokens = wire.parse_embeddings(body, request.count, self.label)
        duration = time.perf_counter() - started
        usage = BackendUsage(
            prompt_tokens=prompt_tokens,
            completion_tokens=0,
            time_to_first_token_s=duration,
            duration_s=duration,
        )
        return EmbeddingResult(vectors=vectors, usage=usage)

    def _serves(self, request: GenerationRequest) -> None:
        if request.operation not in self._deployments[0].operations:  # never routed here
            raise InvalidRequest(f"{self.id} does not serve {request.operation}")

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """vLLM's stream as chunks, one a token; for a request the client takes whole
        (:attr:`GenerationRequest.whole`), what one read brought is one chunk, its tokens
        counted in ``pieces`` (an upstream that sent 32 events at once: one chunk, not 32
        passed through every layer of the flow)."""
        started = time.perf_counter()
        self._serves(request)
        model = self.upstream_model(request)
        # The deployment's output caps travel upstream as max_tokens (all share them).
        body = wire.request_body(self._deployments[0].with_output_limit(request), model)
        resp, upstream = await self._open(request, model, body)
        whole = request.whole
        first_at: float | None = None
        pieces = 0  # completion tokens when the server sends no usage
        usage: wire.Usage | None = None
        finish: str | None = None
        stop: str | None = None
        called = False
        complete = False
        try:
            while (lines := await resp.next_lines()) is not None:
                texts: list[str] = []  # a whole request's, from this read
                calls_read: list[ToolCallDelta] = []
                taken = pieces
                for event in wire.parse_lines(lines, self.label):
                    text = wire.plain_text(event)  # one token of text, as most events are
                    plain = text is not None
                    if not plain:
                        error = wire.stream_error(event, self.label)
                        if error is not None:
                            if whole and pieces > taken:  # what came before it is counted
                                yield Chunk(
                                    text="".join(texts),
                                    tool_calls=calls_read,
                                    pieces=pieces - taken,
                                )
                            raise error
                        text = event.text
                    if text:
                        if first_at is None:
                            first_at = time.perf_counter() - started
                        pieces += 1
                        if whole:
                            texts.append(text)
                        else:
                            yield Chunk(text=text)
                    if plain:
                        continue
                    calls = event.tool_calls
                    if calls:
                        if first_at is None:
                            first_at = time.perf_counter() - started
                        pieces += 1
                        called = True
                        if whole:
                            calls_read.extend(calls)
                        else:
                            yield Chunk(tool_calls=calls)
                    finish = event.finish_reason or finish
                    stop = event.stop_sequence or stop
                    usage = event.usage or usage
                if whole and pieces > taken:
                    yield Chunk(text="".join(texts), tool_calls=calls_read, pieces=pieces - taken)
            complete = True
        except _CONNECT_ERRORS as exc:
            upstream.mark_down(f"{type(exc).__name__}: {exc}")
            raise BackendError(
                f"{self.label} at {upstream.url} failed mid-stream: {exc!r}"
            ) from exc
        finally:
            # A finished response gives its connection back to the pool; an unfinished
            # one (client gone, error) closes it, which makes vLLM abort the request.
            if complete:
                resp.release()
            else:
                resp.close()
            upstream.in_flight -= 1
        if finish is None:
            raise BackendError(f"{self.label} at {upstream.url} ended the stream without finishing")
        if called and finish == "stop":
            # vLLM (as OpenAI) ends a call forced by name with "stop"; an answer with calls
            # ends with tool_calls here, so Anthropic's stop_reason is tool_use.
            finish = FINISH_TOOL_CALLS
        duration = time.perf_counter() - started
        yield Chunk(
            finish_reason=finish,
            usage=wire.backend_usage(
                usage, pieces, first_at if first_at is not None else duration, duration
            ),
            stop_sequence=stop if finish == "stop" else None,
        )

    async def _open(
        self, request: GenerationRequest, model: str, body: dict[str, object]
    ) -> tuple[Response, Upstream]:
        """POST to the least-loaded server that takes it; next server on connection failure."""
        path = _PATHS[request.operation]
        failures: list[str] = []
        limit = self.params.max_in_flight
        order = pick(self.upstreams)
        encoded = _encode(body)
        if limit is not None and all(u.in_flight >= limit for u in order):
            raise RateLimited(
                f"backend {self.id}: every {self.label} server has {limit} requests in flight"
            )
        for upstream in order:
            if limit is not None and upstream.in_flight >= limit:
                continue
            assert upstream.http is not None, "start() was not called"
            upstream.in_flight += 1
            try:
                resp = await upstream.http.post(
                    path, encoded, self.params.request_timeout_s, trace_headers()
                )
            except _CONNECT_ERRORS as exc:
                upstream.in_flight -= 1
                upstream.mark_down(f"{type(exc).__name__}: {exc}")
                failures.append(f"{upstream.url}: {type(exc).__name__}: {exc}")
                continue
            except BaseException:
                upstream.in_flight -= 1
                raise
            if resp.status == 200:
                return resp, upstream
            upstream.in_flight -= 1
            try:
                error: FreshetError = wire.map_http_error(
                    resp.status, await resp.read(), request, model, upstream.url, self.label
                )
            except _CONNECT_ERRORS as exc:
                error = BackendError(f"{self.label} at {upstream.url} failed: {exc!r}")
            finally:
                resp.release()
            if not isinstance(error, BackendError) or len(order) == 1:
                raise error
            failures.append(error.message)
        reasons = "; ".join(failures)
        raise BackendUnavailable(
            f"backend {self.id}: no {self.label} server took the request: {reasons}"
        )
