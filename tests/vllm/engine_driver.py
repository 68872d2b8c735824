"""Drive mode ``engine`` (vLLM in-process) through the Backend contract; prints JSON.

Run by test_engine.py with the vLLM virtualenv's Python (vLLM is not in the gateway's):
``python engine_driver.py MODEL_DIR``. Imports only the plugin and ``gateway.backend``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from freshet_vllm import create_backend

from gateway.backend import Backend, BackendConfig, GenerationRequest, Message
from gateway.errors import FreshetError


class NoFleet:
    def get(self, backend_id: str) -> Backend:
        raise KeyError(backend_id)


def chat(content: str, max_tokens: int, **extra: Any) -> GenerationRequest:
    return GenerationRequest(
        request_id=f"req_{time.monotonic_ns()}",
        operation="chat",
        model="smollm2-135m",
        messages=[Message(role="user", content=content)],
        max_tokens=max_tokens,
        temperature=0.0,
        seed=1,
        **extra,
    )


async def main(model_dir: str) -> dict[str, Any]:
    config = BackendConfig(
        id="box",
        type="vllm",
        model="smollm2-135m",
        params={
            "mode": "engine",
            "model_path": model_dir,
            "max_model_len": 2048,
            "enforce_eager": True,
            "dtype": "float32",  # as the server in vllm_process.py: same answer everywhere
        },
    )
    backend = create_backend(config, NoFleet())
    out: dict[str, Any] = {"type": type(backend).__name__}
    started = time.perf_counter()
    await backend.start()
    out["start_s"] = time.perf_counter() - started
    try:
        chunks = [c async for c in backend.stream(chat("What is the capital of France?", 24))]
        usage = chunks[-1].usage
        assert usage is not None
        out["chat"] = {
            "text": "".join(c.text for c in chunks),
            "pieces": sum(1 for c in chunks if c.text),
            "finish_reason": chunks[-1].finish_reason,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
        }
        # Client gone after three pieces: the engine must drop the request at once.
        long = backend.stream(chat("Write a very long story about a river.", 1500))
        for _ in range(3):
            await anext(long)
        await long.aclose()  # type: ignore[attr-defined]
        status = await backend.status()
        engine = backend.engine  # type: ignore[attr-defined]
        out["after_abort"] = {
            "running": status.running,
            "healthy": status.healthy,
            "unfinished_in_vllm": engine.get_num_unfinished_requests(),
        }
        try:
            [c async for c in backend.stream(chat("word " * 2100, 5))]
        except FreshetError as exc:
            out["too_long"] = {"status": exc.status, "code": exc.code}
    finally:
        await backend.aclose()
    return out


if __name__ == "__main__":
    print("FRESHET-RESULT " + json.dumps(asyncio.run(main(sys.argv[1]))), flush=True)
