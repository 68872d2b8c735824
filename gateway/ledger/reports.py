"""Cost reports over the ledger: sums per backend, model, key, group or hour, and the
per-backend time series the UI charts.

The sums are computed in SQL, where the records are; only the ratios (J per token,
$ per million tokens) are divided here, so a group without tokens or without metered
energy reports ``None`` instead of a division by zero. The functions take a :data:`RunSQL`
(the ledger's ``rows``, or :class:`SQLiteRows` over a read-only connection for the CLI),
so the HTTP API and ``freshet cost report`` share one implementation.

Joules are unknown (``None``) for records no energy meter measured (no cost plugin, or a
request that failed before its usage was known): energy sums and J/token therefore cover
only the metered records, and are ``None`` for a group with none.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

from msgspec import Struct

from gateway.errors import InvalidRequest
from gateway.ledger.sqlite import UsageQuery, where_clause
from gateway.outcome import Status

GroupBy = Literal["backend", "model", "key", "group", "hour"]
GROUP_BY: tuple[str, ...] = get_args(GroupBy)
Bucket = Literal["minute", "hour", "day"]
BUCKET_S: dict[str, int] = {"minute": 60, "hour": 3600, "day": 86400}
STATUSES: tuple[str, ...] = get_args(Status)
MAX_BUCKETS = 2000
MAX_LIMIT = 1000

RunSQL = Callable[[str, Sequence[Any]], Awaitable[list[tuple[Any, ...]]]]
"""Runs one SQL statement with parameters against the ledger's ``usage`` table."""

_GROUP_SQL: dict[str, str] = {
    "backend": '"backend"',
    "model": '"model"',
    "key": '"key"',
    "group": '"group"',
    "hour": "strftime('%Y-%m-%dT%H:00:00Z', ts, 'unixepoch')",
}
_METERED = "joules IS NOT NULL"
# One aggregate per field of _Sums, in its order (then those of _V3_SUMS).
_AGGREGATES = ", ".join(
    (
        "COUNT(*)",
        "COALESCE(SUM(status = 'error'), 0)",
        "COALESCE(SUM(prompt_tokens), 0)",
        "COALESCE(SUM(completion_tokens), 0)",
        "SUM(joules)",
        f"SUM(CASE WHEN {_METERED} THEN joules_input END)",
        f"SUM(CASE WHEN {_METERED} THEN joules_output END)",
        f"SUM(CASE WHEN {_METERED} THEN prompt_tokens END)",
        f"SUM(CASE WHEN {_METERED} THEN completion_tokens END)",
        "COALESCE(SUM(usd_energy), 0)",
        "COALESCE(SUM(usd_capex), 0)",
        "COALESCE(SUM(usd_list), 0)",
        "COALESCE(SUM(usd_total), 0)",
        "COALESCE(SUM(usd_input), 0)",
        "COALESCE(SUM(usd_output), 0)",
    )
)
# Columns added by schema version 3; a file not yet migrated (read by the CLI, read-only,
# before a gateway opened it) sums them as 0.
_V3_SUMS = ("cached_prompt_tokens", "cache_write_tokens", "reasoning_tokens")


async def _aggregates(run: RunSQL) -> str:
    have = {str(r[1]) for r in await run("PRAGMA table_info(usage)", [])}
    extra = (f"COALESCE(SUM({c}), 0)" if c in have else "0" for c in _V3_SUMS)
    return ", ".join((_AGGREGATES, *extra))


class ReportRow(Struct, kw_only=True):
    """One group's sums and per-token ratios; ``value`` is ``None`` in the totals row."""

    value: str | None
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    joules: float | None
    joules_input: float | None
    joules_output: float | None
    usd_energy: float
    usd_capex: float
    usd_list: float
    usd_total: float
    usd_input: float
    usd_output: float
    j_per_input_token: float | None
    j_per_output_token: float | None
    usd_per_mtok_input: float | None
    usd_per_mtok_output: float | None
    # Parts of the token sums: prompt tokens read from and written to a prompt cache,
    # completion tokens spent reasoning (after the rest, so CSV columns keep their places).
    cached_prompt_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


REPORT_FIELDS: tuple[str, ...] = tuple(ReportRow.__struct_fields__)


class CostReport(Struct, kw_only=True):
    group_by: GroupBy
    since: float | None
    until: float | None
    rows: list[ReportRow]
    totals: ReportRow


