"""``freshet replay``: a trace through one or more fleet configs, in simulated time."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, cast

import click
import msgspec
import yaml

from gateway.errors import ConfigError, FreshetError, InvalidRequest
from gateway.ledger.reports import GROUP_BY, GroupBy, parse_time
from gateway.plugins import Plugins
from gateway.replay.horizon import parse_adapter, parse_refresh
from gateway.replay.html import to_html
from gateway.replay.mix import months_of, parse_mixes, parse_rate
from gateway.replay.plan import Plan, Progress, fleet_names, replay
from gateway.replay.report import to_text
from gateway.replay.traces import TRACE_DIR_ENV, TraceError
from gateway.settings import Settings, load_settings

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smh]?)$")


class _Bar(Progress):
    """A progress line on stderr, redrawn at most five times a second."""

    def __init__(self) -> None:
        self._label = ""
        self._expected: int | None = None
        self._done = 0
        self._drawn = 0.0
        self._started = 0.0

    def begin(self, label: str, expected: int | None) -> None:
        self._label, self._expected, self._done = label, expected, 0
        self._started = time.perf_counter()

    def advance(self, requests: int) -> None:
        self._done += requests
        now = time.perf_counter()
        if now - self._drawn >= 0.2:
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        text = f"{self._label}: {self._done:,} requests, {now - self._started:.1f} s"
        if self._expected:
            share = min(1.0, self._done / self._expected)
            bar = "#" * int(share * 30)
            text = f"{self._label} [{bar:<30}] {share:4.0%} ({self._done:,} requests)"
        click.echo("\r" + text.ljust(79), nl=False, err=True)

    def end(self) -> None:
        self._draw(time.perf_counter())
        click.echo("", err=True)


def _fail(message: str) -> None:
    click.echo(f"freshet replay: {message}", err=True)
    sys.exit(2)


def _seconds(text: str) -> float:
    match = _DURATION.match(text.strip())
    if not match:
        raise click.BadParameter(f"a duration such as 90s, 10m or 1h; got {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def _window(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    start, sep, end = text.partition(":")
    if not sep:
        raise click.BadParameter("START:END from the trace's first arrival, e.g. 10m:40m")
    lo, hi = _seconds(start) if start else 0.0, _seconds(end) if end else float("inf")
    if hi <= lo:
        raise click.BadParameter("the window's end must be after its start")
    return lo, hi


def _sim(values: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for value in values:
        target, sep, raw = value.partition("=")
        backend, dot, key = target.partition(".")
        if not sep or not dot or not backend or not key:
            raise click.BadParameter(
                f"ID.KEY=VALUE, e.g. gpu.kv_cache_tokens=300000; got {value!r}"
            )
        out.setdefault(backend, {})[key] = yaml.safe_load(raw)
    return out


def _option(fn: Any, value: Any, name: str) -> Any:
    try:
        return fn(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


@click.command("replay")
@click.option(
    "--trace",
    "traces",
    multiple=True,
    required=True,
    help="azure-code, azure-conv, ledger, or a CSV/JSONL file; repeat to merge.",
)
@click.option(
    "--config",
    "configs",
    multiple=True,
    required=True,
    help="A fleet (the same YAML as freshet serve); repeat to compare fleets.",
)
@click.option(
    "--data-dir", default=None, help=f"Where azure-code and azure-conv are (env {TRACE_DIR_ENV})."
)
@click.option("--since", default=None, help="--trace ledger: from (7d, 24h, a date). Default 7d.")
@click.option("--until", default=None, help="--trace ledger: to (exclusive).")
@click.option(
    "--ledger-file",
    default=None,
    type=click.Path(dir_okay=False),
    help="--trace ledger: the ledger to read (default: the data dir's).",
)
@click.option(
    "--model",
    default=None,
    help="The model or group requests ask for when the trace names none "
    "(default: auto, else the fleet's only group).",
)
@click.option("--rate", default="1x", show_default=True, help="Times the trace's traffic: 3x.")
@click.option(
    "--sample",
    type=click.FloatRange(0, 1, min_open=True),
    default=1.0,
    help="Keep this share of the requests.",
)
@click.option("--window", default=None, help="START:END of the trace to replay, e.g. 10m:40m.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N requests.")
@click.option(
    "--freshness",
    "mixes",
    multiple=True,
    metavar="[CLASS=]MIX",
    help="Freshness needs of requests without one, e.g. 70%:none,20%:365d,10%:90d; "
    "per trace class with azure-code=MIX.",
)
@click.option(
    "--max-ttft-ms",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Every request's max_ttft_ms (the router drops slower quotes).",
)
@click.option("--start", default=None, help="Replay as if the trace began on this date.")
@click.option("--horizon", default=None, help="Replay once per month for this long: 24m, 2y.")
@click.option(
    "--refresh",
    "refresh",
    multiple=True,
    metavar="ID:EVERY:LAG",
    help="Over the horizon, backend ID gets a newer model every EVERY, cutoff LAG "
    "before: gpu:3m:180d.",
)
@click.option(
    "--adapter",
    "adapters",
    multiple=True,
    metavar="ID:NAME:EVERY:LAG",
    help="Over the horizon, a LoRA adapter for ID every EVERY, cutoff LAG before its "
    "release: asic:news:3m:21d.",
)
@click.option(
    "--sim",
    "sim",
    multiple=True,
    metavar="ID.KEY=VALUE",
    help="A simulator setting for backend ID, e.g. gpu.kv_cache_tokens=300000.",
)
@click.option("--baseline", default=None, help="The fleet others are compared with (first).")
@click.option(
    "--by",
    type=click.Choice(GROUP_BY),
    default=None,
    help="Also each fleet's usage records by backend, model, key, group or hour.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="For sampling and mixes.")
@click.option(
    "--ledger",
    "keep",
    default=None,
    type=click.Path(file_okay=False),
    help="Keep each fleet's usage records in DIR/<fleet>.sqlite3.",
)
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
@click.option(
    "--html",
    "html_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write a self-contained HTML report with charts.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def replay_command(
    traces: tuple[str, ...],
    configs: tuple[str, ...],
    data_dir: str | None,
    since: str | None,
    until: str | None,
    ledger_file: str | None,
    model: str | None,
    rate: str,
    sample: float,
    window: str | None,
    limit: int | None,
    mixes: tuple[str, ...],
    max_ttft_ms: float | None,
    start: str | None,
    horizon: str | None,
    refresh: tuple[str, ...],
    adapters: tuple[str, ...],
    sim: tuple[str, ...],
    baseline: str | None,
    by: str | None,
    seed: int,
    keep: str | None,
    as_json: bool,
    html_file: str | None,
    quiet: bool,
) -> None:
    """Replay a trace through fleets in simulated time and compare them.

    The router, cost model, usage records and reports are the gateway's own; only the
    backends' timing is simulated. Prints requests served and refused, latency
    percentiles, energy and dollars per fleet and backend; with --horizon, the cost month
    by month, the break-even month and when the etched card's share falls below 50 %.
    """
    plan = Plan(
        traces=list(traces),
        data_dir=data_dir,
        model=model,
        rate=_option(parse_rate, rate, "--rate"),
        sample=sample,
        window=_window(window),
        limit=limit,
        seed=seed,
        mixes=_option(parse_mixes, list(mixes), "--freshness") if mixes else {},
        max_ttft_ms=max_ttft_ms,
        start=_option(dt.date.fromisoformat, start, "--start") if start else None,
        horizon=_option(months_of, horizon, "--horizon") if horizon else 0,
        refresh=[_option(parse_refresh, r, "--refresh") for r in refresh],
        adapters=[_option(parse_adapter, a, "--adapter") for a in adapters],
        sim=_sim(sim),
        baseline=baseline,
        by=cast(GroupBy, by) if by else None,
        keep_ledgers=Path(keep) if keep else None,
    )
    if "ledger" in traces:
        try:
            plan.since = parse_time(since or "7d", param="since")
            plan.until = parse_time(until, param="until") if until else None
        except InvalidRequest as exc:
            raise click.BadParameter(exc.message, param_hint=f"--{exc.param}") from None
        plan.ledger_file = Path(ledger_file) if ledger_file else _live_ledger()
    if plan.keep_ledgers is not None:
        plan.keep_ledgers.mkdir(parents=True, exist_ok=True)
    try:
        fleets = _fleets(configs)
        plugins = Plugins(blocked=fleets[0][1].blocked_plugins)
        bar = None if quiet or not sys.stderr.isatty() else _Bar()
        report = asyncio.run(replay(plan, fleets, plugins, bar))
    except ConfigError as exc:
        _fail(f"configuration error: {exc.message}")
    except TraceError as exc:
        _fail(exc.message)
    except FreshetError as exc:
        _fail(exc.message)
    if html_file:
        Path(html_file).write_text(to_html(report), encoding="utf-8")
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
    else:
        click.echo(to_text(report))
        if html_file:
            click.echo(f"HTML report: {html_file}")


def _fleets(configs: tuple[str, ...]) -> list[tuple[str, Settings]]:
    loaded = [load_settings(c, env={k: v for k, v in os.environ.items() if k != "FRESHET_CONFIG"})
              for c in configs]  # fmt: skip
    return list(zip(fleet_names(list(configs)), loaded, strict=True))


def _live_ledger() -> Path:
    """The ledger the gateway writes, as ``freshet cost report`` reads it."""
    return load_settings(None).data_dir / "ledger.sqlite3"
