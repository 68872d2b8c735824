"""A whole replay: the trace, every fleet, every month of the horizon, and the report.

Each fleet's usage records go to a ledger of its own (a temporary SQLite file unless kept
with ``--ledger DIR``), and every sum of money, energy and tokens in the report is the
ledger's cost report (:func:`gateway.ledger.reports.cost_report`), as
``freshet cost report`` computes it.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from msgspec import Struct, field

from gateway.errors import ConfigError
from gateway.ledger.reports import CostReport, GroupBy, ReportRow, cost_report
from gateway.ledger.sqlite import SQLiteLedger, UsageQuery
from gateway.plugins import Plugins
from gateway.replay.engine import Engine, RunResult
from gateway.replay.horizon import (
    AdapterPlan,
    Refresh,
    add_months,
    break_even,
    first_below,
    month_hours,
    month_settings,
    shifted,
)
from gateway.replay.mix import Mix, apply_mixes
from gateway.replay.report import (
    AZURE_CITATION,
    BackendRow,
    ClassRow,
    FleetHorizon,
    FleetRun,
    MonthCost,
    ReplayReport,
    TraceInfo,
)
from gateway.replay.stats import RunStats
from gateway.replay.traces import (
    AZURE,
    TraceError,
    TraceRequest,
    merge,
    read,
    read_ledger,
    reshape,
    resolve_source,
    synthesize,
)
from gateway.settings import Settings


class Plan(Struct, kw_only=True):
    """Everything ``freshet replay`` was asked, as data."""

    traces: list[str]
    data_dir: str | None = None
    ledger_file: Path | None = None  # for the trace "ledger"
    since: float | None = None
    until: float | None = None
    model: str | None = None
    rate: float = 1.0
    sample: float = 1.0
    window: tuple[float, float] | None = None
    limit: int | None = None
    synthesize: int | None = None  # that many requests drawn from the trace's distribution
    seed: int = 0
    mixes: dict[str, Mix] = field(default_factory=dict)
    max_ttft_ms: float | None = None
    start: dt.date | None = None
    horizon: int = 0  # months; 0: one replay
    refresh: list[Refresh] = field(default_factory=list)
    adapters: list[AdapterPlan] = field(default_factory=list)
    sim: dict[str, dict[str, Any]] = field(default_factory=dict)
    baseline: str | None = None
    by: GroupBy | None = None
    keep_ledgers: Path | None = None


class Progress:
    """Told how far the replay is; the CLI draws it."""

    def begin(self, label: str, expected: int | None) -> None:
        """A run starts (``expected`` requests, when known)."""

    def advance(self, requests: int) -> None:
        """``requests`` more were replayed."""

    def end(self) -> None:
        """The run ended."""


def trace(plan: Plan) -> Iterator[TraceRequest]:
    """The plan's trace, read afresh (every fleet and month reads it again: nothing is kept)."""
    sources = []
    for name in plan.traces:
        if name == "ledger":
            if plan.ledger_file is None:
                raise TraceError("trace 'ledger': no ledger file")
            sources.append(read_ledger(plan.ledger_file, plan.since, plan.until))
        else:
            sources.append(read(*resolve_source(name, plan.data_dir)))
    requests: Iterator[TraceRequest] = merge(sources)
    if plan.synthesize is not None:
        requests = synthesize(requests, plan.synthesize, plan.seed)
    return reshape(
        requests,
        rate=plan.rate,
        sample=plan.sample,
        window=plan.window,
        limit=plan.limit,
        seed=plan.seed,
    )


def fleet_names(files: Sequence[str | None]) -> list[str]:
    names: list[str] = []
    for file in files:
        base = Path(file).stem if file else "default"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


