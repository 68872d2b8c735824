"""The ``freshet`` command: serve, plugins, backends, cost report."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click
import msgspec

from gateway.cli.calibrate import calibrate_command
from gateway.cli.check import build, check
from gateway.cli.keys import keys
from gateway.cli.logs import FORMATS as LOG_FORMATS
from gateway.cli.logs import LEVELS as LOG_LEVELS
from gateway.cli.logs import AccessLog, LogSettings
from gateway.cli.logs import setup as setup_logging
from gateway.cli.output import table
from gateway.cli.replay import replay_command
from gateway.errors import ConfigError, InvalidRequest
from gateway.ledger.formats import to_csv, to_table
from gateway.ledger.reports import (
    GROUP_BY,
    GroupBy,
    SQLiteRows,
    cost_report,
    empty_report,
    open_read_only,
    usage_query,
)
from gateway.plugins import Plugins
from gateway.settings import load_settings

T = TypeVar("T")
log = logging.getLogger("freshet.serve")


def _fail_on_config_error(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ConfigError as exc:
        click.echo(f"freshet: configuration error: {exc.message}", err=True)
        sys.exit(2)


@click.group()
@click.version_option(package_name="freshet-gateway")
def main() -> None:
    """Freshet: route each LLM request to the cheapest backend that is fresh enough."""


@main.command()
@click.option("--host", default=None, help="Bind address (env FRESHET_HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (env FRESHET_PORT, default 8400).")
@click.option("--config", "config_file", default=None, help="YAML config (env FRESHET_CONFIG).")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    help="text: one line a record; json: one JSON object a line.",
)
@click.option(
    "--access-log",
    is_flag=True,
    help="One line per request: method, path, status, duration, backend, request id.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes sharing the port (share limits and health through FRESHET_REDIS_URL).",
)
def serve(
    host: str | None,
    port: int | None,
    config_file: str | None,
    log_level: str,
    log_format: str,
    access_log: bool,
    workers: int,
) -> None:
    """Start the gateway. With no config: the embedded default fleet."""
    import uvicorn

    from gateway.api.app import create_app
    from gateway.api.runtime import Runtime
    from gateway.api.serving import BindError, bind, server_config

    logs = LogSettings(log_level, log_format, access_log)
    setup_logging(logs)
    settings = _serve_step(lambda: load_settings(config_file, host=host, port=port))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    runtime = _serve_step(lambda: Runtime(settings))  # checks the fleet; loads no model
    served = f"{', '.join(runtime.fleet.backends)} ({settings.config_file or 'embedded default'})"
    try:
        if workers > 1:  # each worker builds its own Runtime; this one only checked the config
            from gateway.cli.workers import serve_workers

            serve_workers(settings, workers, logs, served)
            return
        sock = bind(settings.host, settings.port)  # before any model loads
    except BindError as exc:
        log.error("%s", exc)  # noqa: TRY400 (the reason is the message; no traceback)
        sys.exit(2)
    app: Any = create_app(settings, runtime, signals=True)
    if logs.access_log:
        app = AccessLog(app)
    log.info("serving %s on http://%s:%d", served, settings.host, sock.getsockname()[1])
    server = uvicorn.Server(server_config(settings, app, log_level=logs.level))
    server.run(sockets=[sock])
    if runtime.start_error is not None:
        sys.exit(1)


def _serve_step(fn: Callable[[], T]) -> T:
    """As :func:`_fail_on_config_error`, in the log's format."""
    try:
        return fn()
    except ConfigError as exc:
        log.error("configuration error: %s", exc.message)  # noqa: TRY400
        sys.exit(2)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--config", "config_file", default=None, help="YAML config (for its block list).")
def plugins(as_json: bool, config_file: str | None) -> None:
    """List loaded plugins: name, version, distribution, hooks."""
    settings = _fail_on_config_error(lambda: load_settings(config_file))
    infos = Plugins(blocked=settings.blocked_plugins).info()
    if as_json:
        click.echo(msgspec.json.encode(infos).decode())
        return
    rows = [(i.name, i.version, i.distribution, ", ".join(i.hooks)) for i in infos]
    click.echo(table(("name", "version", "distribution", "hooks"), rows))


