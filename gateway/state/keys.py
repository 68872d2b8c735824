"""API keys: what a key may do, where keys are kept, and the in-process view of them.

A key is shown once when created (``fk-`` and 43 URL-safe characters, 256 bits of
randomness); stores keep only its SHA-256 digest with its settings. Each process holds a
snapshot of every key (:class:`KeyRing`), so authenticating a request is a hash and a
dict lookup; the snapshot is refreshed from the store every ``keys.refresh_s`` seconds and
on a miss, so a new key works at once and a revoked one stops within ``refresh_s``. Who
cares about changes (``auth: auto``, which turns on with the first key) listens with
:meth:`KeyRing.on_change`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from typing import Protocol

import msgspec
from msgspec import Struct

from gateway.errors import FreshetError, InvalidRequest
from gateway.protocol import Freshness

log = logging.getLogger(__name__)

PREFIX = "fk-"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class ApiKey(Struct, kw_only=True, frozen=True):
    """A key's identity and limits; ``None`` means no limit of that kind."""

    name: str
    digest: str  # sha256 hex of the secret
    created: float
    budget_usd: float | None = None  # per UTC day
    budget_joules: float | None = None  # per UTC day
    rpm: int | None = None  # requests per limits window (a minute by default)
    tpm: int | None = None  # tokens (prompt + max output) per limits window
    freshness: Freshness | None = None  # the key's default freshness need
    revoked: bool = False

    @property
    def limited(self) -> bool:
        return any(v is not None for v in (self.budget_usd, self.budget_joules, self.rpm, self.tpm))


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(
    name: str,
    *,
    budget_usd: float | None = None,
    budget_joules: float | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    freshness: Freshness | None = None,
) -> tuple[str, ApiKey]:
    """A fresh secret and its record (the secret is not in the record)."""
    if not _NAME.match(name):
        raise InvalidRequest(
            "a key name is 1-64 letters, digits, '.', '_', '@' or '-'", param="name"
        )
    for label, value in (("budget_usd", budget_usd), ("budget_joules", budget_joules)):
        if value is not None and value <= 0:
            raise InvalidRequest(f"{label} must be positive", param=label)
    for label, count in (("rpm", rpm), ("tpm", tpm)):
        if count is not None and count < 1:
            raise InvalidRequest(f"{label} must be at least 1", param=label)
    secret = PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        name=name,
        digest=digest(secret),
        created=time.time(),
        budget_usd=budget_usd,
        budget_joules=budget_joules,
        rpm=rpm,
        tpm=tpm,
        freshness=freshness,
    )
    return secret, key


class KeyExists(FreshetError):
    status = 409
    type = "invalid_request_error"
    code = "key_exists"


class KeyStoreUnavailable(FreshetError):
    """The store could not be read (Redis down); the last snapshot stays in use."""

    status = 503
    code = "key_store_unavailable"


class KeyStore(Protocol):
    """Where keys live: SQLite in the data directory, or Redis. Only digests are stored."""

    async def add(self, key: ApiKey) -> None: ...

    async def all(self) -> list[ApiKey]: ...

    async def get(self, digest: str) -> ApiKey | None: ...

    async def revoke(self, name: str) -> bool: ...

    async def version(self) -> str:
        """Changes whenever a key is added or revoked (cheap to ask)."""
        ...

    async def aclose(self) -> None: ...


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(ApiKey).decode


def encode_key(key: ApiKey) -> bytes:
    return _encode(key)


def decode_key(data: bytes | str) -> ApiKey:
    return _decode(data)


class KeyRing:
    """The process's snapshot of the key store."""

    MAX_MISSES = 10_000

    def __init__(self, store: KeyStore, refresh_s: float = 1.0) -> None:
        self.store = store
        self._refresh_s = refresh_s
        self._by_digest: dict[str, ApiKey] = {}
        self._misses: dict[str, float] = {}  # digest -> when it was last looked up in vain
        self._version: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever the snapshot has changed (a key added or revoked)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    @property
    def loaded(self) -> bool:
        """Whether the store has been read at least once."""
        return self._version is not None

    def __len__(self) -> int:
        return sum(1 for k in self._by_digest.values() if not k.revoked)

    async def start(self) -> None:
        try:
            await self.refresh()
        except KeyStoreUnavailable as exc:
            log.warning("API keys: %s; serving with no keys until the store answers", exc)
        self._task = asyncio.create_task(self._loop(), name="freshet-key-refresh")

    async def refresh(self) -> None:
        version = await self.store.version()
        if version == self._version:
            return
        keys = await self.store.all()
        self._by_digest = {k.digest: k for k in keys}
        self._misses.clear()
        self._version = version
        self._changed()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            # Unavailable: the store's own warning says so; the snapshot stays in use.
            with contextlib.suppress(KeyStoreUnavailable):
                await self.refresh()

    def cached(self, secret_digest: str) -> ApiKey | None:
        return self._by_digest.get(secret_digest)

    async def lookup(self, secret_digest: str) -> ApiKey | None:
        """The key with this digest (revoked ones included), or ``None``."""
        key = self._by_digest.get(secret_digest)
        if key is not None:
            return key
        now = time.monotonic()
        missed = self._misses.get(secret_digest)
        if missed is not None and now - missed < self._refresh_s:
            return None  # asked the store a moment ago
        try:
            key = await self.store.get(secret_digest)
        except KeyStoreUnavailable:
            return None
        if key is None:
            if len(self._misses) >= self.MAX_MISSES:
                self._misses.clear()
            self._misses[secret_digest] = now
            return None
        self._by_digest[secret_digest] = key
        self._changed()
        return key

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.store.aclose()
