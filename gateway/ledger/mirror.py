"""A data directory's SQLite copy of the shared ledger's aggregate, for SQL reports.

The aggregate numbers its records 1, 2, 3, ... in the order they were folded in (a sorted
set request id -> sequence number). The mirror remembers the highest number it holds and
copies everything after it; rows are keyed by request id (``INSERT OR IGNORE``), so two
processes syncing one mirror at once, or a sync cut short, cannot count a record twice.
An ``epoch`` (a random id set once per Redis dataset) tells a mirror that its Redis was
replaced or emptied: it then starts again from nothing.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

import msgspec

from gateway.ledger.migrations import LedgerTooNew
from gateway.ledger.record import decode_json
from gateway.ledger.sqlite import SQLiteLedger
from gateway.settings import RedisSettings
from gateway.state.redis import RedisStore

log = logging.getLogger(__name__)

PAGE = 1000


class Mirror:
    def __init__(self, store: RedisStore, db: SQLiteLedger, records: str, seq: str) -> None:
        self._store = store
        self._db = db
        self._records = records
        self._seq = seq
        self._epoch_key = store.key("ledger", "epoch")
        self._ready = False
        self.skipped = 0

    async def _meta(self, name: str) -> str | None:
        rows = await self._db.rows("SELECT v FROM mirror_meta WHERE k = ?", [name])
        return str(rows[0][0]) if rows else None

    async def _set_meta(self, name: str, value: str) -> None:
        await self._db.rows(
            "INSERT INTO mirror_meta (k, v) VALUES (?, ?) "
            "ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            [name, value],
        )

    async def _prepare(self) -> None:
        await self._db.rows(
            "CREATE TABLE IF NOT EXISTS mirror_meta (k TEXT PRIMARY KEY, v TEXT)", []
        )
        client = self._store.client
        await client.set(self._epoch_key, secrets.token_hex(8), nx=True)
        raw = await client.get(self._epoch_key)
        epoch = raw.decode() if isinstance(raw, bytes) else str(raw)
        if await self._meta("epoch") != epoch:
            await self._db.rows("DELETE FROM usage", [])
            await self._set_meta("seq", "0")
            await self._set_meta("epoch", epoch)
        self._ready = True

    async def sync(self) -> int:
        """Copy every record folded in since the last sync; returns how many."""
        if not self._ready:
            await self._prepare()
        client = self._store.client
        last = int(await self._meta("seq") or 0)
        copied = 0
        while True:
            page: list[Any] = await client.zrangebyscore(
                self._seq, f"({last}", "+inf", start=0, num=PAGE, withscores=True
            )
            if not page:
                return copied
            ids = [rid for rid, _ in page]
            values = await client.hmget(self._records, ids)
            for rid, value in zip(ids, values, strict=True):
                if value is None:
                    continue
                try:
                    self._db.record(decode_json(value))
                except msgspec.DecodeError:
                    # Not a record this version can read: reported, not allowed to stop
                    # every later record from reaching the reports. It stays in Redis.
                    self.skipped += 1
                    name = rid.decode() if isinstance(rid, bytes) else str(rid)
                    log.exception("ledger record %r is not readable; left out of the mirror", name)
            await self._db.flush()
            last = int(page[-1][1])
            await self._set_meta("seq", str(last))
            copied += len(page)


MIRROR_FILE = "ledger-mirror.sqlite3"
MIRROR_TOO_NEW = (
    " This file is the Redis ledger's mirror, a cache of what Redis holds: stop the "
    "gateways on this data directory, delete it (with its -wal and -shm files), and it "
    "is rebuilt from Redis."
)


async def start_mirror(db: SQLiteLedger) -> None:
    """Open the mirror; one a newer Freshet wrote is refused with how to rebuild it."""
    try:
        await db.start()
    except LedgerTooNew as exc:
        raise LedgerTooNew(str(db.path), exc.found, exc.known, MIRROR_TOO_NEW) from None


async def refresh_mirror(settings: RedisSettings, data_dir: Path) -> Path:
    """Bring ``data_dir``'s mirror up to date (for ``freshet cost report``); when Redis
    does not answer, the mirror is reported as last synced, with a warning."""
    db = SQLiteLedger(data_dir, MIRROR_FILE)
    try:
        await db.start()
    except LedgerTooNew as exc:  # still readable (steps only add): report it as it is
        log.warning("%s; the report is from the mirror as last synced", exc)
        await db.aclose()
        return db.path
    store = RedisStore(settings)
    try:
        await store.start()
        if store.up:
            await Mirror(
                store, db, store.key("ledger", "records"), store.key("ledger", "seq")
            ).sync()
        else:
            log.warning("redis unavailable: the report is from the mirror as last synced")
    finally:
        await db.aclose()
        await store.aclose()
    return db.path
