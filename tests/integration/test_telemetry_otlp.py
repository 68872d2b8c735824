"""A real `freshet serve` exports its traces and metrics over OTLP/HTTP to a real receiver
on loopback: a streamed chat through the `openai` client gives one server span with the
GenAI attributes and Freshet's own, `route` and `backend` children, energy and cost equal
to the ledger's usage record; a client's `traceparent` is continued."""

from __future__ import annotations

import signal
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.otlp import ReceivedSpan, Receiver, otlp_receiver
from tests.support.server import Server, running_server

CONFIG: dict[str, Any] = {
    "backends": [
        {
            "id": "fresh",
            "type": "deterministic",
            "model": "m-fresh",
            "knowledge_cutoff": "2025-01-01",
            "tokens_per_s": 2000,
            "profile": {"kind": "gpu", "watts_idle": 100, "watts_active": 400,
                        "capex_per_hour": 2.0, "prefill_tokens_per_s": 20000,
                        "decode_tokens_per_s": 2000},
        },
        {
            "id": "stale",
            "type": "deterministic",
            "model": "m-stale",
            "knowledge_cutoff": "2023-06-01",
            "profile": {"watts_idle": 1, "watts_active": 6},
        },
    ],
    "groups": {"auto": ["stale", "fresh"]},
}  # fmt: skip


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as r:
        yield r


@pytest.fixture(scope="module")
def gateway(receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_METRIC_EXPORT_INTERVAL": "300",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test",
    }
    with running_server(tmp_path_factory.mktemp("otlp"), CONFIG, env=env) as server:
        yield server


@pytest.fixture(scope="module")
def client(gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)


def _record(server: Server, request_id: str) -> dict[str, Any]:
    for _ in range(100):  # written off the hot path, in batches
        with sqlite3.connect(server.data_dir / "ledger.sqlite3") as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM usage WHERE request_id = ?", (request_id,)).fetchone()
        if row is not None:
            return dict(row)
        time.sleep(0.05)
    raise AssertionError(f"no record for {request_id}")


def _server_span(receiver: Receiver, request_id: str) -> ReceivedSpan:
    return receiver.wait_for(
        lambda r: next(
            (s for s in r.spans if s.attributes.get("freshet.request.id") == request_id), None
        )
    )


def _children(receiver: Receiver, server: ReceivedSpan, count: int) -> list[ReceivedSpan]:
    def found(r: Receiver) -> list[ReceivedSpan] | None:
        kids = [s for s in r.trace(server.trace_id) if s.parent_span_id == server.span_id]
        return kids if len(kids) >= count else None

    return receiver.wait_for(found)


def test_streamed_chat_is_one_server_span_with_genai_and_freshet_attributes(
    client: openai.OpenAI, gateway: Server, receiver: Receiver
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "Tell me about rivers in spring"}],
        max_tokens=12,
        temperature=0.5,
        top_p=0.9,
        seed=7,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"freshness": {"min_knowledge_cutoff": "2024-01-01"}},
    )
    request_id = raw.headers["x-request-id"]
    chunks = list(raw.parse())
    received_all_ns = time.time_ns()
    usage = chunks[-1].usage
    assert usage is not None
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    finish = [f for f in finish if f]

    span = _server_span(receiver, request_id)
    record = _record(gateway, request_id)
    a = span.attributes
    assert span.name == "chat auto"
    assert span.kind == "SPAN_KIND_SERVER"
    assert span.parent_span_id is None
    assert span.scope == "freshet"
    assert span.resource["service.name"] == "freshet"
    assert span.resource["deployment.environment.name"] == "test"
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "freshet",
        "gen_ai.request.model": "auto",
        "gen_ai.response.model": "m-fresh",
        "gen_ai.request.max_tokens": 12,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.seed": 7,
        "gen_ai.response.id": chunks[0].id,
        "gen_ai.response.finish_reasons": finish,
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        "server.address": "127.0.0.1",
        "server.port": gateway.port,
        "http.response.status_code": 200,
        "freshet.backend.id": "fresh",
        "freshet.backend.kind": record["backend_kind"],
        "freshet.knowledge_cutoff": "2025-01-01",
        "freshet.freshness.need": ">= 2024-01-01 (body)",
        "freshet.route.policy": "cheapest-fresh",
        "freshet.route.dropped": ["stale: freshness(cutoff 2023-06-01)"],
        "freshet.energy_source": record["energy_source"],
        "freshet.status": "ok",
        "freshet.group": "auto",
    }
    assert {k: a.get(k) for k in expected} == expected
    assert finish == ["length"]
    assert usage.completion_tokens == 12
    assert "error.type" not in a
    # Energy and cost are the usage record's, exactly.
    assert record["joules"] > 0
    assert a["freshet.energy_joules"] == record["joules"]
    assert a["freshet.cost_usd"] == record["usd_total"]
    assert a["freshet.route.quote_usd"] > 0
    # No prompt or completion text unless the operator opts in.
    assert not any("messages" in k or "content" in k for k in a)

    # TTFT: attribute and event; the span ends after the stream ended, never before.
    assert a["gen_ai.server.time_to_first_token"] == pytest.approx(record["ttft_s"])
    (event,) = [e for e in span.events if e[0] == "first_token"]
    assert span.start_ns < event[1] < span.end_ns
    assert span.end_ns - received_all_ns < 1e9  # ended with the stream, not much later
    assert span.end_ns - span.start_ns >= record["duration_s"] * 1e9 * 0.99
    last_token_ns = (record["ts"] + record["duration_s"]) * 1e9
    assert span.end_ns >= last_token_ns - 1e6

    route, backend = sorted(_children(receiver, span, 2), key=lambda s: s.start_ns)
    assert route.name == "route"
    assert route.attributes["freshet.route.dropped"] == ["stale: freshness(cutoff 2023-06-01)"]
    assert route.attributes["freshet.route.chosen"] == "fresh"
    assert route.attributes["freshet.route.candidates"] == 2
    assert route.attributes["freshet.route.quote_usd"] == a["freshet.route.quote_usd"]
    assert route.attributes["freshet.route.eligible"][0].startswith("fresh $")
    assert backend.name == "backend fresh"
    assert backend.kind == "SPAN_KIND_CLIENT"
    assert backend.attributes["gen_ai.provider.name"] == "deterministic"
    assert backend.attributes["freshet.backend.id"] == "fresh"
    assert backend.attributes["gen_ai.request.model"] == "m-fresh"
    assert route.end_ns <= backend.start_ns
    assert span.start_ns <= route.start_ns
    assert backend.end_ns <= span.end_ns


