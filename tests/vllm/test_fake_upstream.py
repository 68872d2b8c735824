"""freshet-vllm's server mode against fake upstreams: faults, load and health."""

from __future__ import annotations

import asyncio
import importlib.metadata as md
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from freshet_vllm import VllmServerBackend, create_backend
from freshet_vllm.engine import vllm_available

from gateway.backend import Backend, BackendConfig, Chunk, GenerationRequest, Message
from gateway.errors import BackendError, ConfigError, RateLimited
from tests.vllm.fake_upstream import FakeVllm


class NoFleet:
    def get(self, backend_id: str) -> Backend:
        raise KeyError(backend_id)


def request(operation: str = "chat", adapter: str | None = None) -> GenerationRequest:
    return GenerationRequest(
        request_id="req_t",
        operation=operation,  # type: ignore[arg-type]
        model="m",
        adapter=adapter,
        messages=[Message(role="user", content="hi")] if operation == "chat" else (),
        prompt="once" if operation != "chat" else None,
        max_tokens=4,
    )


def config(urls: list[str], **params: Any) -> BackendConfig:
    return BackendConfig(
        id="gpu",
        type="vllm",
        model="m",
        adapters=[{"name": "fresh", "knowledge_cutoff": "2025-03-01"}],
        params={"urls": urls, "poll_interval_s": 0.05, "max_backoff_s": 0.1, **params},
    )


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest_asyncio.fixture
async def fakes() -> AsyncIterator[list[FakeVllm]]:
    servers = [FakeVllm(), FakeVllm()]
    for server in servers:
        await server.start()
    yield servers
    for server in servers:
        await server.close()


@pytest.fixture
def make(started: Callable[[Any], Awaitable[Any]]) -> Callable[..., Any]:
    async def build(urls: list[str], **params: Any) -> VllmServerBackend:
        backend: VllmServerBackend = await started(
            VllmServerBackend(config(urls, **params), NoFleet())
        )
        return backend

    return build


async def collect(stream: AsyncIterator[Chunk]) -> list[Chunk]:
    return [chunk async for chunk in stream]