async def replay(
    plan: Plan,
    fleets: Sequence[tuple[str, Settings]],
    plugins: Plugins,
    progress: Progress | None = None,
) -> ReplayReport:
    started = time.perf_counter()
    progress = progress or Progress()
    names = [name for name, _ in fleets]
    if plan.baseline is not None and plan.baseline not in names:
        raise ConfigError(f"--baseline {plan.baseline!r} is not one of the fleets: {names}")
    ids = {c.id for _, settings in fleets for c in settings.backends}
    for option, backend in [("--refresh", r.backend) for r in plan.refresh] + [
        ("--adapter", a.backend) for a in plan.adapters
    ]:
        if backend not in ids:
            raise ConfigError(
                f"{option} names backend {backend!r}, which no fleet has "
                f"(they have {', '.join(sorted(ids))})"
            )
    start = plan.start
    if plan.horizon and start is None:
        first = next(trace(plan), None)
        if first is None:
            raise TraceError("the trace has no request")
        start = dt.datetime.fromtimestamp(first.at, dt.UTC).date()
    months = max(1, plan.horizon)
    runs: list[FleetRun] = []
    horizons: list[FleetHorizon] = []
    info: TraceInfo | None = None
    expected: int | None = None
    temp = None if plan.keep_ledgers else Path(tempfile.mkdtemp(prefix="freshet-replay-"))
    folder = plan.keep_ledgers or temp
    assert folder is not None
    try:
        for name, settings in fleets:
            ledger = SQLiteLedger(folder, f"{name}.sqlite3")
            if ledger.path.exists():
                raise ConfigError(f"--ledger: {ledger.path} exists; choose an empty folder")
            await ledger.start()
            try:
                rows: list[MonthCost] = []
                upfront = 0.0
                for month in range(months):
                    day = add_months(start, month) if start is not None else None
                    current = (
                        month_settings(settings, start, month, plan.refresh, plan.adapters)
                        if start is not None
                        else settings
                    )
                    engine = Engine(current, plugins, plan.sim, plan.model)
                    requests = apply_mixes(shifted(trace(plan), day), plan.mixes, plan.seed)
                    label = f"{name}" + (f" month {month + 1}/{months}" if plan.horizon else "")
                    progress.begin(label, expected)
                    result = await engine.run(
                        requests,
                        ledger,
                        id_prefix=f"m{month + 1}-" if plan.horizon else "",
                        progress=progress.advance,
                        max_ttft_ms=plan.max_ttft_ms,
                    )
                    progress.end()
                    stats: RunStats = result.stats
                    expected = stats.requests
                    if stats.requests == 0:
                        raise TraceError("the trace has no request (after --window, --sample)")
                    query = UsageQuery(since=result.t0, until=result.t0 + stats.last_at + 1e-3)
                    by_backend = await cost_report(ledger.rows, "backend", query)
                    grouped = await cost_report(ledger.rows, plan.by, query) if plan.by else None
                    run = summarize(name, current, result, by_backend, grouped, month, day, plan)
                    if month == 0:
                        runs.append(run)
                        upfront = sum(b.profile.capex_usd for b in result.backends)
                        info = _info(plan, stats)
                    if plan.horizon and start is not None:
                        rows.append(
                            month_cost(run, result, by_backend, start, month, upfront, rows)
                        )
                if plan.horizon:
                    horizons.append(FleetHorizon(fleet=name, upfront_usd=upfront, months=rows))
            finally:
                await ledger.aclose()
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    baseline = plan.baseline or (names[0] if len(names) > 1 else None)
    if horizons:
        _verdicts(horizons, baseline)
    assert info is not None
    return ReplayReport(
        trace=info,
        fleets=runs,
        horizon_months=plan.horizon,
        start=start.isoformat() if start else None,
        refresh=[f"{r.backend}:{r.every_months}m:{r.lag_days}d" for r in plan.refresh],
        adapters=[f"{a.backend}:{a.name}:{a.every_months}m:{a.lag_days}d" for a in plan.adapters],
        baseline=baseline,
        horizon=horizons,
        wall_s=time.perf_counter() - started,
    )


def _info(plan: Plan, stats: RunStats) -> TraceInfo:
    return TraceInfo(
        sources=list(plan.traces),
        requests=stats.requests,
        window_s=stats.last_at - (stats.first_at or 0.0),
        rate=plan.rate,
        freshness={cls: mix.text for cls, mix in plan.mixes.items()},
        seed=plan.seed,
        citation=AZURE_CITATION if any(t in AZURE for t in plan.traces) else None,
    )


def _row(report: CostReport, backend: str) -> ReportRow | None:
    return next((r for r in report.rows if r.value == backend), None)


