"""Tools and structured output on llama.cpp: grammars that constrain what the model may
generate, the prompt that tells it about the tools, and the reading of its answer.

A small model cannot be trusted to follow a format, so the format is enforced: llama.cpp
samples only tokens its GBNF grammar allows.

- ``response_format`` ``json_object``: a grammar for any JSON object; ``json_schema``: the
  schema's grammar (``llama_cpp``'s JSON-Schema converter).
- ``tool_choice`` ``required`` or a named function: a grammar for exactly one call object
  ``{"name": "<function>", "arguments": {...}}`` of an allowed function, its arguments valid
  against the function's ``parameters``; returned as a tool call (``finish_reason``
  ``tool_calls``).
- ``auto``: the call object or plain text that does not start with ``{``; the first
  character decides which. With a ``response_format`` too: the call object or the
  format's JSON, told apart when the answer is complete (so it is not streamed piece by
  piece). ``none``: the tools are ignored (not even described).

The model sees the tools in the system prompt (:func:`tools_prompt`): one JSON line per
function, then how to call one. Earlier calls in the history are shown to it as the same
call objects, and tool results as messages of role ``tool`` (or, when the GGUF's chat
template refuses that role, as user messages starting ``Result of tool call <id>:``).
One call per answer: ``parallel_tool_calls`` is accepted and has no effect.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from llama_cpp.llama_grammar import json_schema_to_gbnf

from gateway.plugin_api import (
    GenerationRequest,
    InvalidRequest,
    Message,
    NamedTool,
    ToolCallDelta,
    ToolSpec,
)

Mode = Literal["text", "json", "call", "auto", "call_or_json"]

_TEXT_RULES = "root ::= freshet-call | freshet-text\nfreshet-text ::= [^{] [^\\x00]*\n"
_ROOT = re.compile(r"^root ::=", re.M)


class Plan:
    """How to generate one request: the grammar (``None``: free text) and how to read the
    output (``text``; ``json``: text that the grammar keeps JSON; ``call``: a tool call;
    ``auto``: a call if it starts with ``{``, else text)."""

    def __init__(self, mode: Mode, grammar: str | None, tools: Sequence[str] = ()) -> None:
        self.mode = mode
        self.grammar = grammar
        self.tools = tools  # the functions it may call


def plan(request: GenerationRequest) -> Plan:
    """The grammar and mode for ``request``; a schema the converter cannot turn into a
    grammar is a 400 naming it."""
    if request.operation != "chat":
        return Plan("text", None)
    fmt = request.response_format
    choice = request.effective_tool_choice()
    if choice == "none":
        if fmt is None or fmt.type == "text":
            return Plan("text", None)
        schema = fmt.schema if fmt.type == "json_schema" and fmt.schema else {"type": "object"}
        return Plan("json", _gbnf(schema, "response_format.json_schema.schema"))
    allowed = _allowed(request.tools, choice)
    names = [t.name for t in allowed]
    if choice == "auto" and fmt is not None and fmt.type != "text":
        answer = fmt.schema if fmt.type == "json_schema" and fmt.schema else {"type": "object"}
        either = {"anyOf": [*call_schema(allowed)["anyOf"], answer]}
        return Plan("call_or_json", _gbnf(either, "response_format.json_schema.schema"), names)
    grammar = _gbnf(call_schema(allowed), "tools")
    if choice != "auto":
        return Plan("call", grammar, names)
    # Either the call object or text: the call's rules under their own root.
    return Plan("auto", _ROOT.sub("freshet-call ::=", grammar) + "\n" + _TEXT_RULES, names)


def _allowed(tools: Sequence[ToolSpec], choice: object) -> list[ToolSpec]:
    if isinstance(choice, NamedTool):
        return [t for t in tools if t.name == choice.name]
    return list(tools)


def call_schema(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    """A JSON Schema for one call of any of ``tools``: ``name`` first, then ``arguments``
    (the order :class:`CallReader` reads them in)."""
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "name": {"const": tool.name},
                    "arguments": dict(tool.parameters) or {"type": "object"},
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for tool in tools
        ]
    }


# A bound on counts the grammar spells out (llama.cpp expands x{0,n} into n rules): a
# larger one would take the sampler's memory and time rather than shape the output.
MAX_REPEAT = 1000
_COUNTS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
_PATTERN_COUNT = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


def _enforceable(node: Any, param: str) -> None:
    """Refuse what the converter would turn into a huge grammar, or fetch: counts over
    :data:`MAX_REPEAT` (in a pattern too), references outside the schema."""
    if isinstance(node, list):
        for item in node:
            _enforceable(item, param)
        return
    if not isinstance(node, Mapping):
        return
    for key in _COUNTS:
        value = node.get(key)
        if isinstance(value, int) and value > MAX_REPEAT:
            raise InvalidRequest(
                f"{key} {value} is over {MAX_REPEAT}, the most llama.cpp's grammar enforces",
                param=param,
            )
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        for match in _PATTERN_COUNT.finditer(pattern):
            if any(int(n) > MAX_REPEAT for n in match.groups() if n):
                raise InvalidRequest(
                    f"pattern repeats {match.group(0)}: over {MAX_REPEAT}, the most llama.cpp's "
                    "grammar enforces",
                    param=param,
                )
    ref = node.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#"):
        raise InvalidRequest(f"$ref {ref!r}: only references inside the schema", param=param)
    for value in node.values():
        if isinstance(value, (Mapping, list)):
            _enforceable(value, param)


_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")


def _bounded(node: Any, param: str) -> Any:
    """``node`` with what llama_cpp's converter would silently ignore made enforceable, or
    refused: an integer between two bounds at most :data:`MAX_REPEAT` apart becomes the
    ``enum`` of its values (the converter has no ranges); any other numeric bound, and
    ``uniqueItems``, is a 400 (a grammar cannot keep it, and a schema the output might
    break is no schema)."""
    if isinstance(node, list):
        return [_bounded(item, param) for item in node]
    if not isinstance(node, Mapping):
        return node
    out = {k: _bounded(v, param) if isinstance(v, (Mapping, list)) else v for k, v in node.items()}
    bounds = [k for k in _BOUNDS if k in out]
    if out.get("uniqueItems") is True:
        raise InvalidRequest("uniqueItems cannot be enforced on llama.cpp", param=param)
    if not bounds or "enum" in out or "const" in out:
        return out
    low, high = _int_range(out)
    if out.get("type") != "integer" or low is None or high is None or high - low > MAX_REPEAT:
        raise InvalidRequest(
            f"{', '.join(bounds)} cannot be enforced on llama.cpp except on an integer with "
            f"both bounds at most {MAX_REPEAT} apart",
            param=param,
        )
    for key in (*_BOUNDS, "type"):
        out.pop(key, None)
    step = node.get("multipleOf")
    out["enum"] = [n for n in range(low, high + 1) if not step or n % step == 0]
    if not out["enum"]:
        raise InvalidRequest("no integer meets these bounds", param=param)
    return out


def _int_range(node: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """An integer's inclusive bounds (None: none, or not a whole number)."""
    low = high = None
    for key, inclusive in (("minimum", 0), ("exclusiveMinimum", 1)):
        value = node.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            bound = math.ceil(value) if inclusive == 0 else math.floor(value) + 1
            low = bound if low is None else max(low, bound)
    for key, inclusive in (("maximum", 0), ("exclusiveMaximum", 1)):
        value = node.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            bound = math.floor(value) if inclusive == 0 else math.ceil(value) - 1
            high = bound if high is None else min(high, bound)
    return low, high


# JSON strings hold no raw control characters, but llama_cpp's converter lets a string's
# characters (and a pattern's ``.``) be any but a quote and a backslash: a newline the
# model wrote there made JSON that strict parsers (Python's json.loads) refuse. Its rules
# are narrowed as llama.cpp's own converter writes them.
_LOOSE_CHARS = {
    'char ::= [^"\\\\] |': 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |',
    "dot ::= [^\\x0A\\x0D]": 'dot ::= [^"\\\\\\x7F\\x00-\\x1F]',
}


def _gbnf(schema: Mapping[str, Any], param: str) -> str:
    _enforceable(schema, param)
    schema = _bounded(schema, param)
    try:
        grammar = str(json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter raises bare Exceptions for what it lacks
        raise InvalidRequest(
            f"this JSON Schema cannot be enforced on llama.cpp: {exc}", param=param
        ) from exc
    for loose, strict in _LOOSE_CHARS.items():
        grammar = grammar.replace(loose, strict)
    return grammar


def tools_prompt(tools: Sequence[ToolSpec]) -> str:
    """What the model is told about the tools (in the system prompt)."""
    lines = ["You can call these functions:"]
    for tool in tools:
        spec: dict[str, Any] = {"name": tool.name}
        if tool.description:
            spec["description"] = tool.description
        spec["parameters"] = dict(tool.parameters)
        lines.append(json.dumps(spec))
    lines.append(
        'To call one, answer with only a JSON object: {"name": <function name>, '
        '"arguments": <its arguments>}.'
    )
    return "\n".join(lines)


def chat_messages(request: GenerationRequest, tool_role: bool = True) -> list[dict[str, str]]:
    """The request's messages for the chat template: tools described in the system prompt
    (unless ``tool_choice`` is ``none``), earlier calls as call objects, and tool results as
    role ``tool`` or, with ``tool_role=False``, as user messages that say what they are."""
    messages = [_render(m, tool_role) for m in request.messages]
    if request.tools and request.effective_tool_choice() != "none":
        described = tools_prompt(request.tools)
        if messages and messages[0]["role"] == "system":
            messages[0] = {"role": "system", "content": messages[0]["content"] + "\n\n" + described}
        else:
            messages.insert(0, {"role": "system", "content": described})
    return messages


# Roles the OpenAI API knows that chat templates of small models usually don't.
_ROLE_ALIASES = {"developer": "system"}


def _render(message: Message, tool_role: bool) -> dict[str, str]:
    content = message.content
    if message.tool_calls:
        calls = "\n".join(
            json.dumps({"name": c.name, "arguments": _arguments(c.arguments)})
            for c in message.tool_calls
        )
        content = f"{content}\n{calls}" if content else calls
    if message.role == "tool" and not tool_role:
        return {"role": "user", "content": f"Result of tool call {message.tool_call_id}: {content}"}
    return {"role": _ROLE_ALIASES.get(message.role, message.role), "content": content}


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # shown as the client sent it


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


_HEAD = re.compile(r'^\s*\{\s*"name"\s*:\s*"([A-Za-z0-9_-]+)"\s*,\s*"arguments"\s*:\s*')


class CallReader:
    """Reads one generated call object as it streams, as tool-call pieces: the id and name
    as soon as the name is complete, then the arguments' JSON text piece by piece (the
    call object's closing brace held back until the end, when it is dropped)."""

    def __init__(self, emit: Callable[[ToolCallDelta], None]) -> None:
        self._emit = emit
        self._head = ""
        self._started = False
        self._held = ""  # from the last '}' on: maybe the call object's end
        self.id = new_call_id()

    def feed(self, text: str) -> None:
        if not self._started:
            self._head += text
            match = _HEAD.match(self._head)
            if match is None:
                return
            self._started = True
            self._emit(ToolCallDelta(index=0, id=self.id, name=match.group(1)))
            text = self._head[match.end() :]
        if not self._held:
            text = text.lstrip()  # the space the grammar allows before the arguments
        self._held += text
        cut = self._held.rfind("}")
        if cut > 0:
            self._send(self._held[:cut])
            self._held = self._held[cut:]

    def close(self) -> bool:
        """The generation ended: the arguments are what was held back, less the call
        object's own closing brace (when it got that far). Whether a call was read."""
        if not self._started:
            return False
        tail = self._held.rstrip()
        if tail.endswith("}"):
            tail = tail[:-1]
        self._send(tail.rstrip())
        return True

    def _send(self, text: str) -> None:
        if text:
            self._emit(ToolCallDelta(index=0, arguments=text))


class EitherReader:
    """Reads an answer that is a call object or the response format's JSON: held until
    the end, then a call when it is an object of exactly ``name`` (one of ``tools``) and
    ``arguments``, else text."""

    def __init__(self, emit: Callable[[str | ToolCallDelta], None], tools: Sequence[str]) -> None:
        self._emit = emit
        self._tools = set(tools)
        self._parts: list[str] = []

    def feed(self, text: str) -> None:
        self._parts.append(text)

    def close(self) -> bool:
        text = "".join(self._parts)
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if (
            isinstance(value, dict)
            and set(value) == {"name", "arguments"}
            and value["name"] in self._tools
        ):
            reader = CallReader(self._emit)
            reader.feed(text)
            return reader.close()
        if text:
            self._emit(text)
        return False
