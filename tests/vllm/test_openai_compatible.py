"""Backend type ``openai-compatible`` against the fake upstream: no polling, health from
its own requests, profile and kind from the config, list prices for the cost."""

from __future__ import annotations

import asyncio
import importlib.metadata as md
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from freshet_vllm import OpenAICompatibleBackend, create_backend
from freshet_vllm.upstream import Outlier, OutlierRules

from gateway.backend import (
    BackendUsage,
)
from gateway.cost import ListPriceOnly
from gateway.errors import BackendError, ConfigError, InvalidRequest, RateLimited
from tests.support.server import running_server
from tests.vllm.fake_upstream import FakeVllm
from tests.vllm.kit import (
    NoFleet,
    RawServer,
    closed_port_url,
    collect,
    config,
    fake_in_thread,
    request,
    sse_reply,
)


@pytest.mark.asyncio
async def test_streams_text_and_usage_without_polling(fake: FakeVllm, make: Any) -> None:
    fake.metrics_status = 404  # an OpenAI-compatible server need not have /metrics
    backend = await make(url=fake.url + "/v1/", served_model="served", api_key="k")
    assert (await backend.status()).healthy
    chunks = await collect(backend.stream(request()))
    assert "".join(c.text for c in chunks) == "Hello there!"
    usage = chunks[-1].usage
    assert chunks[-1].finish_reason == "stop"
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (7, 3)
    assert fake.requests[-1]["model"] == "served"
    await collect(backend.stream(request("text_completion")))
    assert fake.requests[-1]["prompt"] == "once"
    assert backend._pollers == []


@pytest.mark.asyncio
async def test_load_is_its_own_in_flight_requests(fake: FakeVllm, make: Any) -> None:
    fake.mode = "slow"
    backend = await make(url=fake.url)
    streams = [backend.stream(request()) for _ in range(3)]
    for stream in streams:
        await anext(stream)
    status = await backend.status()
    assert (status.running, status.waiting, status.healthy) == (3, 0, True)
    assert "3 in flight" in (status.detail or "")
    for stream in streams:
        await stream.aclose()  # type: ignore[attr-defined]
    assert (await backend.status()).running == 0


@pytest.mark.asyncio
async def test_refused_connections_eject_the_server_only_in_a_row(make: Any) -> None:
    url = closed_port_url()
    backend = await make(urls=[url], retry_after_s=0.2)
    with pytest.raises(BackendError, match="upstream"):
        await collect(backend.stream(request()))
    status = await backend.status()
    assert status.healthy  # the gateway's circuit decides about the backend, not one refusal
    assert "1/1 upstreams up" in (status.detail or "")
    for _ in range(4):  # five in a row (health.consecutive_failures) eject it
        with pytest.raises(BackendError):
            await collect(backend.stream(request()))
    (view,) = backend.upstream_health()
    assert (view["state"], view["ejections"], view["consecutive_failures"]) == ("ejected", 1, 5)
    assert isinstance(view["ejected_until"], float)
    assert view["ejected_until"] > time.time()
    status = await backend.status()
    assert status.healthy
    assert "0/1 upstreams up" in (status.detail or "")
    # Every server is ejected: it is tried anyway (panic), not refused.
    with pytest.raises(BackendError, match="upstream"):
        await collect(backend.stream(request()))
    assert backend.panics == 1
    fake = FakeVllm()  # the server comes back on its port
    fake.server = TestServer(fake.server.app, host="127.0.0.1", port=int(url.rsplit(":")[-1]))
    await fake.start()
    try:
        await asyncio.sleep(0.25)  # the ejection ends: the next request is its probe
        assert backend.upstream_health()[0]["state"] == "probing"
        chunks = await collect(backend.stream(request()))
    finally:
        await fake.close()
    assert chunks[-1].finish_reason == "stop"
    (view,) = backend.upstream_health()
    assert (view["state"], view["consecutive_failures"]) == ("up", 0)
    assert "1/1 upstreams up" in ((await backend.status()).detail or "")


def test_ejection_doubles_up_to_the_limit_and_starts_again_after_a_quiet_while() -> None:
    now = [0.0]
    rules = OutlierRules(consecutive_failures=1, ejection_s=1, max_ejection_s=3)
    outlier = Outlier(rules, clock=lambda: now[0])
    waits = []
    for _ in range(4):
        assert outlier.failure(lambda: True)
        waits.append(outlier.ejected_until - now[0])
        assert not outlier.failure(lambda: True)  # while ejected: no longer
        now[0] = outlier.ejected_until  # back, probing: its failure ejects it for longer
        assert outlier.state == "probing"
    assert waits == [1, 2, 3, 3]
    outlier.success()
    assert outlier.state == "up"
    now[0] += 3  # well for max_ejection_s: the next ejection is short again
    assert outlier.failure(lambda: True)
    assert outlier.ejected_until - now[0] == 1