def summarize(
    name: str,
    settings: Settings,
    result: RunResult,
    by_backend: CostReport,
    grouped: CostReport | None,
    month: int,
    day: dt.date | None,
    plan: Plan,
) -> FleetRun:
    stats: RunStats = result.stats
    window = stats.window_s or 1e-9
    total = by_backend.totals
    etched = {b.id for b in result.backends if b.kind == "asic"}
    backends: list[BackendRow] = []
    for b in result.backends:
        row = _row(by_backend, b.id)
        bs = stats.backends[b.id]
        prompt = row.prompt_tokens if row else 0
        completion = row.completion_tokens if row else 0
        usd_total = row.usd_total if row else 0.0
        backends.append(
            BackendRow(
                id=b.id,
                type=b.type,
                kind=b.kind,
                requests=bs.requests,
                share=bs.requests / stats.requests if stats.requests else 0.0,
                refused_before_first_byte=bs.failed,
                utilisation=min(1.0, b.totals.busy_s / window),
                ttft_p50_s=bs.ttft.percentile(0.5),
                ttft_p95_s=bs.ttft.percentile(0.95),
                e2e_p95_s=bs.e2e.percentile(0.95),
                prompt_tokens=prompt,
                completion_tokens=completion,
                joules=b.totals.joules,
                idle_joules=b.totals.idle_joules,
                joules_charged=(row.joules or 0.0) if row else 0.0,
                j_per_output_token=row.j_per_output_token if row else None,
                usd_energy=row.usd_energy if row else 0.0,
                usd_capex=row.usd_capex if row else 0.0,
                usd_list=row.usd_list if row else 0.0,
                usd_total=usd_total,
                usd_per_mtok=usd_total / (prompt + completion) * 1e6
                if prompt + completion
                else None,
            )
        )
    joules = sum(b.totals.joules for b in result.backends)
    tokens = total.prompt_tokens + total.completion_tokens
    classes = [
        ClassRow(
            name=cls,
            requests=c.requests,
            served=c.served,
            refused=c.refused,
            etched_share=c.etched / c.requests if etched and c.requests else None,
            frozen_share=c.frozen / c.requests if etched and c.requests else None,
        )
        for cls, c in sorted(stats.classes.items())
    ]
    on_card = sum(c.etched for c in stats.classes.values())
    on_base = sum(c.frozen for c in stats.classes.values())
    return FleetRun(
        fleet=name,
        config=settings.config_file,
        month=month + 1 if plan.horizon else None,
        date=day.isoformat() if day else None,
        requests=stats.requests,
        served=stats.served,
        refused=dict(stats.refused),
        fallbacks=sum(b.failed for b in stats.backends.values()),
        window_s=stats.window_s,
        requests_per_s=stats.requests / window,
        output_tokens_per_s=total.completion_tokens / window,
        ttft_s=stats.ttft.summary(),
        e2e_s=stats.e2e.summary(),
        joules=joules,
        idle_joules=sum(b.totals.idle_joules for b in result.backends),
        j_per_token=joules / tokens if tokens else None,
        j_per_output_token=joules / total.completion_tokens if total.completion_tokens else None,
        usd_energy=total.usd_energy,
        usd_capex=total.usd_capex,
        usd_list=total.usd_list,
        usd_total=total.usd_total,
        usd_per_mtok=total.usd_total / tokens * 1e6 if tokens else None,
        etched_share=on_card / stats.requests if etched and stats.requests else None,
        frozen_share=on_base / stats.requests if etched and stats.requests else None,
        backends=backends,
        classes=classes,
        cost_report=grouped,
    )


def month_cost(
    run: FleetRun,
    result: RunResult,
    by_backend: CostReport,
    start: dt.date,
    month: int,
    upfront: float,
    before: Sequence[MonthCost],
) -> MonthCost:
    """The month's money: the trace's variable costs scaled to the month's hours."""
    hours = month_hours(start, month)
    scale = hours * 3600.0 / run.window_s if run.window_s > 0 else 0.0
    energy = listed = hardware = rent = 0.0
    for b in result.backends:
        row = _row(by_backend, b.id)
        charged = (row.joules or 0.0) if row else 0.0
        pue = b.profile.pue if b.profile.pue is not None else result.pue
        uncharged = max(0.0, b.totals.joules - charged) * pue * result.kwh_usd / 3.6e6
        energy += ((row.usd_energy if row else 0.0) + uncharged) * scale
        listed += (row.usd_list if row else 0.0) * scale
        hardware += b.profile.capex_per_hour * hours
        if not b.profile.capex_usd:
            rent += b.profile.capex_per_hour * hours
    total = hardware + energy + listed
    previous = before[-1] if before else None
    return MonthCost(
        month=month + 1,
        date=add_months(start, month).isoformat(),
        hours=hours,
        requests=run.requests,
        served=run.served,
        refused=sum(run.refused.values()),
        refused_freshness=run.refused["freshness"],
        etched_share=run.etched_share,
        frozen_share=run.frozen_share,
        class_etched_share={c.name: c.etched_share for c in run.classes},
        ttft_p95_s=run.ttft_s.p95,
        usd_hardware=hardware,
        usd_energy=energy,
        usd_list=listed,
        usd_total=total,
        usd_cumulative=(previous.usd_cumulative if previous else 0.0) + total,
        usd_cash=(previous.usd_cash if previous else upfront) + rent + energy + listed,
    )


def _verdicts(horizons: list[FleetHorizon], baseline: str | None) -> None:
    base = next((h for h in horizons if h.fleet == baseline), None)
    for h in horizons:
        shares = [m.etched_share for m in h.months]
        below = first_below(shares)
        h.etched_below_half_month = below
        h.etched_below_half_date = h.months[below - 1].date if below else None
        if base is None or h is base:
            continue
        mine = [h.upfront_usd, *(m.usd_cash for m in h.months)]
        theirs = [base.upfront_usd, *(m.usd_cash for m in base.months)]
        even, again = break_even(mine, theirs)
        h.break_even_month = even
        h.break_even_date = h.months[even - 1].date if even else None
        h.dearer_again_month = again


__all__ = ["Plan", "Progress", "fleet_names", "replay", "trace"]
