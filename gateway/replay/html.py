"""The replay's report as one self-contained HTML page: tables and inline SVG charts, no
script that runs and nothing fetched, so it can be mailed, archived or opened from a file.
The report's JSON rides along in a data block (``<script type="application/json">``)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import msgspec

from gateway.ledger.formats import significant, usd
from gateway.replay import svg
from gateway.replay.report import (
    FleetHorizon,
    FleetRun,
    ReplayReport,
    backends_table,
    classes_table,
    fleets_table,
    horizon_table,
)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:12px}
.charts{display:flex;flex-wrap:wrap;gap:1em}.note{color:#555;font-size:.9em}
"""


def _usd_axis(v: float) -> str:
    if v >= 1000:
        return f"${v / 1000:,.0f}k"
    return f"${v:,.0f}" if v >= 10 else f"${v:.2g}"


def horizon_charts(report: ReplayReport) -> list[str]:
    """The two charts of a horizon: cumulative cash per fleet (break-even marked) and the
    etched card's share of requests (the month it falls below 50 % marked)."""
    horizon = report.horizon
    if not horizon:
        return []
    labels = ["0", *(str(m.month) for m in horizon[0].months)]
    cash = [(h.fleet, [h.upfront_usd, *(m.usd_cash for m in h.months)]) for h in horizon]
    marks = [
        (k, h.break_even_month, f"breaks even, month {h.break_even_month}")
        for k, h in enumerate(horizon)
        if h.break_even_month
    ]
    charts = [
        svg.line_chart(
            "Cumulative cost, purchases up front (USD)",
            labels,
            cash,
            _usd_axis,
            marks=marks,
        )
    ]
    etched = [(k, h) for k, h in enumerate(horizon) if h.months[0].etched_share is not None]
    if etched:
        shares = [(h.fleet, [m.etched_share for m in h.months]) for _, h in etched]
        below = [
            (i, h.etched_below_half_month - 1, f"< 50 %, month {h.etched_below_half_month}")
            for i, (_, h) in enumerate(etched)
            if h.etched_below_half_month
        ]
        charts.append(
            svg.line_chart(
                "Etched card's share of requests, by month",
                labels[1:],
                shares,
                lambda v: f"{v * 100:.0f} %",
                lo=0.0,
                hi=1.0,
                rule=(0.5, "50 %"),
                marks=below,
                colors=[k for k, _ in etched],
            )
        )
    charts.append(
        svg.line_chart(
            "Time to first token, p95, by month (s)",
            labels[1:],
            [(h.fleet, [m.ttft_p95_s for m in h.months]) for h in horizon],
            lambda v: f"{v:.3g}",
        )
    )
    return charts


def fleet_charts(fleets: Sequence[FleetRun]) -> list[str]:
    names = [f.fleet for f in fleets]
    return [
        svg.bar_chart(
            "Dollars per million tokens (usage records)",
            names,
            [f.usd_per_mtok for f in fleets],
            lambda v: "$" + significant(v),
        ),
        svg.bar_chart(
            "Time to first token, p95 (s)",
            names,
            [f.ttft_s.p95 for f in fleets],
            lambda v: significant(v),
        ),
        svg.stacked_shares(
            "Share of requests by backend",
            names,
            [
                [(b.id, b.share) for b in f.backends]
                + [("refused", sum(f.refused.values()) / f.requests if f.requests else 0.0)]
                for f in fleets
            ],
        ),
    ]


def _verdicts(horizon: Sequence[FleetHorizon], baseline: str | None) -> str:
    items = []
    for h in horizon:
        text = f"<b>{escape(h.fleet)}</b>: "
        bits = ["the baseline"] if baseline == h.fleet else []
        if h.upfront_usd:
            bits.append(f"{escape(usd(h.upfront_usd))} up front")
        if baseline and h.fleet != baseline:
            if h.break_even_month is None:
                bits.append(f"does not break even against {escape(baseline)} in the horizon")
            elif h.break_even_month == 0 and h.dearer_again_month is not None:
                bits.append(f"dearer than {escape(baseline)} from month {h.dearer_again_month}")
            elif h.break_even_month == 0:
                bits.append(f"no dearer than {escape(baseline)} from the start")
            else:
                bits.append(
                    f"breaks even against {escape(baseline)} in month {h.break_even_month} "
                    f"({escape(h.break_even_date or '')})"
                )
        if h.months and h.months[0].etched_share is not None:
            bits.append(
                f"etched share below 50 % from month {h.etched_below_half_month}"
                if h.etched_below_half_month
                else "etched share stays at or above 50 %"
            )
        items.append(f"<li>{text}{'; '.join(bits)}</li>")
    return f"<ul>{''.join(items)}</ul>"


def to_html(report: ReplayReport) -> str:
    t = report.trace
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<title>freshet replay</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>freshet replay</h1>",
        f"<p>{escape(', '.join(t.sources))}: {t.requests:,} requests over "
        f"{t.window_s / 60:.1f} min, rate x{t.rate:g}; freshness: "
        f"{escape('; '.join(f'{k}: {v}' for k, v in t.freshness.items()) or 'none')}.</p>",
    ]
    if report.horizon:
        parts.append(f"<h2>Horizon: {report.horizon_months} months from {report.start}</h2>")
        if report.refresh or report.adapters:
            schedules = [
                *(f"refresh {r}" for r in report.refresh),
                *(f"adapter {a}" for a in report.adapters),
            ]
            parts.append(f"<p class=note>Schedules: {escape(', '.join(schedules))}</p>")
        parts.append(_verdicts(report.horizon, report.baseline))
        parts.append('<div class="charts">' + "".join(horizon_charts(report)) + "</div>")
        parts.append(f"<pre>{escape(horizon_table(report.horizon))}</pre>")
    title = "Fleets (month 1)" if report.horizon else "Fleets"
    parts.append(f"<h2>{title}</h2>")
    parts.append('<div class="charts">' + "".join(fleet_charts(report.fleets)) + "</div>")
    parts.append(f"<pre>{escape(fleets_table(report.fleets))}</pre>")
    for fleet in report.fleets:
        parts.append(f"<h2>{escape(fleet.fleet)}</h2>")
        parts.append(f"<p class=note>{escape(fleet.config or '')}</p>")
        parts.append(f"<pre>{escape(backends_table(fleet))}</pre>")
        if len(fleet.classes) > 1:
            parts.append(f"<pre>{escape(classes_table(fleet))}</pre>")
    if t.citation:
        parts.append(f"<p class=note>Trace: {escape(t.citation)}</p>")
    data = msgspec.json.encode(report).decode().replace("</", "<\\/")
    parts.append(f'<script type="application/json" id="report">{data}</script>')
    parts.append(f"<p class=note>Replayed in {report.wall_s:.1f} s.</p></body></html>")
    return "\n".join(parts)