class BackendSeries(Struct, kw_only=True):
    """One backend's values per bucket, aligned with :attr:`CostSeries.buckets`."""

    backend: str
    requests: list[int]
    usd_total: list[float]
    joules: list[float | None]


class CostSeries(Struct, kw_only=True):
    since: float | None
    until: float | None
    bucket: Bucket
    bucket_s: int
    buckets: list[str]  # start of each bucket, ISO-8601 UTC
    starts: list[float]  # the same, unix seconds
    series: list[BackendSeries]


def _ratio(numerator: float | None, denominator: float | None, scale: float = 1.0) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator * scale


class _Sums(NamedTuple):
    """The columns of :data:`_AGGREGATES`, in order."""

    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    joules: float | None
    joules_input: float | None
    joules_output: float | None
    metered_prompt_tokens: int | None
    metered_completion_tokens: int | None
    usd_energy: float
    usd_capex: float
    usd_list: float
    usd_total: float
    usd_input: float
    usd_output: float
    cached_prompt_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int


def _row(value: Any, columns: Sequence[Any]) -> ReportRow:
    s = _Sums(*columns)
    return ReportRow(
        value=None if value is None else str(value),
        requests=int(s.requests),
        errors=int(s.errors),
        prompt_tokens=int(s.prompt_tokens),
        completion_tokens=int(s.completion_tokens),
        joules=s.joules,
        joules_input=s.joules_input,
        joules_output=s.joules_output,
        usd_energy=float(s.usd_energy),
        usd_capex=float(s.usd_capex),
        usd_list=float(s.usd_list),
        usd_total=float(s.usd_total),
        usd_input=float(s.usd_input),
        usd_output=float(s.usd_output),
        j_per_input_token=_ratio(s.joules_input, s.metered_prompt_tokens),
        j_per_output_token=_ratio(s.joules_output, s.metered_completion_tokens),
        usd_per_mtok_input=_ratio(s.usd_input, s.prompt_tokens, 1e6),
        usd_per_mtok_output=_ratio(s.usd_output, s.completion_tokens, 1e6),
        cached_prompt_tokens=int(s.cached_prompt_tokens),
        cache_write_tokens=int(s.cache_write_tokens),
        reasoning_tokens=int(s.reasoning_tokens),
    )


def check_range(query: UsageQuery) -> None:
    if query.since is not None and query.until is not None and query.until < query.since:
        raise InvalidRequest("until is before since", param="until")


async def cost_report(run: RunSQL, group_by: GroupBy, query: UsageQuery) -> CostReport:
    """Sums per ``group_by`` value over the records ``query`` selects (limit/offset unused)."""
    if group_by not in _GROUP_SQL:
        raise InvalidRequest(f"group_by must be one of {', '.join(GROUP_BY)}", param="group_by")
    check_range(query)
    where, params = where_clause(query)
    expr = _GROUP_SQL[group_by]
    order = "g" if group_by == "hour" else "SUM(usd_total) DESC, COUNT(*) DESC, g"
    aggregates = await _aggregates(run)
    grouped = await run(
        f"SELECT {expr} AS g, {aggregates} FROM usage {where} GROUP BY g ORDER BY {order}",
        params,
    )
    totals = await run(f"SELECT {aggregates} FROM usage {where}", params)
    return CostReport(
        group_by=group_by,
        since=query.since,
        until=query.until,
        rows=[_row(r[0], r[1:]) for r in grouped],
        totals=_row(None, totals[0]),
    )


def iso_utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def auto_bucket(span_s: float) -> Bucket:
    """Minutes for up to 3 hours, hours for up to a week, days beyond."""
    if span_s <= 3 * 3600:
        return "minute"
    if span_s <= 7 * 86400:
        return "hour"
    return "day"


