"""The SQLite ledger's schema versions: a ledger written before versions existed (the
fixture, made by the code of 2026-12-06) opens, keeps its records and takes new ones; an
added field reaches an old file through a step; a newer file is refused, untouched."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest

from gateway.ledger.migrations import (
    MIGRATIONS,
    SCHEMA_VERSION,
    V0_COLUMNS,
    LedgerSchemaError,
    LedgerTooNew,
    Migration,
    add_column,
    check_columns,
    expected_columns,
    migrate,
    schema_version,
    sql_literal,
    table_columns,
)
from gateway.ledger.mirror import MIRROR_FILE, refresh_mirror, start_mirror
from gateway.ledger.reports import SQLiteRows, cost_report, cost_series, open_read_only
from gateway.ledger.sqlite import SQLiteLedger, UsageQuery
from gateway.outcome import UsageRecord
from gateway.settings import RedisSettings

FIXTURE = Path(__file__).parents[2] / "fixtures" / "ledger" / "ledger-v0-2026-12-06.sqlite3"

_COMMON: dict[str, Any] = {
    "requested_model": "smollm2-135m",
    "backend": "cpu",
    "backend_kind": "cpu",
    "model": "smollm2-135m",
    "adapter": None,
    "knowledge_cutoff": "2024-06-01",
    "operation": "chat",
    "ttft_s": 0.05,
    "duration_s": 0.3,
    "joules": 1.5,
    "energy_source": "model",
    "joules_input": 0.5,
    "joules_output": 1.0,
    "usd_energy": 1e-07,
    "usd_capex": 2e-06,
    "usd_list": 0.0,
    "usd_input": 7e-07,
    "usd_output": 1.4e-06,
    "usd_total": 2.1e-06,
}
# What the fixture holds (written by the ledger of 2026-12-06), newest first.
FIXTURE_RECORDS = [
    UsageRecord(
        request_id="req-fixture-2",
        ts=1764979202.0,
        key="alice",
        group=None,
        stream=False,
        status="error",
        error_code="server_error",
        prompt_tokens=22,
        completion_tokens=12,
        fallbacks=0,
        **_COMMON,
    ),
    UsageRecord(
        request_id="req-fixture-1",
        ts=1764979201.0,
        key="alice",
        group="chat",
        stream=True,
        status="ok",
        error_code=None,
        prompt_tokens=21,
        completion_tokens=11,
        fallbacks=1,
        **_COMMON,
    ),
    UsageRecord(
        request_id="req-fixture-0",
        ts=1764979200.0,
        key=None,
        group=None,
        stream=False,
        status="ok",
        error_code=None,
        prompt_tokens=20,
        completion_tokens=10,
        fallbacks=0,
        **_COMMON,
    ),
]


def _new(request_id: str, ts: float, usd: float = 0.01) -> UsageRecord:
    return msgspec.structs.replace(
        FIXTURE_RECORDS[2],
        request_id=request_id,
        ts=ts,
        key="bob",
        backend="asic",
        backend_kind="asic",
        usd_list=usd,
        usd_total=usd,
        fallbacks=2,
    )


@pytest.fixture
def old_ledger(tmp_path: Path) -> Path:
    """A copy of the fixture as a data directory's ledger (the fixture stays untouched)."""
    path = tmp_path / "ledger.sqlite3"
    shutil.copyfile(FIXTURE, path)
    return path


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _schema_sql(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    conn.close()
    return [(str(n), str(s)) for n, s in rows]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_fixture_is_version_0_as_this_module_describes_it(old_ledger: Path) -> None:
    conn = _connect(old_ledger)
    assert schema_version(conn) == 0
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [(name, kind) for name, (kind, _) in table_columns(conn).items()] == list(V0_COLUMNS)
    # Step 1 on a new file writes exactly the table the code of 2026-12-06 wrote.
    fresh = sqlite3.connect(":memory:", isolation_level=None)
    migrate(fresh, ":memory:", MIGRATIONS[:1])
    sql = "SELECT name, sql FROM sqlite_master ORDER BY name"
    assert fresh.execute(sql).fetchall() == conn.execute(sql).fetchall()
    conn.close()


@pytest.mark.asyncio
async def test_an_old_ledger_opens_keeps_its_records_and_takes_new_ones(old_ledger: Path) -> None:
    ledger = SQLiteLedger(old_ledger.parent)
    await ledger.start()
    try:
        assert await ledger.rows("PRAGMA user_version", []) == [(SCHEMA_VERSION,)]
        records, total = await ledger.query(UsageQuery())
        assert total == 3
        assert records == FIXTURE_RECORDS  # every field, as written

        new = [_new("req-new-0", 1764979300.0), _new("req-new-1", 1764979301.0)]
        for record in new:
            ledger.record(record)
        ledger.record(FIXTURE_RECORDS[0])  # an old id again: still counted once
        await ledger.flush()
        records, total = await ledger.query(UsageQuery())
        assert total == 5
        assert records == [*reversed(new), *FIXTURE_RECORDS]

        # Reports over old and new rows together.
        report = await cost_report(ledger.rows, "backend", UsageQuery())
        by_backend = {row.value: row for row in report.rows}
        assert by_backend["cpu"].requests == 3
        assert by_backend["cpu"].errors == 1
        assert by_backend["cpu"].prompt_tokens == 63
        assert by_backend["asic"].requests == 2
        assert by_backend["asic"].usd_total == pytest.approx(0.02)
        assert report.totals.requests == 5
        assert report.totals.usd_total == pytest.approx(0.02 + 3 * 2.1e-06)
        by_key = await cost_report(ledger.rows, "key", UsageQuery())
        assert {row.value: row.requests for row in by_key.rows} == {
            "alice": 2,
            "bob": 2,
            None: 1,
        }
        series = await cost_series(ledger.rows, UsageQuery(since=1764979200.0), now=1764979400.0)
        assert sum(sum(s.requests) for s in series.series) == 5
        only_old = await ledger.query(UsageQuery(until=1764979250.0, status="ok"))
        assert only_old == ([FIXTURE_RECORDS[1], FIXTURE_RECORDS[2]], 2)
    finally:
        await ledger.aclose()

    # The CLI's read-only path reads the migrated file as before.
    conn = open_read_only(old_ledger)
    try:
        report = await cost_report(SQLiteRows(conn), "model", UsageQuery())
    finally:
        conn.close()
    assert report.totals.requests == 5


@pytest.mark.asyncio
async def test_reopening_is_idempotent(old_ledger: Path) -> None:
    for _ in range(3):
        ledger = SQLiteLedger(old_ledger.parent)
        await ledger.start()
        ledger.record(_new(f"req-{_}", 1764979300.0 + _))
        await ledger.aclose()
    after_first = _schema_sql(old_ledger)
    conn = _connect(old_ledger)
    assert schema_version(conn) == SCHEMA_VERSION
    assert migrate(conn, old_ledger) == (SCHEMA_VERSION, SCHEMA_VERSION)  # nothing to do
    assert conn.total_changes == 0
    assert conn.execute("SELECT COUNT(*) FROM usage").fetchone() == (6,)
    conn.close()
    assert _schema_sql(old_ledger) == after_first


def test_a_new_ledger_has_the_columns_usage_record_needs(tmp_path: Path) -> None:
    """Fails when a field is added to UsageRecord without a step (or without a default,
    which old Redis records and old rows need), or with a step whose type or default
    is not the field's."""
    fresh = _connect(tmp_path / "fresh.sqlite3")
    migrate(fresh, "fresh")
    have = table_columns(fresh)
    expected = expected_columns()
    assert list(have) == [c.name for c in expected], "one column per field, in field order"
    v0 = {name for name, _ in V0_COLUMNS}
    for column in expected:
        kind, default = have[column.name]
        assert kind == column.sql_type, column.name
        if column.name in v0:
            continue  # written by every insert since the first version
        assert column.has_default, f"{column.name}: a field added after version 0 needs a default"
        assert default == sql_literal(column.default), f"{column.name}: the column's default"
    check_columns(fresh, "fresh")
    fresh.close()


def test_an_upgraded_ledger_and_a_new_one_have_one_schema(old_ledger: Path, tmp_path: Path) -> None:
    old, fresh = _connect(old_ledger), _connect(tmp_path / "fresh.sqlite3")
    migrate(old, old_ledger)
    migrate(fresh, "fresh")
    assert table_columns(old) == table_columns(fresh)
    sql = "SELECT name, sql FROM sqlite_master ORDER BY name"
    assert old.execute(sql).fetchall() == fresh.execute(sql).fetchall()
    old.close()
    fresh.close()


def test_steps_are_numbered_from_one() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))
    conn = sqlite3.connect(":memory:", isolation_level=None)
    with pytest.raises(ValueError, match="steps are 1, 2, 3"):
        migrate(conn, ":memory:", [Migration(2, "skips one", add_column("x", "TEXT", None))])
    conn.close()


