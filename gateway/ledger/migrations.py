"""The SQLite ledger's schema: a version number and the additive steps that reach it.

A ledger file carries its schema version in its header (``PRAGMA user_version``).
Version 0 is a ledger written before versions existed: a table ``usage`` with the columns
of :data:`V0_COLUMNS` and ``user_version`` 0 (a new, empty file also reads as 0).
:data:`MIGRATIONS` is the ordered list of steps; step *n* takes a file from version
*n - 1* to *n*. :func:`migrate` runs the steps a file lacks, at open, in one transaction
(``BEGIN IMMEDIATE``: processes opening one file at once migrate it once; a step that
fails leaves the file as it was). A file from a newer Freshet than this one is refused,
never written to (:class:`LedgerTooNew`).

Steps only ever add: a new :class:`~gateway.ledger.record.UsageRecord` field gets a step
that adds its column with the field's default (:func:`add_column`), so rows written
before it read back with the default, and an older Freshet can still insert its rows into
a newer file. Nothing is renamed, retyped or dropped. The suite derives the expected
columns from ``UsageRecord`` (:func:`expected_columns`) and fails when a field has no
step; :func:`check_columns` says the same at open rather than at the first insert.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from msgspec import NODEFAULT, inspect

from gateway.outcome import UsageRecord

log = logging.getLogger(__name__)

TABLE = "usage"

# The columns of version 0, frozen: what the ledger wrote before it had versions
# (2026-12-06). Later fields are added by steps, never here.
V0_COLUMNS: tuple[tuple[str, str], ...] = (
    ("request_id", "TEXT"),
    ("ts", "REAL"),
    ("key", "TEXT"),
    ("group", "TEXT"),
    ("requested_model", "TEXT"),
    ("backend", "TEXT"),
    ("backend_kind", "TEXT"),
    ("model", "TEXT"),
    ("adapter", "TEXT"),
    ("knowledge_cutoff", "TEXT"),
    ("operation", "TEXT"),
    ("stream", "INTEGER"),
    ("status", "TEXT"),
    ("error_code", "TEXT"),
    ("prompt_tokens", "INTEGER"),
    ("completion_tokens", "INTEGER"),
    ("ttft_s", "REAL"),
    ("duration_s", "REAL"),
    ("joules", "REAL"),
    ("energy_source", "TEXT"),
    ("joules_input", "REAL"),
    ("joules_output", "REAL"),
    ("usd_energy", "REAL"),
    ("usd_capex", "REAL"),
    ("usd_list", "REAL"),
    ("usd_input", "REAL"),
    ("usd_output", "REAL"),
    ("usd_total", "REAL"),
    ("fallbacks", "INTEGER"),
)
V0_INDEXED = ("ts", "backend", "model", "key")

SQLValue = int | float | str | None


class LedgerSchemaError(RuntimeError):
    """The ledger file's schema is not one this Freshet can write to."""


class LedgerTooNew(LedgerSchemaError):
    """The file was written by a newer Freshet (a higher schema version)."""

    def __init__(self, path: str, found: int, known: int, advice: str = "") -> None:
        super().__init__(
            f"the ledger {path} has schema version {found}, newer than this Freshet knows "
            f"({known}): a newer Freshet wrote it, and it was not changed."
            + (
                advice
                or " Run that newer Freshet again, or restore the copy of the data directory "
                "made before the upgrade (see docs/upgrading.md)."
            )
        )
        self.path = path
        self.found = found
        self.known = known


Step = Callable[[sqlite3.Connection], None]


@dataclass(frozen=True)
class Migration:
    version: int  # the version a file has after this step
    summary: str
    run: Step


def sql_literal(value: SQLValue) -> str:
    """``value`` as an SQL literal, for a column's ``DEFAULT``."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + value.replace("'", "''") + "'"


def add_column(name: str, sql_type: str, default: SQLValue) -> Step:
    """A step adding ``name`` with ``default`` (the UsageRecord field's default: rows
    written before the field existed read back with it). Idempotent."""

    def run(conn: sqlite3.Connection) -> None:
        if name not in table_columns(conn):
            conn.execute(
                f'ALTER TABLE {TABLE} ADD COLUMN "{name}" {sql_type} DEFAULT {sql_literal(default)}'
            )

    return run


def _v1_versioned(conn: sqlite3.Connection) -> None:
    """Version 0 → 1: the table as written before versions (created if the file is
    new), then stamped. Changes no existing row."""
    cols = ", ".join(
        f'"{name}" {kind}' + (" PRIMARY KEY" if name == "request_id" else "")
        for name, kind in V0_COLUMNS
    )
    conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} ({cols})")
    for column in V0_INDEXED:
        conn.execute(f'CREATE INDEX IF NOT EXISTS usage_{column} ON {TABLE} ("{column}")')


def add_columns(*steps: Step) -> Step:
    """One version's step made of several (a version adding more than one column)."""

    def run(conn: sqlite3.Connection) -> None:
        for step in steps:
            step(conn)

    return run


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "version the schema (the table as written before versions)", _v1_versioned),
    Migration(2, "usage.attempts", add_column("attempts", "TEXT", None)),
    Migration(
        3,
        "usage.cached_prompt_tokens, cache_write_tokens, reasoning_tokens",
        add_columns(
            add_column("cached_prompt_tokens", "INTEGER", 0),
            add_column("cache_write_tokens", "INTEGER", 0),
            add_column("reasoning_tokens", "INTEGER", 0),
        ),
    ),
    Migration(
        4,
        "usage.quoted_ttft_s, quoted_duration_s, quoted_joules, quoted_usd",
        add_columns(
            add_column("quoted_ttft_s", "REAL", None),
            add_column("quoted_duration_s", "REAL", None),
            add_column("quoted_joules", "REAL", None),
            add_column("quoted_usd", "REAL", None),
        ),
    ),
    # Next: Migration(5, "usage.<field>", add_column("<field>", "INTEGER", 0)), with the
    # field added to UsageRecord *with a default* (old Redis records lack it).
)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def table_columns(conn: sqlite3.Connection) -> dict[str, tuple[str, str | None]]:
    """The ledger table's columns: name → (declared type, default as SQL text)."""
    rows = conn.execute(f"PRAGMA table_info({TABLE})").fetchall()
    return {str(r[1]): (str(r[2]), None if r[4] is None else str(r[4])) for r in rows}