async def until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    for _ in range(int(within_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not true within {within_s} s")


@pytest.mark.asyncio
async def test_streams_text_and_exact_usage(fakes: list[FakeVllm], make: Any) -> None:
    backend = await make([fakes[0].url])
    chunks = await collect(backend.stream(request()))
    assert "".join(c.text for c in chunks) == "Hello there!"
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (7, 3)
    assert last.usage.energy_joules is None  # metering belongs to the cost plugin
    sent = fakes[0].requests[-1]
    assert sent["model"] == "m"
    assert sent["stream_options"] == {"include_usage": True}


@pytest.mark.asyncio
async def test_completions_and_adapters_use_their_own_names(
    fakes: list[FakeVllm], make: Any
) -> None:
    backend = await make([fakes[0].url], served_model="served-name")
    assert [d.name for d in backend.deployments] == ["m", "m:fresh"]
    assert str(backend.deployments[1].knowledge_cutoff) == "2025-03-01"
    await collect(backend.stream(request("text_completion")))
    await collect(backend.stream(request(adapter="fresh")))
    assert [r["model"] for r in fakes[0].requests] == ["served-name", "fresh"]
    assert fakes[0].requests[0]["prompt"] == "once"


@pytest.mark.asyncio
async def test_http_503_fails_before_the_first_chunk(fakes: list[FakeVllm], make: Any) -> None:
    fakes[0].mode = "status"
    backend = await make([fakes[0].url])
    with pytest.raises(BackendError, match="503"):
        await collect(backend.stream(request()))
    assert backend.upstreams[0].in_flight == 0


@pytest.mark.asyncio
async def test_a_failing_server_is_skipped_for_the_next(fakes: list[FakeVllm], make: Any) -> None:
    fakes[0].mode = "status"
    fakes[1].running = 3  # the broken one looks idler, so it is tried first
    backend = await make([fakes[0].url, fakes[1].url])
    chunks = await collect(backend.stream(request()))
    assert chunks[-1].finish_reason == "stop"
    assert len(fakes[0].requests) == len(fakes[1].requests) == 1


@pytest.mark.asyncio
async def test_connection_refused_is_a_backend_error_and_marks_it_down(make: Any) -> None:
    backend = await make([closed_port_url()])
    status = await backend.status()
    assert not status.healthy
    with pytest.raises(BackendError):
        await collect(backend.stream(request()))
    assert backend.upstreams[0].in_flight == 0


@pytest.mark.asyncio
async def test_connection_cut_mid_stream(fakes: list[FakeVllm], make: Any) -> None:
    fakes[0].mode = "drop"
    backend = await make([fakes[0].url])
    stream = backend.stream(request())
    assert (await anext(stream)).text == "Hello"
    with pytest.raises(BackendError, match="mid-stream"):
        await collect(stream)
    assert backend.upstreams[0].in_flight == 0


@pytest.mark.asyncio
async def test_closing_the_stream_aborts_the_upstream_request(
    fakes: list[FakeVllm], make: Any
) -> None:
    fakes[0].mode = "slow"
    backend = await make([fakes[0].url])
    stream = backend.stream(request())
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    async with asyncio.timeout(5):
        await fakes[0].disconnected.wait()
    assert backend.upstreams[0].in_flight == 0


@pytest.mark.asyncio
async def test_picks_the_least_loaded_server(fakes: list[FakeVllm], make: Any) -> None:
    fakes[0].running, fakes[0].waiting = 4, 2
    fakes[1].running = 1
    backend = await make([fakes[0].url, fakes[1].url])
    await collect(backend.stream(request()))
    assert (len(fakes[0].requests), len(fakes[1].requests)) == (0, 1)
    status = await backend.status()
    assert (status.running, status.waiting, status.healthy) == (5, 2, True)
    assert "KV cache 12%" in (status.detail or "")
    # Freshet's own in-flight requests count between polls: six slow streams on the idle
    # server make it the busier one.
    fakes[1].mode = "slow"
    streams = [backend.stream(request()) for _ in range(6)]
    for stream in streams:
        await anext(stream)
    assert backend.upstreams[1].in_flight == 6
    fakes[0].mode = "ok"
    await collect(backend.stream(request()))
    assert len(fakes[0].requests) == 1
    for stream in streams:
        await stream.aclose()  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_unhealthy_while_metrics_fail_healthy_again_after(
    fakes: list[FakeVllm], make: Any
) -> None:
    backend = await make([fakes[0].url])
    assert (await backend.status()).healthy
    fakes[0].metrics_status = 500
    await until(lambda: not backend.upstreams[0].healthy)
    status = await backend.status()
    assert not status.healthy
    assert "500" in (status.detail or "")
    await until(lambda: backend.upstreams[0].failures >= 3)
    fakes[0].metrics_status = 200
    await until(lambda: backend.upstreams[0].healthy)
    assert (await backend.status()).healthy


@pytest.mark.asyncio
async def test_max_in_flight_refuses_with_429(fakes: list[FakeVllm], make: Any) -> None:
    fakes[0].mode = "slow"
    backend = await make([fakes[0].url], max_in_flight=1)
    stream = backend.stream(request())
    await anext(stream)
    with pytest.raises(RateLimited):
        await collect(backend.stream(request()))
    await stream.aclose()  # type: ignore[attr-defined]


def test_found_through_the_entry_point() -> None:
    # Read from the installed metadata, not by loading every plugin: other plugins'
    # health is not this plugin's test.
    (entry,) = [e for e in md.entry_points(group="freshet") if e.name == "vllm"]
    assert entry.value == "freshet_vllm"
    registered: dict[str, Any] = {}
    entry.load().register_backend_types(register=registered.__setitem__)
    assert registered["vllm"] is create_backend  # and openai-compatible: its own tests


@pytest.mark.parametrize(
    ("params", "key", "reason"),
    [
        ({}, "urls", "at least one"),
        ({"urls": ["127.0.0.1:8000"]}, "urls[0]", "not an http"),
        ({"urls": ["http://a"], "bogus": 1}, "bogus", "unknown field"),
        ({"urls": ["http://a"], "mode": "magic"}, "mode", "'server' or 'engine'"),
    ],
)
def test_config_errors_name_the_key(params: dict[str, Any], key: str, reason: str) -> None:
    bad = BackendConfig(id="gpu", type="vllm", params=params, index=2, source="f.yaml")
    with pytest.raises(ConfigError) as info:
        create_backend(bad, NoFleet())
    assert info.value.key is not None
    assert info.value.key.startswith("backends[2]")
    assert key in info.value.key or key in info.value.reason
    assert reason in info.value.reason


@pytest.mark.skipif(vllm_available(), reason="vllm is importable here")
def test_engine_mode_without_vllm_is_a_clear_config_error() -> None:
    engine = BackendConfig(
        id="box", type="vllm", params={"mode": "engine", "model_path": "."}, source="f.yaml"
    )
    with pytest.raises(ConfigError, match="vllm is not importable") as info:
        create_backend(engine, NoFleet())
    assert info.value.key == "backends[0].mode"
    assert "mode 'server'" in info.value.reason


def test_default_profile_is_an_h100_serving_llama_8b() -> None:
    backend = create_backend(config(["http://127.0.0.1:1"]), NoFleet())
    profile = backend.profile
    assert (profile.kind, profile.watts_idle, profile.watts_active) == ("gpu", 100.0, 450.0)
    assert (profile.prefill_tokens_per_s, profile.decode_tokens_per_s) == (20000.0, 160.0)
    assert (profile.capex_per_hour, profile.max_concurrency, profile.max_context) == (
        2.0,
        128,
        131072,
    )
    custom = BackendConfig(
        id="gpu", type="vllm", params={"urls": ["http://a"]}, profile={"max_context": 2048}
    )
    assert create_backend(custom, NoFleet()).profile.max_context == 2048
