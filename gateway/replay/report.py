"""What a replay reports, per fleet (and per month of a horizon), as data (``--json``) and
as text for the terminal. The HTML report is :mod:`gateway.replay.html`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from msgspec import Struct

from gateway.ledger.formats import significant, to_table, usd
from gateway.ledger.reports import CostReport
from gateway.replay.stats import Latency


class BackendRow(Struct, kw_only=True):
    id: str
    type: str
    kind: str
    requests: int
    share: float  # of the fleet's requests
    refused_before_first_byte: int  # refusals that made a request fall back (queue full, ...)
    utilisation: float  # busy seconds over the window (for slots: slot-seconds / slots)
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    e2e_p95_s: float | None
    prompt_tokens: int
    completion_tokens: int
    joules: float  # drawn by the hardware in the window: busy and idle
    idle_joules: float
    joules_charged: float  # carried by usage records
    j_per_output_token: float | None  # usage records: generation joules per output token
    usd_energy: float  # usage records: energy
    usd_capex: float  # usage records: the hardware's share of busy time
    usd_list: float
    usd_total: float
    usd_per_mtok: float | None  # usage records' dollars per million tokens (in + out)


class ClassRow(Struct, kw_only=True):
    name: str
    requests: int
    served: int
    refused: int
    etched_share: float | None  # of its requests, served by an etched card
    frozen_share: float | None  # of which by the card's base model (no adapter)


class FleetRun(Struct, kw_only=True):
    """One fleet over the trace (in a horizon: over one month's copy of it)."""

    fleet: str
    config: str | None
    month: int | None  # 1-based, in a horizon
    date: str | None  # the simulated first day
    requests: int
    served: int
    refused: dict[str, int]  # freshness, context, capacity, other
    fallbacks: int
    window_s: float
    requests_per_s: float
    output_tokens_per_s: float
    ttft_s: Latency
    e2e_s: Latency
    joules: float  # all hardware, busy and idle
    idle_joules: float
    j_per_token: float | None  # joules over prompt + output tokens
    j_per_output_token: float | None
    usd_energy: float
    usd_capex: float
    usd_list: float
    usd_total: float
    usd_per_mtok: float | None
    etched_share: float | None
    frozen_share: float | None
    backends: list[BackendRow]
    classes: list[ClassRow]
    cost_report: CostReport | None = None  # --by: the ledger's report, as freshet cost report


class MonthCost(Struct, kw_only=True):
    month: int  # 1-based
    date: str
    hours: float
    requests: int
    served: int
    refused: int
    refused_freshness: int
    etched_share: float | None
    frozen_share: float | None
    class_etched_share: dict[str, float | None]
    ttft_p95_s: float | None
    usd_hardware: float  # capex per hour x hours: rent, or a purchase written off
    usd_energy: float  # busy and idle, at the month's traffic
    usd_list: float
    usd_total: float
    usd_cumulative: float  # sum of usd_total
    usd_cash: float  # purchases up front + rent + energy + list, cumulative


class FleetHorizon(Struct, kw_only=True):
    fleet: str
    upfront_usd: float  # purchase prices (profile capex_usd), paid before month 1
    months: list[MonthCost]
    break_even_month: int | None = None  # against the baseline; 0: no dearer up front
    break_even_date: str | None = None
    dearer_again_month: int | None = None
    etched_below_half_month: int | None = None
    etched_below_half_date: str | None = None


class TraceInfo(Struct, kw_only=True):
    sources: list[str]
    requests: int
    window_s: float
    rate: float
    freshness: dict[str, str]  # class (or *) -> mix
    seed: int
    citation: str | None = None


class ReplayReport(Struct, kw_only=True):
    trace: TraceInfo
    fleets: list[FleetRun]  # the first month of a horizon
    horizon_months: int = 0
    start: str | None = None
    refresh: list[str] = []
    adapters: list[str] = []
    baseline: str | None = None
    horizon: list[FleetHorizon] = []
    wall_s: float = 0.0


AZURE_CITATION = (
    'Azure LLM inference traces 2023 (CC BY 4.0): Patel et al., "Splitwise: Efficient '
    'generative LLM inference using phase splitting", ISCA 2024; '
    "https://github.com/Azure/AzurePublicDataset"
)


# -- text -------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _grid(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = [list(headers), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        parts = [
            row[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)),
        ]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


_FLEET_ROWS: tuple[tuple[str, Callable[[FleetRun], str]], ...] = (
    ("requests", lambda f: f"{f.requests:,}"),
    ("served", lambda f: f"{f.served:,}"),
    ("refused: freshness", lambda f: f"{f.refused['freshness']:,}"),
    ("refused: context", lambda f: f"{f.refused['context']:,}"),
    ("refused: capacity", lambda f: f"{f.refused['capacity']:,}"),
    ("refused: other", lambda f: f"{f.refused['other']:,}"),
    ("fell back", lambda f: f"{f.fallbacks:,}"),
    ("TTFT p50", lambda f: _s(f.ttft_s.p50)),
    ("TTFT p95", lambda f: _s(f.ttft_s.p95)),
    ("TTFT p99", lambda f: _s(f.ttft_s.p99)),
    ("end-to-end p50", lambda f: _s(f.e2e_s.p50)),
    ("end-to-end p95", lambda f: _s(f.e2e_s.p95)),
    ("end-to-end p99", lambda f: _s(f.e2e_s.p99)),
    ("output tokens/s", lambda f: significant(f.output_tokens_per_s)),
    ("energy kWh (incl. idle)", lambda f: significant(f.joules / 3.6e6)),
    ("J/token (in + out)", lambda f: significant(f.j_per_token)),
    ("J/output token", lambda f: significant(f.j_per_output_token)),
    ("$ energy", lambda f: usd(f.usd_energy)),
    ("$ hardware share", lambda f: usd(f.usd_capex)),
    ("$ list prices", lambda f: usd(f.usd_list)),
    ("$ total (usage records)", lambda f: usd(f.usd_total)),
    ("$/Mtok (in + out)", lambda f: usd(f.usd_per_mtok)),
    ("etched card's share", lambda f: _pct(f.etched_share)),
)


