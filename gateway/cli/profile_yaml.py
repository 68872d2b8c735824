"""Setting a backend's ``profile:`` keys in a YAML config file in place.

The file is edited as text, where PyYAML's node marks say its values are: only the values
written change (or a key is added beside its siblings, in their style), so the rest of
the file (comments, order, quoting, blank lines) stays as it was.
"""

from __future__ import annotations

from collections.abc import Mapping

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.errors import ConfigError


def _get(mapping: MappingNode, key: str) -> Node | None:
    for k, v in mapping.value:
        if isinstance(k, ScalarNode) and k.value == key:
            found: Node = v
            return found
    return None


def _line_after(text: str, node: Node) -> int:
    """Where a line after ``node`` (and anything after it on its last line) begins."""
    pos = node.end_mark.index
    if pos > 0 and text[pos - 1] == "\n":
        return pos
    newline = text.find("\n", pos)
    return len(text) if newline < 0 else newline + 1


def _scalar(value: float) -> str:
    return f"{value:.1f}"


def set_profile(text: str, index: int, values: Mapping[str, float], file: str) -> str:
    """``text`` (a config file) with backend ``index``'s ``profile:`` holding ``values``."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not YAML: {exc}", file=file) from exc
    backends = _get(root, "backends") if isinstance(root, MappingNode) else None
    if not isinstance(backends, SequenceNode) or index >= len(backends.value):
        raise ConfigError(f"has no backends[{index}]", file=file, key="backends")
    backend = backends.value[index]
    key = f"backends[{index}].profile"
    if not isinstance(backend, MappingNode):
        raise ConfigError("is not a mapping", file=file, key=f"backends[{index}]")
    profile = _get(backend, "profile")
    edits: list[tuple[int, int, str]] = []  # (start, end, new text)
    if profile is None or (isinstance(profile, ScalarNode) and profile.value in ("", "~")):
        flow = "{" + ", ".join(f"{k}: {_scalar(v)}" for k, v in values.items()) + "}"
        if profile is not None and profile.end_mark.index > profile.start_mark.index:
            edits.append((profile.start_mark.index, profile.end_mark.index, flow))
        elif profile is not None:  # `profile:` with nothing after it
            edits.append((profile.start_mark.index, profile.start_mark.index, " " + flow))
        elif backend.flow_style:
            end = backend.end_mark.index - 1  # before its closing brace
            edits.append((end, end, f", profile: {flow}"))
        else:
            first = backend.value[0][0]
            at = _line_after(text, backend.value[-1][1])
            line = " " * first.start_mark.column + f"profile: {flow}\n"
            edits.append((at, at, line if text[:at].endswith("\n") or not at else "\n" + line))
    elif isinstance(profile, MappingNode):
        missing = {}
        for name, value in values.items():
            node = _get(profile, name)
            if node is None:
                missing[name] = value
            else:
                edits.append((node.start_mark.index, node.end_mark.index, _scalar(value)))
        if missing and profile.flow_style:
            end = profile.end_mark.index - 1
            sep = ", " if profile.value else ""
            added = ", ".join(f"{k}: {_scalar(v)}" for k, v in missing.items())
            edits.append((end, end, sep + added))
        elif missing:
            column = profile.value[0][0].start_mark.column
            at = _line_after(text, profile.value[-1][1])
            lines = "".join(f"{' ' * column}{k}: {_scalar(v)}\n" for k, v in missing.items())
            edits.append((at, at, lines if text[:at].endswith("\n") else "\n" + lines))
    else:
        raise ConfigError("must be a mapping", file=file, key=key)
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


__all__ = ["set_profile"]
