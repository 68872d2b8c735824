"""A fake vLLM server on 127.0.0.1, for the faults a real one cannot be made to produce."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


class FakeVllm:
    """Speaks just enough of vLLM's API; ``mode`` says how the next requests behave.

    ok: streams ``words`` then usage · slow: one word every 50 ms, for a long time ·
    drop: two words then the connection is cut · status: answers HTTP ``status``.
    """

    def __init__(self) -> None:
        self.mode = "ok"
        self.status = 503
        self.words = ["Hello", " there", "!"]
        self.usage: dict[str, Any] = {}  # merged into the final usage (e.g. cache details)
        # Chat: when set, each (name, argument pieces) is streamed as a tool call after the
        # words, the way vLLM's tool parsers do, and the answer ends with "tool_calls".
        self.tool_calls: list[tuple[str, list[str]]] = []
        # vLLM (as OpenAI) ends a call forced by name with "stop": set to that to check it.
        self.tool_finish = "tool_calls"
        # vLLM's stop_reason on the last choice (the stop string that ended the output).
        self.stop_reason: str | None = None
        self.running = 0
        self.waiting = 0
        self.metrics_status = 200
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # of each generation request
        self.disconnected = asyncio.Event()
        self.in_stream = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._generate)
        app.router.add_post("/v1/completions", self._generate)
        app.router.add_post("/v1/embeddings", self._embed)
        # Embeddings: vectors of ``dimensions`` floats made from each input; ``embedding_mode``
        # ok | base64 (ignores encoding_format) | reversed (data out of order) | short (one
        # vector too few) | garbage (not JSON); ``mode`` status answers HTTP ``status``.
        self.dimensions = 4
        self.embedding_mode = "ok"
        self.embedding_requests: list[dict[str, Any]] = []
        app.router.add_get("/metrics", self._metrics)
        self.server = TestServer(app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    async def start(self) -> None:
        await self.server.start_server()

    async def close(self) -> None:
        await self.server.close()

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.metrics_status != 200:
            return web.Response(status=self.metrics_status)
        return web.Response(
            text=(
                f'vllm:num_requests_running{{engine="0",model_name="m"}} {self.running}.0\n'
                f'vllm:num_requests_waiting{{engine="0",model_name="m"}} {self.waiting}.0\n'
                'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.125\n'
            )
        )

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.mode == "status":
            return web.json_response(
                {"error": {"message": f"fake error {self.status}", "code": self.status}},
                status=self.status,
            )
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        self.in_stream.set()
        chat = request.path.endswith("chat/completions")
        words = self.words if self.mode != "slow" else ["word"] * 10_000
        try:
            for i, word in enumerate(words):
                if self.mode == "drop" and i == 2:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                choice = {"index": 0, "finish_reason": None}
                choice.update({"delta": {"content": word}} if chat else {"text": word})
                await self._send(resp, {"choices": [choice]})
                if self.mode == "slow":
                    await asyncio.sleep(0.05)
            for index, (name, pieces) in enumerate(self.tool_calls if chat else []):
                head = {"index": index, "id": f"chatcmpl-tool-{index}", "type": "function"}
                head["function"] = {"name": name, "arguments": ""}
                delta = {"tool_calls": [head]}
                await self._send(resp, {"choices": [{"index": 0, "delta": delta}]})
                for piece in pieces:
                    delta = {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                    await self._send(resp, {"choices": [{"index": 0, "delta": delta}]})
            finish = self.tool_finish if self.tool_calls and chat else "stop"
            last: dict[str, Any] = {"index": 0, "finish_reason": finish}
            last["stop_reason"] = self.stop_reason
            last.update({"delta": {}} if chat else {"text": ""})
            await self._send(resp, {"choices": [last]})
            usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 0}
            usage.update(self.usage)
            await self._send(resp, {"choices": [], "usage": usage})
            await resp.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnected.set()
            raise
        return resp

    async def _embed(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.embedding_requests.append(body)
        if self.mode == "status":
            return web.json_response(
                {"error": {"message": f"fake error {self.status}", "code": self.status}},
                status=self.status,
            )
        if body.get("dimensions") not in (None, self.dimensions):
            return web.json_response(
                {"error": {"message": "This model does not support 'dimensions'"}}, status=400
            )
        if self.embedding_mode == "garbage":
            return web.Response(text="not json", content_type="application/json")
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        tokens = 0
        for i, item in enumerate(inputs):
            size = len(item) if isinstance(item, list) else len(str(item).split())
            tokens += size
            vector = [float(size), float(i), 1.0, 0.5][: self.dimensions]
            embedding: Any = vector
            if self.embedding_mode == "base64":
                embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        if self.embedding_mode == "reversed":
            data.reverse()
        if self.embedding_mode == "short":
            data.pop()
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return web.json_response(
            {"object": "list", "data": data, "model": body["model"], "usage": usage}
        )

    @staticmethod
    async def _send(resp: web.StreamResponse, payload: dict[str, Any]) -> None:
        await resp.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