@main.command()
@click.option("--config", "config_file", default=None, help="YAML config (env FRESHET_CONFIG).")
@click.option("--url", default=None, help="A running gateway to ask for live health.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backends(config_file: str | None, url: str | None, as_json: bool) -> None:
    """Configured backends, their models, knowledge cutoffs and health."""
    settings = _fail_on_config_error(lambda: load_settings(config_file))
    _fail_on_config_error(lambda: build(settings))  # as `freshet check`: types, plugins...
    base = url or f"http://{settings.host}:{settings.port}"
    live = _live_backends(base, settings.shared.admin_key)
    rows: list[dict[str, Any]] = []
    for cfg in settings.backends:
        info = live.get(cfg.id) if isinstance(live, dict) else None
        circuit = info.get("circuit") if info is not None else None
        if info is None:
            health = live if isinstance(live, str) else "not served"
            models = [cfg.model or "?"]
        else:
            health = _health_text(info)
            models = [d["name"] for d in info["deployments"]]
        rows.append(
            {
                "id": cfg.id,
                "type": cfg.type,
                "models": models,
                "knowledge_cutoff": cfg.knowledge_cutoff.isoformat()
                if cfg.knowledge_cutoff
                else None,
                "health": health,
                "circuit": circuit,
                "upstreams": info.get("upstreams") if info is not None else None,
            }
        )
    if as_json:
        click.echo(json.dumps(rows))
        return
    table_rows = [
        (
            r["id"],
            r["type"],
            ", ".join(r["models"]),
            r["knowledge_cutoff"] or "-",
            r["health"],
            _upstreams_text(r["upstreams"]),
        )
        for r in rows
    ]
    click.echo(
        table(("id", "type", "models", "knowledge cutoff", "health", "upstreams"), table_rows)
    )


def _until(unix_time: float | None) -> str:
    if unix_time is None:
        return ""
    left = max(0.0, unix_time - time.time())
    return f" for {left:.1f} s more (until {time.strftime('%H:%M:%S', time.localtime(unix_time))})"


def _health_text(info: dict[str, Any]) -> str:
    """The backend's health in words: its circuit, ejections and panic mode."""
    circuit = info.get("circuit") or {}
    state = circuit.get("state", "closed")
    if state == "open":
        text = "ejected (circuit open)" + _until(circuit.get("ejected_until"))
    elif state == "half_open":
        text = "half-open: probing with requests"
    elif info["healthy"]:
        text = "healthy"
    else:
        text = f"unhealthy: {info.get('detail') or ''}"
    if circuit.get("ejections"):
        text += f"; ejected {circuit['ejections']}x"
    if circuit.get("failure_rate"):
        text += f"; {circuit['failure_rate']:.0%} of {circuit['requests']} failing"
    if circuit.get("panic"):
        text += "; PANIC MODE (served although unhealthy)"
    return text


def _upstreams_text(upstreams: list[dict[str, Any]] | None) -> str:
    if not upstreams:
        return "-"
    up = sum(1 for u in upstreams if u["state"] != "ejected")
    parts = [f"{up}/{len(upstreams)} up"]
    for u in upstreams:
        if u["state"] == "ejected":
            parts.append(f"{u['url']} ejected{_until(u.get('ejected_until'))}")
        elif u["state"] == "probing":
            parts.append(f"{u['url']} probing")
    return "; ".join(parts)


@main.group()
def cost() -> None:
    """Cost reports from the ledger."""


@cost.command("report")
@click.option(
    "--by",
    "group_by",
    type=click.Choice(GROUP_BY),
    default="backend",
    show_default=True,
    help="One row per backend, model, API key, model group or hour.",
)
@click.option(
    "--since",
    default=None,
    help="From: 24h, 7d, 30m (before now), an ISO-8601 date/time, or unix seconds. "
    "Default: the first record.",
)
@click.option(
    "--until",
    default=None,
    help="To (exclusive), in the same forms. Default: now.",
)
@click.option("--config", "config_file", default=None, help="YAML config (for its data dir).")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON (as the HTTP API).")
@click.option("--csv", "as_csv", is_flag=True, help="The report's rows as CSV.")
def cost_report_command(
    group_by: str,
    since: str | None,
    until: str | None,
    config_file: str | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Requests, tokens, joules and dollars per backend, model, key, group or hour.

    Reads the ledger in the data directory read-only, so it works whether or not the
    gateway runs.
    """
    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    settings = _fail_on_config_error(lambda: load_settings(config_file))
    try:
        query = usage_query(since=since, until=until)
    except InvalidRequest as exc:
        raise click.BadParameter(exc.message, param_hint=f"--{exc.param}") from exc
    by = cast(GroupBy, group_by)
    path = settings.data_dir / "ledger.sqlite3"  # where SQLiteLedger writes
    if settings.shared.redis.url:  # the shared ledger: this data dir's mirror, brought up to date
        from gateway.ledger.mirror import refresh_mirror

        path = asyncio.run(refresh_mirror(settings.shared.redis, settings.data_dir))
    if not path.exists():
        click.echo(f"freshet: no ledger at {path} yet (no request recorded)", err=True)
        report = empty_report(by, query)
    else:
        try:
            conn = open_read_only(path)
            try:
                report = asyncio.run(cost_report(SQLiteRows(conn), by, query))
            finally:
                conn.close()
        except sqlite3.Error as exc:
            click.echo(f"freshet: cannot read the ledger {path}: {exc}", err=True)
            sys.exit(1)
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
    elif as_csv:
        click.echo(to_csv(report), nl=False)
    else:
        click.echo(to_table(report))


def _live_backends(base_url: str, admin_key: str | None) -> dict[str, dict[str, Any]] | str:
    """The running gateway's view of its backends, or why there is none."""
    request = urllib.request.Request(f"{base_url}/freshet/backends")
    if admin_key:
        request.add_header("Authorization", f"Bearer {admin_key}")
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            data = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            hint = "the admin key was refused" if admin_key else "set FRESHET_ADMIN_KEY"
            return f"unknown (the gateway answered 401: {hint})"
        return f"unknown (the gateway answered {exc.code})"
    except (urllib.error.URLError, OSError, ValueError):
        return "unknown (gateway not running)"
    return {item["id"]: item for item in data}


main.add_command(keys)
main.add_command(check)
main.add_command(replay_command)
main.add_command(calibrate_command)

if __name__ == "__main__":
    main()
