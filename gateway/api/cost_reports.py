"""Usage records and cost reports over HTTP: ``/freshet/usage``, ``/freshet/cost/...``.

``/freshet/cost/breakdown`` splits the report's groups by record status and by how the
joules were obtained (``energy_source``): what the UI shows beside every joule figure,
and its count of records that are not ok.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

import msgspec
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency, Provide
from litestar.params import Parameter
from msgspec import Struct

from gateway.api.runtime import Runtime
from gateway.errors import InvalidRequest
from gateway.ledger.formats import to_csv
from gateway.ledger.reports import (
    BUCKET_S,
    GROUP_BY,
    Bucket,
    CostSeries,
    GroupBy,
    check_page,
    check_range,
    cost_report,
    cost_series,
    usage_query,
)
from gateway.ledger.sqlite import Ledger, UsageQuery, where_clause
from gateway.outcome import UsageRecord

_TIME = (
    "unix seconds, an ISO-8601 date or datetime (UTC unless it says otherwise), "
    "or a time before now such as 30m, 24h, 7d"
)
OptionalText = str | None
# Filters name ids and statuses: a few characters. Times lie between 1970 and the end of
# year 9999 (datetime's range), offsets within SQLite's integers.
MAX_FILTER = 256
LAST_TIME = 253_402_300_799.0  # 9999-12-31T23:59:59Z
MAX_OFFSET = 2**63 - 1


def _text(description: str) -> Any:
    return Parameter(description=description, max_length=MAX_FILTER)


# The report's groups, as SQL over the ``usage`` table.
def _group_by(value: str) -> GroupBy:
    """``group_by`` checked: one of the report's groupings (a 400 otherwise)."""
    if value not in GROUP_BY:
        raise InvalidRequest(
            f"group_by must be one of {', '.join(GROUP_BY)}; got {value!r}", param="group_by"
        )
    return cast(GroupBy, value)


_GROUP_SQL: dict[str, str] = {
    "backend": '"backend"',
    "model": '"model"',
    "key": '"key"',
    "group": '"group"',
    "hour": "strftime('%Y-%m-%dT%H:00:00Z', ts, 'unixepoch')",
}


class BreakdownRow(Struct, kw_only=True):
    """The records of one group with one status and one energy source."""

    value: str | None  # the group (None: records without one, e.g. no key)
    status: str  # ok | error | client_disconnected | shutdown
    energy_source: str | None  # nvml | rapl | model | simulated | ...; None: not metered
    requests: int
    joules: float | None
    usd_total: float


class CostBreakdown(Struct, kw_only=True):
    group_by: GroupBy
    since: float | None
    until: float | None
    rows: list[BreakdownRow]


class UsagePage(Struct, kw_only=True):
    data: list[UsageRecord]  # newest first
    total: int  # records matching the filters, over all pages
    limit: int
    offset: int


def usage_filters(
    since: Annotated[OptionalText, _text(f"From (inclusive): {_TIME}")] = None,
    until: Annotated[OptionalText, _text(f"To (exclusive): {_TIME}")] = None,
    backend: Annotated[OptionalText, _text("Only this backend id")] = None,
    model: Annotated[OptionalText, _text("Only this model")] = None,
    key: Annotated[OptionalText, _text("Only this API key")] = None,
    group: Annotated[OptionalText, _text("Only this model group")] = None,
    status: Annotated[OptionalText, _text("ok, error or client_disconnected")] = None,
) -> UsageQuery:
    query = usage_query(
        since=since,
        until=until,
        backend=backend,
        model=model,
        key=key,
        group=group,
        status=status,
    )
    for name, value in (("since", query.since), ("until", query.until)):
        if value is not None and not 0 <= value <= LAST_TIME:
            raise InvalidRequest(
                f"{name} must lie between 1970 and the end of 9999; got {value:.0f} unix seconds",
                param=name,
            )
    return query