# -- a field added later ----------------------------------------------------------------


class FutureRecord(UsageRecord, kw_only=True):
    """UsageRecord with a field added after today, with its default."""

    region: str = "eu"
    cached: bool = False


FUTURE_MIGRATIONS = (
    *MIGRATIONS,
    Migration(SCHEMA_VERSION + 1, "usage.region", add_column("region", "TEXT", "eu")),
    Migration(SCHEMA_VERSION + 2, "usage.cached", add_column("cached", "INTEGER", False)),
)


class FutureLedger(SQLiteLedger):
    record_type: ClassVar[type[UsageRecord]] = FutureRecord
    migrations: ClassVar[Sequence[Migration]] = FUTURE_MIGRATIONS


@pytest.mark.asyncio
async def test_a_field_added_later_reaches_an_old_file(old_ledger: Path) -> None:
    ledger = FutureLedger(old_ledger.parent)
    await ledger.start()
    try:
        assert await ledger.rows("PRAGMA user_version", []) == [(len(FUTURE_MIGRATIONS),)]
        records, total = await ledger.query(UsageQuery())
        assert total == 3
        # The old rows read back with the new fields' defaults, the rest as written.
        assert records == [
            FutureRecord(**msgspec.structs.asdict(r), region="eu", cached=False)
            for r in FIXTURE_RECORDS
        ]
        assert all(type(r) is FutureRecord and r.cached is False for r in records)
        new = FutureRecord(
            **msgspec.structs.asdict(_new("req-future", 1764979300.0)), region="us", cached=True
        )
        ledger.record(new)
        await ledger.flush()
        records, total = await ledger.query(UsageQuery())
        assert (records[0], total) == (new, 4)
        report = await cost_report(ledger.rows, "backend", UsageQuery())
        assert report.totals.requests == 4
        assert await ledger.rows(
            "SELECT region, COUNT(*) FROM usage GROUP BY region ORDER BY region", []
        ) == [("eu", 3), ("us", 1)]
    finally:
        await ledger.aclose()
    conn = _connect(old_ledger)
    assert table_columns(conn)["region"] == ("TEXT", "'eu'")
    assert table_columns(conn)["cached"] == ("INTEGER", "0")
    # A Freshet from before versions (a downgrade) inserts only the columns it knows:
    # its rows get the new columns' defaults.
    conn.execute(
        "INSERT INTO usage (request_id, ts, stream, fallbacks) VALUES ('req-old-code', 1.0, 0, 0)"
    )
    assert conn.execute(
        "SELECT region, cached FROM usage WHERE request_id = 'req-old-code'"
    ).fetchone() == ("eu", 0)
    conn.close()


