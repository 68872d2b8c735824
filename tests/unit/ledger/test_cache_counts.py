"""Cache and reasoning counts in the ledger (schema version 3) and in list prices: a
version-2 file keeps its rows, which read back with 0; new rows keep their counts; reports
sum them, also over a file not yet migrated; records of older Freshets decode with 0; the
list prices of cache reads and writes default to the input price and must not be negative.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import msgspec
import pytest

from gateway.backend import BackendConfig, BackendUsage
from gateway.cost import ListPrice, ListPriceOnly, convert_list_price
from gateway.errors import ConfigError
from gateway.ledger.migrations import MIGRATIONS, SCHEMA_VERSION, migrate, table_columns
from gateway.ledger.record import decode_json
from gateway.ledger.reports import SQLiteRows, cost_report, open_read_only
from gateway.ledger.sqlite import SQLiteLedger, UsageQuery
from tests.unit.ledger.test_migrations import FIXTURE, FIXTURE_RECORDS

COUNTS = ("cached_prompt_tokens", "cache_write_tokens", "reasoning_tokens")
ATTEMPTS = '[{"backend":"a","status":"error"},{"backend":"cpu","status":"ok"}]'


def _v2_ledger(tmp_path: Path) -> Path:
    """The fixture (version 0) taken to version 2, with one row written at version 2."""
    path = tmp_path / "ledger.sqlite3"
    shutil.copyfile(FIXTURE, path)
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, path, MIGRATIONS[:2]) == (0, 2)
    conn.execute(
        "INSERT INTO usage (request_id, ts, backend, model, status, prompt_tokens, "
        "completion_tokens, usd_total, attempts) VALUES "
        "('req-v2', 1764979250.0, 'cpu', 'smollm2-135m', 'ok', 30, 5, 0.5, ?)",
        (ATTEMPTS,),
    )
    conn.close()
    return path


@pytest.mark.asyncio
async def test_a_version_2_ledger_keeps_its_rows_and_takes_the_counts(tmp_path: Path) -> None:
    path = _v2_ledger(tmp_path)

    # Read-only before any gateway migrated it (the CLI after an upgrade): the sums are 0.
    conn = open_read_only(path)
    try:
        before = await cost_report(SQLiteRows(conn), "backend", UsageQuery())
    finally:
        conn.close()
    assert before.totals.requests == 4
    assert (before.totals.cached_prompt_tokens, before.totals.reasoning_tokens) == (0, 0)

    ledger = SQLiteLedger(path.parent)
    await ledger.start()
    try:
        assert await ledger.rows("PRAGMA user_version", []) == [(SCHEMA_VERSION,)]
        old, total = await ledger.query(UsageQuery())
        assert total == 4
        assert old[1:] == FIXTURE_RECORDS  # the version-0 rows, every field as written
        assert (old[0].request_id, old[0].attempts) == ("req-v2", ATTEMPTS)
        for record in old:
            assert [getattr(record, name) for name in COUNTS] == [0, 0, 0]

        new = msgspec.structs.replace(
            FIXTURE_RECORDS[2],
            request_id="req-v3",
            ts=1764979300.0,
            prompt_tokens=2000,
            completion_tokens=800,
            cached_prompt_tokens=1500,
            cache_write_tokens=100,
            reasoning_tokens=500,
        )
        ledger.record(new)
        await ledger.flush()
        records, total = await ledger.query(UsageQuery())
        assert total == 5
        assert records[0] == new
        report = await cost_report(ledger.rows, "backend", UsageQuery())
        (cpu,) = report.rows
        assert (cpu.cached_prompt_tokens, cpu.cache_write_tokens, cpu.reasoning_tokens) == (
            1500,
            100,
            500,
        )
        assert cpu.prompt_tokens == 63 + 30 + 2000
    finally:
        await ledger.aclose()

    conn = sqlite3.connect(path)
    try:
        columns = table_columns(conn)
    finally:
        conn.close()
    assert {name: columns[name] for name in COUNTS} == dict.fromkeys(COUNTS, ("INTEGER", "0"))


def test_records_of_version_2_decode_with_zero_counts() -> None:
    """A Redis entry or spool line written before the counts existed."""
    record = json.loads(msgspec.json.encode(FIXTURE_RECORDS[1]))
    record["attempts"] = ATTEMPTS
    for name in COUNTS:
        del record[name]
    decoded = decode_json(json.dumps(record))
    assert decoded == msgspec.structs.replace(FIXTURE_RECORDS[1], attempts=ATTEMPTS)
    assert [getattr(decoded, name) for name in COUNTS] == [0, 0, 0]


def _config(list_price: dict[str, float]) -> BackendConfig:
    return BackendConfig(id="paid", type="openai-compatible", list_price=list_price, index=2)


def test_cache_prices_default_to_the_input_price() -> None:
    price = convert_list_price(_config({"input_per_mtok": 2.0, "output_per_mtok": 8.0}))
    assert price.cached_input_per_mtok is None
    # Without their own prices, cached and written tokens cost what any prompt token costs.
    assert price.usd(1000, 10, cached_tokens=600, cache_write_tokens=300) == price.usd(1000, 10)
    assert price.usd(1000, 10) == pytest.approx((2000e-6, 80e-6), abs=1e-15)


def test_cache_reads_and_writes_at_their_own_prices() -> None:
    # Anthropic's published prices for Claude Haiku 3.5, $/Mtok (anthropic.com/pricing):
    # input 0.80, 5-minute cache writes 1.00, cache hits 0.08, output 4.
    price = ListPrice(
        input_per_mtok=0.80,
        cache_write_per_mtok=1.00,
        cached_input_per_mtok=0.08,
        output_per_mtok=4.0,
    )
    usd_in, usd_out = price.usd(10_000, 300, cached_tokens=6_000, cache_write_tokens=3_000)
    assert usd_in == pytest.approx((1_000 * 0.80 + 3_000 * 1.00 + 6_000 * 0.08) / 1e6, abs=1e-15)
    assert usd_out == pytest.approx(300 * 4.0 / 1e6, abs=1e-15)
    # Counts beyond the prompt (a confused upstream) are capped: never a negative remainder.
    assert price.usd(100, 0, cached_tokens=500)[0] == pytest.approx(100 * 0.08 / 1e6, abs=1e-15)


def test_the_list_price_model_meters_cache_counts() -> None:
    """Without a cost plugin, the metering prices the backend's usage with its counts."""
    config = _config({"input_per_mtok": 1.10, "cached_input_per_mtok": 0.275})
    cost = ListPriceOnly({}).for_backend(None, config)  # type: ignore[arg-type]
    usage = BackendUsage(prompt_tokens=2000, completion_tokens=0, cached_prompt_tokens=1500)
    costing = cost.begin("r", 2000).end(usage)
    assert costing.usd_input == pytest.approx((500 * 1.10 + 1500 * 0.275) / 1e6, abs=1e-15)


@pytest.mark.parametrize("key", ["input_per_mtok", "cached_input_per_mtok", "cache_write_per_mtok"])
def test_negative_prices_are_config_errors_naming_the_key(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"backends\[2\]\.list_price\.{key}: .* >= 0"):
        convert_list_price(_config({key: -0.5}))
