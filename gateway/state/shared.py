"""Choosing the stores: in-process and SQLite by default, Redis with ``FRESHET_REDIS_URL``.

Nothing else in the gateway knows which is active: the service, the accounting and the
router talk to the :class:`~gateway.state.health.HealthState`,
:class:`~gateway.ledger.sqlite.Ledger`,
:class:`~gateway.state.limits.Limits` and :class:`~gateway.state.keys.KeyStore` interfaces.
"""

from __future__ import annotations

import logging
import os

from msgspec import Struct

from gateway.ledger.redis import RedisLedger
from gateway.ledger.sqlite import Ledger, SQLiteLedger
from gateway.settings import Settings
from gateway.state.auth import Auth
from gateway.state.health import HealthState, LocalHealth, health_groups
from gateway.state.health_redis import RedisHealth
from gateway.state.keys import KeyRing, KeyStore
from gateway.state.keys_redis import RedisKeyStore
from gateway.state.keys_sqlite import SQLiteKeyStore
from gateway.state.limits import InProcessLimits, Limits
from gateway.state.limits_redis import RedisLimits
from gateway.state.redis import RedisStore, StoreStats

log = logging.getLogger(__name__)


class StateView(Struct, kw_only=True):
    """``GET /freshet/state``: where shared state lives and how it is doing."""

    pid: int  # this process (one of several with `freshet serve --workers N`)
    store: str  # "local" or "redis"
    auth: str | None
    keys: int
    limits: str  # "per-process" or "shared"
    redis: StoreStats | None = None
    spooled_bytes: int | None = None
    spool_dropped: int | None = None


def key_store(settings: Settings, store: RedisStore | None = None) -> KeyStore:
    if settings.shared.redis.url:
        return RedisKeyStore(store or RedisStore(settings.shared.redis))
    return SQLiteKeyStore(settings.data_dir)


class SharedState:
    def __init__(self, settings: Settings) -> None:
        shared = settings.shared
        self.store = RedisStore(shared.redis) if shared.redis.url else None
        self.keys = KeyRing(key_store(settings, self.store), shared.keys.refresh_s)
        self.auth = Auth(shared, settings.host, self.keys)
        self.health: HealthState
        self.ledger: Ledger
        self.limits: Limits
        if self.store is None:
            self._health: RedisHealth | None = None
            self.health = LocalHealth(settings.health, groups=health_groups(settings))
            self.ledger = SQLiteLedger(settings.data_dir)
            self.limits = InProcessLimits(shared.limits.window_s)
        else:
            self._health = RedisHealth(self.store, settings.health, health_groups(settings))
            self.health = self._health
            self.ledger = RedisLedger(self.store, settings.data_dir)
            self.limits = RedisLimits(self.store, shared.limits.window_s)

    async def start(self) -> None:
        """Before the ledger and the backends start: Redis, keys, auth, shared health."""
        if self.store is not None:
            await self.store.start()
        else:
            log.info("shared state: in-process (limits, budgets and health are per process)")
        await self.keys.start()
        self.auth.decide()
        if self._health is not None:
            await self._health.start()

    def view(self) -> StateView:
        view = StateView(
            pid=os.getpid(),
            store="redis" if self.store else "local",
            auth=self.auth.state,
            keys=len(self.keys),
            limits="shared" if self.limits.shared else "per-process",
        )
        if self.store is not None:
            view.redis = self.store.stats
            if not self.store.up:
                view.limits = "per-process (redis unavailable)"
        if isinstance(self.ledger, RedisLedger):
            view.spooled_bytes = self.ledger.spool.size
            view.spool_dropped = self.ledger.spool.dropped
        return view

    async def aclose(self) -> None:
        """After the ledger has been closed."""
        if self._health is not None:
            await self._health.aclose()
        await self.limits.aclose()
        await self.keys.aclose()
        if self.store is not None:
            await self.store.aclose()