def fleets_table(fleets: Sequence[FleetRun]) -> str:
    headers = ["", *(f.fleet for f in fleets)]
    rows = [[label, *(fn(f) for f in fleets)] for label, fn in _FLEET_ROWS]
    return _grid(headers, rows)


def backends_table(fleet: FleetRun) -> str:
    headers = ["backend", "kind", "requests", "share", "busy", "TTFT p50", "TTFT p95",
               "kWh", "J/tok out", "$ total", "$/Mtok"]  # fmt: skip
    rows = [
        [
            b.id,
            b.kind,
            f"{b.requests:,}",
            _pct(b.share),
            _pct(b.utilisation),
            _s(b.ttft_p50_s),
            _s(b.ttft_p95_s),
            significant(b.joules / 3.6e6),
            significant(b.j_per_output_token),
            usd(b.usd_total),
            usd(b.usd_per_mtok),
        ]
        for b in fleet.backends
    ]
    return _grid(headers, rows)


def classes_table(fleet: FleetRun) -> str:
    headers = ["class", "requests", "served", "refused", "etched share", "frozen base"]
    rows = [
        [
            c.name,
            f"{c.requests:,}",
            f"{c.served:,}",
            f"{c.refused:,}",
            _pct(c.etched_share),
            _pct(c.frozen_share),
        ]
        for c in fleet.classes
    ]
    return _grid(headers, rows)


def horizon_table(horizon: Sequence[FleetHorizon]) -> str:
    headers = ["month", "date"]
    for h in horizon:
        headers += [f"{h.fleet} $/month", "cumulative $", "etched"]
    rows = []
    for i, first in enumerate(horizon[0].months):
        row = [str(first.month), first.date]
        for h in horizon:
            m = h.months[i]
            row += [usd(m.usd_total), usd(m.usd_cash), _pct(m.etched_share)]
        rows.append(row)
    return _grid(headers, rows)


def to_text(report: ReplayReport) -> str:
    out: list[str] = []
    t = report.trace
    mixes = "; ".join(f"{k}: {v}" for k, v in t.freshness.items()) or "none"
    out.append(
        f"Replay of {', '.join(t.sources)}: {t.requests:,} requests over "
        f"{t.window_s / 60:.1f} min (rate x{t.rate:g}); freshness {mixes}"
    )
    if report.horizon_months:
        out.append(
            f"Horizon: {report.horizon_months} months from {report.start}; the table below is "
            "month 1"
        )
    out.append("")
    out.append(fleets_table(report.fleets))
    for fleet in report.fleets:
        out += ["", f"{fleet.fleet}: backends", backends_table(fleet)]
        if len(fleet.classes) > 1:
            out += ["", f"{fleet.fleet}: by trace class", classes_table(fleet)]
        if fleet.cost_report is not None:
            out += ["", f"{fleet.fleet}: usage records by {fleet.cost_report.group_by}"]
            out.append(to_table(fleet.cost_report).split("\n", 2)[-1])
    if report.horizon:
        out += ["", "Cost per month (hardware + energy + list prices), cumulative cash "
                "(purchases up front), etched card's share of requests", ""]  # fmt: skip
        out.append(horizon_table(report.horizon))
        out.append("")
        for h in report.horizon:
            out.append(_verdict(h, report.baseline))
    if t.citation:
        out += ["", f"Trace: {t.citation}"]
    out.append(f"Replayed in {report.wall_s:.1f} s.")
    return "\n".join(out)


def _verdict(h: FleetHorizon, baseline: str | None) -> str:
    parts = [f"{h.fleet}:"]
    if baseline == h.fleet:
        parts.append("the baseline;")
    if h.upfront_usd:
        parts.append(f"{usd(h.upfront_usd)} up front;")
    if baseline and h.fleet != baseline:
        if h.break_even_month is None:
            parts.append(f"does not break even against {baseline} within the horizon;")
        elif h.break_even_month == 0 and h.dearer_again_month is not None:
            parts.append(f"dearer than {baseline} from month {h.dearer_again_month};")
        elif h.break_even_month == 0:
            parts.append(f"no dearer than {baseline} from the start;")
        else:
            parts.append(
                f"breaks even against {baseline} in month {h.break_even_month} "
                f"({h.break_even_date});"
            )
        if h.dearer_again_month is not None and h.break_even_month:
            parts.append(f"dearer again from month {h.dearer_again_month};")
    if h.months and h.months[0].etched_share is not None:
        if h.etched_below_half_month is None:
            parts.append("the etched card keeps >= 50 % of requests throughout")
        else:
            parts.append(
                f"the etched card's share falls below 50 % in month "
                f"{h.etched_below_half_month} ({h.etched_below_half_date})"
            )
    return " ".join(parts).rstrip(";")
