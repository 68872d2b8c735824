"""Backend health shared through Redis: one process's discovery is every process's.

Decisions stay local and synchronous (the router asks once per request): each process keeps
a :class:`LocalHealth` whose circuits are replaced by the shared ones every :data:`POLL_S`
seconds. A failure, or a success that changes a circuit, is applied locally at once and sent
to Redis, where a Lua script runs the same rules atomically on ``<prefix>:health`` (a hash
backend id -> circuit, times in Redis's clock): consecutive failures count across processes,
an ejection lasts as long for everyone and doubles for everyone, the group's ejected share is
checked against every process's ejections, and a probe's result closes or reopens the
circuit everywhere. The failure *rate* is each process's own (a process says "my window
calls for an ejection"; successes are not sent, so a success on a closed circuit with no
failures, the common case, costs nothing). So a backend one process ejects is avoided by the
others within ``POLL_S`` plus one round trip (well under a second).

Redis unavailable: each process keeps deciding on its local model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from redis.exceptions import RedisError

from gateway.settings import HealthSettings
from gateway.state.health import Circuit, HealthView, LocalHealth
from gateway.state.redis import UNAVAILABLE, RedisStore

log = logging.getLogger(__name__)

POLL_S = 0.25

_READ = """
local t = redis.call('TIME')
return {t[1], t[2], redis.call('HGETALL', KEYS[1])}
"""

# A circuit in Redis: f consecutive failures, s state, o opened at, d open for, n ejections,
# k ejections in a row, c closed at (Redis's clock). Fields missing (an older gateway's
# circuit) take their defaults.
_LOAD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function load(raw)
  local c = {f = 0, s = 'closed', o = 0, d = 0, n = 0, k = 0, c = 0}
  if raw then
    for key, value in pairs(cjson.decode(raw)) do c[key] = value end
  end
  if c.s == 'open' and now - c.o >= c.d then c.s = 'half_open' end
  return c
end
"""

# ARGV: id, consecutive failures, ejection_s, max_ejection_s, "1" if the caller's failure
# rate calls for an ejection, the groups it is in as [[how many may be out, [ids]], ...].
_FAILURE = (
    _LOAD
    + """
local c = load(redis.call('HGET', KEYS[1], ARGV[1]))
c.f = c.f + 1
local eject = c.s == 'half_open'
local capped = 0
if c.s == 'closed' and (c.f >= tonumber(ARGV[2]) or ARGV[5] == '1') then
  eject = true
  for _, group in ipairs(cjson.decode(ARGV[6])) do
    local out = 0
    for _, m in ipairs(group[2]) do
      if m ~= ARGV[1] and load(redis.call('HGET', KEYS[1], m)).s == 'open' then
        out = out + 1
      end
    end
    if out + 1 > group[1] then eject = false end
  end
  if not eject then capped = 1 end
end
if eject then
  local longest = tonumber(ARGV[4])
  if c.s == 'closed' and now - c.c >= longest then c.k = 0 end
  c.d = math.min(longest, tonumber(ARGV[3]) * 2 ^ c.k)
  c.k = c.k + 1
  c.n = c.n + 1
  c.s = 'open'
  c.o = now
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(c))
return {t[1], t[2], cjson.encode(c), capped}
"""
)

# A success: no failures in a row; a half-open circuit closes (an open one stays open: a
# request that began before the ejection proves nothing about now).
_SUCCESS = (
    _LOAD
    + """
local c = load(redis.call('HGET', KEYS[1], ARGV[1]))
c.f = 0
if c.s == 'half_open' then
  c.s = 'closed'
  c.c = now
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(c))
return {t[1], t[2], cjson.encode(c)}
"""
)


class RedisHealth:
    def __init__(
        self,
        store: RedisStore,
        settings: HealthSettings | None = None,
        groups: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._store = store
        self._local = LocalHealth(settings, groups=groups)
        self._key = store.key("health")
        self._failure = store.client.register_script(_FAILURE)
        self._success = store.client.register_script(_SUCCESS)
        self._read = store.client.register_script(_READ)
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None

    @property
    def local(self) -> LocalHealth:
        return self._local

    @property
    def panics(self) -> Mapping[str, int]:
        return self._local.panics

    def circuit(self, backend_id: str) -> Circuit:
        return self._local.circuit(backend_id)

    def view(self, backend_id: str) -> HealthView:
        return self._local.view(backend_id)

    def known(self) -> Iterable[str]:
        return self._local.known()

    def available(self, backend_id: str) -> bool:
        return self._local.available(backend_id)

    def unavailable(self) -> frozenset[str]:
        return self._local.unavailable()

    def admit(self, backend_id: str) -> bool:
        return self._local.admit(backend_id)

    def release(self, backend_id: str) -> None:
        self._local.release(backend_id)

    def panic(self, group: str, backend_ids: Sequence[str]) -> None:
        self._local.panic(group, backend_ids)

    def success(self, backend_id: str) -> None:
        circuit = self._local.circuit(backend_id)
        changes = circuit.failures > 0 or circuit.state != "closed"
        self._local.success(backend_id)
        if changes:
            self._spawn(self._send_success(backend_id))

    def failure(self, backend_id: str) -> None:
        eject = self._local.record_failure(backend_id)
        ejected = self._local.circuit(backend_id).state == "open"
        self._spawn(self._send_failure(backend_id, eject, ejected))

    def _spawn(self, coro: Any) -> None:
        if not self._store.up:
            coro.close()
            return
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_success(self, backend_id: str) -> None:
        try:
            sec, usec, raw = await self._success(keys=[self._key], args=[backend_id])
        except (*UNAVAILABLE, RedisError) as exc:
            self._store.failed(exc, "health")
            return
        self._adopt(backend_id, raw, int(sec) + int(usec) / 1e6)

    async def _send_failure(self, backend_id: str, eject: bool, ejected: bool) -> None:
        s = self._local.settings
        groups = [[limit, list(members)] for limit, members in self._local.caps(backend_id)]
        args: list[Any] = [
            backend_id,
            s.consecutive_failures,
            s.ejection_s,
            s.max_ejection_s,
            "1" if eject else "0",
            json.dumps(groups),
        ]
        try:
            sec, usec, raw, capped = await self._failure(keys=[self._key], args=args)
        except (*UNAVAILABLE, RedisError) as exc:
            self._store.failed(exc, "health")
            return
        if int(capped) and ejected:  # another process's ejection filled the share first
            self._local.note_capped(backend_id)
        self._adopt(backend_id, raw, int(sec) + int(usec) / 1e6)

    def _adopt(self, backend_id: str, raw: bytes | str, redis_now: float) -> None:
        data = json.loads(raw)
        now = self._local.clock()
        closed = float(data.get("c", 0))
        self._local.adopt(
            backend_id,
            Circuit(
                failures=int(data["f"]),
                state=data["s"],
                opened_at=now - (redis_now - float(data["o"])),
                open_for_s=float(data["d"]),
                ejections=int(data.get("n", 0)),
                streak=int(data.get("k", 0)),
                closed_at=now - (redis_now - closed) if closed else 0.0,
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
