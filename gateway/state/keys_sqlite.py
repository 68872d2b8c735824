"""The embedded key store: ``keys.sqlite3`` in the data directory.

``freshet keys create`` writes it while a gateway runs; the gateway notices through
SQLite's ``data_version`` (which changes when another connection commits), so checking
for changes costs one pragma. Queries are point lookups on a small table, run inline.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from gateway.state.keys import ApiKey, KeyExists, decode_key, encode_key

FILENAME = "keys.sqlite3"


class SQLiteKeyStore:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILENAME
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            # Workers of one `freshet serve --workers N` open a new file at the same moment:
            # switching it to WAL takes a lock SQLite's busy timeout does not wait for.
            retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            retry_locked(
                lambda: conn.execute(
                    "CREATE TABLE IF NOT EXISTS keys (digest TEXT PRIMARY KEY, "
                    "name TEXT NOT NULL UNIQUE, record BLOB NOT NULL)"
                )
            )
            self._conn = conn
        return self._conn

    async def add(self, key: ApiKey) -> None:
        try:
            self._db().execute(
                "INSERT INTO keys (digest, name, record) VALUES (?, ?, ?)",
                (key.digest, key.name, encode_key(key)),
            )
        except sqlite3.IntegrityError:
            raise KeyExists(f"a key named {key.name!r} exists already", param="name") from None

    async def all(self) -> list[ApiKey]:
        rows = self._db().execute("SELECT record FROM keys ORDER BY name").fetchall()
        return [decode_key(r[0]) for r in rows]

    async def get(self, digest: str) -> ApiKey | None:
        row = self._db().execute("SELECT record FROM keys WHERE digest = ?", (digest,)).fetchone()
        return decode_key(row[0]) if row else None

    async def revoke(self, name: str) -> bool:
        db = self._db()
        row = db.execute("SELECT record FROM keys WHERE name = ?", (name,)).fetchone()
        if row is None:
            return False
        key = decode_key(row[0])
        revoked = msgspec.structs.replace(key, revoked=True)
        db.execute("UPDATE keys SET record = ? WHERE name = ?", (encode_key(revoked), name))
        return True

    async def version(self) -> str:
        db = self._db()
        (data_version,) = db.execute("PRAGMA data_version").fetchone()
        return f"{data_version}:{db.total_changes}"

    async def aclose(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def retry_locked(run: Callable[[], object], attempts: int = 50) -> None:
    """Run ``run``, again while another process holds the lock it needs (up to ~5 s)."""
    for attempt in range(attempts):
        try:
            run()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.1)
        else:
            return
