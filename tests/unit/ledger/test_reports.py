"""Usage records and cost reports over HTTP: in-process app, deterministic backends.

The backends carry list prices, so dollars are non-zero with or without an energy
plugin; joules are whatever the installed cost model records (``None`` without one),
and every check compares the report against the records themselves.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from litestar.testing import AsyncTestClient

from gateway.api.app import create_app
from gateway.api.runtime import Runtime
from gateway.errors import InvalidRequest
from gateway.ledger.formats import significant, to_table, usd
from gateway.ledger.reports import GROUP_BY, CostReport, ReportRow, parse_time
from gateway.ledger.sqlite import UsageQuery
from gateway.settings import load_settings
from tests.support.inprocess import wait_ready

Client = AsyncTestClient[Any]

CONFIG: dict[str, Any] = {
    "backends": [
        {
            "id": "alpha",
            "type": "deterministic",
            "knowledge_cutoff": "unknown",
            "model": "m-alpha",
            "profile": {"watts_idle": 5, "watts_active": 40, "capex_per_hour": 0.08},
            "list_price": {"input_per_mtok": 0.5, "output_per_mtok": 1.5},
        },
        {
            "id": "beta",
            "type": "deterministic",
            "knowledge_cutoff": "unknown",
            "model": "m-beta",
            "profile": {"kind": "gpu", "watts_idle": 100, "watts_active": 400},
            "list_price": {"input_per_mtok": 2.0, "output_per_mtok": 8.0},
        },
        {
            "id": "flaky",
            "type": "deterministic",
            "knowledge_cutoff": "unknown",
            "model": "m-flaky",
            "fail_after_tokens": 2,
            "list_price": {"input_per_mtok": 1.0, "output_per_mtok": 1.0},
        },
    ],
    "groups": {"chat": ["alpha"]},
}
# (model, stream, words in the prompt, max_tokens)
REQUESTS: list[tuple[str, bool, int, int]] = [
    ("m-alpha", False, 3, 5),
    ("m-alpha", True, 7, 9),
    ("m-alpha", False, 12, 4),
    ("m-beta", False, 2, 16),
    ("m-beta", True, 5, 3),
    ("m-beta", False, 9, 7),
    ("m-beta", True, 1, 11),
    ("chat", False, 4, 6),
    ("chat", True, 6, 2),
    ("m-flaky", False, 3, 8),
    ("m-flaky", True, 4, 8),
]
N = len(REQUESTS)


def _chat(model: str, stream: bool, words: int, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": " ".join(["word"] * words)}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


async def _wait_for_records(client: Client, n: int) -> None:
    """Streamed requests are recorded when their stream ends, just after the last byte."""
    for _ in range(500):
        if (await client.get("/freshet/usage", params={"limit": 1})).json()["total"] >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {n} usage records after 5 s")


@pytest_asyncio.fixture
async def loaded(tmp_path: Any) -> AsyncIterator[Client]:
    path = tmp_path / "c.yaml"
    path.write_bytes(msgspec.yaml.encode(CONFIG))
    settings = load_settings(str(path), env={"FRESHET_DATA_DIR": str(tmp_path / "data")})
    async with AsyncTestClient(app=create_app(settings, Runtime(settings))) as client:
        await wait_ready(client)
        for request in REQUESTS:
            resp = await client.post("/v1/chat/completions", json=_chat(*request))
            assert resp.status_code in (200, 502), resp.text
        await _wait_for_records(client, N)
        yield client


async def _records(client: Client, **params: Any) -> list[dict[str, Any]]:
    resp = await client.get("/freshet/usage", params={"limit": 1000, **params})
    assert resp.status_code == 200, resp.text
    data: list[dict[str, Any]] = resp.json()["data"]
    return data


@pytest.mark.asyncio
async def test_usage_pages_through_every_record_newest_first(loaded: Client) -> None:
    seen: list[dict[str, Any]] = []
    for offset in range(0, N + 4, 4):
        page = (await loaded.get("/freshet/usage", params={"limit": 4, "offset": offset})).json()
        assert (page["total"], page["limit"], page["offset"]) == (N, 4, offset)
        assert len(page["data"]) == min(4, max(0, N - offset))
        seen += page["data"]
    assert len({r["request_id"] for r in seen}) == N
    stamps = [r["ts"] for r in seen]
    assert stamps == sorted(stamps, reverse=True)
    default = (await loaded.get("/freshet/usage")).json()
    assert (default["limit"], default["offset"], len(default["data"])) == (100, 0, N)


@pytest.mark.asyncio
async def test_usage_filters(loaded: Client) -> None:
    every = await _records(loaded)
    assert len(every) == N
    by_model = {r["requested_model"] for r in every}
    assert by_model == {"m-alpha", "m-beta", "chat", "m-flaky"}
    for field, value in [
        ("backend", "beta"),
        ("backend", "alpha"),
        ("model", "m-alpha"),
        ("group", "chat"),
        ("status", "error"),
        ("status", "ok"),
    ]:
        got = await _records(loaded, **{field: value})
        assert got, (field, value)
        assert {r["request_id"] for r in got} == {
            r["request_id"] for r in every if r[field] == value
        }
    assert len(await _records(loaded, backend="beta")) == 4
    assert len(await _records(loaded, group="chat")) == 2
    assert len(await _records(loaded, status="error")) == 2
    assert await _records(loaded, backend="nope") == []
    # Time bounds in every accepted form.
    oldest = min(r["ts"] for r in every)
    assert len(await _records(loaded, since="1h")) == N
    assert len(await _records(loaded, since=str(oldest))) == N
    assert await _records(loaded, until=str(oldest)) == []  # until is exclusive
    assert await _records(loaded, since="2999-01-01T00:00:00Z") == []
    assert len(await _records(loaded, until="2999-01-01")) == N


def _expected(records: list[dict[str, Any]], group_by: str) -> dict[str | None, dict[str, Any]]:
    """The report's rows, computed in Python from the records."""
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for r in records:
        if group_by == "hour":
            moment = dt.datetime.fromtimestamp(r["ts"], dt.UTC)
            value: str | None = moment.strftime("%Y-%m-%dT%H:00:00Z")
        else:
            value = r[group_by]
        groups.setdefault(value, []).append(r)
    return {value: _sums(rows) for value, rows in groups.items()}


