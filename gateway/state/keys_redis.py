"""The shared key store on Redis.

``<prefix>:keys`` is a hash digest -> key record (JSON), ``<prefix>:keys:names`` maps each
name to its digest (names are unique), and ``<prefix>:keys:version`` is incremented on
every change so each process's :class:`gateway.state.keys.KeyRing` polls one integer.
"""

from __future__ import annotations

from typing import Any

import msgspec
from redis.exceptions import RedisError

from gateway.state.keys import ApiKey, KeyExists, KeyStoreUnavailable, decode_key, encode_key
from gateway.state.redis import RedisStore

_ADD = """
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('INCR', KEYS[3])
return 1
"""

_REVOKE = """
local digest = redis.call('HGET', KEYS[2], ARGV[1])
if not digest then return nil end
redis.call('HSET', KEYS[1], digest, ARGV[2])
redis.call('INCR', KEYS[3])
return redis.call('HGET', KEYS[1], digest)
"""


class RedisKeyStore:
    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._keys = store.key("keys")
        self._names = store.key("keys", "names")
        self._version = store.key("keys", "version")

    async def _call(self, what: str, fn: Any) -> Any:
        if not self._store.up:
            raise KeyStoreUnavailable("redis is unavailable")
        try:
            return await fn()
        except RedisError as exc:
            self._store.failed(exc, what)
            raise KeyStoreUnavailable(f"redis: {exc}") from exc
        except OSError as exc:
            self._store.failed(exc, what)
            raise KeyStoreUnavailable(f"redis: {exc}") from exc

    def _keys3(self) -> list[str]:
        return [self._keys, self._names, self._version]

    async def add(self, key: ApiKey) -> None:
        client = self._store.client

        async def run() -> Any:
            return await client.eval(_ADD, 3, *self._keys3(), key.name, key.digest, encode_key(key))

        if not await self._call("add key", run):
            raise KeyExists(f"a key named {key.name!r} exists already", param="name")

    async def all(self) -> list[ApiKey]:
        client = self._store.client

        async def run() -> Any:
            return await client.hgetall(self._keys)

        raw: dict[bytes, bytes] = await self._call("read keys", run)
        return sorted((decode_key(v) for v in raw.values()), key=lambda k: k.name)

    async def get(self, digest: str) -> ApiKey | None:
        client = self._store.client

        async def run() -> Any:
            return await client.hget(self._keys, digest)

        raw = await self._call("read key", run)
        return decode_key(raw) if raw else None

    async def revoke(self, name: str) -> bool:
        keys = {k.name: k for k in await self.all()}
        key = keys.get(name)
        if key is None:
            return False
        revoked = encode_key(msgspec.structs.replace(key, revoked=True))
        client = self._store.client

        async def run() -> Any:
            return await client.eval(_REVOKE, 3, *self._keys3(), name, revoked)

        return bool(await self._call("revoke key", run))

    async def version(self) -> str:
        client = self._store.client

        async def run() -> Any:
            return await client.get(self._version)

        raw = await self._call("read key version", run)
        return raw.decode() if raw else "0"

    async def aclose(self) -> None:
        return None
