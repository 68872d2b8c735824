"""Settings for shared state: auth, API keys, per-key limits and the Redis store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct, field

from gateway.errors import ConfigError
from gateway.settings.errors import _convert

# -- shared state: Settings for shared state: auth, API keys, per-key limits and the Redis store.
#
# Config file (all optional)::
#
#     auth: auto            # on | off | auto (off only when bound to loopback with no keys)
#     limits: {window_s: 60}
#     keys: {refresh_s: 1.0}
#     redis: {url: redis://127.0.0.1:6379/0, prefix: freshet, timeout_s: 0.5,
#             spool_max_bytes: 67108864}
#
# Environment: ``FRESHET_REDIS_URL`` (beats ``redis.url``), ``FRESHET_AUTH``,
# ``FRESHET_ADMIN_KEY`` (the key that opens ``/freshet/*`` admin routes when auth is on).
AuthMode = Literal["on", "off", "auto"]
TOP_KEYS = frozenset({"auth", "limits", "keys", "redis"})


class LimitSettings(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    # Length of the fixed window that rpm and tpm count in. 60 s means the limits are per
    # minute; tests shorten it (the counts are then "per window").
    window_s: float = 60.0


class KeySettings(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    # How often each process looks for new or revoked keys in the key store.
    refresh_s: Annotated[float, Meta(gt=0)] = 1.0


class RedisSettings(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    url: str | None = None
    prefix: str = "freshet"
    timeout_s: Annotated[float, Meta(gt=0)] = 0.5  # per command; past it Redis is unavailable
    # Local disk buffer for usage records.
    spool_max_bytes: Annotated[int, Meta(ge=0)] = 64 * 1024 * 1024


class SharedSettings(Struct, kw_only=True, frozen=True):
    auth: AuthMode = "auto"
    admin_key: str | None = None
    limits: LimitSettings = field(default_factory=LimitSettings)
    keys: KeySettings = field(default_factory=KeySettings)
    redis: RedisSettings = field(default_factory=RedisSettings)


def _auth_mode(value: Any, source: str, key: str) -> AuthMode:
    # YAML 1.1 reads a bare `on`/`off` as a boolean.
    if value is True:
        return "on"
    if value is False:
        return "off"
    text = str(value).strip().lower()
    if text not in ("on", "off", "auto"):
        raise ConfigError(f"must be on, off or auto; got {value!r}", file=source, key=key)
    return text  # type: ignore[return-value]


def _section(raw: Mapping[str, Any], name: str, type_: type[Any], source: str) -> Any:
    return _convert(raw.get(name) or {}, type_, source, name)


def load_shared(raw: Mapping[str, Any], env: Mapping[str, str], source: str) -> SharedSettings:
    auth = (
        _auth_mode(env["FRESHET_AUTH"], source, "FRESHET_AUTH")
        if env.get("FRESHET_AUTH")
        else _auth_mode(raw.get("auth", "auto"), source, "auth")
    )
    limits: LimitSettings = _section(raw, "limits", LimitSettings, source)
    if limits.window_s <= 0:
        raise ConfigError(
            "must be a positive number of seconds", file=source, key="limits.window_s"
        )
    keys: KeySettings = _section(raw, "keys", KeySettings, source)
    redis: RedisSettings = _section(raw, "redis", RedisSettings, source)
    url = env.get("FRESHET_REDIS_URL") or redis.url
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"must be a redis://, rediss:// or unix:// URL; got {url!r}",
            file=source,
            key="FRESHET_REDIS_URL" if env.get("FRESHET_REDIS_URL") else "redis.url",
        )
    return SharedSettings(
        auth=auth,
        admin_key=env.get("FRESHET_ADMIN_KEY") or None,
        limits=limits,
        keys=keys,
        redis=msgspec.structs.replace(redis, url=url or None),
    )