async def cost_series(
    run: RunSQL, query: UsageQuery, bucket: Bucket | None = None, now: float | None = None
) -> CostSeries:
    """Cost and energy per time bucket and backend, every bucket of the range present.

    Without ``since`` the range starts at the oldest selected record; without ``until``
    it ends now. ``bucket=None`` chooses by the range's length (:func:`auto_bucket`).
    """
    check_range(query)
    if bucket is not None and bucket not in BUCKET_S:
        raise InvalidRequest(f"bucket must be one of {', '.join(BUCKET_S)}", param="bucket")
    now = time.time() if now is None else now
    where, params = where_clause(query)
    lo, hi = (await run(f"SELECT MIN(ts), MAX(ts) FROM usage {where}", params))[0]
    start = query.since if query.since is not None else lo
    end = query.until if query.until is not None else max(now, hi or now)
    too_long = start is not None and (end - start) / BUCKET_S["day"] > MAX_BUCKETS
    if bucket is None and too_long and lo is not None and lo > start:
        start = lo  # since=0 and the like: draw from the first record, not from 1970
    chosen: Bucket = bucket or auto_bucket(end - start if start is not None else 0.0)
    size = BUCKET_S[chosen]
    if start is None:  # no records and no since: nothing to draw
        return CostSeries(
            since=None,
            until=query.until,
            bucket=chosen,
            bucket_s=size,
            buckets=[],
            starts=[],
            series=[],
        )
    first = math.floor(start / size)
    # `until` is exclusive: a range ending on a bucket boundary does not include that bucket.
    last = max(first, math.ceil(end / size) - 1)
    if last - first + 1 > MAX_BUCKETS:
        raise InvalidRequest(
            f"{last - first + 1} {chosen} buckets in this range; at most {MAX_BUCKETS} "
            "(choose a larger bucket or a shorter range)",
            param="bucket",
        )
    rows = await run(
        f"SELECT CAST(ts / ? AS INTEGER) AS b, backend, COUNT(*), "
        f"COALESCE(SUM(usd_total), 0), SUM(joules) FROM usage {where} "
        "GROUP BY b, backend ORDER BY backend, b",
        [size, *params],
    )
    n = last - first + 1
    by_backend: dict[str, BackendSeries] = {}
    for index, backend, requests, usd, joules in rows:
        line = by_backend.get(backend)
        if line is None:
            line = by_backend[backend] = BackendSeries(
                backend=backend, requests=[0] * n, usd_total=[0.0] * n, joules=[None] * n
            )
        i = int(index) - first
        if 0 <= i < n:
            line.requests[i] = int(requests)
            line.usd_total[i] = float(usd)
            line.joules[i] = joules
    starts = [float((first + i) * size) for i in range(n)]
    return CostSeries(
        since=query.since,
        until=query.until,
        bucket=chosen,
        bucket_s=size,
        buckets=[iso_utc(s) for s in starts],
        starts=starts,
        series=list(by_backend.values()),
    )


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: str, *, param: str, now: float | None = None) -> float:
    """Unix seconds from unix seconds, an ISO-8601 date or datetime (UTC unless it says
    otherwise), or a time before now such as ``30m``, ``24h``, ``7d``, ``2w``."""
    text = value.strip()
    relative = _RELATIVE.match(text)
    if relative:
        now = time.time() if now is None else now
        return now - float(relative.group(1)) * _UNIT_S[relative.group(2)]
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(number) and number >= 0:
            return number
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        pass
    else:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.timestamp()
    raise InvalidRequest(
        f"{param} must be unix seconds, an ISO-8601 date or datetime, or a relative time "
        f"such as 30m, 24h or 7d; got {value!r}",
        param=param,
    )


def check_page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}", param="limit")
    if offset < 0:
        raise InvalidRequest("offset must not be negative", param="offset")


def usage_query(
    *,
    since: str | None = None,
    until: str | None = None,
    backend: str | None = None,
    model: str | None = None,
    key: str | None = None,
    group: str | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
    now: float | None = None,
) -> UsageQuery:
    """A validated ledger query from user input (HTTP query string or CLI options)."""
    now = time.time() if now is None else now
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}", param="status")
    check_page(limit, offset)
    query = UsageQuery(
        since=parse_time(since, param="since", now=now) if since else None,
        until=parse_time(until, param="until", now=now) if until else None,
        backend=backend,
        model=model,
        key=key,
        group=group,
        status=status,
        limit=limit,
        offset=offset,
    )
    check_range(query)
    return query


class SQLiteRows:
    """A :data:`RunSQL` over a plain (synchronous) connection, for the CLI."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def __call__(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return list(self._conn.execute(sql, tuple(params)).fetchall())


def open_read_only(path: Path) -> sqlite3.Connection:
    """Open the ledger without the right to change it (works while a gateway writes)."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def empty_report(group_by: GroupBy, query: UsageQuery) -> CostReport:
    zeros = (0, 0, 0, 0, None, None, None, None, None, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0)
    return CostReport(
        group_by=group_by,
        since=query.since,
        until=query.until,
        rows=[],
        totals=_row(None, zeros),
    )
