"""Quotes that tell the truth (issue #20): a quote counts the work a backend has committed
(``BackendStatus.busy_s``), ``max_ttft_ms`` is honoured on it, every usage record carries
its quote beside what happened, and under load the quoted TTFT is within 25 % of the
actual at p90, on the ASIC simulator and on the CPU model (SmolLM2 on llama.cpp)."""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.server import Server, running_server

# The fleet: two etched cards, one slow and nearly free, one fast and dear.
SCENARIO = {
    "backends": [
        {
            "id": "cheap",
            "type": "asic-sim",
            "model": "cheap-8b",
            "knowledge_cutoff": "2023-12-01",
            "decode_tokens_per_s": 25,
            "capex_per_card_hour": 0.1,
        },
        {
            "id": "dear",
            "type": "asic-sim",
            "model": "dear-8b",
            "knowledge_cutoff": "2023-12-01",
            "decode_tokens_per_s": 2000,
            "capex_per_card_hour": 40,
        },
    ],
    "groups": {"auto": ["cheap", "dear"]},
}
MESSAGES = [{"role": "user", "content": "Say something."}]


def _client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=120)


def _records(server: Server, limit: int = 1000) -> list[dict[str, Any]]:
    page = httpx.get(f"{server.url}/freshet/usage?limit={limit}", timeout=60).json()
    data: list[dict[str, Any]] = page["data"]
    return data


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("quote-scenario"), SCENARIO) as server:
        yield server


def test_a_busy_cheap_card_is_quoted_with_its_committed_work(scenario: Server) -> None:
    with _client(scenario) as client:
        _busy_cheap_card(scenario, client)


def _busy_cheap_card(scenario: Server, client: openai.OpenAI) -> None:
    # 100 tokens at 25 tok/s: cheap's only stream is taken for 4 s.
    long = threading.Thread(
        target=lambda: client.chat.completions.create(
            model="cheap-8b", messages=MESSAGES, max_tokens=100
        )
    )
    long.start()
    try:
        time.sleep(0.5)
        body = {"model": "auto", "messages": MESSAGES, "max_tokens": 8}
        free = httpx.post(f"{scenario.url}/freshet/route", json=body, timeout=60).json()
        cheap = next(c for c in free["candidates"] if c["backend"] == "cheap")
        # ~3.5 s left of the running request, not the new request's 0.32 s.
        assert 2.5 < cheap["quote"]["queue_s"] < 3.7
        assert cheap["quote"]["ttft_s"] > 2.5
        assert free["chosen"] == "cheap"  # without a TTFT limit the cheap card still wins

        limited = {**body, "max_ttft_ms": 500}
        route = httpx.post(f"{scenario.url}/freshet/route", json=limited, timeout=60).json()
        assert route["chosen"] == "dear"
        dropped = next(c for c in route["candidates"] if c["backend"] == "cheap")
        assert dropped["reason"].startswith("ttft(")
        assert dropped["quote"]["queue_s"] > 2.5

        # The real request with the limit goes to the fast card, and keeps its promise.
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=MESSAGES, max_tokens=8, extra_body={"max_ttft_ms": 500}
        )
        assert raw.headers["x-freshet-backend"] == "dear"
    finally:
        long.join()
    served = next(
        r for r in _records(scenario, 5) if r["request_id"] == raw.headers["x-request-id"]
    )
    assert served["ttft_s"] < 0.5
    assert served["quoted_ttft_s"] is not None
    assert served["quoted_ttft_s"] < 0.5
    assert served["quoted_usd"] > 0
    assert served["quoted_joules"] > 0


