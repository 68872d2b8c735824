"""Cost reports as text: CSV for spreadsheets, an aligned table for the terminal."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import Callable

from gateway.ledger.reports import REPORT_FIELDS, CostReport, ReportRow


def to_csv(report: CostReport) -> str:
    """One header row (the first column named after ``group_by``), one row per group.

    Numbers are written exactly (no rounding); unknown values are empty cells. The
    totals are left out so that a spreadsheet's column sums stay right.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([report.group_by, *REPORT_FIELDS[1:]])
    for row in report.rows:
        writer.writerow(["" if v is None else v for v in (getattr(row, f) for f in REPORT_FIELDS)])
    return out.getvalue()


def significant(value: float | None, digits: int = 3) -> str:
    """``digits`` significant digits without exponent notation: 1.23, 0.0456, 1,234."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def usd(value: float | None) -> str:
    """Dollars: cents from $1 up, three significant digits below (micro-dollars show)."""
    if value is None:
        return "-"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    return "$" + significant(value)


def tokens(value: int) -> str:
    return f"{value:,}"


_COLUMNS: tuple[tuple[str, str, Callable[[ReportRow], str]], ...] = (
    ("requests", "requests", lambda r: tokens(r.requests)),
    ("errors", "errors", lambda r: tokens(r.errors)),
    ("tokens in", "prompt_tokens", lambda r: tokens(r.prompt_tokens)),
    ("cached in", "cached_prompt_tokens", lambda r: tokens(r.cached_prompt_tokens)),
    ("tokens out", "completion_tokens", lambda r: tokens(r.completion_tokens)),
    ("reasoning", "reasoning_tokens", lambda r: tokens(r.reasoning_tokens)),
    ("energy J", "joules", lambda r: significant(r.joules)),
    ("J/tok in", "j_per_input_token", lambda r: significant(r.j_per_input_token)),
    ("J/tok out", "j_per_output_token", lambda r: significant(r.j_per_output_token)),
    ("cost", "usd_total", lambda r: usd(r.usd_total)),
    ("$/Mtok in", "usd_per_mtok_input", lambda r: usd(r.usd_per_mtok_input)),
    ("$/Mtok out", "usd_per_mtok_output", lambda r: usd(r.usd_per_mtok_output)),
)


def _when(ts: float | None, default: str) -> str:
    if ts is None:
        return default
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def to_table(report: CostReport) -> str:
    """A header line, the groups (text left, numbers right-aligned) and a totals line."""
    span = (
        f"{_when(report.since, 'the first record')} to {_when(report.until, 'now')}"
        if report.since is not None or report.until is not None
        else "all records"
    )
    title = f"Cost by {report.group_by}, {span}"
    if not report.rows:
        return f"{title}\n(no usage recorded in this range)"
    headers = [report.group_by, *(name for name, _, _ in _COLUMNS)]
    body = [
        [row.value if row.value is not None else "(none)", *(fmt(row) for _, _, fmt in _COLUMNS)]
        for row in report.rows
    ]
    total = ["total", *(fmt(report.totals) for _, _, fmt in _COLUMNS)]
    widths = [max(len(line[i]) for line in [headers, *body, total]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([title, "", line(headers), rule, *map(line, body), rule, line(total)])