def _sums(rows: list[dict[str, Any]]) -> dict[str, Any]:
    metered = [r for r in rows if r["joules"] is not None]

    def total(field: str, of: list[dict[str, Any]]) -> Any:
        return sum(r[field] for r in of) if of else None

    return {
        "requests": len(rows),
        "errors": sum(r["status"] == "error" for r in rows),
        **{f: sum(r[f] for r in rows) for f in ("prompt_tokens", "completion_tokens")},
        **{f: total(f, metered) for f in ("joules", "joules_input", "joules_output")},
        **{
            f: sum(r[f] for r in rows)
            for f in ("usd_energy", "usd_capex", "usd_list", "usd_total", "usd_input", "usd_output")
        },
    }


def _assert_matches(row: dict[str, Any], expected: dict[str, Any]) -> None:
    for field, value in expected.items():
        if value is None:
            assert row[field] is None, field
        else:
            assert row[field] == pytest.approx(value, rel=1e-9, abs=1e-15), field


@pytest.mark.asyncio
@pytest.mark.parametrize("group_by", GROUP_BY)
async def test_report_sums_equal_the_records(loaded: Client, group_by: str) -> None:
    records = await _records(loaded)
    resp = await loaded.get("/freshet/cost/report", params={"group_by": group_by})
    assert resp.status_code == 200, resp.text
    report = resp.json()
    assert (report["group_by"], report["since"], report["until"]) == (group_by, None, None)
    expected = _expected(records, group_by)
    assert {row["value"] for row in report["rows"]} == set(expected)
    for row in report["rows"]:
        _assert_matches(row, expected[row["value"]])
    _assert_matches(report["totals"], _sums(records))
    assert report["totals"]["value"] is None
    assert report["totals"]["requests"] == N
    assert report["totals"]["usd_total"] > 0


