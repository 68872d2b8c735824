"""Freshet -> real vLLM (CPU build, SmolLM2-135M-Instruct), driven with the `openai` client.

The vLLM server starts once per run (conftest); the last test kills and restarts it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.server import Server, running_server
from tests.vllm.vllm_process import SERVED_MODEL, VllmServer

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
STORY = [{"role": "user", "content": "Write a long story about a river and a mountain."}]


def gateway_config(vllm_url: str) -> dict[str, Any]:
    return {
        "backends": [
            {
                "id": "gpu",
                "type": "vllm",
                "model": SERVED_MODEL,
                "knowledge_cutoff": "2024-06-01",
                "urls": [vllm_url],
                "poll_interval_s": 0.2,
                "max_backoff_s": 1.0,
                "connect_timeout_s": 2.0,
                "profile": {"max_context": 2048},
                # Configured here, not served by vLLM (no --lora-modules).
                "adapters": [{"name": "ghost", "knowledge_cutoff": "2025-06-01"}],
            },
            {
                "id": "det",
                "type": "deterministic",
                "model": "det-model",
                "knowledge_cutoff": "2024-01-01",
                # Dearer than the GPU, so a cost-aware router still prefers vLLM.
                "profile": {"capex_per_hour": 1000.0, "watts_active": 5000.0},
            },
        ],
        "groups": {"chat": ["gpu", "det"]},
    }


@pytest.fixture(scope="module")
def gateway(vllm_server: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("gateway-vllm")
    with running_server(tmp, gateway_config(vllm_server.url)) as server:
        yield server


@pytest.fixture(scope="module")
def client(gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def direct(vllm_server: VllmServer) -> openai.OpenAI:
    """The same vLLM server without Freshet in between."""
    return openai.OpenAI(base_url=vllm_server.url + "/v1", api_key="unused", max_retries=0)


def backend_view(gateway: Server, backend_id: str = "gpu") -> dict[str, Any]:
    status, body = gateway.get("/freshet/backends")
    assert status == 200
    views: list[dict[str, Any]] = json.loads(body)
    return next(v for v in views if v["id"] == backend_id)


def wait_for(condition: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within_s} s")
        time.sleep(0.1)


def metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")
    )


def test_chat_usage_and_text_equal_vllms_own(client: openai.OpenAI, direct: openai.OpenAI) -> None:
    args: dict[str, Any] = {"messages": QUESTION, "max_tokens": 24, "temperature": 0.0, "seed": 1}
    raw = client.chat.completions.with_raw_response.create(model=SERVED_MODEL, **args)
    ours = raw.parse()
    theirs = direct.chat.completions.create(model=SERVED_MODEL, **args)
    assert raw.headers["x-freshet-backend"] == "gpu"
    assert raw.headers["x-freshet-knowledge-cutoff"] == "2024-06-01"
    assert ours.model == SERVED_MODEL
    assert ours.choices[0].message.content == theirs.choices[0].message.content
    assert "Paris" in (ours.choices[0].message.content or "")
    assert ours.choices[0].finish_reason == theirs.choices[0].finish_reason
    assert ours.usage is not None
    assert theirs.usage is not None
    assert ours.usage.prompt_tokens == theirs.usage.prompt_tokens
    assert ours.usage.completion_tokens == theirs.usage.completion_tokens


def test_chat_streaming_matches_non_streaming(client: openai.OpenAI) -> None:
    args: dict[str, Any] = {"messages": STORY, "max_tokens": 40, "temperature": 0.0, "seed": 2}
    plain = client.chat.completions.create(model=SERVED_MODEL, **args)
    chunks = list(
        client.chat.completions.create(
            model=SERVED_MODEL, stream=True, stream_options={"include_usage": True}, **args
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) >= 10  # streamed token by token
    assert "".join(pieces) == plain.choices[0].message.content
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == [plain.choices[0].finish_reason]
    usage = chunks[-1].usage
    assert usage is not None
    assert plain.usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        plain.usage.prompt_tokens,
        plain.usage.completion_tokens,
    )
    assert usage.completion_tokens == 40


def test_completions_streaming_and_not(client: openai.OpenAI, direct: openai.OpenAI) -> None:
    args: dict[str, Any] = {"prompt": "The river flows", "max_tokens": 12, "temperature": 0.0}
    theirs = direct.completions.create(model=SERVED_MODEL, **args)
    plain = client.completions.create(model=SERVED_MODEL, **args)
    streamed = list(
        client.completions.create(
            model=SERVED_MODEL, stream=True, stream_options={"include_usage": True}, **args
        )
    )
    text = "".join(c.choices[0].text for c in streamed if c.choices)
    assert plain.choices[0].text == theirs.choices[0].text == text
    assert plain.usage is not None
    assert theirs.usage is not None
    assert streamed[-1].usage is not None
    expected = (theirs.usage.prompt_tokens, theirs.usage.completion_tokens)
    assert (plain.usage.prompt_tokens, plain.usage.completion_tokens) == expected
    assert (streamed[-1].usage.prompt_tokens, streamed[-1].usage.completion_tokens) == expected


def test_adapter_vllm_does_not_serve_is_a_clean_404(client: openai.OpenAI) -> None:
    models = {m.id for m in client.models.list().data}
    assert {SERVED_MODEL, f"{SERVED_MODEL}:ghost", "chat"} <= models
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(
            model=f"{SERVED_MODEL}:ghost", messages=QUESTION, max_tokens=4
        )
    assert info.value.status_code == 404
    body: Any = info.value.body
    assert body["code"] == "model_not_found"
    assert "ghost" in body["message"]


def test_prompt_over_vllms_context_is_a_clean_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=SERVED_MODEL, prompt="word " * 2100, max_tokens=4)
    body: Any = info.value.body
    assert body["code"] == "context_length_exceeded"
    assert body["param"] == "prompt"
    assert "2048" in body["message"]


def test_load_from_vllm_metrics_is_visible_in_freshet(
    gateway: Server, vllm_server: VllmServer
) -> None:
    """Requests sent to vLLM directly (Freshet cannot count them) show up in Freshet."""

    async def load() -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        body = {"model": SERVED_MODEL, "prompt": "Once", "max_tokens": 120, "ignore_eos": True}
        async with httpx.AsyncClient(timeout=120) as http:
            sent = [
                asyncio.create_task(http.post(vllm_server.url + "/v1/completions", json=body))
                for _ in range(6)
            ]
            while not all(t.done() for t in sent):
                seen.append(await asyncio.to_thread(backend_view, gateway))
                await asyncio.sleep(0.1)
            assert all(t.result().status_code == 200 for t in sent)
        return seen

    seen = asyncio.run(load())
    busiest = max(seen, key=lambda v: v["running"] + v["waiting"])
    assert busiest["running"] >= 2
    assert busiest["running"] + busiest["waiting"] <= 6
    assert busiest["healthy"]
    assert "KV cache" in busiest["detail"]
    wait_for(lambda: backend_view(gateway)["running"] == 0, 5, "running back to 0")


def test_client_disconnect_aborts_the_request_in_vllm(
    gateway: Server, vllm_server: VllmServer
) -> None:
    before = metric(vllm_server.metrics(), "vllm:generation_tokens_total")
    body = {
        "model": SERVED_MODEL,
        "prompt": "1, 2, 3, 4, 5,",
        "max_tokens": 1500,
        "temperature": 0.0,
        "stream": True,
    }
    with (
        httpx.Client(base_url=gateway.url, timeout=60) as http,
        http.stream("POST", "/v1/completions", json=body) as resp,
    ):
        assert resp.status_code == 200
        lines = resp.iter_lines()
        for _ in range(10):
            next(lines)
    wait_for(
        lambda: metric(vllm_server.metrics(), "vllm:num_requests_running") == 0,
        10,
        "vLLM still generating after the client left",
    )
    generated = metric(vllm_server.metrics(), "vllm:generation_tokens_total") - before
    assert 0 < generated < 500  # of the 1500 asked for


def test_killed_server_falls_back_then_recovers(
    gateway: Server, client: openai.OpenAI, vllm_server: VllmServer
) -> None:
    assert backend_view(gateway)["healthy"]
    vllm_server.kill()
    # Straight away: either the request fails over after vLLM refuses the connection, or
    # the poller has already marked vLLM down and the router skips it.
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=QUESTION, max_tokens=5
    )
    assert raw.headers["x-freshet-backend"] == "det"
    assert raw.parse().choices[0].message.content
    wait_for(lambda: not backend_view(gateway)["healthy"], 5, "gpu marked unhealthy")
    chunks = list(
        client.chat.completions.create(model="chat", messages=QUESTION, max_tokens=5, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=SERVED_MODEL, messages=QUESTION, max_tokens=5)
    assert info.value.status_code in (502, 503)

    vllm_server.start()
    wait_for(lambda: backend_view(gateway)["healthy"], 10, "gpu healthy again")
    raw = client.chat.completions.with_raw_response.create(
        model=SERVED_MODEL, messages=QUESTION, max_tokens=5
    )
    assert raw.headers["x-freshet-backend"] == "gpu"
    assert raw.parse().choices[0].message.content