def test_outlier_rate_over_the_window_with_a_minimum_volume() -> None:
    now = [0.0]
    rules = OutlierRules(failure_rate=0.5, min_requests=10, window_s=10, consecutive_failures=99)
    outlier = Outlier(rules, clock=lambda: now[0])
    for _ in range(4):
        outlier.success()
        assert not outlier.failure(lambda: True)  # 50 % but fewer than 10 requests
    outlier.success()
    assert outlier.failure(lambda: True)  # 5 of 10
    now[0] = outlier.ejected_until + 11
    outlier.success()
    for _ in range(9):  # 1 in 10 fail: never
        for _ in range(9):
            outlier.success()
        assert not outlier.failure(lambda: True)
        now[0] += 1
    assert not outlier.failure(lambda: False)
    assert outlier.capped == 0


@pytest.mark.asyncio
async def test_a_dead_server_is_ejected_and_the_other_serves(fake: FakeVllm, make: Any) -> None:
    dead = closed_port_url()
    backend = await make(urls=[dead, fake.url])
    for _ in range(12):  # connection refused: the next server, every time
        chunks = await collect(backend.stream(request()))
        assert chunks[-1].finish_reason == "stop"
    by_url = {v["url"]: v for v in backend.upstream_health()}
    assert by_url[dead]["state"] == "ejected"
    assert by_url[fake.url]["state"] == "up"
    served = len(fake.requests)
    await collect(backend.stream(request()))
    assert len(fake.requests) == served + 1


@pytest.mark.asyncio
async def test_never_more_than_half_the_servers_ejected(make: Any) -> None:
    backend = await make(urls=[closed_port_url(), closed_port_url()])
    for _ in range(8):
        with pytest.raises(BackendError):
            await collect(backend.stream(request()))
    states = sorted(str(v["state"]) for v in backend.upstream_health())
    assert states == ["ejected", "up"]  # max_ejection_percent: 50
    assert sum(u.outlier.capped for u in backend._passive) > 0


@pytest.mark.asyncio
async def test_http_errors_are_mapped_with_the_upstream_named(fake: FakeVllm, make: Any) -> None:
    backend = await make(url=fake.url)
    fake.mode, fake.status = "status", 503
    with pytest.raises(BackendError, match=r"upstream at .* answered HTTP 503"):
        await collect(backend.stream(request()))
    fake.status = 400
    with pytest.raises(InvalidRequest):
        await collect(backend.stream(request()))
    fake.status = 429
    with pytest.raises(RateLimited):
        await collect(backend.stream(request()))
    # An HTTP answer is an answer: the server is still up.
    assert (await backend.status()).healthy
    assert backend.upstreams[0].in_flight == 0


@pytest.mark.asyncio
async def test_max_in_flight_saturates(fake: FakeVllm, make: Any) -> None:
    fake.mode = "slow"
    backend = await make(url=fake.url, max_in_flight=1)
    stream = backend.stream(request())
    await anext(stream)
    assert (await backend.status()).saturated
    with pytest.raises(RateLimited):
        await collect(backend.stream(request()))
    await stream.aclose()  # type: ignore[attr-defined]
    assert not (await backend.status()).saturated


@pytest.mark.asyncio
async def test_no_usage_from_the_server_counts_the_pieces(fake: FakeVllm, make: Any) -> None:
    backend = await make(url=fake.url)
    fake.words = ["a", "b", "c", "d"]
    original = fake._send

    async def without_usage(resp: Any, payload: dict[str, Any]) -> None:
        if "usage" not in payload:
            await original(resp, payload)

    fake._send = without_usage  # type: ignore[method-assign]
    chunks = await collect(backend.stream(request()))
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4


def test_api_key_and_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_KEY", "s3cret")
    backend = OpenAICompatibleBackend(
        config(url="https://api.example/v1", api_key_env="BENCH_KEY", headers={"X-Org": "o"}),
        NoFleet(),
    )
    upstream = backend.upstreams[0]
    assert upstream.url == "https://api.example"
    assert upstream._headers == {"X-Org": "o", "Authorization": "Bearer s3cret"}


def test_profile_kind_and_list_price() -> None:
    plain = OpenAICompatibleBackend(config(url="http://a"), NoFleet())
    assert plain.kind == plain.profile.kind == "remote"
    assert (plain.profile.watts_idle, plain.profile.watts_active) == (0.0, 0.0)
    assert plain.profile.capex_per_hour == 0.0
    assert plain.deployments[0].max_context == 131072
    local = OpenAICompatibleBackend(
        config(url="http://a", kind="gpu", profile={"watts_active": 300, "max_context": 8192}),
        NoFleet(),
    )
    assert (local.kind, local.profile.kind, local.profile.watts_active) == ("gpu", "gpu", 300.0)
    assert local.deployments[0].max_context == 8192
    paid = config(url="http://a", list_price={"input_per_mtok": 1.0, "output_per_mtok": 4.0})
    backend = OpenAICompatibleBackend(paid, NoFleet())
    cost = ListPriceOnly({}).for_backend(backend, paid)
    costing = cost.begin("r", 10).end(BackendUsage(prompt_tokens=1000, completion_tokens=500))
    assert costing.usd_total == pytest.approx(0.001 + 0.002)