def test_client_traceparent_is_continued(client: openai.OpenAI, receiver: Receiver) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    raw = client.chat.completions.with_raw_response.create(
        model="m-fresh",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=3,
        extra_headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
    )
    span = _server_span(receiver, raw.headers["x-request-id"])
    assert span.name == "chat m-fresh"
    assert span.trace_id == trace_id
    assert span.parent_span_id == parent_id
    names = {s.name for s in _children(receiver, span, 2)}
    assert names == {"route", "backend fresh"}


def test_errors_carry_error_type(client: openai.OpenAI, receiver: Receiver) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as info:
        client.chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"freshness": {"min_knowledge_cutoff": "2026-01-01"}},
        )
    span = _server_span(receiver, info.value.response.headers["x-request-id"])
    assert span.attributes["error.type"] == "freshness_unsatisfiable"
    assert span.attributes["http.response.status_code"] == 422
    assert span.status_code == 2  # STATUS_CODE_ERROR
    (route,) = _children(receiver, span, 1)
    assert route.attributes["error.type"] == "freshness_unsatisfiable"


def test_metrics_are_exported_too(client: openai.OpenAI, receiver: Receiver) -> None:
    completion = client.chat.completions.create(
        model="m-fresh", messages=[{"role": "user", "content": "count me"}], max_tokens=5
    )
    assert completion.usage is not None
    served = completion.usage.completion_tokens

    def output_tokens(r: Receiver) -> float | None:
        for _, metric in reversed(r.metrics):
            if metric.name == "gen_ai.client.token.usage":
                points = [
                    p for p in metric.histogram.data_points
                    if {kv.key: kv.value.string_value for kv in p.attributes}.get(
                        "gen_ai.token.type") == "output"
                    and any(kv.value.string_value == "m-fresh" for kv in p.attributes
                            if kv.key == "gen_ai.request.model")
                ]  # fmt: skip
                total = sum(p.sum for p in points)
                return total if total >= served else None
        return None

    assert receiver.wait_for(output_tokens) >= served
    names = {m.name for _, m in receiver.metrics}
    assert {
        "gen_ai.server.request.duration",
        "gen_ai.server.time_to_first_token",
        "freshet.energy",
        "freshet.cost",
        "freshet.backend.circuit_state",
    } <= names


def test_a_collector_that_is_down_costs_one_warning(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": closed,
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
    }
    with running_server(tmp_path, CONFIG, env=env) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        for _ in range(5):
            started = time.monotonic()
            done = client.chat.completions.create(
                model="m-fresh", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
            assert done.usage is not None
            assert time.monotonic() - started < 2.0
            time.sleep(0.3)  # several export attempts fail meanwhile
        status, _ = server.get("/freshet/traces")
        assert status == 200
        stopping = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(timeout=20)
        assert time.monotonic() - stopping < 12
    log = server.log_text()
    assert log.count("OTLP spans export") == 1, log
    assert log.count("OTLP metrics export") == 1, log
    assert "Traceback" not in log