def refuse_newer(
    conn: sqlite3.Connection, path: Path | str, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """The file's version; raises :class:`LedgerTooNew` (having read only) if it is newer
    than ``migrations`` reach."""
    found = schema_version(conn)
    if found > len(migrations):
        raise LedgerTooNew(str(path), found, len(migrations))
    return found


def migrate(
    conn: sqlite3.Connection,
    path: Path | str = "",
    migrations: Sequence[Migration] = MIGRATIONS,
) -> tuple[int, int]:
    """Bring the file to the latest version in one transaction; returns (from, to).

    ``conn`` must be in autocommit mode (``isolation_level=None``) and outside a
    transaction. Nothing is written when the file is current; a newer file raises
    :class:`LedgerTooNew` unchanged.
    """
    for n, step in enumerate(migrations, 1):
        if step.version != n:
            raise ValueError(f"migration {n} says version {step.version}: steps are 1, 2, 3, …")
    latest = len(migrations)
    if refuse_newer(conn, path, migrations) == latest:
        return latest, latest
    conn.execute("BEGIN IMMEDIATE")  # the write lock: a second process waits, then skips
    try:
        found = refuse_newer(conn, path, migrations)
        for step in migrations[found:]:
            log.info("ledger %s: schema version %d: %s", path, step.version, step.summary)
            step.run(conn)
            conn.execute(f"PRAGMA user_version = {step.version}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found, latest


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    default: SQLValue
    has_default: bool
    is_bool: bool  # stored as 0/1: read back as False/True


def _sql_type(t: inspect.Type) -> str:
    if isinstance(t, inspect.UnionType):
        kinds = {_sql_type(m) for m in t.types if not isinstance(m, inspect.NoneType)}
        if len(kinds) == 1:
            return kinds.pop()
    elif isinstance(t, inspect.IntType | inspect.BoolType):
        return "INTEGER"
    elif isinstance(t, inspect.FloatType):
        return "REAL"
    elif isinstance(t, inspect.StrType) or (
        isinstance(t, inspect.LiteralType) and all(isinstance(v, str) for v in t.values)
    ):
        return "TEXT"
    raise TypeError(f"no SQLite column type for {t!r}: store it as int, float, bool or str")


def expected_columns(record_type: type[UsageRecord] = UsageRecord) -> list[Column]:
    """The columns ``record_type``'s fields need, in field order: SQLite's type for the
    field's type and, for a field with a default, that default."""
    info = inspect.type_info(record_type)
    assert isinstance(info, inspect.StructType)
    out = []
    for f in info.fields:
        has_default = f.default is not NODEFAULT
        if f.default_factory is not NODEFAULT:
            raise TypeError(f"{f.name}: a default_factory has no SQL default; use a constant")
        default = f.default if has_default else None
        if not isinstance(default, int | float | str | None):
            raise TypeError(f"{f.name}: default {default!r} has no SQL literal")
        is_bool = isinstance(f.type, inspect.BoolType) or (
            isinstance(f.type, inspect.UnionType)
            and any(isinstance(m, inspect.BoolType) for m in f.type.types)
        )
        out.append(Column(f.name, _sql_type(f.type), default, has_default, is_bool))
    return out


def check_columns(
    conn: sqlite3.Connection, path: Path | str = "", record_type: type[UsageRecord] = UsageRecord
) -> None:
    """Raise :class:`LedgerSchemaError` unless the table has a column of the right type for
    every field of ``record_type`` (a field added without a migration step)."""
    have = table_columns(conn)
    expected = expected_columns(record_type)
    missing = [c.name for c in expected if c.name not in have]
    wrong = [
        f"{c.name} ({have[c.name][0]}, the field needs {c.sql_type})"
        for c in expected
        if c.name in have and have[c.name][0] != c.sql_type
    ]
    if missing or wrong:
        raise LedgerSchemaError(
            f"the ledger {path} at schema version {schema_version(conn)} does not fit "
            f"{record_type.__name__}: "
            + "; ".join(
                ([f"no column for {', '.join(missing)}"] if missing else [])
                + ([f"column types {', '.join(wrong)}"] if wrong else [])
            )
            + ". Each new field needs a step in gateway/ledger/migrations.py."
        )
