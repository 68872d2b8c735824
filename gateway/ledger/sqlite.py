"""The ledger: durable usage records, written off the request's hot path.

Embedded default: SQLite in WAL mode under ``FRESHET_DATA_DIR``. Records are queued in
memory by the request and written in batches by one writer task every
:data:`FLUSH_INTERVAL_S`; a gateway killed with SIGKILL loses the records of about that
last interval (measured up to ~100 ms on a busy machine: docs/shared-state.md), and a
SIGTERM (graceful shutdown) loses none: the lifespan flushes the
queue after the server has finished its requests. ``synchronous=NORMAL`` in WAL mode
keeps committed records across a process crash (they sit in the OS page cache).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path
from typing import Any, ClassVar, Protocol

from msgspec import Struct
from msgspec.structs import astuple

from gateway.errors import BackendUnavailable
from gateway.ledger.migrations import (
    MIGRATIONS,
    Migration,
    check_columns,
    expected_columns,
    migrate,
    refuse_newer,
)
from gateway.outcome import UsageRecord
from gateway.state.keys_sqlite import retry_locked

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.05
_MAX_ROWS = 256  # rows in one INSERT (x 50 columns: far below SQLite's 250,000 variables)


class UsageQuery(Struct, kw_only=True):
    since: float | None = None
    until: float | None = None
    backend: str | None = None
    model: str | None = None
    key: str | None = None
    group: str | None = None
    status: str | None = None
    limit: int = 100
    offset: int = 0


class Ledger(Protocol):
    def record(self, record: UsageRecord) -> None: ...

    async def start(self) -> None: ...

    async def flush(self) -> None: ...

    async def aclose(self) -> None: ...

    async def query(self, query: UsageQuery) -> tuple[list[UsageRecord], int]: ...

    async def rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]: ...


class SQLiteLedger:
    """The schema is versioned (:mod:`gateway.ledger.migrations`): opening a file runs the
    steps it lacks, and refuses a file from a newer Freshet without writing to it."""

    record_type: ClassVar[type[UsageRecord]] = UsageRecord
    migrations: ClassVar[Sequence[Migration]] = MIGRATIONS

    def __init__(self, data_dir: Path, filename: str = "ledger.sqlite3") -> None:
        self.path = data_dir / filename
        self._pending: list[UsageRecord] = []
        # One thread owns the connection: writes and reads are serialised there.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._conn: sqlite3.Connection | None = None
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        columns = expected_columns(self.record_type)
        self._columns = tuple(c.name for c in columns)  # the struct's fields, in order
        self._quoted = ", ".join(f'"{c}"' for c in self._columns)
        self._row = f"({', '.join('?' for _ in self._columns)})"
        self._inserts: dict[int, str] = {}  # rows a statement -> the statement
        self._bools = tuple(c.name for c in columns if c.is_bool)
        # A NULL where the field has a default reads as the default.
        self._defaults = tuple(
            (c.name, c.default) for c in columns if c.has_default and c.default is not None
        )

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            refuse_newer(conn, self.path, self.migrations)  # before anything is written
            # Several workers may open a new file at once (gateway.state.keys_sqlite).
            retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            conn.execute("PRAGMA synchronous=NORMAL")
            migrate(conn, self.path, self.migrations)
            check_columns(conn, self.path, self.record_type)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        await self._run(self._open)
        self._writer = asyncio.create_task(self._write_loop(), name="freshet-ledger-writer")

    def record(self, record: UsageRecord) -> None:
        """Queue a record; never blocks, never does I/O."""
        self._pending.append(record)
        self._wake.set()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_INTERVAL_S)  # gather a batch
            self._wake.clear()
            try:
                await self.flush()
            except sqlite3.Error:
                log.exception("ledger write failed; records stay queued and are retried")

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            await self._run(self._write, batch)
        except BaseException:
            self._pending[:0] = batch  # keep them for the next try
            raise

    def _write(self, batch: list[UsageRecord]) -> None:
        assert self._conn is not None
        # The columns are the struct's fields in order: one C call a row. The rows go in
        # a few statements of many rows each (a power of two, so that few statements are
        # ever prepared): SQLite inserts a statement's rows in one step, and this thread
        # gives the GIL back to the event loop and takes it again once a statement, not
        # once a row as executemany does (each a hand-over between the two threads).
        with self._conn:
            self._conn.execute("BEGIN")
            start = 0
            while start < len(batch):
                size = min(_MAX_ROWS, 1 << ((len(batch) - start).bit_length() - 1))
                rows = batch[start : start + size]
                values = list(chain.from_iterable(astuple(r) for r in rows))
                self._conn.execute(self._insert_rows(size), values)
                start += size

    def _insert_rows(self, rows: int) -> str:
        statement = self._inserts.get(rows)
        if statement is None:
            statement = self._inserts[rows] = (
                f"INSERT OR IGNORE INTO usage ({self._quoted}) VALUES "
                + ", ".join(self._row for _ in range(rows))
            )
        return statement

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        with contextlib.suppress(sqlite3.Error):
            await self.flush()
        if self._conn is not None:
            await self._run(self._conn.close)
        self._executor.shutdown(wait=True)

    async def rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        if self._conn is None:
            raise BackendUnavailable("the ledger is still opening; retry shortly")

        def run() -> list[tuple[Any, ...]]:
            assert self._conn is not None
            return list(self._conn.execute(sql, tuple(params)).fetchall())

        result: list[tuple[Any, ...]] = await self._run(run)
        return result

    async def query(self, query: UsageQuery) -> tuple[list[UsageRecord], int]:
        where, params = where_clause(query)
        total = (await self.rows(f"SELECT COUNT(*) FROM usage {where}", params))[0][0]
        rows = await self.rows(
            f"SELECT {self._quoted} FROM usage {where} "
            "ORDER BY ts DESC, request_id LIMIT ? OFFSET ?",
            [*params, query.limit, query.offset],
        )
        records = [self._to_record(row) for row in rows]
        return records, int(total)

    def _to_record(self, row: tuple[Any, ...]) -> UsageRecord:
        data = dict(zip(self._columns, row, strict=True))
        for name in self._bools:
            if data[name] is not None:
                data[name] = bool(data[name])
        for name, default in self._defaults:
            if data[name] is None:
                data[name] = default
        return self.record_type(**data)


def where_clause(query: UsageQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if query.since is not None:
        clauses.append("ts >= ?")
        params.append(query.since)
    if query.until is not None:
        clauses.append("ts < ?")
        params.append(query.until)
    for column in ("backend", "model", "key", "group", "status"):
        value = getattr(query, column)
        if value is not None:
            clauses.append(f'"{column}" = ?')
            params.append(value)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params
