"""Typed settings from one YAML config file plus ``FRESHET_*`` environment variables.

No config file means the embedded default fleet (:data:`EMBEDDED_DEFAULT`). Every error
names the file, the key and the reason, so ``freshet serve`` can refuse to start with a
message an operator can act on.

The package: :mod:`~gateway.settings.load` (the file and environment into
:class:`Settings`), :mod:`~gateway.settings.sections` (each section's typed Struct, the
embedded default), :mod:`~gateway.settings.shared` (auth, keys, limits, Redis) and
:mod:`~gateway.settings.errors` (errors that name the file, line and key).
"""

from __future__ import annotations

from gateway.settings.errors import ConfigErrorAt, did_you_mean, key_line, locate
from gateway.settings.load import (
    Settings,
    _parse_backends,
    convert_params,
    convert_profile,
    default_data_dir,
    load_settings,
    parse_date,
)
from gateway.settings.sections import (
    EMBEDDED_DEFAULT,
    ConnectionSettings,
    CostSettings,
    GroupPolicy,
    HealthSettings,
    PluginSettings,
    RoutingSettings,
    ServerSettings,
)
from gateway.settings.shared import (
    TOP_KEYS,
    AuthMode,
    KeySettings,
    LimitSettings,
    RedisSettings,
    SharedSettings,
    load_shared,
)

__all__ = [
    "EMBEDDED_DEFAULT",
    "TOP_KEYS",
    "AuthMode",
    "ConfigErrorAt",
    "ConnectionSettings",
    "CostSettings",
    "GroupPolicy",
    "HealthSettings",
    "KeySettings",
    "LimitSettings",
    "PluginSettings",
    "RedisSettings",
    "RoutingSettings",
    "ServerSettings",
    "Settings",
    "SharedSettings",
    "_parse_backends",
    "convert_params",
    "convert_profile",
    "default_data_dir",
    "did_you_mean",
    "key_line",
    "load_settings",
    "load_shared",
    "locate",
    "parse_date",
]