@pytest.mark.asyncio
async def test_a_field_without_a_step_is_refused_at_open(old_ledger: Path) -> None:
    class Forgotten(SQLiteLedger):
        record_type: ClassVar[type[UsageRecord]] = FutureRecord  # no step adds its fields

    ledger = Forgotten(old_ledger.parent)
    with pytest.raises(LedgerSchemaError, match="no column for region, cached"):
        await ledger.start()
    await ledger.aclose()


@pytest.mark.asyncio
async def test_a_ledger_from_a_newer_freshet_is_refused_and_left_as_it_was(
    old_ledger: Path,
) -> None:
    newer = FutureLedger(old_ledger.parent)
    await newer.start()
    newer.record(FutureRecord(**msgspec.structs.asdict(_new("req-future", 1.0)), region="us"))
    await newer.aclose()
    before = _digest(old_ledger)
    wal = old_ledger.with_name(old_ledger.name + "-wal")
    assert not wal.exists()  # closed cleanly: everything is in the main file

    today = SQLiteLedger(old_ledger.parent)
    found, known = len(FUTURE_MIGRATIONS), len(MIGRATIONS)
    with pytest.raises(
        LedgerTooNew, match=rf"schema version {found}, newer than this Freshet knows \({known}\)"
    ):
        await today.start()
    await today.aclose()
    assert _digest(old_ledger) == before
    assert not wal.exists() or wal.stat().st_size == 0
    conn = _connect(old_ledger)
    assert schema_version(conn) == len(FUTURE_MIGRATIONS)
    assert conn.execute("SELECT COUNT(*) FROM usage").fetchone() == (4,)
    conn.close()
    # Reading it (the CLI's reports) still works: steps only add.
    ro = open_read_only(old_ledger)
    try:
        assert (await cost_report(SQLiteRows(ro), "backend", UsageQuery())).totals.requests == 4
    finally:
        ro.close()


