"""The router on the embedded default fleet: ASIC Llama-3.1-8B (cutoff 2023-12-01) and
CPU SmolLM2 (cutoff 2024-06-01), group `auto`."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest

from gateway.api.runtime import Runtime
from gateway.backend import GenerationRequest, Message
from gateway.settings import load_settings
from tests.support.server import Server

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def client(default_gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=default_gateway.url + "/v1", api_key="unused", max_retries=0)


def _served_by(client: openai.OpenAI, **extra: object) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=HI,
        max_tokens=3,
        **extra,  # type: ignore[arg-type]
    )
    return raw.headers["x-freshet-backend"], raw.headers["x-freshet-route"]


def test_no_need_goes_to_the_cheaper_asic(client: openai.OpenAI) -> None:
    backend, route = _served_by(client)
    assert backend == "asic"
    assert route.startswith("cheapest-fresh; chosen=asic")


def test_a_need_after_the_asics_cutoff_goes_to_the_cpu(client: openai.OpenAI) -> None:
    backend, route = _served_by(
        client, extra_body={"freshness": {"min_knowledge_cutoff": "2024-03-01"}}
    )
    assert backend == "cpu"
    assert "dropped=asic:freshness(cutoff 2023-12-01)" in route
    backend, _ = _served_by(client, extra_headers={"X-Freshet-Min-Knowledge-Cutoff": "2024-03-01"})
    assert backend == "cpu"
    # Body beats header: the body asks for nothing newer than the ASIC has.
    backend, _ = _served_by(
        client,
        extra_body={"freshness": {"min_knowledge_cutoff": "2023-06-01"}},
        extra_headers={"X-Freshet-Min-Knowledge-Cutoff": "2024-03-01"},
    )
    assert backend == "asic"


def test_an_unsatisfiable_need_is_422_naming_the_freshest(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.chat.completions.create(
            model="auto",
            messages=HI,
            extra_body={"freshness": {"min_knowledge_cutoff": "2025-06-01"}},
        )
    assert info.value.code == "freshness_unsatisfiable"
    assert "2024-06-01" in info.value.message


@pytest.mark.parametrize(
    ("body", "headers", "param"),
    [
        (
            {"freshness": {"min_knowledge_cutoff": "June 2024"}},
            {},
            "freshness.min_knowledge_cutoff",
        ),
        ({"freshness": {"max_staleness_days": -3}}, {}, "freshness.max_staleness_days"),
        ({}, {"X-Freshet-Min-Knowledge-Cutoff": "2024-13-01"}, "x-freshet-min-knowledge-cutoff"),
        ({}, {"X-Freshet-Max-Staleness-Days": "soon"}, "x-freshet-max-staleness-days"),
        ({}, {"X-Freshet-Max-TTFT-Ms": "fast"}, "x-freshet-max-ttft-ms"),
    ],
)
def test_bad_freshness_values_are_400_naming_the_field(
    default_gateway: Server, body: dict[str, object], headers: dict[str, str], param: str
) -> None:
    resp = httpx.post(
        default_gateway.url + "/v1/chat/completions",
        json={"model": "auto", "messages": HI, **body},
        headers=headers,
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param


def test_max_staleness_days_and_ttft_limits(client: openai.OpenAI) -> None:
    backend, _ = _served_by(client, extra_body={"freshness": {"max_staleness_days": 100000}})
    assert backend == "asic"
    # One millisecond to the first token. What each backend is quoted depends on what its
    # learned correction has seen on this shared gateway (issue #20: the ASIC's text comes
    # from its CPU twin; the CPU's pace on a busy machine), so which of them keeps the
    # promise is not fixed; what is: a backend quoted over the limit is dropped for it,
    # and the request is refused, naming both, only when both are.
    try:
        backend, route = _served_by(
            client,
            extra_body={"max_ttft_ms": 1, "freshness": {"min_knowledge_cutoff": "2023-01-01"}},
        )
    except openai.APIStatusError as refused:
        message = str(refused)
        assert "cpu: ttft(" in message
        assert "asic: ttft(" in message
    else:
        other = {"asic": "cpu", "cpu": "asic"}[backend]
        assert f"{other}:ttft(" in route, route
    # A limit the ASIC keeps: it serves.
    backend, route = _served_by(client, extra_body={"max_ttft_ms": 60_000})
    assert backend == "asic"
    assert "dropped=" not in route


def test_route_dry_run_lists_every_candidate(default_gateway: Server) -> None:
    resp = httpx.get(
        default_gateway.url + "/freshet/route",
        params={"model": "auto", "prompt_tokens": 3000, "max_tokens": 50},
    )
    assert resp.status_code == 200, resp.text
    view = resp.json()
    assert view["chosen"] == "cpu"
    by_backend = {c["backend"]: c for c in view["candidates"]}
    assert by_backend["asic"]["eligible"] is False
    assert by_backend["asic"]["reason"].startswith("context(")
    assert by_backend["cpu"]["quote_usd"] > 0
    resp = httpx.post(
        default_gateway.url + "/freshet/route",
        json={"model": "auto", "messages": HI, "freshness": {"min_knowledge_cutoff": "2024-03-01"}},
    )
    view = resp.json()
    assert view["chosen"] == "cpu"
    assert view["need"].startswith(">= 2024-03-01")


@pytest.mark.asyncio
async def test_asic_stopped_goes_to_cpu_with_the_reason_in_the_route(tmp_path: Path) -> None:
    runtime = Runtime(load_settings(env={"FRESHET_DATA_DIR": str(tmp_path)}))
    await runtime.start()
    try:
        service = runtime.service
        gen = GenerationRequest(
            request_id="r1",
            operation="chat",
            model="auto",
            messages=[Message(role="user", content="hi")],
            max_tokens=2,
        )
        routed = await service.open(service.context("r1", "auto", "chat", False), gen)
        assert routed.opened.deployment.backend_id == "asic"
        await routed.opened.rest.aclose()  # type: ignore[attr-defined]
        await runtime.fleet.get("asic").aclose()  # the card is switched off
        routed = await service.open(service.context("r2", "auto", "chat", False), gen)
        assert routed.opened.deployment.backend_id == "cpu"
        assert "dropped=asic:unhealthy" in routed.route_header()
        await routed.opened.rest.aclose()  # type: ignore[attr-defined]
    finally:
        await runtime.aclose()
    assert json.dumps(routed.decision.need.describe()) == '"none"'
