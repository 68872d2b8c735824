"""Every built-in backend passes the contract of ``gateway.testing`` (#18 point 10):
``deterministic`` (both operations, and chat only), ``asic-sim`` (alone and with a
deterministic twin), ``llamacpp`` with its real model (a small context, so quick), and
``openai-compatible`` against the fake upstream. The documented example plugin's run is
in ``tests/unit/test_plugins.py``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiohttp import web
from freshet_asic_sim.backend import AsicSimBackend
from freshet_llamacpp.backend import LlamaCppBackend
from freshet_vllm.openai_compatible import OpenAICompatibleBackend

from gateway.backend import BackendConfig
from gateway.builtins.deterministic import DeterministicBackend
from gateway.testing import BackendContract
from tests.vllm.fake_upstream import FakeVllm

CUTOFF = "2024-06-01"


class TestDeterministic(BackendContract):
    factory = DeterministicBackend
    config = {"id": "det", "type": "deterministic", "model": "det", "knowledge_cutoff": CUTOFF}


class TestDeterministicEmbeddings(BackendContract):
    factory = DeterministicBackend
    config = {
        "id": "det-vec",
        "type": "deterministic",
        "knowledge_cutoff": CUTOFF,
        "operations": ["chat", "text_completion", "embeddings"],
    }


class TestDeterministicChatOnly(BackendContract):
    factory = DeterministicBackend
    config = {
        "id": "det-chat",
        "type": "deterministic",
        "knowledge_cutoff": CUTOFF,
        "operations": ["chat"],
    }


class TestAsicSim(BackendContract):
    factory = AsicSimBackend
    config = {"id": "asic", "type": "asic-sim", "knowledge_cutoff": CUTOFF}


class TestAsicSimWithTwin(BackendContract):
    factory = AsicSimBackend
    config = {"id": "asic", "type": "asic-sim", "knowledge_cutoff": CUTOFF, "twin": "det"}
    neighbours = [
        (
            DeterministicBackend,
            {"id": "det", "type": "deterministic", "knowledge_cutoff": CUTOFF},
        )
    ]


class TestLlamaCpp(BackendContract):
    """The real SmolLM2 model; a 512-token context keeps the oversized prompt cheap."""

    factory = LlamaCppBackend
    config = {
        "id": "cpu",
        "type": "llamacpp",
        "model": "smollm2-135m",
        "knowledge_cutoff": CUTOFF,
        "n_ctx": 512,
        "instances": 1,
        "calibrate": False,
    }
    timeout_s = 240.0  # a busy 2-core machine; each check takes well under a second idle


class ContractUpstream(FakeVllm):
    """The fake upstream, plus what a real server does that the contract asks about: it
    stops at ``max_tokens`` and refuses a prompt over its context with vLLM's HTTP 400."""

    MAX_CONTEXT = 512

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        text = body.get("prompt") or " ".join(m["content"] for m in body.get("messages", []))
        words = len(text.split())
        if words > self.MAX_CONTEXT:
            message = (
                f"This model's maximum context length is {self.MAX_CONTEXT} tokens. However, "
                f"you requested {words} tokens in the messages."
            )
            return web.json_response(
                {"object": "error", "message": message, "type": "BadRequestError", "code": 400},
                status=400,
            )
        self.words = ["Hello", " there", "!"][: body.get("max_tokens") or 3]
        return await super()._generate(request)


class TestOpenAICompatible(BackendContract):
    factory = OpenAICompatibleBackend
    config = {
        "id": "api",
        "type": "openai-compatible",
        "model": "m",
        "knowledge_cutoff": CUTOFF,
        "profile": {"max_context": ContractUpstream.MAX_CONTEXT},
        "operations": ["chat", "text_completion", "embeddings"],  # the fake embeds too
    }

    @contextlib.asynccontextmanager
    async def environment(self) -> AsyncIterator[BackendConfig | Mapping[str, Any]]:
        upstream = ContractUpstream()
        await upstream.start()
        try:
            yield {**self.config, "url": upstream.url}
        finally:
            await upstream.close()
