"""Traces: the Azure files, any CSV or JSON lines, the ledger; malformed rows name file:line."""

from __future__ import annotations

import datetime as dt
import itertools
import tracemalloc
from pathlib import Path

import pytest

from gateway.ledger.sqlite import SQLiteLedger
from gateway.outcome import UsageRecord
from gateway.protocol import Freshness
from gateway.replay.traces import (
    TraceError,
    TraceRequest,
    merge,
    read,
    read_ledger,
    reshape,
    resolve_source,
    synthesize,
)

AZURE = Path(__file__).parents[2] / "fixtures" / "traces" / "azure"


def azure(name: str) -> list[TraceRequest]:
    return list(read(*resolve_source(name, str(AZURE))))


def test_the_azure_slice_reads_as_the_dataset_describes_it() -> None:
    code = azure("azure-code")
    assert len(code) == 300
    first = code[0]
    # 2023-11-16 18:17:03.9799600,4808,10 (no time zone: read as UTC)
    at = dt.datetime(2023, 11, 16, 18, 17, 3, 979960, tzinfo=dt.UTC).timestamp()
    assert first.at == pytest.approx(at, abs=1e-6)
    assert (first.prompt_tokens, first.output_tokens, first.cls) == (4808, 10, "azure-code")
    assert first.freshness is None
    assert first.model is None
    # The last row has no line ending, and is read all the same.
    assert (code[-1].prompt_tokens, code[-1].output_tokens) == (176, 88)
    assert all(b.at >= a.at for a, b in itertools.pairwise(code))


def test_two_traces_merge_in_arrival_order() -> None:
    merged = list(
        merge([read(*resolve_source(n, str(AZURE))) for n in ("azure-code", "azure-conv")])
    )
    assert len(merged) == 600
    assert [r.at for r in merged] == sorted(r.at for r in merged)
    assert {r.cls for r in merged} == {"azure-code", "azure-conv"}


def test_a_trace_name_needs_its_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FRESHET_TRACE_DIR", raising=False)
    with pytest.raises(TraceError, match="--data-dir or \\$FRESHET_TRACE_DIR"):
        resolve_source("azure-code", None)
    monkeypatch.setenv("FRESHET_TRACE_DIR", str(AZURE))
    assert resolve_source("azure-conv", None)[1] == "azure-conv"
    with pytest.raises(TraceError, match=r"no AzureLLMInferenceTrace_code\.csv"):
        resolve_source("azure-code", str(tmp_path))
    with pytest.raises(TraceError, match="no such file"):
        resolve_source(str(tmp_path / "nope.csv"), None)


@pytest.mark.parametrize(
    ("rows", "line", "reason"),
    [
        (["2023-11-16 18:00:00.5,10,x"], 2, "output tokens must be a whole number"),
        (["2023-11-16 18:00:00.5,10"], 2, "2 fields, the header has 3"),
        (["2023-11-16 18:00:01,10,5", "2023-11-16 18:00:00,10,5"], 3, "go back in time"),
        (["2023-11-16 18:00:01,10,5", "yesterday,10,5"], 3, "neither seconds nor an ISO-8601"),
        (["2023-11-16 18:00:01,-3,5"], 2, "prompt tokens must be a whole number >= 0"),
        (["2023-11-16 18:00:01,10,5", ""], 3, "empty row"),
        (["2023-02-30 18:00:01,10,5"], 2, "no such date"),
    ],
)
def test_a_malformed_row_names_its_file_and_line(
    tmp_path: Path, rows: list[str], line: int, reason: str
) -> None:
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    with pytest.raises(TraceError) as info:
        list(read(path, "t"))
    assert info.value.message.startswith(f"{path}:{line}: ")
    assert reason in info.value.message


def test_a_header_without_the_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("when,prompt\n1,2\n")
    with pytest.raises(TraceError, match=r"t\.csv:1: the header needs an arrival time"):
        list(read(path, "t"))


