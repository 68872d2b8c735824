"""``freshet check``: a config checked as ``freshet serve`` checks it, without serving it.

It loads the settings and builds the :class:`~gateway.api.runtime.Runtime` exactly as
``serve`` does before it starts anything (backend types and their parameters through the
plugins, dates, references between backends, ranges, prices and time zones, energy
meters), so ``serve`` refuses to start on any config ``check`` refuses. No backend is
started, no model loaded, no port bound. ``--probe`` then asks each remote backend's
servers whether they answer.

Exit status: 0 the config is fine (and, with ``--probe``, every server answered); 2 a
config error (file, line where known, key and reason); 1 a probed server did not answer.
"""

from __future__ import annotations

import logging
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import click
import msgspec

from gateway.cli.output import table
from gateway.errors import ConfigError
from gateway.settings import Settings, load_settings

if TYPE_CHECKING:
    from gateway.api.runtime import Runtime

PROBE_TIMEOUT_S = 3.0


@click.command()
@click.option("--config", "config_file", default=None, help="YAML config (env FRESHET_CONFIG).")
@click.option("--probe", is_flag=True, help="Also GET each remote backend's URLs (short timeout).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def check(config_file: str | None, probe: bool, as_json: bool) -> None:
    """Check a config as `freshet serve` would, and show the fleet it would serve.

    Starts no backend and binds no port. Exit 0: fine; 2: a config error (file, line,
    key, reason); 1: with --probe, a server that did not answer.
    """
    with _warnings() as warnings:
        try:
            settings = load_settings(config_file)
            runtime = build(settings)
        except ConfigError as exc:
            _fail(exc, as_json)
    report = describe(settings, runtime)
    report["warnings"] = list(warnings)
    if probe:
        report["probes"] = probe_all(settings)
    failed = [p for p in report.get("probes", []) if not p["ok"]]
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
    else:
        click.echo(_text(report))
    if failed:
        sys.exit(1)


def build(settings: Settings) -> Runtime:
    """What ``serve`` builds before it starts: every check it makes, nothing started."""
    from gateway.api.runtime import Runtime

    return Runtime(settings)


def error_fields(exc: ConfigError) -> dict[str, Any]:
    """A config error as ``{file, line, key, reason}`` (``line``: None where unknown)."""
    return {
        "file": exc.file,
        "line": getattr(exc, "line", None),
        "key": exc.key,
        "reason": exc.reason,
    }


def _fail(exc: ConfigError, as_json: bool) -> NoReturn:
    if as_json:
        click.echo(msgspec.json.encode({"ok": False, "error": error_fields(exc)}).decode())
    click.echo(f"freshet: configuration error: {exc.message}", err=True)
    sys.exit(2)


@contextmanager
def _warnings() -> Iterator[list[str]]:
    """Warnings logged while the fleet is built (a meter modelled instead of measured)."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield seen
    finally:
        root.removeHandler(handler)


def describe(settings: Settings, runtime: Runtime) -> dict[str, Any]:
    """The fleet ``serve`` would serve: backends and their models, groups, prices."""
    costs = runtime.accounting.costs
    backends = []
    for config in settings.backends:
        backend = runtime.fleet.get(config.id)
        backends.append(
            {
                "id": config.id,
                "type": config.type,
                "kind": backend.kind,
                "models": [
                    {
                        "name": d.name,
                        "knowledge_cutoff": _date(d.knowledge_cutoff),
                        "max_context": d.max_context,
                    }
                    for d in backend.deployments
                ],
                "energy": getattr(costs.get(config.id), "source", None),
                "list_price": dict(config.list_price) or None,
                "urls": urls_of(config.params),
            }
        )
    groups = {}
    for entry in runtime.fleet.catalog.entries():
        if entry.kind != "group":
            continue
        policy = settings.group_policies.get(entry.name)
        groups[entry.name] = {
            "backends": list(settings.groups[entry.name]),
            "router": policy.router if policy else "cheapest-fresh",
            "policy": policy.policy if policy else "full",
            "knowledge_cutoff": _date(entry.knowledge_cutoff),
        }
    prices = next((getattr(c, "prices", None) for c in costs.values()), None)
    return {
        "ok": True,
        "config": settings.config_file,
        "listen": f"http://{settings.host}:{settings.port}",
        "backends": backends,
        "groups": groups,
        "prices": msgspec.to_builtins(prices) if prices is not None else dict(settings.prices),
        "routing": msgspec.to_builtins(settings.routing),
    }


def urls_of(params: Mapping[str, Any]) -> list[str]:
    """The servers a remote backend's entry names (``url``, ``urls``)."""
    found: list[Any] = [params["url"]] if isinstance(params.get("url"), str) else []
    if isinstance(params.get("urls"), list):
        found += params["urls"]
    return [u for u in found if isinstance(u, str)]


def probe_all(settings: Settings) -> list[dict[str, Any]]:
    targets = [(c.id, url) for c in settings.backends for url in urls_of(c.params)]
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
        return list(pool.map(lambda t: probe(*t), targets))


def probe(backend_id: str, url: str, timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """GET the server's model list: any HTTP answer below 500 means it is there."""
    target = url.rstrip("/").removesuffix("/v1") + "/v1/models"
    started = time.monotonic()
    status: int | None = None
    error: str | None = None
    try:
        with urllib.request.urlopen(target, timeout=timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        error = str(reason) or type(reason).__name__
    return {
        "backend": backend_id,
        "url": url,
        "ok": status is not None and status < 500,
        "status": status,
        "error": error,
        "ms": round((time.monotonic() - started) * 1000),
    }


def _date(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _text(report: dict[str, Any]) -> str:
    lines = [
        f"config {report['config'] or '(embedded default)'}: ok; would listen on {report['listen']}"
    ]
    rows: list[Sequence[object]] = []
    for b in report["backends"]:
        for m in b["models"]:
            rows.append(
                (
                    b["id"],
                    b["type"],
                    m["name"],
                    m["knowledge_cutoff"] or "unknown",
                    m["max_context"] or "-",
                    b["energy"] or "-",
                    ", ".join(b["urls"]) or "-",
                )
            )
    headers = ("backend", "type", "model", "knowledge cutoff", "context", "energy", "urls")
    lines += ["", table(headers, rows)]
    if report["groups"]:
        group_rows = [
            (name, ", ".join(g["backends"]), g["router"], g["policy"], g["knowledge_cutoff"] or "-")
            for name, g in report["groups"].items()
        ]
        group_headers = ("group", "backends", "router", "policy", "freshest cutoff")
        lines += ["", table(group_headers, group_rows)]
    prices = report["prices"]
    if prices:
        lines += ["", "prices: " + ", ".join(f"{k} {_plain(v)}" for k, v in prices.items())]
    lines.append("routing: " + ", ".join(f"{k} {v}" for k, v in report["routing"].items()))
    lines += [f"warning: {w}" for w in report["warnings"]]
    for p in report.get("probes", []):
        answer = f"HTTP {p['status']}" if p["status"] is not None else p["error"]
        verdict = "answers" if p["ok"] else "DOES NOT ANSWER"
        lines.append(f"probe {p['backend']} {p['url']}: {verdict} ({answer}, {p['ms']} ms)")
    return "\n".join(lines)


def _plain(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + "; ".join(_plain(v) for v in value) + "]" if value else "none"
    if isinstance(value, dict):
        return " ".join(f"{k} {_plain(v)}" for k, v in value.items()) if value else "none"
    return str(value)