@pytest.mark.asyncio
async def test_report_ratios_and_order(loaded: Client) -> None:
    report = (await loaded.get("/freshet/cost/report", params={"group_by": "backend"})).json()
    rows = {row["value"]: row for row in report["rows"]}
    alpha = rows["alpha"]
    assert alpha["usd_list"] == pytest.approx(
        (alpha["prompt_tokens"] * 0.5 + alpha["completion_tokens"] * 1.5) / 1e6
    )
    for row in report["rows"]:
        assert row["usd_per_mtok_output"] == pytest.approx(
            row["usd_output"] / row["completion_tokens"] * 1e6
        )
        assert row["usd_per_mtok_input"] == pytest.approx(
            row["usd_input"] / row["prompt_tokens"] * 1e6
        )
        if row["joules"] is None:
            assert row["j_per_output_token"] is None
    costs = [row["usd_total"] for row in report["rows"]]
    assert costs == sorted(costs, reverse=True)  # most expensive first
    hours = (await loaded.get("/freshet/cost/report", params={"group_by": "hour"})).json()
    assert [r["value"] for r in hours["rows"]] == sorted(r["value"] for r in hours["rows"])


@pytest.mark.asyncio
async def test_empty_range_has_zero_totals_and_null_ratios(loaded: Client) -> None:
    resp = await loaded.get("/freshet/cost/report", params={"since": "2999-01-01"})
    report = resp.json()
    assert report["rows"] == []
    totals = report["totals"]
    assert (totals["requests"], totals["prompt_tokens"], totals["usd_total"]) == (0, 0, 0.0)
    assert totals["joules"] is None
    assert totals["j_per_input_token"] is None
    assert totals["usd_per_mtok_output"] is None


@pytest.mark.asyncio
@pytest.mark.parametrize("group_by", ["backend", "hour", "key"])
async def test_csv_parses_and_matches_the_json(loaded: Client, group_by: str) -> None:
    params = {"group_by": group_by, "since": "24h"}
    data = (await loaded.get("/freshet/cost/report", params=params)).json()
    resp = await loaded.get("/freshet/cost/report", params={**params, "format": "csv"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert next(iter(rows[0])) == group_by
    assert len(rows) == len(data["rows"])
    for line, row in zip(rows, data["rows"], strict=True):
        assert (line[group_by] or None) == row["value"]
        for field, value in row.items():
            if field == "value":
                continue
            cell = line[field]
            if value is None:
                assert cell == "", field
            else:
                assert float(cell) == value, field


@pytest.mark.asyncio
async def test_series_adds_up_to_the_report(loaded: Client) -> None:
    resp = await loaded.get("/freshet/cost/series", params={"since": "1h"})
    assert resp.status_code == 200, resp.text
    series = resp.json()
    assert (series["bucket"], series["bucket_s"]) == ("minute", 60)
    assert 60 <= len(series["buckets"]) <= 62
    starts = series["starts"]
    assert all(b - a == 60 for a, b in itertools.pairwise(starts))
    assert series["buckets"][0].endswith(":00Z")
    report = (await loaded.get("/freshet/cost/report", params={"since": "1h"})).json()
    rows = {row["value"]: row for row in report["rows"]}
    assert {s["backend"] for s in series["series"]} == set(rows)
    for line in series["series"]:
        assert len(line["usd_total"]) == len(series["buckets"])
        assert sum(line["requests"]) == rows[line["backend"]]["requests"]
        assert sum(line["usd_total"]) == pytest.approx(rows[line["backend"]]["usd_total"])
        joules = [j for j in line["joules"] if j is not None]
        expected = rows[line["backend"]]["joules"]
        assert (sum(joules) if joules else None) == pytest.approx(expected)
    hourly = (await loaded.get("/freshet/cost/series", params={"bucket": "hour"})).json()
    assert hourly["bucket"] == "hour"
    assert sum(sum(s["requests"]) for s in hourly["series"]) == N
    everything = (await loaded.get("/freshet/cost/series", params={"since": "0"})).json()
    assert everything["bucket"] == "minute"  # from the first record, not from 1970
    assert sum(sum(s["requests"]) for s in everything["series"]) == N
    empty = (await loaded.get("/freshet/cost/series", params={"backend": "nope"})).json()
    assert (empty["buckets"], empty["series"]) == ([], [])


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/freshet/cost/report", {"group_by": "colour"}, "group_by"),
        ("/freshet/cost/report", {"format": "xml"}, "format"),
        ("/freshet/cost/report", {"since": "yesterday"}, "since"),
        ("/freshet/cost/report", {"until": "2025-13-45"}, "until"),
        ("/freshet/cost/report", {"since": "1h", "until": "2h"}, "until"),
        ("/freshet/cost/series", {"bucket": "week"}, "bucket"),
        ("/freshet/cost/series", {"bucket": "minute", "since": "30d"}, "bucket"),
        ("/freshet/usage", {"limit": "0"}, "limit"),
        ("/freshet/usage", {"limit": "1001"}, "limit"),
        ("/freshet/usage", {"limit": "many"}, "limit"),
        ("/freshet/usage", {"offset": "-1"}, "offset"),
        ("/freshet/usage", {"status": "fine"}, "status"),
        ("/freshet/usage", {"since": "nan"}, "since"),
    ],
)
async def test_bad_params_are_400_naming_the_param(
    loaded: Client, path: str, params: dict[str, str], param: str
) -> None:
    resp = await loaded.get(path, params=params)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param in error["message"]


