"""Backend health shared through Redis: one process's discovery is every process's.

Decisions stay local and synchronous (the router asks :meth:`RedisHealth.available` for
every candidate): each process keeps a :class:`LocalHealth` whose circuits are replaced
by the shared ones every :data:`POLL_S` seconds. A failure or a success that changes a
circuit is applied locally at once and sent to Redis, where a Lua script runs the same
breaker rules atomically on ``<prefix>:health`` (a hash backend id -> circuit, times in
Redis's clock). So a backend that one process finds down is avoided by all the others
within ``POLL_S`` plus one round trip (well under a second). A success on a circuit that
is closed with no failures (the common case) costs nothing.

Redis unavailable: each process keeps deciding on its local breakers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from redis.exceptions import RedisError

from gateway.state.health import BreakerSettings, Circuit, LocalHealth
from gateway.state.redis import UNAVAILABLE, RedisStore

log = logging.getLogger(__name__)

POLL_S = 0.25

_READ = """
local t = redis.call('TIME')
return {t[1], t[2], redis.call('HGETALL', KEYS[1])}
"""

_FAILURE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local c = {f = 0, s = 'closed', o = 0, d = 0}
if raw then c = cjson.decode(raw) end
if c.s == 'open' and now - c.o >= c.d then c.s = 'half_open' end
c.f = c.f + 1
if c.s ~= 'open' and (c.s == 'half_open' or c.f >= tonumber(ARGV[2])) then
  if c.d > 0 then c.d = math.min(tonumber(ARGV[4]), c.d * 2) else c.d = tonumber(ARGV[3]) end
  c.s = 'open'
  c.o = now
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(c))
return {t[1], t[2], cjson.encode(c)}
"""

_CLOSED = json.dumps({"f": 0, "s": "closed", "o": 0, "d": 0})


class RedisHealth:
    def __init__(self, store: RedisStore, settings: BreakerSettings | None = None) -> None:
        self._store = store
        self._local = LocalHealth(settings)
        self._key = store.key("health")
        self._failure = store.client.register_script(_FAILURE)
        self._read = store.client.register_script(_READ)
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None

    def circuit(self, backend_id: str) -> Circuit:
        return self._local.circuit(backend_id)

    def available(self, backend_id: str) -> bool:
        return self._local.available(backend_id)

    def unavailable(self) -> frozenset[str]:
        return self._local.unavailable()

    def success(self, backend_id: str) -> None:
        circuit = self._local.circuit(backend_id)
        if circuit.state == "closed" and circuit.failures == 0:
            return
        self._local.success(backend_id)
        self._spawn(self._send_success(backend_id))

    def failure(self, backend_id: str) -> None:
        self._local.failure(backend_id)
        self._spawn(self._send_failure(backend_id))

    def _spawn(self, coro: Any) -> None:
        if not self._store.up:
            coro.close()
            return
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_success(self, backend_id: str) -> None:
        try:
            await self._store.client.hset(self._key, backend_id, _CLOSED)
        except (*UNAVAILABLE, RedisError) as exc:
            self._store.failed(exc, "health")

    async def _send_failure(self, backend_id: str) -> None:
        s = self._local.settings
        args: list[Any] = [backend_id, s.failures_to_open, s.open_for_s, s.max_open_for_s]
        try:
            sec, usec, raw = await self._failure(keys=[self._key], args=args)
        except (*UNAVAILABLE, RedisError) as exc:
            self._store.failed(exc, "health")
            return
        self._adopt(backend_id, raw, int(sec) + int(usec) / 1e6)

    def _adopt(self, backend_id: str, raw: bytes | str, redis_now: float) -> None:
        data = json.loads(raw)
        opened_ago = redis_now - float(data["o"]) if data["s"] != "closed" else 0.0
        self._local.adopt(
            backend_id,
            Circuit(
                failures=int(data["f"]),
                state=data["s"],
                opened_at=self._local.clock() - opened_ago,
                open_for_s=float(data["d"]),
            ),
        )

    async def sync(self) -> None:
        """Replace every local circuit with the shared one."""
        sec, usec, flat = await self._read(keys=[self._key])
        now = int(sec) + int(usec) / 1e6
        for i in range(0, len(flat), 2):
            self._adopt(flat[i].decode(), flat[i + 1], now)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            if not self._store.up:
                continue
            try:
                await self.sync()
            except (*UNAVAILABLE, RedisError) as exc:
                self._store.failed(exc, "health sync")

    async def start(self) -> None:
        if self._store.up:
            try:
                await self.sync()
            except (*UNAVAILABLE, RedisError) as exc:
                self._store.failed(exc, "health sync")
        self._poller = asyncio.create_task(self._poll(), name="freshet-health-sync")

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
