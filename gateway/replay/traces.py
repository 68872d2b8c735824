"""Traces to replay: when each request arrived, its prompt and output tokens, and optionally
the model it asked for, its freshness need, its API key and its class.

Sources, all read as streams (a trace of any length takes the same memory):

- the Azure LLM inference traces 2023 (Patel et al., "Splitwise", ISCA 2024; CC BY 4.0),
  by name: ``azure-code`` and ``azure-conv``, found in ``--data-dir`` or
  ``$FRESHET_TRACE_DIR`` (``AzureLLMInferenceTrace_code.csv``, ``..._conv.csv``);
- any CSV with a header, or JSON lines, with an arrival time (``timestamp``, ``arrival``,
  ``arrival_s``, ``ts``, ``time`` or Azure's ``TIMESTAMP``: unix or relative seconds, or
  an ISO-8601 date-time, UTC unless it says otherwise), prompt tokens (``prompt_tokens``,
  ``input_tokens``, ``ContextTokens``) and output tokens (``output_tokens``,
  ``completion_tokens``, ``GeneratedTokens``); optional ``model``, ``freshness`` (``none``,
  ``365d`` or a date), ``key`` and ``class``;
- Freshet's own ledger (``ledger``): what the gateway served, from ``since`` to ``until``.

Rows must come in arrival order. A row that cannot be read is a :class:`TraceError` naming
the file and line; nothing is skipped.
"""

from __future__ import annotations

import csv
import datetime as dt
import heapq
import itertools
import math
import os
import random
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import msgspec
from msgspec import Struct

from gateway.errors import FreshetError
from gateway.protocol import Freshness

AZURE = {
    "azure-code": "AzureLLMInferenceTrace_code.csv",
    "azure-conv": "AzureLLMInferenceTrace_conv.csv",
}
TRACE_DIR_ENV = "FRESHET_TRACE_DIR"

_TIME = ("timestamp", "arrival", "arrival_s", "ts", "time")
_PROMPT = ("prompt_tokens", "input_tokens", "contexttokens")
_OUTPUT = ("output_tokens", "completion_tokens", "generatedtokens")
_INT = re.compile(r"^(0|[1-9][0-9]{0,8})$")
_AZURE_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2}):(\d{2}(?:\.\d+)?)$")
_DAYS = re.compile(r"^(\d+)d$")


class TraceError(FreshetError):
    """A trace that cannot be read: names the file and line."""

    status = 400
    type = "invalid_request_error"


# One per request while it is replayed; none is kept.
class TraceRequest(Struct, kw_only=True, frozen=True, gc=False):
    at: float  # arrival, unix seconds
    prompt_tokens: int
    output_tokens: int
    cls: str  # the trace's name (azure-code, azure-conv, a file's stem) or the row's class
    model: str | None = None
    freshness: Freshness | None = None  # None: the trace says nothing (a mix may apply)
    key: str | None = None


NO_NEED = Freshness()  # "none": the row says it needs nothing


def parse_need(text: str) -> Freshness:
    """``none``, ``365d`` (staleness in days) or ``2025-01-01`` (a minimum cutoff)."""
    value = text.strip().lower()
    if value in ("", "none", "-"):
        return NO_NEED
    days = _DAYS.match(value)
    if days:
        return Freshness(max_staleness_days=int(days.group(1)))
    try:
        return Freshness(min_knowledge_cutoff=dt.date.fromisoformat(value))
    except ValueError:
        raise ValueError(f"a freshness need is none, Nd (days) or a date; got {text!r}") from None


def resolve_source(name: str, data_dir: str | None) -> tuple[Path, str]:
    """The file of a trace name (``azure-code``) or path, and the class its rows get."""
    if name in AZURE:
        base = data_dir or os.environ.get(TRACE_DIR_ENV)
        if not base:
            raise TraceError(
                f"trace {name!r}: say where the Azure traces are, with --data-dir or "
                f"${TRACE_DIR_ENV} (the folder holding {AZURE[name]})"
            )
        path = Path(base) / AZURE[name]
        if not path.is_file():
            raise TraceError(f"trace {name!r}: no {AZURE[name]} in {base}")
        return path, name
    path = Path(name)
    if not path.is_file():
        known = ", ".join([*AZURE, "ledger"])
        raise TraceError(f"trace {name!r}: no such file (or one of the names {known})")
    return path, path.stem