@pytest.mark.parametrize(
    ("params", "key", "reason"),
    [
        ({}, "url", "base URL"),
        ({"url": "127.0.0.1:8000"}, "urls[0]", "not an http"),
        ({"url": "http://a", "poll_interval_s": 1}, "poll_interval_s", "unknown field"),
        ({"url": "http://a", "kind": ""}, "kind", "length >= 1"),  # open names, not empty
        ({"url": "http://a", "api_key_env": "FRESHET_NO_SUCH_VAR"}, "api_key_env", "not set"),
    ],
)
def test_config_errors_name_the_key(params: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        OpenAICompatibleBackend(config(**params), NoFleet())
    assert info.value.key is not None
    assert info.value.key.startswith("backends[1]")
    assert key in info.value.key or key in info.value.reason
    assert reason in info.value.reason


def test_registered_beside_vllm() -> None:
    (entry,) = [e for e in md.entry_points(group="freshet") if e.name == "vllm"]
    registered: dict[str, Any] = {}
    entry.load().register_backend_types(register=registered.__setitem__)
    assert registered == {"vllm": create_backend, "openai-compatible": OpenAICompatibleBackend}


def test_through_freshet_serve(tmp_path: Path) -> None:
    """The real gateway, the openai client and the fake upstream in its own thread."""
    import openai

    with fake_in_thread() as fakes:
        (fake,) = fakes
        cfg = {
            "backends": [
                {
                    "id": "api",
                    "type": "openai-compatible",
                    "knowledge_cutoff": "unknown",
                    "model": "m",
                    "url": fake.url,
                    "list_price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
                }
            ],
            "groups": {"chat": ["api"]},
        }
        with running_server(tmp_path, cfg) as server:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key="x")
            raw = client.chat.completions.with_raw_response.create(
                model="chat", messages=[{"role": "user", "content": "hi"}]
            )
            reply = raw.parse()
            assert reply.choices[0].message.content == "Hello there!"
            assert raw.headers["x-freshet-backend"] == "api"
            assert float(raw.headers["x-freshet-cost-usd"]) == pytest.approx(7e-6 + 6e-6)
            pieces = [
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(
                    model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
                )
                if c.choices
            ]
            assert "".join(pieces) == "Hello there!"


# -- the lean HTTP/1.1 client (freshet_vllm.http1) under faults aiohttp's fake can't make --


@pytest.mark.asyncio
async def test_content_length_body_and_keep_alive(make: Any) -> None:
    raw = RawServer([sse_reply()])
    async with raw as url:
        backend = await make(url=url)
        for _ in range(3):
            chunks = await collect(backend.stream(request()))
            assert "".join(c.text for c in chunks) == "Hi"
    assert (raw.connections, raw.requests) == (1, 3)


@pytest.mark.asyncio
async def test_connection_close_is_not_reused(make: Any) -> None:
    raw = RawServer([sse_reply(b"connection: close\r\n")])
    async with raw as url:
        backend = await make(url=url)
        for _ in range(2):
            await collect(backend.stream(request()))
    assert (raw.connections, raw.requests) == (2, 2)


@pytest.mark.asyncio
async def test_kept_alive_connection_closed_by_the_server_is_retried_once(make: Any) -> None:
    # The second request on a connection is dropped unanswered, as by a server whose
    # keep-alive ran out as the request was written: it is sent again on a new connection.
    raw = RawServer([sse_reply(), None, sse_reply()])
    async with raw as url:
        backend = await make(url=url)
        await collect(backend.stream(request()))
        chunks = await collect(backend.stream(request()))
    assert chunks[-1].finish_reason == "stop"
    assert raw.connections == 2


@pytest.mark.asyncio
async def test_silence_longer_than_the_request_timeout(make: Any) -> None:
    raw = RawServer(["hang"])
    async with raw as url:
        backend = await make(url=url, request_timeout_s=0.2)
        started = time.monotonic()
        with pytest.raises(BackendError, match="TimeoutError"):
            await collect(backend.stream(request()))
    assert time.monotonic() - started < 2
    assert backend.upstreams[0].in_flight == 0


@pytest.mark.asyncio
async def test_malformed_http_is_a_backend_error(make: Any) -> None:
    raw = RawServer([b"HTTP/1.1 2OO Fine\r\n\r\n"])
    async with raw as url:
        backend = await make(url=url)
        with pytest.raises(BackendError, match="malformed HTTP"):
            await collect(backend.stream(request()))


def test_header_with_a_line_break_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        OpenAICompatibleBackend(config(url="http://a", headers={"X-A": "b\r\nX-B: c"}), NoFleet())
    assert info.value.key == "backends[1].headers.X-A"
