"""Loading a config: the YAML file and ``FRESHET_*`` environment into :class:`Settings`."""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml
from msgspec import Struct, field

from gateway.backend import KNOWN_CAPABILITIES, BackendConfig, HardwareProfile
from gateway.errors import ConfigError
from gateway.settings.errors import ConfigErrorAt, T, _convert, did_you_mean, locate
from gateway.settings.sections import (
    _BACKEND_KEYS,
    _ID,
    _TOP_KEYS,
    EMBEDDED_DEFAULT,
    ConnectionSettings,
    CostSettings,
    GroupPolicy,
    HealthSettings,
    PluginSettings,
    ResponseStoreSettings,
    RoutingSettings,
    ServerSettings,
)
from gateway.settings.shared import SharedSettings, load_shared


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
    responses: ResponseStoreSettings = field(default_factory=ResponseStoreSettings)
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
        responses=server.responses,
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
                capabilities=_capabilities(entry, source, key),
            )
        )
    return out


def _capabilities(entry: dict[str, Any], source: str, key: str) -> frozenset[str] | None:
    """A backend's ``capabilities``: absent (the type's default), or a list of the
    capabilities the router knows (a misspelt one would never match a request)."""
    value = entry.get("capabilities")
    if value is None:
        return None
    if not isinstance(value, list):
        raise ConfigError(
            f"must be a list, e.g. [tools, json_schema], got {value!r}",
            file=source,
            key=f"{key}.capabilities",
        )
    for i, name in enumerate(value):
        if name not in KNOWN_CAPABILITIES:
            near = difflib.get_close_matches(str(name), KNOWN_CAPABILITIES, n=1)
            raise ConfigError(
                f"unknown capability {name!r} (known: {', '.join(KNOWN_CAPABILITIES)})"
                + (f"; did you mean {near[0]!r}?" if near else ""),
                file=source,
                key=f"{key}.capabilities[{i}]",
            )
    return frozenset(value)


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
