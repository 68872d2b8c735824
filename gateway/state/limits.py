"""Per-key rate limits and budgets, in-process (the embedded default).

Rate limits count in **fixed windows** of ``limits.window_s`` seconds (60: per minute),
aligned to the epoch: ``rpm`` requests and ``tpm`` tokens per window, where a request's
tokens are its estimated prompt plus its ``max_tokens`` (or the expected output), and are
corrected to the real count when it ends. A client may therefore get up to twice the limit
across a window boundary; in exchange a check is two integer comparisons, the same in
Redis, and ``Retry-After`` is the seconds to the next window, rounded up (a client that
waits exactly that long is admitted).

Budgets are per UTC day, in dollars and joules. Admission *reserves* the chosen
deployment's quote; the request's end *settles* its real cost (releasing the reservation
and adding what it really cost); a request that never reached a backend releases its
reservation for nothing. Admission refuses when spent + reserved + quote > budget, so the
day's spend exceeds a budget by at most the sum, over the requests in flight at the last
admission, of how much each one's real cost exceeded its quote. The refusal says which
case it is: when the *settled* spend alone leaves no room for the quote, waiting cannot
help (402 ``insufficient_quota``); when only reservations of requests in flight are in the
way, they will settle (usually for less than they hold) and the client should come back
(429 with ``Retry-After``, :data:`HELD_RETRY_S`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from gateway.errors import InsufficientQuota, RateLimited
from gateway.state.keys import ApiKey

DAY_S = 86400.0
HELD_RETRY_S = 1.0
"""``Retry-After`` when a budget is held by reservations in flight: they settle when their
requests end, which the limits cannot foresee; one second keeps a waiting client close."""


class Reservation:
    """What one admitted request holds until it is settled (exactly once)."""

    __slots__ = ("day", "joules", "key", "settled", "shared", "tokens", "usd", "window")

    def __init__(
        self, key: str, window: int, day: int, tokens: int, usd: float, joules: float, shared: bool
    ) -> None:
        self.key = key
        self.window = window
        self.day = day
        self.tokens = tokens
        self.usd = usd
        self.joules = joules
        self.shared = shared  # held in Redis (True) or in this process (False)
        self.settled = False


class _Counters:
    __slots__ = (
        "day",
        "j_reserved",
        "j_spent",
        "requests",
        "tokens",
        "usd_reserved",
        "usd_spent",
        "window",
    )

    def __init__(self) -> None:
        self.window = -1
        self.requests = 0
        self.tokens = 0
        self.day = -1
        self.usd_spent = 0.0
        self.usd_reserved = 0.0
        self.j_spent = 0.0
        self.j_reserved = 0.0


def over_rate(key: ApiKey, requests: int, tokens: int, wanted: int, retry_s: float) -> None:
    if key.rpm is not None and requests + 1 > key.rpm:
        raise RateLimited(
            f"rate limit reached for key {key.name!r}: {key.rpm} requests per window",
            retry_after_s=retry_s,
        )
    if key.tpm is not None and tokens + wanted > key.tpm:
        raise RateLimited(
            f"rate limit reached for key {key.name!r}: {key.tpm} tokens per window "
            f"({tokens} used, this request needs about {wanted})",
            retry_after_s=retry_s,
        )


def over_budget(
    key: ApiKey,
    usd_spent: float,
    usd_reserved: float,
    usd_quote: float,
    j_spent: float,
    j_reserved: float,
    j_quote: float,
) -> None:
    """Refuse when spent + reserved + quote is over a budget: 402 when the settled spend
    alone leaves no room for the quote, else 429 (reservations in flight will settle)."""
    if key.budget_usd is not None and usd_spent + usd_reserved + usd_quote > key.budget_usd:
        _refuse(
            key,
            "daily budget",
            f"${usd_spent:.6f}",
            f"${usd_reserved:.6f}",
            f"${key.budget_usd:.6f}",
            f"${usd_quote:.6f}",
            exhausted=usd_spent + usd_quote > key.budget_usd,
        )
    if key.budget_joules is not None and j_spent + j_reserved + j_quote > key.budget_joules:
        _refuse(
            key,
            "daily energy budget",
            f"{j_spent:.3f} J",
            f"{j_reserved:.3f} J",
            f"{key.budget_joules:.3f} J",
            f"{j_quote:.3f} J",
            exhausted=j_spent + j_quote > key.budget_joules,
        )


def _refuse(
    key: ApiKey, what: str, spent: str, reserved: str, budget: str, quote: str, *, exhausted: bool
) -> None:
    if exhausted:
        raise InsufficientQuota(
            f"{what} of key {key.name!r} exhausted: {spent} of {budget} spent "
            f"({reserved} more reserved by requests in flight); this request is quoted {quote}"
        )
    raise RateLimited(
        f"{what} of key {key.name!r} is held by requests in flight: {spent} of {budget} "
        f"spent and {reserved} reserved; this request is quoted {quote}. Retry when they end",
        retry_after_s=HELD_RETRY_S,
    )


class LocalLimits:
    """Counters in this process's memory: a few dict and float operations per request."""

    def __init__(self, window_s: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self._clock = clock
        self._keys: dict[str, _Counters] = {}

    def _counters(self, name: str, now: float) -> _Counters:
        c = self._keys.get(name)
        if c is None:
            c = self._keys[name] = _Counters()
        window = int(now // self.window_s)
        if c.window != window:
            c.window, c.requests, c.tokens = window, 0, 0
        day = int(now // DAY_S)
        if c.day != day:
            c.day, c.usd_spent, c.usd_reserved, c.j_spent, c.j_reserved = day, 0.0, 0.0, 0.0, 0.0
        return c

    def admit(self, key: ApiKey, tokens: int, usd: float, joules: float) -> Reservation:
        now = self._clock()
        c = self._counters(key.name, now)
        retry_s = (c.window + 1) * self.window_s - now
        over_rate(key, c.requests, c.tokens, tokens, retry_s)
        over_budget(key, c.usd_spent, c.usd_reserved, usd, c.j_spent, c.j_reserved, joules)
        c.requests += 1
        c.tokens += tokens
        c.usd_reserved += usd
        c.j_reserved += joules
        return Reservation(key.name, c.window, c.day, tokens, usd, joules, shared=False)

    def settle(self, r: Reservation, usd: float, joules: float, tokens: int) -> None:
        c = self._counters(r.key, self._clock())
        if c.window == r.window:
            c.tokens += tokens - r.tokens
        if c.day == r.day:
            c.usd_reserved = max(0.0, c.usd_reserved - r.usd)
            c.j_reserved = max(0.0, c.j_reserved - r.joules)
            c.usd_spent += usd
            c.j_spent += joules

    def reprice(self, r: Reservation, usd: float, joules: float) -> None:
        """Hold ``usd``/``joules`` for ``r`` instead (a fallback with another quote served)."""
        c = self._counters(r.key, self._clock())
        if c.day == r.day:
            c.usd_reserved = max(0.0, c.usd_reserved + usd - r.usd)
            c.j_reserved = max(0.0, c.j_reserved + joules - r.joules)
        r.usd, r.joules = usd, joules

    def seed(self, name: str, day: int, usd_spent: float, j_spent: float) -> None:
        """Adopt the shared store's spend (so a fallback starts from what Redis knew)."""
        c = self._counters(name, self._clock())
        if c.day == day:
            c.usd_spent = max(c.usd_spent, usd_spent)
            c.j_spent = max(c.j_spent, j_spent)

    def spent(self, name: str) -> tuple[float, float]:
        c = self._counters(name, self._clock())
        return c.usd_spent, c.j_spent


class Limits(Protocol):
    shared: bool

    async def admit(self, key: ApiKey, tokens: int, usd: float, joules: float) -> Reservation: ...

    def settle(self, r: Reservation, usd: float, joules: float, tokens: int) -> None: ...

    def reprice(self, r: Reservation, usd: float, joules: float) -> None: ...

    async def aclose(self) -> None: ...


class InProcessLimits:
    """:class:`LocalLimits` behind the (async) :class:`Limits` interface."""

    shared = False

    def __init__(self, window_s: float) -> None:
        self.local = LocalLimits(window_s)

    async def admit(self, key: ApiKey, tokens: int, usd: float, joules: float) -> Reservation:
        return self.local.admit(key, tokens, usd, joules)

    def reprice(self, r: Reservation, usd: float, joules: float) -> None:
        self.local.reprice(r, usd, joules)

    def settle(self, r: Reservation, usd: float, joules: float, tokens: int) -> None:
        self.local.settle(r, usd, joules, tokens)

    async def aclose(self) -> None:
        return None