def test_a_csv_with_model_freshness_key_and_class(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text(
        "arrival_s,prompt_tokens,output_tokens,model,freshness,key,class\n"
        "0.5,100,20,auto,365d,team-a,chat\n"
        "1.0,200,40,,2025-01-01,,\n"
        "1.5,300,60,llama,none,,code\n"
    )
    rows = list(read(path, "mine"))
    assert [r.at for r in rows] == [0.5, 1.0, 1.5]
    assert rows[0].freshness == Freshness(max_staleness_days=365)
    assert rows[1].freshness == Freshness(min_knowledge_cutoff=dt.date(2025, 1, 1))
    assert rows[2].freshness == Freshness()  # "none": asks for nothing (no mix applies)
    assert [r.model for r in rows] == ["auto", None, "llama"]
    assert [r.key for r in rows] == ["team-a", None, None]
    assert [r.cls for r in rows] == ["chat", "mine", "code"]


def test_a_bad_freshness_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("ts,prompt_tokens,output_tokens,freshness\n1,1,1,soon\n")
    with pytest.raises(TraceError, match=r"t\.csv:2: a freshness need is none, Nd"):
        list(read(path, "t"))


def test_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"timestamp": "2026-01-01T00:00:01Z", "prompt_tokens": 5, "output_tokens": 7}\n'
        "\n"
        '{"timestamp": 1767225602.5, "input_tokens": 6, "completion_tokens": 8, '
        '"freshness": "90d", "model": "auto"}\n'
    )
    rows = list(read(path, "t"))
    assert [(r.prompt_tokens, r.output_tokens) for r in rows] == [(5, 7), (6, 8)]
    assert rows[0].at == dt.datetime(2026, 1, 1, 0, 0, 1, tzinfo=dt.UTC).timestamp()
    assert rows[1].freshness == Freshness(max_staleness_days=90)
    path.write_text('{"timestamp": 1, "prompt_tokens": 5}\n[1, 2]\n')
    with pytest.raises(TraceError, match=r"t\.jsonl:1: no output tokens"):
        list(read(path, "t"))
    path.write_text('{"timestamp": 1, "prompt_tokens": 5, "output_tokens": 1}\n{nope\n')
    with pytest.raises(TraceError, match=r"t\.jsonl:2: not JSON"):
        list(read(path, "t"))


def test_rate_sample_window_and_limit() -> None:
    code = azure("azure-code")
    start = code[0].at
    faster = list(reshape(iter(code), rate=4.0))
    assert faster[-1].at - start == pytest.approx((code[-1].at - start) / 4)
    window = list(reshape(iter(code), window=(10.0, 60.0)))
    assert window
    assert all(10.0 <= r.at - start < 60.0 for r in window)
    half = [r.at for r in reshape(iter(code), sample=0.5, seed=3)]
    assert 100 < len(half) < 200
    assert half == [r.at for r in reshape(iter(code), sample=0.5, seed=3)]  # the same ones
    assert len(list(reshape(iter(code), limit=7))) == 7


def test_synthesis_draws_from_the_trace_without_growing() -> None:
    code = azure("azure-code")
    prompts = {r.prompt_tokens for r in code}
    tracemalloc.start()
    count = 0
    before = 0
    for r in synthesize(iter(code), 60_000, seed=1):
        assert r.prompt_tokens in prompts
        count += 1
        if count == 10_000:
            before = tracemalloc.get_traced_memory()[0]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert count == 60_000
    assert after - before < 50_000  # bytes: nothing kept per request


@pytest.mark.asyncio
async def test_the_ledger_is_a_trace(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path)
    await ledger.start()
    for i, ts in enumerate((100.0, 50.0, 200.0)):
        ledger.record(_record(f"r{i}", ts, prompt=10 + i, completion=20 + i))
    await ledger.aclose()
    rows = list(read_ledger(tmp_path / "ledger.sqlite3", since=60.0, until=None))
    assert [(r.at, r.prompt_tokens, r.output_tokens) for r in rows] == [
        (100.0, 10, 20),
        (200.0, 12, 22),
    ]
    assert rows[0].model == "auto"
    assert rows[0].key == "team"
    assert rows[0].cls == "ledger"
    with pytest.raises(TraceError, match="no ledger at"):
        list(read_ledger(tmp_path / "none.sqlite3", None, None))


def _record(request_id: str, ts: float, prompt: int, completion: int) -> UsageRecord:
    return UsageRecord(
        request_id=request_id, ts=ts, key="team", group="auto", requested_model="auto",
        backend="b", backend_kind="cpu", model="m", adapter=None, knowledge_cutoff=None,
        operation="chat", stream=False, status="ok", error_code=None, prompt_tokens=prompt,
        completion_tokens=completion, ttft_s=0.1, duration_s=0.2, joules=1.0,
        energy_source="model", joules_input=0.5, joules_output=0.5, usd_energy=0.0,
        usd_capex=0.0, usd_list=0.0, usd_input=0.0, usd_output=0.0, usd_total=0.0,
    )  # fmt: skip