def read(path: Path, cls: str) -> Iterator[TraceRequest]:
    """The rows of a CSV (with a header) or JSON-lines file, in order."""
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return _read_jsonl(path, cls)
    return _read_csv(path, cls)


class _Clock:
    """Arrival times of one file: parsed fast, and checked to go forward."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._days: dict[str, float] = {}
        self.last = -math.inf

    def parse(self, value: object, line: int) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            at = float(value)
        else:
            text = str(value).strip()
            match = _AZURE_TIME.match(text)
            if match:
                day, hours, minutes, seconds = match.groups()
                midnight = self._days.get(day)
                if midnight is None:
                    midnight = self._days[day] = self._midnight(day, line)
                at = midnight + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
            else:
                at = self._other(text, line)
        if not math.isfinite(at) or at < 0:
            raise self.error(line, f"arrival time {value!r} is not a time")
        if at < self.last:
            raise self.error(line, "arrivals go back in time (sort the trace by arrival)")
        self.last = at
        return at

    def _midnight(self, day: str, line: int) -> float:
        try:
            return dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp()
        except ValueError:
            raise self.error(line, f"no such date {day!r}") from None

    def _other(self, text: str, line: int) -> float:
        try:
            return float(text)
        except ValueError:
            pass
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise self.error(
                line, f"arrival time {text!r} is neither seconds nor an ISO-8601 date-time"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.timestamp()

    def error(self, line: int, reason: str) -> TraceError:
        return TraceError(f"{self.path}:{line}: {reason}")


def _column(header: Sequence[str], names: Sequence[str]) -> int | None:
    lowered = [h.strip().lower() for h in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def _tokens(clock: _Clock, value: object, line: int, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9:
        return value
    text = str(value).strip()
    if not _INT.match(text):
        raise clock.error(line, f"{what} must be a whole number >= 0, got {value!r}")
    return int(text)


def _read_csv(path: Path, cls: str) -> Iterator[TraceRequest]:
    clock = _Clock(path)
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None:
            raise clock.error(1, "empty file: a header row is needed")
        at_col = _column(header, _TIME)
        in_col = _column(header, _PROMPT)
        out_col = _column(header, _OUTPUT)
        if at_col is None or in_col is None or out_col is None:
            raise clock.error(
                1,
                "the header needs an arrival time, prompt tokens and output tokens "
                f"(e.g. {_TIME[0]},{_PROMPT[0]},{_OUTPUT[0]}); it has {','.join(header)}",
            )
        model_col = _column(header, ("model",))
        need_col = _column(header, ("freshness",))
        key_col = _column(header, ("key",))
        cls_col = _column(header, ("class",))
        width = len(header)
        needs: dict[str, Freshness] = {}
        for line, row in enumerate(rows, start=2):
            if len(row) != width:
                if not row:
                    raise clock.error(line, "empty row")
                raise clock.error(line, f"{len(row)} fields, the header has {width}")
            yield TraceRequest(
                at=clock.parse(row[at_col], line),
                prompt_tokens=_tokens(clock, row[in_col], line, "prompt tokens"),
                output_tokens=_tokens(clock, row[out_col], line, "output tokens"),
                cls=(row[cls_col] or cls) if cls_col is not None else cls,
                model=(row[model_col] or None) if model_col is not None else None,
                freshness=_need(clock, needs, row[need_col], line)
                if need_col is not None and row[need_col]
                else None,
                key=(row[key_col] or None) if key_col is not None else None,
            )


def _need(clock: _Clock, cache: dict[str, Freshness], text: str, line: int) -> Freshness:
    need = cache.get(text)
    if need is None:
        try:
            need = cache[text] = parse_need(text)
        except ValueError as exc:
            raise clock.error(line, str(exc)) from None
    return need


def _field(row: dict[str, object], names: Sequence[str]) -> object:
    for key, value in row.items():
        if key.lower() in names:
            return value
    return None


def _read_jsonl(path: Path, cls: str) -> Iterator[TraceRequest]:
    clock = _Clock(path)
    needs: dict[str, Freshness] = {}
    with path.open(encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = msgspec.json.decode(text)
            except msgspec.DecodeError as exc:
                raise clock.error(line, f"not JSON: {exc}") from None
            if not isinstance(row, dict):
                raise clock.error(line, "each line must be a JSON object")
            at, prompt, output = (_field(row, names) for names in (_TIME, _PROMPT, _OUTPUT))
            for value, what in ((at, "an arrival time"), (prompt, "prompt tokens")):
                if value is None:
                    raise clock.error(line, f"no {what}")
            if output is None:
                raise clock.error(line, "no output tokens")
            need = row.get("freshness")
            model, key, row_cls = row.get("model"), row.get("key"), row.get("class")
            yield TraceRequest(
                at=clock.parse(at, line),
                prompt_tokens=_tokens(clock, prompt, line, "prompt tokens"),
                output_tokens=_tokens(clock, output, line, "output tokens"),
                cls=str(row_cls) if row_cls else cls,
                model=str(model) if model else None,
                freshness=_need(clock, needs, str(need), line) if need is not None else None,
                key=str(key) if key else None,
            )


def read_ledger(path: Path, since: float | None, until: float | None) -> Iterator[TraceRequest]:
    """What the gateway recorded, oldest first: each request as it arrived, with the model it
    asked for, its key and its tokens (a request cut short: what it produced)."""
    if not path.is_file():
        raise TraceError(f"no ledger at {path} (no request recorded yet)")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        where, params = [], []
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        if until is not None:
            where.append("ts < ?")
            params.append(until)
        sql = (
            'SELECT ts, prompt_tokens, completion_tokens, requested_model, "key" FROM usage '
            + (f"WHERE {' AND '.join(where)} " if where else "")
            + "ORDER BY ts"
        )
        for ts, prompt, output, model, key in conn.execute(sql, params):
            yield TraceRequest(
                at=float(ts),
                prompt_tokens=int(prompt),
                output_tokens=int(output),
                cls="ledger",
                model=model,
                key=key,
            )
    finally:
        conn.close()


def merge(sources: Sequence[Iterable[TraceRequest]]) -> Iterator[TraceRequest]:
    """Several traces as one, in arrival order (they overlap in time as they were recorded)."""
    if len(sources) == 1:
        return iter(sources[0])
    return heapq.merge(*sources, key=lambda r: r.at)


def reshape(
    requests: Iterable[TraceRequest],
    *,
    rate: float = 1.0,
    sample: float = 1.0,
    window: tuple[float, float] | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> Iterator[TraceRequest]:
    """Time scaling (``rate`` 3: three times the traffic, arrivals three times closer), a
    sample (each request kept with probability ``sample``, the same ones for the same
    seed), a window (seconds from the first arrival, before scaling) and a count limit."""
    draw = random.Random(seed).random
    first: float | None = None
    n = 0
    for request in requests:
        if first is None:
            first = request.at
        offset = request.at - first
        if window is not None:
            if offset < window[0]:
                continue
            if offset >= window[1]:
                return
        if sample < 1.0 and draw() >= sample:
            continue
        if rate != 1.0:
            request = msgspec.structs.replace(request, at=first + offset / rate)
        yield request
        n += 1
        if limit is not None and n >= limit:
            return


def synthesize(source: Iterable[TraceRequest], count: int, seed: int = 0) -> Iterator[TraceRequest]:
    """``count`` requests drawn from ``source``'s distribution: each takes the prompt,
    output and class of a random row, and the gap to the previous one from a random gap of
    the source. The source is read once into four arrays; nothing grows with ``count``."""
    rows = list(source)
    if len(rows) < 2:
        raise TraceError("a trace to synthesise from needs at least two requests")
    gaps = [b.at - a.at for a, b in itertools.pairwise(rows)]
    prompts = [r.prompt_tokens for r in rows]
    outputs = [r.output_tokens for r in rows]
    classes = [r.cls for r in rows]
    start = rows[0].at
    del rows
    rng = random.Random(seed)
    pick, n_rows, n_gaps = rng.randrange, len(prompts), len(gaps)
    at = start
    for _ in range(count):
        i = pick(n_rows)
        yield TraceRequest(
            at=at, prompt_tokens=prompts[i], output_tokens=outputs[i], cls=classes[i]
        )
        at += gaps[pick(n_gaps)]