async def _ledger(request: Request[Any, Any, Any]) -> Ledger:
    runtime: Runtime = request.app.state.runtime
    # Records are written in batches off the hot path; write what is queued first, so a
    # client sees the requests it has just made.
    await runtime.ledger.flush()
    return runtime.ledger


class ReportsController(Controller):
    tags = ["Freshet"]
    dependencies = {"filters": Provide(usage_filters, sync_to_thread=False)}

    @get("/freshet/usage", summary="Usage records, newest first, filtered and paginated")
    async def usage(
        self,
        request: Request[Any, Any, Any],
        filters: NamedDependency[UsageQuery],
        limit: Annotated[int, Parameter(description="Records per page, 1 to 1000")] = 100,
        offset: Annotated[int, Parameter(description="Records to skip", ge=0, le=MAX_OFFSET)] = 0,
    ) -> UsagePage:
        check_page(limit, offset)
        query = msgspec.structs.replace(filters, limit=limit, offset=offset)
        records, total = await (await _ledger(request)).query(query)
        return UsagePage(data=records, total=total, limit=limit, offset=offset)

    @get(
        "/freshet/cost/report",
        summary="Requests, tokens, joules and dollars per backend, model, key, group or hour",
    )
    async def report(
        self,
        request: Request[Any, Any, Any],
        filters: NamedDependency[UsageQuery],
        group_by: Annotated[
            str, Parameter(description="backend, model, key, group or hour")
        ] = "backend",
        format: Annotated[str, Parameter(description="json or csv")] = "json",
    ) -> Response[Any]:
        by = _group_by(group_by)
        if format not in ("json", "csv"):
            raise InvalidRequest(f"format must be json or csv; got {format!r}", param="format")
        report = await cost_report((await _ledger(request)).rows, by, filters)
        if format == "csv":
            return Response(
                to_csv(report),
                media_type="text/csv; charset=utf-8",
                headers={"content-disposition": f'inline; filename="freshet-cost-by-{by}.csv"'},
            )
        return Response(report)

    @get("/freshet/cost/series", summary="Cost and energy per time bucket and backend")
    async def series(
        self,
        request: Request[Any, Any, Any],
        filters: NamedDependency[UsageQuery],
        bucket: Annotated[
            str, Parameter(description="auto, minute, hour or day (auto: by the range)")
        ] = "auto",
    ) -> CostSeries:
        if bucket != "auto" and bucket not in BUCKET_S:
            raise InvalidRequest(
                f"bucket must be auto, minute, hour or day; got {bucket!r}", param="bucket"
            )
        size = None if bucket == "auto" else cast(Bucket, bucket)
        return await cost_series((await _ledger(request)).rows, filters, size)

    @get(
        "/freshet/cost/breakdown",
        summary="Requests, joules and dollars per group, status and energy source",
    )
    async def breakdown(
        self,
        request: Request[Any, Any, Any],
        filters: NamedDependency[UsageQuery],
        group_by: Annotated[
            str, Parameter(description="backend, model, key, group or hour")
        ] = "backend",
    ) -> CostBreakdown:
        by = _group_by(group_by)
        check_range(filters)
        where, params = where_clause(filters)
        expr = _GROUP_SQL[by]
        rows = await (await _ledger(request)).rows(
            f"SELECT {expr} AS g, status, energy_source, COUNT(*), SUM(joules), "
            f"COALESCE(SUM(usd_total), 0) FROM usage {where} "
            "GROUP BY g, status, energy_source ORDER BY g, status, energy_source",
            params,
        )
        return CostBreakdown(
            group_by=by,
            since=filters.since,
            until=filters.until,
            rows=[
                BreakdownRow(
                    value=None if g is None else str(g),
                    status=str(status),
                    energy_source=None if source is None else str(source),
                    requests=int(n),
                    joules=None if joules is None else float(joules),
                    usd_total=float(usd),
                )
                for g, status, source, n, joules, usd in rows
            ],
        )
