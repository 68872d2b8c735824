"""The shared ledger: usage records through a Redis Stream into one aggregate.

Write path (every process): ``record()`` queues in memory; a writer task ``XADD``s each
batch to ``<prefix>:ledger:stream``. A sent record is kept until it has been in the
aggregate for :data:`PERSIST_S` (by then Redis's AOF has it on disk) and sent again if it
is not there after :data:`RESEND_S`, so a Redis killed before persisting an entry loses
nothing while the gateway lives. Redis unreachable: batches go to a bounded on-disk spool
(:mod:`gateway.ledger.spool`), replayed when Redis is back.

Aggregation (every process is a consumer of the group ``aggregators``): entries are read
with ``XREADGROUP`` and folded by one Lua script that, atomically, stores the record under
its request id in ``<prefix>:ledger:records`` unless it is there already (``HSETNX``),
gives each new record the next sequence number (``<prefix>:ledger:seq``, a sorted set),
and ``XACK``s and ``XDEL``s the entry. A record is acknowledged only in the same atomic
step that makes it durable in the aggregate (with Redis's AOF on), and a record sent twice
(a resend, a replayed spool) is counted once. Entries left pending by a dead consumer are
claimed by the others after :data:`CLAIM_IDLE_MS`.

Reports: each data directory keeps a SQLite *mirror* of the aggregate (same schema as the
embedded ledger), brought up to the aggregate's latest sequence number before every
report, so the SQL reports of :mod:`gateway.ledger.reports` run unchanged and every replica
answers with the same numbers. The mirror is a cache: deleting it rebuilds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from redis.exceptions import RedisError

from gateway.ledger.aggregate import BATCH, CLAIM_IDLE_MS, Aggregator
from gateway.ledger.mirror import MIRROR_FILE, Mirror, start_mirror
from gateway.ledger.spool import Spool
from gateway.ledger.sqlite import FLUSH_INTERVAL_S, SQLiteLedger, UsageQuery
from gateway.outcome import UsageRecord
from gateway.state.redis import UNAVAILABLE, RedisStore

log = logging.getLogger(__name__)

CONFIRM_AFTER_S = 0.5
# A record is forgotten only once seen in the aggregate twice, PERSIST_S apart: by then
# Redis's AOF (appendfsync everysec) has it on disk, so a Redis killed even right after
# the aggregation cannot lose a record this process no longer holds.
PERSIST_S = 2.5
RESEND_S = 10.0
_encode = msgspec.json.Encoder().encode

_PRESENT = """
local out = {}
for i, id in ipairs(ARGV) do out[i] = redis.call('HEXISTS', KEYS[1], id) end
return out
"""


class _Sent:
    __slots__ = ("at", "record", "seen")

    def __init__(self, record: UsageRecord, at: float) -> None:
        self.record = record
        self.at = at
        self.seen: float | None = None


class RedisLedger:
    def __init__(self, store: RedisStore, data_dir: Path) -> None:
        self._store = store
        self.stream = store.key("ledger", "stream")
        self.records = store.key("ledger", "records")
        self.seq = store.key("ledger", "seq")
        self.counter = store.key("ledger", "count")
        self._mirror_db = SQLiteLedger(data_dir, MIRROR_FILE)
        self.mirror = Mirror(store, self._mirror_db, self.records, self.seq)
        self.spool = Spool(data_dir / "spool", store.settings.spool_max_bytes)
        self._pending: list[UsageRecord] = []
        # request id -> [record, when sent, when first seen in the aggregate]
        self._sent: dict[str, _Sent] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.aggregator = Aggregator(store, self.stream, self.records, self.seq, self.counter)
        self._present = store.client.register_script(_PRESENT)
        self._block_ms = max(10, int(store.settings.timeout_s * 500))
        store.on_recovery(self._recovered)

    # -- writing ----------------------------------------------------------------------

    def record(self, record: UsageRecord) -> None:
        """Queue a record; never blocks, never does I/O."""
        self._pending.append(record)
        self._wake.set()

    async def _send(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        if not self._store.up:
            self.spool.append(batch)
            return
        try:
            await self._xadd(batch)
        except (*UNAVAILABLE, RedisError) as exc:
            self._store.failed(exc, "ledger write")
            self.spool.append(batch)
            return
        now = time.monotonic()
        for r in batch:
            self._sent[r.request_id] = _Sent(r, now)

    async def _xadd(self, batch: Sequence[UsageRecord]) -> None:
        pipe = self._store.client.pipeline(transaction=False)
        for r in batch:
            pipe.xadd(self.stream, {"id": r.request_id, "r": _encode(r)})
        await pipe.execute()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_INTERVAL_S)  # gather a batch
            self._wake.clear()
            await self._send()

    async def _confirm(self, older_than_s: float, persist_s: float = PERSIST_S) -> None:
        """Forget records the aggregate has held for ``persist_s``; send again those
        missing for :data:`RESEND_S` (lost by Redis, or never read)."""
        now = time.monotonic()
        due = [rid for rid, sent in self._sent.items() if now - sent.at >= older_than_s]
        for i in range(0, len(due), BATCH):
            chunk = due[i : i + BATCH]
            present = await self._present(keys=[self.records], args=chunk)
            resend = []
            for rid, found in zip(chunk, present, strict=True):
                sent = self._sent[rid]
                if not found:
                    sent.seen = None  # never there, or lost by a Redis restart
                    if now - sent.at >= RESEND_S:
                        resend.append(sent.record)
                elif sent.seen is None:
                    sent.seen = now
                if sent.seen is not None and now - sent.seen >= persist_s:
                    del self._sent[rid]
            if resend:
                log.warning("%d usage records not in the aggregate; sending again", len(resend))
                await self._xadd(resend)
                for r in resend:
                    self._sent[r.request_id] = _Sent(r, time.monotonic())

    async def _confirm_loop(self) -> None:
        while True:
            await asyncio.sleep(CONFIRM_AFTER_S / 2)
            if self._store.up and self._sent:
                try:
                    await self._confirm(CONFIRM_AFTER_S)
                except (*UNAVAILABLE, RedisError) as exc:
                    self._store.failed(exc, "ledger confirm")

    # -- aggregating ------------------------------------------------------------------

    async def _consume_loop(self) -> None:
        last_claim = time.monotonic()
        while True:
            if not self._store.up:
                await asyncio.sleep(0.2)
                continue
            try:
                await self.aggregator.once(self._block_ms)
                if time.monotonic() - last_claim > CLAIM_IDLE_MS / 1000:
                    last_claim = time.monotonic()
                    await self.aggregator.claim_orphans()
            except (*UNAVAILABLE, RedisError) as exc:
                self._store.failed(exc, "ledger aggregate")

    # -- lifecycle --------------------------------------------------------------------

    async def _recovered(self) -> None:
        await self.aggregator.ensure_group()
        replay = self.spool.drain()
        if replay:
            log.warning("replaying %d spooled usage records to redis", len(replay))
            self._pending[:0] = replay
            await self._send()

    async def start(self) -> None:
        await start_mirror(self._mirror_db)
        self.spool.open()
        self.spool.adopt_orphans()
        if self._store.up:
            try:
                await self._recovered()
            except (*UNAVAILABLE, RedisError) as exc:
                self._store.failed(exc, "ledger start")
        for name, loop in (
            ("writer", self._write_loop),
            ("confirm", self._confirm_loop),
            ("aggregate", self._consume_loop),
        ):
            self._tasks.append(asyncio.create_task(loop(), name=f"freshet-ledger-{name}"))

    async def flush(self) -> None:
        """Send what is queued, fold what is waiting, and bring the mirror up to date."""
        await self._send()
        if not self._store.up:
            return
        try:
            while await self.aggregator.once() or 0:
                pass
            await self.mirror.sync()
        except (*UNAVAILABLE, RedisError) as exc:
            self._store.failed(exc, "ledger flush")

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drain_for_shutdown()
        left = [s.record for s in self._sent.values()] + self._pending
        if left:
            self.spool.append(left)
            log.warning("%d usage records left in the spool for the next start", len(left))
        self.spool.close()
        await self._mirror_db.aclose()

    async def _drain_for_shutdown(self, timeout_s: float = 3.0) -> None:
        deadline = time.monotonic() + timeout_s
        with contextlib.suppress(*UNAVAILABLE, RedisError):
            await self._send()
            while self._sent and self._store.up and time.monotonic() < deadline:
                await self.aggregator.once()
                await self._confirm(0.0, persist_s=0.0)  # a graceful stop: Redis is up
                if self._sent:
                    await asyncio.sleep(0.05)

    # -- reading ----------------------------------------------------------------------

    async def rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return await self._mirror_db.rows(sql, params)

    async def query(self, query: UsageQuery) -> tuple[list[UsageRecord], int]:
        return await self._mirror_db.query(query)