# Under load: one slow card for the accuracy figure (every TTFT there is mostly queue), a
# fast dear one beside it in a group for the requests with a TTFT limit.
LOADED = {
    "backends": [
        {
            "id": "slow",
            "type": "asic-sim",
            "model": "slow-8b",
            "knowledge_cutoff": "2023-12-01",
            "decode_tokens_per_s": 100,
            "prefill_tokens_per_s": 1000,
            "capex_per_card_hour": 0.1,
        },
        {
            "id": "fast",
            "type": "asic-sim",
            "model": "fast-8b",
            "knowledge_cutoff": "2023-12-01",
            "decode_tokens_per_s": 1000,
            "prefill_tokens_per_s": 10000,
            "capex_per_card_hour": 40,
        },
    ],
    "groups": {"auto": ["slow", "fast"]},
}
TOPICS = ["rivers", "bridges", "owls", "glaciers", "lanterns", "orchards", "comets", "ferries"]


def _relative_errors(records: list[dict[str, Any]]) -> list[float]:
    return sorted(
        abs(r["ttft_s"] - r["quoted_ttft_s"]) / r["ttft_s"]
        for r in records
        if r["status"] == "ok" and r["ttft_s"] and r["quoted_ttft_s"] is not None
    )


def _p90(values: list[float]) -> float:
    return values[min(len(values) - 1, int(0.9 * len(values)))]


def _load(
    server: Server,
    model: str,
    requests: int,
    clients: int,
    max_tokens: list[int],
    extra: dict[str, Any] | None = None,
    topic: str = "Tell me about {}.",
) -> list[str]:
    """``requests`` chat completions from ``clients`` threads; their request ids."""
    counter = iter(range(requests))
    lock = threading.Lock()
    ids: list[str] = []

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            raw = client.chat.completions.with_raw_response.create(
                model=model,
                messages=[{"role": "user", "content": topic.format(TOPICS[i % len(TOPICS)])}],
                max_tokens=max_tokens[i % len(max_tokens)],
                extra_body=extra or {},
            )
            with lock:
                ids.append(raw.headers["x-request-id"])

    with _client(server) as client:
        threads = [threading.Thread(target=worker) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return ids


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("quote-load"), LOADED) as server:
        yield server


def test_quoted_ttft_is_within_a_quarter_under_load_on_the_asic(loaded: Server) -> None:
    ids = set(_load(loaded, "slow-8b", requests=48, clients=6, max_tokens=[10, 20, 30]))
    records = [r for r in _records(loaded) if r["request_id"] in ids]
    assert len(records) == 48
    errors = _relative_errors(records)
    assert len(errors) == 48
    print(f"asic-sim: p50 {errors[len(errors) // 2]:.3f}, p90 {_p90(errors):.3f}")
    assert _p90(errors) <= 0.25
    # The quote saw the queue: some requests waited far longer than their own service.
    assert max(r["quoted_ttft_s"] for r in records) > 0.5
    # What /metrics says is the same error, per backend.
    metrics = httpx.get(f"{loaded.url}/metrics", timeout=60).text
    assert (
        'freshet_quote_relative_error{freshet_backend_id="slow",measure="ttft",quantile="0.9"}'
        in metrics
    )
    assert 'freshet_quote_correction_factor{freshet_backend_id="slow",measure="ttft"}' in metrics


def test_max_ttft_is_honoured_under_load(loaded: Server) -> None:
    # Keep the slow card busy, and send limited requests to the group meanwhile.
    busy = threading.Thread(target=_load, args=(loaded, "slow-8b", 12, 3, [30]))
    busy.start()
    try:
        time.sleep(0.3)
        limited = set(_load(loaded, "auto", 16, 2, [10, 20], extra={"max_ttft_ms": 400}))
    finally:
        busy.join()
    records = [r for r in _records(loaded) if r["request_id"] in limited]
    assert len(records) == 16
    # Never sent where the quote said it would be late...
    assert all(r["quoted_ttft_s"] <= 0.4 for r in records)
    # ...and the slow card, though cheaper, lost some of them to the fast one.
    assert {r["backend"] for r in records} >= {"fast"}
    # The promise held: the actual TTFT was within the limit at p90.
    ttfts = sorted(r["ttft_s"] for r in records)
    print(f"max_ttft_ms 400: p90 actual TTFT {_p90(ttfts):.3f} s")
    assert _p90(ttfts) <= 0.4