def test_a_step_that_fails_leaves_the_file_as_it_was(old_ledger: Path) -> None:
    def breaks(conn: sqlite3.Connection) -> None:
        conn.execute('ALTER TABLE usage ADD COLUMN "half" TEXT DEFAULT NULL')
        raise RuntimeError("disk on fire")

    conn = _connect(old_ledger)
    steps = (*MIGRATIONS, Migration(SCHEMA_VERSION + 1, "breaks", breaks))
    with pytest.raises(RuntimeError, match="disk on fire"):
        migrate(conn, old_ledger, steps)
    assert not conn.in_transaction
    assert schema_version(conn) == 0
    assert "half" not in table_columns(conn)
    assert conn.execute("SELECT COUNT(*) FROM usage").fetchone() == (3,)
    conn.close()


def test_processes_opening_one_old_file_at_once_migrate_it_once(old_ledger: Path) -> None:
    steps = (*MIGRATIONS, Migration(SCHEMA_VERSION + 1, "x", add_column("x", "TEXT", None)))
    barrier = threading.Barrier(4)
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def open_it() -> None:
        conn = sqlite3.connect(old_ledger, isolation_level=None, timeout=10)
        try:
            barrier.wait()
            results.append(migrate(conn, old_ledger, steps))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    latest = len(steps)
    assert sorted(results) == [(0, latest)] + [(latest, latest)] * 3
    conn = _connect(old_ledger)
    assert schema_version(conn) == latest
    conn.close()


# -- the Redis ledger's mirror --------------------------------------------------------


def _stamp(path: Path, version: int) -> None:
    conn = _connect(path)
    migrate(conn, path)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


@pytest.mark.asyncio
async def test_a_newer_mirror_is_refused_with_how_to_rebuild_it(tmp_path: Path) -> None:
    _stamp(tmp_path / MIRROR_FILE, SCHEMA_VERSION + 1)
    db = SQLiteLedger(tmp_path, MIRROR_FILE)
    with pytest.raises(LedgerTooNew, match=r"mirror, a cache .* rebuilt from Redis"):
        await start_mirror(db)
    await db.aclose()


@pytest.mark.asyncio
async def test_cost_report_reads_a_newer_mirror_as_last_synced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _stamp(tmp_path / MIRROR_FILE, SCHEMA_VERSION + 1)
    # No Redis is asked: the unreachable URL is never dialled.
    path = await refresh_mirror(RedisSettings(url="redis://127.0.0.1:1/0"), tmp_path)
    assert path == tmp_path / MIRROR_FILE
    assert "newer than this Freshet knows" in caplog.text
    conn = _connect(path)
    assert schema_version(conn) == SCHEMA_VERSION + 1
    conn.close()
