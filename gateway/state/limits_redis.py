"""Per-key rate limits and budgets shared by every process, as atomic Lua scripts.

Same rules as :mod:`gateway.state.limits` (fixed windows, daily budgets, reserve then
settle; 402 only when the settled spend leaves no room, 429 when reservations in flight
hold the budget; ``Retry-After`` rounded up), but the counters are Redis hashes and both
the check and the reservation happen inside one script, so concurrent admissions from any
number of processes never see each other half-done. Windows and days come from Redis's
clock (``TIME``), the same for every process. Keys: ``<prefix>:rl:<name>:<window>``
(fields n, t) and ``<prefix>:budget:<name>:<day>`` (fields us, ur, js, jr: spent and
reserved).

**Overspend bound** (Redis up): a day's settled spend of a key is at most
``budget + Σ max(0, real_i - quote_i)`` over the requests in flight together at the
moment of the last admission. With ``max_tokens`` set the quote counts all of them, so the
error is only the prompt estimate and energy/capex timing (a few percent of one request
per in-flight request).

**Redis unavailable**: admission falls back to this process's :class:`LocalLimits`,
seeded with the spend Redis last reported for the key; each process then enforces the
whole remaining budget and rate on its own (up to N times the limit with N processes,
for the length of the outage). Settlements made meanwhile are summed per key and day and
added to Redis when it returns. A reservation whose process dies before settling stays
reserved until its day ends (it can only make the limit stricter).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import RedisError

from gateway.errors import RateLimited
from gateway.state.keys import ApiKey
from gateway.state.limits import (
    DAY_S,
    HELD_RETRY_S,
    LocalLimits,
    Reservation,
    over_budget,
    over_rate,
)
from gateway.state.redis import UNAVAILABLE, RedisStore

log = logging.getLogger(__name__)

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window_s = tonumber(ARGV[1])
local w = math.floor(now / window_s)
local d = math.floor(now / 86400)
local rk = KEYS[1] .. ':' .. w
local bk = KEYS[2] .. ':' .. d
local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
local bu, bj = tonumber(ARGV[4]), tonumber(ARGV[5])
local tokens, usd, j = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local r = redis.call('HMGET', rk, 'n', 't')
local n, tk = tonumber(r[1] or '0'), tonumber(r[2] or '0')
local retry = tostring((w + 1) * window_s - now)
local b = redis.call('HMGET', bk, 'us', 'ur', 'js', 'jr')
local us, ur = tonumber(b[1] or '0'), tonumber(b[2] or '0')
local js, jr = tonumber(b[3] or '0'), tonumber(b[4] or '0')
local state = {tostring(n), tostring(tk), retry, tostring(us + ur), tostring(js + jr),
               tostring(w), tostring(d), tostring(us), tostring(js)}
if (rpm >= 0 and n + 1 > rpm) or (tpm >= 0 and tk + tokens > tpm)
   or (bu >= 0 and us + ur + usd > bu) or (bj >= 0 and js + jr + j > bj) then
  table.insert(state, 1, 'no')
  return state
end
redis.call('HINCRBY', rk, 'n', 1)
redis.call('HINCRBY', rk, 't', tokens)
redis.call('PEXPIRE', rk, math.ceil(window_s * 2000))
if usd > 0 then redis.call('HINCRBYFLOAT', bk, 'ur', usd) end
if j > 0 then redis.call('HINCRBYFLOAT', bk, 'jr', j) end
redis.call('EXPIRE', bk, 172800)
table.insert(state, 1, 'ok')
return state
"""

# ARGV: window, day, token delta, then (field, delta) pairs for the day's budget hash.
_SETTLE = """
local rk = KEYS[1] .. ':' .. ARGV[1]
local bk = KEYS[2] .. ':' .. ARGV[2]
local dt = tonumber(ARGV[3])
if dt ~= 0 and redis.call('EXISTS', rk) == 1 then redis.call('HINCRBY', rk, 't', dt) end
for i = 4, #ARGV, 2 do
  local v = tonumber(ARGV[i + 1])
  if v ~= 0 then redis.call('HINCRBYFLOAT', bk, ARGV[i], v) end
end
redis.call('EXPIRE', bk, 172800)
return 1
"""


def _limit(value: float | None) -> float:
    return -1 if value is None else value


