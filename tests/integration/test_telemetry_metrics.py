"""`/metrics` of a real `freshet serve`: Prometheus text that Prometheus's own parser reads,
whose token counters move by exactly the tokens served; per-backend gauges; and the
in-memory traces of the embedded default (no exporter configured)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.telemetry.metrics import exposed_names
from tests.support.server import Server, running_server

CONFIG: dict[str, Any] = {
    "backends": [
        {
            "id": "gpu-a",
            "type": "deterministic",
            "model": "m-gpu",
            "knowledge_cutoff": "2025-01-01",
            "tokens_per_s": 3000,
            "profile": {"kind": "gpu", "watts_idle": 100, "watts_active": 400},
            "list_price": {"input_per_mtok": 1.0, "output_per_mtok": 4.0},
        },
        {
            "id": "cpu-b",
            "type": "deterministic",
            "model": "m-cpu",
            "knowledge_cutoff": "2024-06-01",
            "profile": {"watts_idle": 1, "watts_active": 6},
            "list_price": {"input_per_mtok": 10.0, "output_per_mtok": 40.0},
        },
        {
            "id": "slow",
            "type": "deterministic",
            "knowledge_cutoff": "unknown",
            "model": "m-slow",
            "tokens_per_s": 20,
            "default_max_tokens": 400,
        },
    ],
    "groups": {"auto": ["gpu-a", "cpu-b"]},
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("metrics"), CONFIG) as server:
        yield server


@pytest.fixture(scope="module")
def client(gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)


def scrape(server: Server) -> tuple[Samples, dict[str, str]]:
    status, body = server.get("/metrics")
    assert status == 200
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(body.decode()):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, types


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def test_token_counters_move_by_exactly_the_tokens_served(
    gateway: Server, client: openai.OpenAI
) -> None:
    before, types = scrape(gateway)
    assert types["gen_ai_client_token_usage"] == "histogram"
    assert types["freshet_energy_joules"] == "counter"

    served_in = served_out = 0
    cost = energy = 0.0
    for i in range(3):
        done = client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "word " * (i + 2)}], max_tokens=5
        )
        assert done.usage is not None
        served_in += done.usage.prompt_tokens
        served_out += done.usage.completion_tokens
        extra = done.usage.model_extra or {}
        cost += extra["cost"]
        energy += extra["energy_joules"]
    stream = client.completions.create(
        model="m-cpu",
        prompt="the river",
        max_tokens=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = next(c.usage for c in stream if c.usage)
    served_in += usage.prompt_tokens
    served_out += usage.completion_tokens
    extra = usage.model_extra or {}
    cost += extra["cost"]
    energy += extra["energy_joules"]

    after, _ = scrape(gateway)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    tokens = "gen_ai_client_token_usage_sum"
    assert delta(tokens, gen_ai_token_type="input") == served_in
    assert delta(tokens, gen_ai_token_type="output") == served_out
    assert delta("gen_ai_client_token_usage_count", gen_ai_token_type="output") == 4
    assert delta(tokens, gen_ai_token_type="output", gen_ai_operation_name="text_completion") == 7
    assert delta("gen_ai_server_request_duration_seconds_count") == 4
    assert delta("gen_ai_server_time_to_first_token_seconds_count") == 4
    assert delta("gen_ai_server_time_per_output_token_seconds_count") == 4
    assert delta("freshet_cost_usd_total") == pytest.approx(cost, rel=1e-6, abs=1e-12)
    assert delta("freshet_energy_joules_total") == pytest.approx(energy, rel=1e-6, abs=1e-9)
    assert delta("freshet_energy_joules_total", freshet_backend_id="gpu-a") > 0
    # By backend, model and group.
    by_group = delta(tokens, gen_ai_token_type="output", freshet_group="auto")
    assert by_group == served_out - 7


def test_errors_are_counted_with_their_type(gateway: Server, client: openai.OpenAI) -> None:
    before, _ = scrape(gateway)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    after, _ = scrape(gateway)
    name = "gen_ai_server_request_duration_seconds_count"
    labels = {"error_type": "model_not_found"}
    assert total(after, name, **labels) - total(before, name, **labels) == 1
    # A model that does not exist never becomes a label value.
    assert not any(("gen_ai_request_model", "nope") in ls for _, ls in after)


def test_backend_gauges(gateway: Server) -> None:
    samples, _ = scrape(gateway)
    # What the deploy/ dashboard is checked against is what /metrics really shows.
    assert {name for name, _ in samples} <= exposed_names()
    for backend in ("gpu-a", "cpu-b", "slow"):
        assert total(samples, "freshet_backend_up", freshet_backend_id=backend) == 1
        assert (
            total(
                samples,
                "freshet_backend_circuit_state",
                freshet_backend_id=backend,
                freshet_circuit_state="closed",
            )
            == 1
        )
        assert total(samples, "freshet_backend_queue_depth", freshet_backend_id=backend) == 0
        assert total(samples, "freshet_backend_in_flight", freshet_backend_id=backend) == 0


@pytest.mark.asyncio
async def test_in_flight_and_a_client_that_leaves(gateway: Server) -> None:
    body = {
        "model": "m-slow",
        "messages": [{"role": "user", "content": "go on"}],
        "stream": True,
    }
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        async with http.stream("POST", "/v1/chat/completions", json=body) as resp:
            request_id = resp.headers["x-request-id"]
            seen = 0
            async for line in resp.aiter_lines():
                seen += line.startswith("data: ")
                if seen >= 3:
                    break
            samples, _ = scrape(gateway)
            assert total(samples, "freshet_backend_in_flight", freshet_backend_id="slow") == 1
            assert total(samples, "freshet_backend_running", freshet_backend_id="slow") == 1
        left_at = time.time()
    # The trace ends when the client has left, not before, and says so.
    for _ in range(100):
        _, raw = gateway.get("/freshet/traces?limit=20")
        rows = [r for r in json.loads(raw) if r["model"] == "m-slow"]
        if rows:
            break
        await asyncio.sleep(0.05)
    (row,) = rows
    assert row["status"] == "client_disconnected"
    assert row["start_unix_ms"] / 1000 + row["duration_ms"] / 1000 >= left_at - 0.05
    _, raw = gateway.get(f"/freshet/traces/{row['trace_id']}")
    server = next(s for s in json.loads(raw)["spans"] if s["kind"] == "server")
    assert server["attributes"]["freshet.request.id"] == request_id
    assert server["attributes"]["freshet.status"] == "client_disconnected"
    samples, _ = scrape(gateway)
    assert total(samples, "freshet_backend_in_flight", freshet_backend_id="slow") == 0


def test_traces_are_kept_in_memory_without_an_exporter(
    gateway: Server, client: openai.OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hello"}], max_tokens=4
    )
    request_id = raw.headers["x-request-id"]
    status, body = gateway.get("/freshet/traces?limit=5")
    assert status == 200
    newest = json.loads(body)[0]
    assert newest["name"] == "chat auto"
    assert newest["backend"] == "gpu-a"
    assert newest["output_tokens"] == 4
    assert newest["status"] == "ok"
    status, body = gateway.get(f"/freshet/traces/{newest['trace_id']}")
    assert status == 200
    view = json.loads(body)
    spans = {s["name"]: s for s in view["spans"]}
    assert set(spans) == {"chat auto", "route", "backend gpu-a"}
    server = spans["chat auto"]
    assert server["attributes"]["freshet.request.id"] == request_id
    assert spans["route"]["parent_span_id"] == server["span_id"]
    assert spans["backend gpu-a"]["parent_span_id"] == server["span_id"]
    assert server["events"][0]["name"] == "first_token"
    status, body = gateway.get("/freshet/traces/0123456789abcdef0123456789abcdef")
    assert status == 404
    assert json.loads(body)["error"]["code"] == "not_found"
