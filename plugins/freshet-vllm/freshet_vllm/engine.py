"""Mode ``engine``: vLLM's async engine inside the gateway process (single box, one model).

vLLM is imported lazily, and only here: the gateway's own environment normally does not
have it (servers run in theirs). Without it, building this backend is a config error that
says what to install.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from freshet_vllm.params import (
    GPU_PROFILE,
    EngineParams,
    build_deployments,
    config_error,
    parse_adapters,
)
from gateway.plugin_api import (
    BackendConfig,
    BackendError,
    BackendStatus,
    BackendUnavailable,
    BackendUsage,
    Chunk,
    ContextLengthExceeded,
    Deployment,
    Fleet,
    GenerationRequest,
    HardwareKind,
    HardwareProfile,
    InvalidRequest,
    ModelNotFound,
    convert_params,
    convert_profile,
)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


class VllmEngineBackend:
    kind: HardwareKind = "gpu"

    def __init__(self, config: BackendConfig, fleet: Fleet) -> None:
        self.id = config.id
        self.params = p = convert_params(config, EngineParams)
        if config.capabilities:
            # Its requests carry no tools, response_format or images to vLLM: claiming them
            # would route such requests here to be answered as plain text.
            raise config_error(
                config, "capabilities", "mode engine serves text only; use mode server for these"
            )
        if not vllm_available():
            raise config_error(
                config,
                "mode",
                "mode 'engine' runs vLLM inside the gateway, but vllm is not importable here; "
                "install it into the gateway's environment (pip install vllm), or run a vLLM "
                "server and use mode 'server' with its URL",
            )
        if not Path(p.model_path).exists():
            raise config_error(config, "model_path", f"no such model: {p.model_path}")
        self.adapters = parse_adapters(config)
        for i, adapter in enumerate(self.adapters):
            if not adapter.path:
                raise config_error(config, f"adapters[{i}].path", "mode engine needs its path")
        self.model = config.model or p.served_model or Path(p.model_path).name
        self.gpu_indices = tuple(p.gpu_indices)
        self._profile = convert_profile(config, GPU_PROFILE)
        self.max_model_len = p.max_model_len or self._profile.max_context or 131072
        self._deployments = build_deployments(config, self.model, self.max_model_len, self.adapters)
        self._engine: Any = None
        self._tokenizer: Any = None
        self._vllm: Any = None
        self._ids = itertools.count(1)
        self.running = 0

    @property
    def deployments(self) -> Sequence[Deployment]:
        return self._deployments

    @property
    def profile(self) -> HardwareProfile:
        return self._profile

    @property
    def engine(self) -> Any:
        """vLLM's ``AsyncLLMEngine`` once started (None before and after)."""
        return self._engine

    async def start(self) -> None:
        vllm = self._vllm = importlib.import_module("vllm")
        p = self.params
        args = vllm.AsyncEngineArgs(
            model=p.model_path,
            served_model_name=self.model,
            dtype=p.dtype,
            max_model_len=self.max_model_len,
            enforce_eager=p.enforce_eager,
            gpu_memory_utilization=p.gpu_memory_utilization,
            enable_lora=bool(self.adapters),
            max_lora_rank=p.max_lora_rank,
            **p.engine_args,
        )
        self._engine = vllm.AsyncLLMEngine.from_engine_args(args)
        self._tokenizer = self._engine.get_tokenizer()

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()

    async def status(self) -> BackendStatus:
        engine = self._engine
        healthy = engine is not None and not engine.errored
        return BackendStatus(
            healthy=healthy,
            running=self.running,
            observed_at=time.time(),
            detail=None if healthy else "engine not running",
        )

    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        tok = self._tokenizer
        if request.operation == "chat":
            try:
                text = tok.apply_chat_template(
                    [{"role": m.role, "content": m.content} for m in request.messages],
                    tokenize=False,
                    add_generation_prompt=True,
                )
            except ValueError as exc:  # transformers: the model has no chat template
                raise InvalidRequest(
                    f"model {self.model!r} cannot format chat messages ({exc}); "
                    "use /v1/completions",
                    param="messages",
                ) from exc
            return list(tok.encode(text, add_special_tokens=False))
        return list(tok.encode(request.prompt or ""))

    def _sampling(self, request: GenerationRequest, room: int) -> Any:
        vllm = self._vllm
        kind = importlib.import_module("vllm.sampling_params").RequestOutputKind.DELTA
        optional = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
            "frequency_penalty": request.frequency_penalty,
            "presence_penalty": request.presence_penalty,
        }
        return vllm.SamplingParams(
            max_tokens=min(
                self._deployments[0].output_limit(request.max_tokens, room) or room, room
            ),
            stop=list(request.stop) or None,
            output_kind=kind,
            **{k: v for k, v in optional.items() if v is not None},
        )

    def _lora(self, adapter: str | None) -> Any:
        if adapter is None:
            return None
        for i, spec in enumerate(self.adapters, start=1):
            if spec.name == adapter:
                lora = importlib.import_module("vllm.lora.request")
                return lora.LoRARequest(spec.name, i, spec.path)
        raise ModelNotFound(f"backend {self.id} has no adapter {adapter!r}", param="model")

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        engine = self._engine
        if engine is None or engine.errored:
            raise BackendUnavailable(f"backend {self.id}: the vLLM engine is not running")
        started = time.perf_counter()
        ids = self._prompt_ids(request)
        room = self.max_model_len - len(ids)
        if room <= 0:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.max_model_len} tokens; "
                f"the prompt has {len(ids)}.",
                param="messages" if request.operation == "chat" else "prompt",
            )
        request_id = f"{request.request_id}-{next(self._ids)}"
        outputs = engine.generate(
            {"prompt_token_ids": ids},
            self._sampling(request, room),
            request_id,
            lora_request=self._lora(request.adapter),
        )
        produced = 0
        cached = 0  # prompt tokens the engine found in its prefix cache
        first_at: float | None = None
        finish: str | None = None
        stop: str | None = None  # the stop string that ended the output
        self.running += 1
        try:
            async for out in outputs:
                completion = out.outputs[0]
                produced += len(completion.token_ids)
                if completion.text:
                    if first_at is None:
                        first_at = time.perf_counter() - started
                    yield Chunk(text=completion.text)
                finish = completion.finish_reason or finish
                if isinstance(completion.stop_reason, str):
                    stop = completion.stop_reason
                cached = getattr(out, "num_cached_tokens", None) or cached
        except Exception as exc:
            if isinstance(exc, BackendError):
                raise
            raise BackendError(f"vLLM engine failed: {exc!r}") from exc
        finally:
            self.running -= 1
            await outputs.aclose()
            if finish is None:
                # Client gone or failure: free the engine's slot at once.
                await engine.abort(request_id)
        duration = time.perf_counter() - started
        yield Chunk(
            finish_reason=finish or "stop",
            stop_sequence=stop if finish == "stop" else None,
            usage=BackendUsage(
                prompt_tokens=len(ids),
                completion_tokens=produced,
                cached_prompt_tokens=min(cached, len(ids)),
                time_to_first_token_s=first_at if first_at is not None else duration,
                duration_s=duration,
            ),
        )