class RedisLimits:
    shared = True

    def __init__(self, store: RedisStore, window_s: float) -> None:
        self._store = store
        self.window_s = window_s
        self.local = LocalLimits(window_s)
        self._admit = store.client.register_script(_ADMIT)
        self._settle = store.client.register_script(_SETTLE)
        # (key, day) -> {field: delta} to add to Redis when it is back.
        self._owed: dict[tuple[str, int], dict[str, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        store.on_recovery(self.replay)

    def _keys(self, name: str) -> list[str]:
        return [self._store.key("rl", name), self._store.key("budget", name)]

    async def admit(self, key: ApiKey, tokens: int, usd: float, joules: float) -> Reservation:
        if self._store.up:
            args: list[Any] = [
                self.window_s,
                _limit(key.rpm),
                _limit(key.tpm),
                _limit(key.budget_usd),
                _limit(key.budget_joules),
                tokens,
                repr(usd),
                repr(joules),
            ]
            try:
                reply: list[bytes] = await self._admit(keys=self._keys(key.name), args=args)
            except (*UNAVAILABLE, RedisError) as exc:
                self._store.failed(exc, "admit")
            else:
                return self._admitted(key, reply, tokens, usd, joules)
        self._store.stats.local_admissions += 1
        return self.local.admit(key, tokens, usd, joules)

    def _admitted(
        self, key: ApiKey, reply: list[bytes], tokens: int, usd: float, joules: float
    ) -> Reservation:
        ok, n, tk, retry, usd_held, j_held, w, d, us, js = (v.decode() for v in reply)
        # What Redis knows of the day's spend is where a fallback would start from.
        self.local.seed(key.name, int(d), float(us), float(js))
        if ok == "ok":
            return Reservation(key.name, int(w), int(d), tokens, usd, joules, shared=True)
        over_rate(key, int(n), int(tk), tokens, float(retry))
        usd_spent, j_spent = float(us), float(js)
        usd_reserved = max(0.0, float(usd_held) - usd_spent)
        j_reserved = max(0.0, float(j_held) - j_spent)
        over_budget(key, usd_spent, usd_reserved, usd, j_spent, j_reserved, joules)
        # Redis refused on figures that round differently here: a budget is held.
        raise RateLimited(
            f"daily budget of key {key.name!r} is held by requests in flight",
            retry_after_s=HELD_RETRY_S,
        )

    def settle(self, r: Reservation, usd: float, joules: float, tokens: int) -> None:
        """Off the request path: a task runs the script (or owes it while Redis is down)."""
        if not r.shared:
            self.local.settle(r, usd, joules, tokens)
            self._owe(r.key, r.day, {"us": usd, "js": joules})
            return
        deltas = {"ur": -r.usd, "us": usd, "jr": -r.joules, "js": joules}
        task = asyncio.create_task(self._send(r, tokens - r.tokens, deltas))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def reprice(self, r: Reservation, usd: float, joules: float) -> None:
        """Hold another quote for ``r`` (a fallback served): the same script as settling."""
        if not r.shared:
            self.local.reprice(r, usd, joules)
            return
        deltas = {"ur": usd - r.usd, "jr": joules - r.joules}
        r.usd, r.joules = usd, joules
        task = asyncio.create_task(self._send(r, 0, deltas))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, r: Reservation, token_delta: int, deltas: dict[str, float]) -> None:
        if self._store.up:
            args: list[Any] = [r.window, r.day, token_delta]
            for field, value in deltas.items():
                args += [field, repr(value)]
            try:
                await self._settle(keys=self._keys(r.key), args=args)
            except (*UNAVAILABLE, RedisError) as exc:
                self._store.failed(exc, "settle")
            else:
                return
        self._owe(r.key, r.day, deltas)

    def _owe(self, name: str, day: int, deltas: dict[str, float]) -> None:
        owed = self._owed.setdefault((name, day), {})
        for field, value in deltas.items():
            owed[field] = owed.get(field, 0.0) + value

    async def replay(self) -> None:
        """Add what was settled while Redis was down (called when it is back)."""
        while self._owed:
            (name, day), deltas = next(iter(self._owed.items()))
            args: list[Any] = [-1, day, 0]
            for field, value in deltas.items():
                args += [field, repr(value)]
            await self._settle(keys=self._keys(name), args=args)
            del self._owed[(name, day)]

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def local_day(now: float) -> int:
    return int(now // DAY_S)
