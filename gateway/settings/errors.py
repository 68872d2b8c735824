"""Config errors that say where: the file, the line of the key, and "did you mean"."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import msgspec

from gateway.backend import convert as _plain_convert
from gateway.errors import ConfigError

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
