"""Typed settings from one YAML config file plus ``FRESHET_*`` environment variables.

No config file means the embedded default fleet (:data:`EMBEDDED_DEFAULT`). Every error
names the file, the key and the reason, so ``freshet serve`` can refuse to start with a
message an operator can act on.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import yaml
from msgspec import Meta, Struct, field

from gateway.backend import BackendConfig, HardwareProfile
from gateway.backend import convert as _plain_convert
from gateway.errors import ConfigError
from gateway.protocol import Freshness

T = TypeVar("T")


# -- config errors that say where: the line of the key, and "did you mean" for misspellings.


class ConfigErrorAt(ConfigError):
    """A :class:`ConfigError` that knows the line of its key in the file (where known)."""

    def __init__(
        self, reason: str, *, file: str | None = None, key: str | None = None, line: int | None
    ) -> None:
        super().__init__(reason, file=f"{file}, line {line}" if file and line else file, key=key)
        self.file = file
        self.line = line


def did_you_mean(word: str, names: Iterable[str]) -> str:
    """``"; did you mean `x`?"`` when ``word`` is close to one of ``names``, else ``""``."""
    close = difflib.get_close_matches(word, sorted(set(names)), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `([^`]+)`")
_LAST_PART = re.compile(r"(\.[^.\[\]]+|\[[^\]]*\])$")


def _convert(
    value: Any, type_: type[T], source: str | None, key: str, also: Iterable[str] = ()
) -> T:
    """``gateway.backend.convert``, and for an unknown key the known one it resembles."""
    try:
        return _plain_convert(value, type_, source, key)
    except ConfigError as exc:
        found = _UNKNOWN_FIELD.match(exc.reason)
        if found is None:
            raise
        at = (exc.key or key)[len(key) :]
        names = [*_fields_at(type_, at), *(also if not at else ())]
        word = found.group(1)
        raise ConfigError(
            exc.reason + did_you_mean(word, names), file=source, key=f"{exc.key}.{word}"
        ) from exc


def _fields_at(type_: Any, path: str) -> list[str]:
    """The keys of the struct at ``path`` (``.a[0].b``, msgspec's form) inside ``type_``."""
    node: Any = msgspec.inspect.type_info(type_)
    for name, _ in re.findall(r"\.([^.\[]+)|\[([^\]]*)\]", path):
        node = _unwrap(node)
        if name and isinstance(node, msgspec.inspect.StructType):
            node = next((f.type for f in node.fields if f.encode_name == name), None)
        elif not name:
            node = getattr(node, "item_type", None) or getattr(node, "value_type", None)
        else:
            return []
    node = _unwrap(node)
    if not isinstance(node, msgspec.inspect.StructType):
        return []
    return [f.encode_name for f in node.fields]


def _unwrap(node: Any) -> Any:
    while isinstance(node, msgspec.inspect.Metadata):
        node = node.type
    if isinstance(node, msgspec.inspect.UnionType):
        return next((t for t in node.types if isinstance(t, msgspec.inspect.StructType)), node)
    return node


def key_line(lines: Mapping[str, int], key: str | None) -> int | None:
    """The line of ``key`` (``backends[0].twin``) or of the nearest key above it."""
    while key:
        if key in lines:
            return lines[key]
        key = _LAST_PART.sub("", key) if _LAST_PART.search(key) else ""
    return None


def locate(exc: ConfigError, source: str, lines: Mapping[str, int]) -> ConfigError:
    """``exc`` naming the config file (a plugin may not know it) and its key's line."""
    if isinstance(exc, ConfigErrorAt) or exc.file not in (None, source):
        return exc
    located = ConfigErrorAt(exc.reason, file=source, key=exc.key, line=key_line(lines, exc.key))
    located.__cause__ = exc.__cause__
    return located


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


_STATE_KEYS = TOP_KEYS


EMBEDDED_DEFAULT: Mapping[str, Any] = {
    "backends": [
        {
            "id": "cpu",
            "type": "llamacpp",
            "model": "smollm2-135m",
            # Estimate from SmolLM2's training data; configurable like every cutoff.
            "knowledge_cutoff": "2024-06-01",
        },
        {
            # A simulated etched ASIC (Llama 3.1 8B in silicon); its text comes from the
            # CPU model, its timings and joules from the card's model.
            "id": "asic",
            "type": "asic-sim",
            "model": "llama-3.1-8b",
            "knowledge_cutoff": "2023-12-01",
            "twin": "cpu",
        },
    ],
    "groups": {"auto": ["asic", "cpu"]},
}

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_BACKEND_KEYS = {
    "id",
    "type",
    "model",
    "knowledge_cutoff",
    "profile",
    "adapters",
    "energy",
    "list_price",
    "default_output_tokens",
    "max_output_tokens",
}
_TOP_KEYS = {"backends", "groups", "server", "plugins", "prices", "cost", "routing", "health"}
_TOP_KEYS |= _STATE_KEYS


class ConnectionSettings(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``server.connections``: what one client connection may hold (README, Connection limits)."""

    max_header_bytes: int = 16 * 1024  # request line and headers together; 431 beyond
    max_header_line_bytes: int = 8 * 1024  # one header line (431) or the URL (414)
    header_timeout_s: float = 10.0  # connect (or a request's first byte) to its headers' end
    body_timeout_s: float = 30.0  # the longest pause between two reads of a request body
    keep_alive_s: float = 5.0  # an idle connection between requests is closed after this
    # Open connections per process; unset: min(1000, the open-file limit less 100).
    max_connections: int | None = None


class ServerSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8400
    max_body_bytes: Annotated[int, Meta(ge=1)] = 4 * 1024 * 1024
    data_dir: str | None = None
    connections: ConnectionSettings = field(default_factory=ConnectionSettings)
    # Accepted for old configs; no effect: the generation endpoints always take the edge
    # in front of Litestar (gateway/api/generation.py).
    fast_path: bool = True
    # Host names (``Host`` header) answered, against DNS rebinding: unset means localhost,
    # 127.0.0.1 and [::1] when bound to a loopback address, any otherwise; "*.example.com"
    # takes sub-domains, "*" any host.
    allowed_hosts: list[str] | None = None
    # Origins whose web pages may call the API (CORS); none unless listed ("*": any).
    cors_origins: list[str] = field(default_factory=list)
    # With auth on, /schema* needs the admin key unless this is true.
    open_schema: bool = False
    # On SIGTERM: requests in flight get this long to finish; then streams end with an
    # error event and [DONE], other requests with 503 + Retry-After (recorded "shutdown").
    shutdown_grace_s: Annotated[float, Meta(ge=0, le=3600)] = 10.0


class PluginSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    block: list[str] = field(default_factory=list)


class GroupPolicy(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """How a group routes: the policy plugin, what its quotes count, its default need."""

    router: str = "cheapest-fresh"
    policy: Literal["full", "marginal"] = "full"
    freshness: Freshness | None = None


class RoutingSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    # Backends tried per request before giving up (retry budget); 0 would refuse them all.
    max_attempts: Annotated[int, Meta(ge=1, le=100)] = 3
    default_output_tokens: Annotated[int, Meta(ge=1)] = 256  # expected output without max_tokens


class HealthSettings(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """``health:``, backend health after Envoy's outlier detection (gateway/state/health.py).

    A backend is ejected (its circuit opens) when, before their first byte, at least
    ``failure_rate`` of at least ``min_requests`` requests in the last ``window_s`` failed,
    or ``consecutive_failures`` in a row did; for ``ejection_s``, doubled with each
    ejection in a row up to ``max_ejection_s``; then ``half_open_requests`` requests at a
    time probe it (a success closes it). No more than ``max_ejection_percent`` of a group's
    backends are ejected at once (at least one); a request whose candidates are all
    unhealthy tries them anyway (panic mode).
    """

    failure_rate: Annotated[float, Meta(gt=0, le=1)] = 0.5
    min_requests: Annotated[int, Meta(ge=1)] = 10
    window_s: Annotated[float, Meta(gt=0)] = 10.0
    consecutive_failures: Annotated[int, Meta(ge=1)] = 5
    ejection_s: Annotated[float, Meta(gt=0)] = 5.0
    max_ejection_s: Annotated[float, Meta(gt=0)] = 30.0
    max_ejection_percent: Annotated[float, Meta(ge=0, le=100)] = 50.0
    half_open_requests: Annotated[int, Meta(ge=1)] = 1


class CostSettings(Struct, kw_only=True, forbid_unknown_fields=True):
    # The cost model plugin to use; "energy" comes with freshet-energy.
    model: str = "energy"


class Settings(Struct, kw_only=True):
    host: str
    port: int
    data_dir: Path
    max_body_bytes: int
    capture_content: bool
    config_file: str | None
    backends: tuple[BackendConfig, ...]
    groups: dict[str, tuple[str, ...]]
    blocked_plugins: tuple[str, ...]
    prices: dict[str, Any] = field(default_factory=dict)
    cost: CostSettings = field(default_factory=CostSettings)
    group_policies: dict[str, GroupPolicy] = field(default_factory=dict)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    shared: SharedSettings = field(default_factory=SharedSettings)
    fast_path: bool = True
    connections: ConnectionSettings = field(default_factory=ConnectionSettings)
    allowed_hosts: tuple[str, ...] | None = None  # None: by the bind address
    cors_origins: tuple[str, ...] = ()
    open_schema: bool = False
    shutdown_grace_s: float = 10.0
    # Where each key is in the config file (``backends[0].twin`` -> its line), for errors
    # found after loading (:func:`locate`).
    lines: dict[str, int] = field(default_factory=dict)


def default_data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "freshet"


def load_settings(
    config_file: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    host: str | None = None,
    port: int | None = None,
) -> Settings:
    """Build settings: explicit arguments beat env, env beats the file, the file beats defaults."""
    env = os.environ if env is None else env
    config_file = config_file or env.get("FRESHET_CONFIG") or None
    raw, lines = _read_file(config_file) if config_file else (dict(EMBEDDED_DEFAULT), {})
    source = config_file or "<embedded default>"
    try:
        settings = _settings(raw, source, env, host, port)
    except ConfigError as exc:
        located = locate(exc, source, lines)
        if located is exc:
            raise
        raise located from exc
    settings.config_file = config_file
    settings.lines = lines
    return settings


def _settings(
    raw: dict[str, Any], source: str, env: Mapping[str, str], host: str | None, port: int | None
) -> Settings:
    unknown = [str(k) for k in raw if k not in _TOP_KEYS]
    if unknown:
        raise ConfigError(
            f"unknown top-level key `{unknown[0]}`{did_you_mean(unknown[0], _TOP_KEYS)} "
            f"(the top level has {', '.join(sorted(_TOP_KEYS))})",
            file=source,
            key=unknown[0],
        )
    server = _convert(raw.get("server") or {}, ServerSettings, source, "server")
    plugins = _convert(raw.get("plugins") or {}, PluginSettings, source, "plugins")
    cost = _convert(raw.get("cost") or {}, CostSettings, source, "cost")
    prices = raw.get("prices") or {}
    if not isinstance(prices, dict):
        raise ConfigError("must be a mapping", file=source, key="prices")
    backends = _parse_backends(raw.get("backends"), source)
    groups, policies = _parse_groups(raw.get("groups") or {}, backends, source)
    routing = _convert(raw.get("routing") or {}, RoutingSettings, source, "routing")
    health = _convert(raw.get("health") or {}, HealthSettings, source, "health")
    if health.max_ejection_s < health.ejection_s:
        raise ConfigError("must be >= health.ejection_s", file=source, key="health.max_ejection_s")
    blocked = [*plugins.block, *_split(env.get("FRESHET_BLOCK_PLUGINS", ""))]
    data_dir = env.get("FRESHET_DATA_DIR") or server.data_dir
    return Settings(
        host=host or env.get("FRESHET_HOST") or server.host,
        port=port if port is not None else _env_int(env, "FRESHET_PORT", server.port),
        data_dir=Path(data_dir) if data_dir else default_data_dir(env),
        max_body_bytes=server.max_body_bytes,
        capture_content=env.get("FRESHET_CAPTURE_CONTENT", "").lower() in {"1", "true", "yes"},
        config_file=None,
        backends=tuple(backends),
        groups=groups,
        blocked_plugins=tuple(dict.fromkeys(blocked)),
        prices=prices,
        cost=cost,
        group_policies=policies,
        routing=routing,
        health=health,
        shared=load_shared(raw, env, source),
        fast_path=_env_bool(env, "FRESHET_FAST_PATH", server.fast_path),
        connections=_connections(server.connections, source),
        allowed_hosts=_hosts(server.allowed_hosts, source),
        cors_origins=_origins(server.cors_origins, source),
        open_schema=server.open_schema,
        shutdown_grace_s=server.shutdown_grace_s,
    )


def _hosts(hosts: list[str] | None, source: str) -> tuple[str, ...] | None:
    if hosts is None:
        return None
    for i, host in enumerate(hosts):
        if not host or any(c in host for c in "/ @"):
            raise ConfigError(
                f"a host name such as gw.example.com or *.example.com; got {host!r}",
                file=source,
                key=f"server.allowed_hosts[{i}]",
            )
    return tuple(h.lower().rstrip(".") for h in hosts)


def _origins(origins: list[str], source: str) -> tuple[str, ...]:
    for i, origin in enumerate(origins):
        if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
            raise ConfigError(
                f"an origin such as https://app.example.com (no path) or *; got {origin!r}",
                file=source,
                key=f"server.cors_origins[{i}]",
            )
    return tuple(o.lower() for o in origins)


def _connections(limits: ConnectionSettings, source: str) -> ConnectionSettings:
    def fail(name: str, reason: str) -> ConfigError:
        return ConfigError(reason, file=source, key=f"server.connections.{name}")

    for name in ("max_header_bytes", "max_header_line_bytes"):
        if getattr(limits, name) < 1024:
            raise fail(name, f"must be at least 1024 bytes; got {getattr(limits, name)}")
    if limits.max_header_line_bytes > limits.max_header_bytes:
        raise fail("max_header_line_bytes", "must not be more than max_header_bytes")
    for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s"):
        if not 0 < getattr(limits, name) <= 86400:  # false for NaN too
            raise fail(name, f"must be seconds above 0, at most 86400; got {getattr(limits, name)}")
    if limits.max_connections is not None and limits.max_connections < 1:
        raise fail("max_connections", f"must be at least 1; got {limits.max_connections}")
    return limits


def convert_params(config: BackendConfig, type_: type[T]) -> T:
    """Validate a backend's type-specific keys; errors name ``backends[i].<key>``."""
    key = f"backends[{config.index}]"
    return _convert(dict(config.params), type_, config.source, key, also=_BACKEND_KEYS)


def convert_profile(config: BackendConfig, defaults: HardwareProfile) -> HardwareProfile:
    """The backend's hardware profile: the plugin's defaults overlaid with the config's."""
    merged = {**msgspec.structs.asdict(defaults), **dict(config.profile)}
    return _convert(merged, HardwareProfile, config.source, f"backends[{config.index}].profile")


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, except that a date that does not exist (``2025-13-45``) stays a
    string, for :func:`parse_date` to refuse with its key rather than a traceback."""

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:
            return self.construct_scalar(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def _read_file(path: str) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's mapping, and the line of every key in it (``backends[0].twin``: 7)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read config file: {reason}", file=path) from exc
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (column {mark.column + 1})" if mark else ""
        reason = "; ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise ConfigErrorAt(
            f"invalid YAML: {reason}{where}",
            file=path,
            line=mark.line + 1 if mark else None,
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=path) from exc
    finally:
        loader.dispose()
    if data is None or node is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigErrorAt("the top level must be a mapping", file=path, line=1)
    lines: dict[str, int] = {}
    _note_lines(node, "", lines)
    return data, lines


def _note_lines(node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = f"{path}.{key.value}" if path else str(key.value)
            lines.setdefault(child, key.start_mark.line + 1)
            _note_lines(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.setdefault(f"{path}[{i}]", item.start_mark.line + 1)
            _note_lines(item, f"{path}[{i}]", lines)


def _parse_backends(value: Any, source: str) -> list[BackendConfig]:
    if not isinstance(value, list) or not value:
        raise ConfigError("must be a non-empty list of backends", file=source, key="backends")
    seen: set[str] = set()
    out: list[BackendConfig] = []
    for i, entry in enumerate(value):
        key = f"backends[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError("must be a mapping", file=source, key=key)
        for required in ("id", "type", "knowledge_cutoff"):
            if entry.get(required) is None or entry.get(required) == "":
                raise ConfigError(_missing(required, entry), file=source, key=key)
        backend_id = str(entry["id"])
        if not _ID.match(backend_id):
            raise ConfigError(
                "id must be 1-64 letters, digits, '.', '_' or '-'", file=source, key=f"{key}.id"
            )
        if backend_id in seen:
            raise ConfigError(f"duplicate backend id {backend_id!r}", file=source, key=f"{key}.id")
        seen.add(backend_id)
        cutoff = entry.get("knowledge_cutoff")
        profile = entry.get("profile") or {}
        adapters = entry.get("adapters") or []
        energy = entry.get("energy") or {}
        list_price = entry.get("list_price") or {}
        if not isinstance(profile, dict):
            raise ConfigError("must be a mapping", file=source, key=f"{key}.profile")
        if not isinstance(adapters, list):
            raise ConfigError("must be a list", file=source, key=f"{key}.adapters")
        for name, section in (("energy", energy), ("list_price", list_price)):
            if not isinstance(section, dict):
                raise ConfigError("must be a mapping", file=source, key=f"{key}.{name}")
        out.append(
            BackendConfig(
                id=backend_id,
                type=str(entry["type"]),
                model=str(entry["model"]) if entry.get("model") is not None else None,
                knowledge_cutoff=None
                if cutoff == "unknown"
                else parse_date(cutoff, source, f"{key}.knowledge_cutoff"),
                profile=profile,
                adapters=adapters,
                energy=energy,
                list_price=list_price,
                params={k: v for k, v in entry.items() if k not in _BACKEND_KEYS},
                index=i,
                source=source,
                default_output_tokens=_tokens(entry, "default_output_tokens", source, key),
                max_output_tokens=_tokens(entry, "max_output_tokens", source, key),
            )
        )
    return out


def _missing(name: str, entry: dict[str, Any]) -> str:
    """Why a backend entry lacks a required key; a key that looks misspelt is named."""
    reason = f"missing required key {name!r}"
    if name == "knowledge_cutoff":
        reason += (
            " (the date the model's training data ends, YYYY-MM-DD; or `unknown`, which "
            "never satisfies a request that asks for freshness)"
        )
    near = difflib.get_close_matches(name, [str(k) for k in entry], n=1, cutoff=0.75)
    return reason + (f"; is `{near[0]}` a misspelling of it?" if near else "")


def _tokens(entry: dict[str, Any], name: str, source: str, key: str) -> int | None:
    """An output cap of a backend entry: absent, or a whole number of tokens >= 1."""
    value = entry.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**31 - 1:
        raise ConfigError(
            f"must be a whole number of tokens >= 1, got {value!r}",
            file=source,
            key=f"{key}.{name}",
        )
    return value


def _parse_groups(
    value: Any, backends: list[BackendConfig], source: str
) -> tuple[dict[str, tuple[str, ...]], dict[str, GroupPolicy]]:
    """``name: [ids]``, or ``name: {backends: [ids], router, policy, freshness}``."""
    if not isinstance(value, dict):
        raise ConfigError(
            "must be a mapping of group name to backend ids", file=source, key="groups"
        )
    ids = {b.id for b in backends}
    groups: dict[str, tuple[str, ...]] = {}
    policies: dict[str, GroupPolicy] = {}
    for name, spec in value.items():
        key = f"groups.{name}"
        members = spec
        if isinstance(spec, dict):
            members = spec.get("backends")
            rest = {k: v for k, v in spec.items() if k != "backends"}
            policies[str(name)] = _convert(rest, GroupPolicy, source, key)
            key = f"{key}.backends"
        if not isinstance(members, list) or not members:
            raise ConfigError("must be a non-empty list of backend ids", file=source, key=key)
        for member in members:
            if member not in ids:
                raise ConfigError(
                    f"unknown backend id {member!r}{did_you_mean(str(member), ids)}",
                    file=source,
                    key=key,
                )
        groups[str(name)] = tuple(str(m) for m in members)
    return groups, policies


def parse_date(value: Any, source: str | None, key: str) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise ConfigError(
            f"not an ISO date (YYYY-MM-DD) that exists: {value!r}", file=source, key=key
        ) from exc


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}", key=name) from exc


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}", key=name)


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]
