"""The embedded default is a fleet: the CPU model and a simulated ASIC twinned to it."""

from __future__ import annotations

import json

import openai
import pytest

from tests.support.server import Server


@pytest.fixture(scope="module")
def client(default_gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=default_gateway.url + "/v1", api_key="unused", max_retries=0)


def test_models_show_cpu_asic_and_group_with_cutoffs(client: openai.OpenAI) -> None:
    models = {m.id: (m.model_extra or {}) for m in client.models.list()}
    assert models["smollm2-135m"]["knowledge_cutoff"] == "2024-06-01"
    assert models["llama-3.1-8b"]["knowledge_cutoff"] == "2023-12-01"
    assert models["llama-3.1-8b"]["backends"] == ["asic"]
    assert models["auto"]["kind"] == "group"
    assert models["auto"]["backends"] == ["asic", "cpu"]


def test_asic_streams_real_text_from_its_twin_with_simulated_energy(
    client: openai.OpenAI, default_gateway: Server
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="llama-3.1-8b",
        messages=[{"role": "user", "content": "Name three rivers in Europe."}],
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-freshet-backend"] == "asic"
    assert raw.headers["x-freshet-knowledge-cutoff"] == "2023-12-01"
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) >= 3  # real words from SmolLM2, not filler
    usage = chunks[-1].usage
    assert usage is not None
    assert 0 < usage.completion_tokens <= 24
    extra = usage.model_extra or {}
    # Card + host power over a ~ms occupancy: a few hundredths of a joule per token.
    assert 0 < extra["energy_joules"] < 0.1 * (usage.prompt_tokens + usage.completion_tokens)
    assert extra["cost"] > 0
    status, body = default_gateway.get("/freshet/backends")
    assert status == 200
    assert {b["id"]: b["running"] for b in json.loads(body)} == {"cpu": 0, "asic": 0}


def test_auto_prefers_asic_and_long_prompts_fall_through_to_cpu(client: openai.OpenAI) -> None:
    short = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert short.headers["x-freshet-backend"] == "asic"
    long_prompt = "river " * 3000  # over the ASIC's 2,048-token context
    long = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": long_prompt}], max_tokens=4
    )
    assert long.headers["x-freshet-backend"] == "cpu"
    # The router sees the prompt cannot fit the ASIC's 2,048 tokens and never sends it.
    assert "dropped=asic:context" in long.headers["x-freshet-route"]
    assert long.parse().usage.prompt_tokens > 3000
