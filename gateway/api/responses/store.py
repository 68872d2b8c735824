"""Stored responses: what ``GET /v1/responses/{id}`` answers and ``previous_response_id``
continues, kept for ``server.responses.ttl_days`` and at most ``server.responses.max_stored``
of them (the oldest go first).

Two stores with one interface (:class:`ResponseStore`): ``responses.sqlite3`` in the data
directory (every worker of one ``freshet serve --workers N`` opens the same file), or Redis
with ``FRESHET_REDIS_URL``, so every replica sees every response. A stored response is
visible only to the API key that made it (:func:`find`); ``store: false`` keeps nothing.

Each record holds the whole conversation before its output (``input``, earlier turns
included), so continuing one is one lookup however long the chain.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Protocol

import msgspec
from msgspec import Struct
from redis.exceptions import RedisError

from gateway.api.responses.protocol import InputItem, Response
from gateway.errors import BackendUnavailable, NotFound
from gateway.settings.sections import ResponseStoreSettings
from gateway.state.keys_sqlite import retry_locked
from gateway.state.redis import RedisStore

log = logging.getLogger(__name__)

FILENAME = "responses.sqlite3"
DAY_S = 86400.0
PRUNE_EVERY = 256  # puts between two removals of the expired and the oldest past the bound


class Stored(Struct, kw_only=True):
    """One kept response, with the input (the whole conversation) it answered."""

    key: str | None  # the API key's name; None with auth off
    input: list[InputItem]
    response: Response
    # Where this request's own input begins in ``input`` (after the conversation that
    # ``previous_response_id`` brought): what ``GET .../input_items`` lists.
    own_from: int = 0


class ResponseStore(Protocol):
    async def put(self, stored: Stored) -> None: ...

    async def get(self, response_id: str) -> Stored | None: ...

    async def delete(self, response_id: str) -> bool: ...

    async def aclose(self) -> None: ...


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Stored).decode


async def find(store: ResponseStore, response_id: str, key: str | None, param: str) -> Stored:
    """The stored response ``response_id`` as the key ``key`` may see it; else a 404 in
    OpenAI's shape naming ``param`` (another key's response is not found either)."""
    stored = await store.get(response_id)
    if stored is None or stored.key != key:
        raise NotFound(f"response with id {response_id!r} not found", param=param)
    return stored


class SQLiteResponses:
    """``responses.sqlite3``: one row per response. A put is one insert on the request's
    path (WAL, ``synchronous=NORMAL``: no fsync per response); every
    :data:`PRUNE_EVERY` puts the expired rows and the oldest past the bound go (a read
    never returns an expired one), so the bound may be passed by that many per process."""

    def __init__(self, data_dir: Path, settings: ResponseStoreSettings) -> None:
        self.path = data_dir / FILENAME
        self._ttl_s = settings.ttl_days * DAY_S
        self._max = settings.max_stored
        self._conn: sqlite3.Connection | None = None
        self._puts = 0

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
            # Workers open a new file at the same moment (see keys_sqlite).
            retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            conn.execute("PRAGMA synchronous=NORMAL")
            retry_locked(
                lambda: conn.execute(
                    "CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, "
                    "created REAL NOT NULL, expires REAL NOT NULL, record BLOB NOT NULL)"
                )
            )
            retry_locked(
                lambda: conn.execute(
                    "CREATE INDEX IF NOT EXISTS responses_created ON responses (created)"
                )
            )
            self._conn = conn
        return self._conn

    async def put(self, stored: Stored) -> None:
        db = self._db()
        now = time.time()
        db.execute(
            "INSERT OR REPLACE INTO responses (id, created, expires, record) VALUES (?, ?, ?, ?)",
            (stored.response.id, now, now + self._ttl_s, _encode(stored)),
        )
        self._puts += 1
        if self._puts % PRUNE_EVERY == 1 or PRUNE_EVERY == 1:
            self.prune(now)

    def prune(self, now: float) -> None:
        """Remove the expired rows, then the oldest past the size bound."""
        db = self._db()
        db.execute("DELETE FROM responses WHERE created < ?", (now - self._ttl_s,))
        (count,) = db.execute("SELECT COUNT(*) FROM responses").fetchone()
        if count > self._max:
            db.execute(
                "DELETE FROM responses WHERE id IN (SELECT id FROM responses ORDER BY created "
                "LIMIT ?)",
                (count - self._max,),
            )

    async def get(self, response_id: str) -> Stored | None:
        row = (
            self._db()
            .execute(
                "SELECT record FROM responses WHERE id = ? AND expires >= ?",
                (response_id, time.time()),
            )
            .fetchone()
        )
        return _decode(row[0]) if row else None

    async def delete(self, response_id: str) -> bool:
        cur = self._db().execute("DELETE FROM responses WHERE id = ?", (response_id,))
        return cur.rowcount > 0

    async def aclose(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# Set the record with its expiry, index it by time, and drop the oldest past the bound.
_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3] - ARGV[2])
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if extra > 0 then
  for _, id in ipairs(redis.call('ZPOPMIN', KEYS[2], extra)) do
    redis.call('DEL', ARGV[6] .. id)
  end
end
return 1
"""


class RedisResponses:
    """``<prefix>:responses:<id>`` holds a record (expiring with it), ``<prefix>:responses``
    a sorted set of ids by time for the size bound."""

    def __init__(self, store: RedisStore, settings: ResponseStoreSettings) -> None:
        self._store = store
        self._ttl_ms = int(settings.ttl_days * DAY_S * 1000)
        self._max = settings.max_stored
        self._index = store.key("responses")
        self._prefix = store.key("responses", "")

    def _failed(self, exc: Exception, what: str) -> BackendUnavailable:
        self._store.failed(exc, what)
        return BackendUnavailable("the response store (redis) is unavailable; retry shortly")

    async def put(self, stored: Stored) -> None:
        response_id = stored.response.id
        now_ms = int(time.time() * 1000)
        try:
            await self._store.client.eval(
                _PUT,
                2,
                self._prefix + response_id,
                self._index,
                _encode(stored),
                self._ttl_ms,
                now_ms,
                response_id,
                self._max,
                self._prefix,
            )
        except (RedisError, OSError) as exc:
            raise self._failed(exc, "responses put") from exc

    async def get(self, response_id: str) -> Stored | None:
        try:
            raw = await self._store.client.get(self._prefix + response_id)
        except (RedisError, OSError) as exc:
            raise self._failed(exc, "responses get") from exc
        return _decode(raw) if raw is not None else None

    async def delete(self, response_id: str) -> bool:
        try:
            removed = await self._store.client.delete(self._prefix + response_id)
            await self._store.client.zrem(self._index, response_id)
        except (RedisError, OSError) as exc:
            raise self._failed(exc, "responses delete") from exc
        return bool(removed)

    async def aclose(self) -> None:
        return None  # the connection is the shared state's


def response_store(
    data_dir: Path, settings: ResponseStoreSettings, redis: RedisStore | None
) -> ResponseStore:
    """Redis when the shared state is on Redis, else SQLite in the data directory."""
    if redis is not None:
        return RedisResponses(redis, settings)
    return SQLiteResponses(data_dir, settings)
