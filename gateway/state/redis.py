"""One Redis connection per process, and whether Redis is answering.

Every shared store (limits, keys, health, ledger) goes through :class:`RedisStore`. A
command that fails to connect or times out marks Redis *down*: the stores then fall back
to their local behaviour without trying Redis on the request path, a loud warning is
logged once per outage, and :attr:`RedisStore.stats` counts what happened. A monitor
task pings every :data:`PROBE_S` seconds while down and, when Redis answers again, runs
each store's recovery callback (replay of buffered records and budget settlements).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from msgspec import Struct
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.settings import RedisSettings

log = logging.getLogger(__name__)

PROBE_S = 0.5
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)


class StoreStats(Struct, kw_only=True):
    """Counters for operators (``GET /freshet/state``)."""

    up: bool = True
    outages: int = 0
    down_since: float | None = None
    local_admissions: int = 0  # requests admitted by per-process limits while Redis was down
    errors: int = 0  # Redis commands that failed


class RedisStore:
    def __init__(self, settings: RedisSettings) -> None:
        assert settings.url is not None
        self.settings = settings
        self.prefix = settings.prefix
        self.stats = StoreStats()
        self._client: aioredis.Redis | None = None
        self._recoveries: list[Callable[[], Awaitable[None]]] = []
        self._monitor: asyncio.Task[None] | None = None

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            # Created on first use, inside the serving event loop.
            self._client = aioredis.Redis.from_url(
                self.settings.url or "",
                socket_timeout=self.settings.timeout_s,
                socket_connect_timeout=self.settings.timeout_s,
                # One immediate retry (a pooled connection may be stale after a restart),
                # no backoff: an unavailable Redis costs the request path one failed
                # command, then nothing until the monitor sees it back.
                retry=Retry(NoBackoff(), 1),
                health_check_interval=10,
                client_name="freshet",
            )
        return self._client

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def up(self) -> bool:
        return self.stats.up

    def on_recovery(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._recoveries.append(callback)

    def failed(self, exc: BaseException, what: str) -> None:
        """A command failed: count it, and on a connection failure mark Redis down."""
        self.stats.errors += 1
        if not isinstance(exc, UNAVAILABLE):
            log.error("redis: %s failed: %r", what, exc)
            return
        if not self.stats.up:
            return
        self.stats.up = False
        self.stats.outages += 1
        self.stats.down_since = time.time()
        log.warning(
            "REDIS UNAVAILABLE (%s: %r): limits and budgets are now PER PROCESS, backend "
            "health is local, usage records are buffered on disk until Redis returns",
            what,
            exc,
        )
        if self._monitor is None or self._monitor.done():
            self._monitor = asyncio.create_task(self._watch(), name="freshet-redis-monitor")

    async def ping(self) -> bool:
        try:
            await self.client.ping()
        except (*UNAVAILABLE, RedisError):
            return False
        return True

    async def _watch(self) -> None:
        # Loops until Redis answers and every recovery has run with Redis still up (a
        # failure during recovery marks it down again while this task still runs).
        while True:
            while not await self.ping():  # noqa: ASYNC110 (polling a remote server)
                await asyncio.sleep(PROBE_S)
            down_since = self.stats.down_since or time.time()
            # Connections opened before the outage are dead: start afresh.
            with contextlib.suppress(*UNAVAILABLE, RedisError):
                await self.client.connection_pool.disconnect()
            self.stats.up = True
            for recover in self._recoveries:
                try:
                    await recover()
                except (*UNAVAILABLE, RedisError) as exc:
                    self.failed(exc, "recovery")
                    break
            if self.stats.up:
                self.stats.down_since = None
                log.warning(
                    "redis is back after %.1f s: shared limits and health resume",
                    time.time() - down_since,
                )
                return
            await asyncio.sleep(PROBE_S)

    async def start(self) -> None:
        if not await self.ping():
            self.failed(RedisConnectionError("no answer at start"), "connect")
        else:
            log.info("shared state on redis (%s, prefix %r)", self._safe_url(), self.prefix)

    def _safe_url(self) -> str:
        url = self.settings.url or ""
        if "@" in url:  # never log a password
            scheme, _, rest = url.partition("://")
            return f"{scheme}://***@{rest.rpartition('@')[2]}"
        return url

    async def aclose(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        if self._client is not None:
            with contextlib.suppress(*UNAVAILABLE, RedisError):
                await self._client.aclose()