def test_parse_time_forms() -> None:
    now = 1_750_000_000.0
    assert parse_time("24h", param="since", now=now) == now - 86400
    assert parse_time("30m", param="since", now=now) == now - 1800
    assert parse_time("7d", param="since", now=now) == now - 7 * 86400
    assert parse_time("1.5h", param="since", now=now) == now - 5400
    assert parse_time("1700000000", param="since") == 1_700_000_000
    assert (
        parse_time("2025-01-02", param="since")
        == dt.datetime(2025, 1, 2, tzinfo=dt.UTC).timestamp()
    )
    utc = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC).timestamp()
    assert parse_time("2025-01-02T03:04:05Z", param="since") == utc
    assert parse_time("2025-01-02T03:04:05", param="since") == utc
    assert parse_time("2025-01-02T05:04:05+02:00", param="since") == utc
    for bad in ("", "soon", "-5", "inf", "24x", "h"):
        with pytest.raises(InvalidRequest, match="since must be") as info:
            parse_time(bad, param="since")
        assert info.value.param == "since"


@pytest.mark.parametrize(
    ("fn", "value", "text"),
    [
        (significant, None, "-"),
        (significant, 0.0, "0"),
        (significant, 0.123456, "0.123"),
        (significant, 0.0000123456, "0.0000123"),
        (significant, 12.3456, "12.3"),
        (significant, 123456.0, "123,456"),
        (usd, 0.0, "$0"),
        (usd, 0.000001234, "$0.00000123"),
        (usd, 0.5, "$0.500"),
        (usd, 1234.567, "$1,234.57"),
        (usd, None, "-"),
    ],
)
def test_number_formats(fn: Callable[[Any], str], value: Any, text: str) -> None:
    assert fn(value) == text


def test_table_has_aligned_rows_and_a_totals_line() -> None:
    def row(value: str | None, requests: int, usd_total: float) -> ReportRow:
        return ReportRow(
            value=value,
            requests=requests,
            errors=0,
            prompt_tokens=1000 * requests,
            completion_tokens=20,
            joules=None if value is None else 1.5,
            joules_input=0.5,
            joules_output=1.0,
            usd_energy=0.0,
            usd_capex=0.0,
            usd_list=usd_total,
            usd_total=usd_total,
            usd_input=0.0,
            usd_output=usd_total,
            j_per_input_token=0.0005,
            j_per_output_token=0.05,
            usd_per_mtok_input=0.0,
            usd_per_mtok_output=usd_total / 20 * 1e6,
        )

    report = CostReport(
        group_by="model",
        since=time.time() - 3600,
        until=None,
        rows=[row("llama-3.1-8b", 3, 0.00042), row("smollm2-135m", 12, 0.000001)],
        totals=row(None, 15, 0.000421),
    )
    lines = to_table(report).splitlines()
    assert lines[0].startswith("Cost by model, ")
    assert lines[0].endswith(" to now")
    header, rule, first, second, rule2, total = lines[2:]
    assert header.split()[:3] == ["model", "requests", "errors"]
    assert rule == rule2
    assert first.split()[:4] == ["llama-3.1-8b", "3", "0", "3,000"]
    assert "$0.00000100" in second
    assert total.split()[:3] == ["total", "15", "0"]
    assert len({len(line) for line in (header, first, second, total)}) == 1  # aligned
    empty = CostReport(group_by="hour", since=None, until=None, rows=[], totals=report.totals)
    assert "no usage recorded" in to_table(empty)
    assert UsageQuery().limit == 100  # the API's default page size is the ledger's