# SmolLM2 on llama.cpp as in the default fleet, on one thread: with two threads on a
# shared 2-core machine every token waits for the slower thread and the pace swings tenfold
# from one second to the next; this measures the quote, not llama.cpp's threading.
CPU = {
    "backends": [
        {
            "id": "cpu",
            "type": "llamacpp",
            "model": "smollm2-135m",
            "knowledge_cutoff": "2024-06-01",
            "n_threads": 1,
        }
    ]
}
# A quote can be only as true as the machine keeps its pace: when the decode pace swings by
# more than this between thirds of the run, the figure says nothing of the quote.
STEADY = 1.15  # the correction follows a change of pace a few requests late


@pytest.fixture(scope="module")
def cpu_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("quote-cpu"), CPU, ready_timeout=300) as server:
        yield server


def _cpu_round(server: Server, warm_up: int) -> tuple[list[float], float, str]:
    """24 measured requests from 3 clients (after ``warm_up`` more): their TTFT errors,
    how much the machine's pace swung between thirds of them, and the figures."""
    # One model instance: concurrent requests queue behind each other. Stories run past
    # max_tokens, so each request holds the model for what it asked for.
    total = 24 + warm_up
    ids = set(
        _load(
            server,
            "smollm2-135m",
            requests=total,
            clients=3,
            max_tokens=[16, 32],
            topic="Write a long story about {}.",
        )
    )
    records = [r for r in _records(server) if r["request_id"] in ids]
    assert len(records) == total
    assert all(r["status"] == "ok" for r in records)
    records.sort(key=lambda r: r["ts"])
    measured = records[warm_up:]
    errors = _relative_errors(measured)
    assert len(errors) == 24
    # The machine's pace in each third: the one instance is never idle under this load,
    # so the time between two requests' ends is the later one's service (its prompt and
    # its tokens); per token served, it is the machine's speed, stalls included.
    ends = sorted((r["ts"] + r["duration_s"], r["completion_tokens"]) for r in records)
    served = [(b[0] - a[0], b[1]) for a, b in itertools.pairwise(ends)][-24:]
    thirds = [served[i * 8 : (i + 1) * 8] for i in range(3)]
    paces = [sum(s for s, _ in part) / sum(n for _, n in part) for part in thirds]
    # Under load requests waited for others, and the quotes saw it: more than a whole
    # request's service ahead of the median one.
    assert statistics.median(r["quoted_ttft_s"] for r in measured) > 32 * min(paces)
    pairs = ", ".join(f"{r['ttft_s']:.3f}/{r['quoted_ttft_s']:.3f}" for r in measured)
    figures = (
        f"TTFT error p50 {errors[len(errors) // 2]:.3f}, p90 {_p90(errors):.3f}; pace "
        f"{', '.join(f'{p * 1000:.1f}' for p in paces)} ms a token served, by third; "
        f"actual/quoted TTFT: {pairs}"
    )
    return errors, max(paces) / min(paces), figures


def test_quoted_ttft_is_within_a_quarter_under_load_on_the_cpu_model(
    cpu_gateway: Server,
) -> None:
    # The first requests teach the correction (the machine runs the model at its own pace,
    # not the calibrated one); the accuracy is of the quotes after them. A round in which
    # the machine's own pace swung past the bound says nothing of the quote: up to three.
    unsteady: list[str] = []
    for warm_up in (8, 4, 4):  # later rounds skip only their start (3 clients at once)
        errors, swing, figures = _cpu_round(cpu_gateway, warm_up)
        print(f"llama.cpp: {figures.partition('; actual')[0]}")
        if swing <= STEADY:
            assert _p90(errors) <= 0.25, figures
            return
        unsteady.append(figures.partition("; actual")[0])
    pytest.skip(f"the machine did not keep its pace in any round: {' | '.join(unsteady)}")
