"""Cached and reasoning tokens priced as the upstream prices them (issue #19).

A real ``freshet serve`` in front of two fake upstreams (``openai-compatible`` backends)
whose usage reports prompt-cache reads and writes and reasoning tokens. The dollars the
ledger records must be the upstream's own arithmetic from its price sheet, to the
fraction of a cent; the wire usage (OpenAI's and Anthropic's shapes, parsed by their SDKs)
carries the counts; the cost report (HTTP JSON and CSV, and ``freshet cost report``) sums
them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.support.server import FRESHET, Server, running_server
from tests.vllm.kit import fake_in_thread

# OpenAI's published prices for o4-mini, USD per million tokens (openai.com/api/pricing,
# as of 2025): input 1.10, cached input 0.275, output 4.40. Reasoning tokens are output
# tokens and billed as such.
O4_MINI = {"input_per_mtok": 1.10, "cached_input_per_mtok": 0.275, "output_per_mtok": 4.40}
# Anthropic's published prices for Claude Sonnet 4, USD per million tokens
# (anthropic.com/pricing, as of 2025): input 3, 5-minute cache writes 3.75, cache hits
# 0.30, output 15.
SONNET_4 = {
    "input_per_mtok": 3.0,
    "cached_input_per_mtok": 0.30,
    "cache_write_per_mtok": 3.75,
    "output_per_mtok": 15.0,
}

# An OpenAI response: 2,000 prompt tokens of which 1,500 cached, 800 completion tokens of
# which 500 reasoning.
OPENAI_USAGE = {
    "prompt_tokens": 2000,
    "completion_tokens": 800,
    "total_tokens": 2800,
    "prompt_tokens_details": {"cached_tokens": 1500},
    "completion_tokens_details": {"reasoning_tokens": 500},
}
# The upstream's own bill: 500 uncached + 1,500 cached input tokens, 800 output tokens.
OPENAI_USD = (500 * 1.10 + 1500 * 0.275 + 800 * 4.40) / 1e6  # $0.0044825

# An Anthropic response as a proxy passes it on: 100 uncached input tokens, 1,000 written
# to the cache, 3,000 read from it, 200 output tokens.
ANTHROPIC_USAGE = {
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "input_tokens": 100,
    "output_tokens": 200,
    "cache_creation_input_tokens": 1000,
    "cache_read_input_tokens": 3000,
}
ANTHROPIC_USD = (100 * 3.0 + 1000 * 3.75 + 3000 * 0.30 + 200 * 15.0) / 1e6  # $0.00795

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with fake_in_thread(2) as fakes:
        for fake, usage in zip(fakes, (OPENAI_USAGE, ANTHROPIC_USAGE), strict=True):
            fake.usage = usage
        backends = [
            {
                "id": backend,
                "type": "openai-compatible",
                "knowledge_cutoff": "unknown",
                "model": backend,
                "url": fake.url,
                "list_price": price,
            }
            for backend, fake, price in (
                ("o4-mini", fakes[0], O4_MINI),
                ("sonnet", fakes[1], SONNET_4),
            )
        ]
        with running_server(tmp_path_factory.mktemp("cached"), {"backends": backends}) as server:
            yield server


def _records(server: Server, backend: str) -> list[dict[str, Any]]:
    status, body = server.get(f"/freshet/usage?backend={backend}")
    assert status == 200, body
    records: list[dict[str, Any]] = json.loads(body)["data"]
    return records


def test_openai_usage_details_and_the_upstreams_dollars(gateway: Server) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="o4-mini", messages=HI)
    reply = raw.parse()
    usage = reply.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (2000, 800)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 1500
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 500
    assert (usage.model_extra or {})["cost"] == pytest.approx(OPENAI_USD, rel=1e-9)
    assert float(raw.headers["x-freshet-cost-usd"]) == pytest.approx(OPENAI_USD, rel=1e-6)

    chunks = list(
        client.chat.completions.create(
            model="o4-mini", messages=HI, stream=True, stream_options={"include_usage": True}
        )
    )
    streamed = chunks[-1].usage
    assert streamed is not None
    assert streamed.prompt_tokens_details is not None
    assert streamed.prompt_tokens_details.cached_tokens == 1500
    assert streamed.completion_tokens_details is not None
    assert streamed.completion_tokens_details.reasoning_tokens == 500

    # Text completions carry the same usage.
    completion = client.completions.create(model="o4-mini", prompt="hi", max_tokens=16)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 1500
    assert completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 500

    records = _records(gateway, "o4-mini")
    assert sorted((r["operation"], r["stream"]) for r in records) == [
        ("chat", False),
        ("chat", True),
        ("text_completion", False),
    ]
    for record in records:
        assert (record["cached_prompt_tokens"], record["cache_write_tokens"]) == (1500, 0)
        assert record["reasoning_tokens"] == 500
        # The upstream's bill to the fraction of a cent (float rounding aside).
        assert record["usd_list"] == pytest.approx(OPENAI_USD, abs=1e-15)
        assert record["usd_total"] == pytest.approx(OPENAI_USD, abs=1e-15)
        assert record["usd_input"] == pytest.approx((500 * 1.10 + 1500 * 0.275) / 1e6, abs=1e-15)
        assert record["usd_output"] == pytest.approx(800 * 4.40 / 1e6, abs=1e-15)


def test_anthropic_usage_leaves_the_cache_out_of_input_tokens(gateway: Server) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0)
    message = client.messages.create(model="sonnet", max_tokens=16, messages=HI)
    u = message.usage
    assert (u.input_tokens, u.output_tokens) == (100, 200)
    assert (u.cache_read_input_tokens, u.cache_creation_input_tokens) == (3000, 1000)

    with client.messages.stream(model="sonnet", max_tokens=16, messages=HI) as stream:
        final = stream.get_final_message()
    assert final.usage.cache_read_input_tokens == 3000
    assert final.usage.cache_creation_input_tokens == 1000

    records = _records(gateway, "sonnet")
    assert len(records) == 2
    # The request's trace says the same (OpenTelemetry's GenAI cache attributes).
    raw = gateway.get("/freshet/traces?limit=50")[1]
    row = next(r for r in json.loads(raw) if r["backend"] == "sonnet")
    spans = json.loads(gateway.get(f"/freshet/traces/{row['trace_id']}")[1])["spans"]
    server = next(span for span in spans if span["kind"] == "server")["attributes"]
    assert server["freshet.request.id"] in {r["request_id"] for r in records}
    assert server["gen_ai.usage.input_tokens"] == 4100
    assert server["gen_ai.usage.cache_read.input_tokens"] == 3000
    assert server["gen_ai.usage.cache_creation.input_tokens"] == 1000
    for record in records:
        assert (record["prompt_tokens"], record["completion_tokens"]) == (4100, 200)
        assert (record["cached_prompt_tokens"], record["cache_write_tokens"]) == (3000, 1000)
        assert record["usd_total"] == pytest.approx(ANTHROPIC_USD, abs=1e-15)


def test_reports_sum_the_counts(gateway: Server) -> None:
    """Over what the tests above recorded, and one request more to each backend."""
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    for model in ("o4-mini", "sonnet"):
        client.chat.completions.create(model=model, messages=HI)
    o, s = len(_records(gateway, "o4-mini")), len(_records(gateway, "sonnet"))
    status, body = gateway.get("/freshet/cost/report?group_by=backend")
    assert status == 200, body
    rows = {row["value"]: row for row in json.loads(body)["rows"]}
    assert (rows["o4-mini"]["requests"], rows["sonnet"]["requests"]) == (o, s)
    assert rows["o4-mini"]["cached_prompt_tokens"] == o * 1500
    assert rows["o4-mini"]["reasoning_tokens"] == o * 500
    assert rows["o4-mini"]["usd_total"] == pytest.approx(o * OPENAI_USD, abs=1e-15)
    assert (rows["sonnet"]["cached_prompt_tokens"], rows["sonnet"]["cache_write_tokens"]) == (
        s * 3000,
        s * 1000,
    )
    assert rows["sonnet"]["usd_total"] == pytest.approx(s * ANTHROPIC_USD, abs=1e-15)

    status, body = gateway.get("/freshet/cost/report?group_by=backend&format=csv")
    assert status == 200
    by_backend = {r["backend"]: r for r in csv.DictReader(io.StringIO(body.decode()))}
    assert by_backend["o4-mini"]["cached_prompt_tokens"] == str(o * 1500)
    assert by_backend["o4-mini"]["reasoning_tokens"] == str(o * 500)
    assert by_backend["sonnet"]["cache_write_tokens"] == str(s * 1000)

    # The CLI reads the same ledger (read-only, while the gateway runs).
    env = {**os.environ, "FRESHET_DATA_DIR": str(gateway.data_dir)}
    env.pop("FRESHET_CONFIG", None)
    out = subprocess.run(
        [FRESHET, "cost", "report", "--by", "backend", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    totals = json.loads(out.stdout)["totals"]
    assert totals["cached_prompt_tokens"] == o * 1500 + s * 3000
    assert (totals["cache_write_tokens"], totals["reasoning_tokens"]) == (s * 1000, o * 500)
    assert totals["usd_total"] == pytest.approx(o * OPENAI_USD + s * ANTHROPIC_USD, abs=1e-15)
    table = subprocess.run(
        [FRESHET, "cost", "report", "--by", "backend"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout
    header = table.splitlines()[2]
    assert "cached in" in header
    assert "reasoning" in header
