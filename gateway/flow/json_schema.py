"""A structural check of the JSON Schemas clients send (``tools[].function.parameters``,
``response_format.json_schema.schema``), so a malformed one is a 400 naming where it is
wrong instead of a backend failing on it later.

It checks the keywords a grammar or an upstream server acts on (``type``, ``properties``,
``required``, ``items``, ``enum``, the combinators, ``$defs``), not the whole meta-schema:
an unknown keyword is left alone, as JSON Schema itself does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.errors import InvalidRequest

TYPES = frozenset(("object", "array", "string", "number", "integer", "boolean", "null"))
MAX_DEPTH = 32  # nesting of subschemas: deeper is refused rather than recursed into

_SUBSCHEMA = ("items", "additionalProperties", "not", "contains", "propertyNames")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")


def check_schema(schema: Any, param: str, object_root: bool = False) -> None:
    """Raise :class:`InvalidRequest` (its ``param`` the path of the bad part) unless
    ``schema`` is a well-formed JSON Schema; ``object_root``: the root must describe a JSON
    object (a function's arguments)."""
    _check(schema, param, 0)
    if object_root and isinstance(schema, Mapping):
        kind = schema.get("type")
        if kind is not None and kind != "object":
            raise InvalidRequest(
                f"must be a JSON Schema of type 'object', not {kind!r}", param=f"{param}.type"
            )


def _check(schema: Any, at: str, depth: int) -> None:
    if isinstance(schema, bool):
        return  # true: anything, false: nothing
    if not isinstance(schema, Mapping):
        raise InvalidRequest(
            f"a JSON Schema must be an object or a boolean, not {type(schema).__name__}", param=at
        )
    if depth > MAX_DEPTH:
        raise InvalidRequest(f"a JSON Schema nested deeper than {MAX_DEPTH} levels", param=at)
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not kinds or any(not isinstance(k, str) or k not in TYPES for k in kinds):
            raise InvalidRequest(
                f"type must be one of {', '.join(sorted(TYPES))} (or a list of them), not {kind!r}",
                param=f"{at}.type",
            )
    required = schema.get("required")
    if required is not None and (
        not isinstance(required, list) or any(not isinstance(r, str) for r in required)
    ):
        raise InvalidRequest("required must be a list of property names", param=f"{at}.required")
    enum = schema.get("enum")
    if enum is not None and (not isinstance(enum, list) or not enum):
        raise InvalidRequest("enum must be a non-empty list", param=f"{at}.enum")
    for key in _SUBSCHEMA:
        if key in schema:
            _check(schema[key], f"{at}.{key}", depth + 1)
    for key in _SCHEMA_LISTS:
        if key in schema:
            items = schema[key]
            if not isinstance(items, list) or not items:
                raise InvalidRequest(
                    f"{key} must be a non-empty list of schemas", param=f"{at}.{key}"
                )
            for i, sub in enumerate(items):
                _check(sub, f"{at}.{key}[{i}]", depth + 1)
    for key in _SCHEMA_MAPS:
        if key in schema:
            subs = schema[key]
            if not isinstance(subs, Mapping):
                raise InvalidRequest(f"{key} must be an object of schemas", param=f"{at}.{key}")
            for name, sub in subs.items():
                _check(sub, f"{at}.{key}.{name}", depth + 1)
