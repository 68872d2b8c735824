"""``freshet keys create | list | revoke``: API keys in the key store the gateway uses.

The store is the one ``freshet serve`` would use with the same config and environment:
Redis when ``FRESHET_REDIS_URL`` (or ``redis.url``) is set, else ``keys.sqlite3`` in the
data directory. A running gateway sees a change within ``keys.refresh_s`` (1 s).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
import msgspec

from gateway.cli.output import table
from gateway.errors import ConfigError, FreshetError
from gateway.protocol import Freshness
from gateway.settings import load_settings
from gateway.state.keys import ApiKey, KeyStore, new_key
from gateway.state.shared import key_store

T = TypeVar("T")


def _run(config_file: str | None, action: Callable[[KeyStore], Awaitable[T]]) -> T:
    try:
        settings = load_settings(config_file)
    except ConfigError as exc:
        click.echo(f"freshet: configuration error: {exc.message}", err=True)
        sys.exit(2)

    async def go() -> T:
        store = key_store(settings)
        try:
            return await action(store)
        finally:
            await store.aclose()

    try:
        return asyncio.run(go())
    except FreshetError as exc:
        click.echo(f"freshet: {exc.message}", err=True)
        sys.exit(1)


def _limits(key: ApiKey) -> str:
    parts = []
    if key.budget_usd is not None:
        parts.append(f"${key.budget_usd:g}/day")
    if key.budget_joules is not None:
        parts.append(f"{key.budget_joules:g} J/day")
    if key.rpm is not None:
        parts.append(f"{key.rpm} rpm")
    if key.tpm is not None:
        parts.append(f"{key.tpm} tpm")
    return ", ".join(parts) or "-"


def _freshness(key: ApiKey) -> str:
    f = key.freshness
    if f is None:
        return "-"
    if f.min_knowledge_cutoff is not None:
        return f">= {f.min_knowledge_cutoff.isoformat()}"
    return f"<= {f.max_staleness_days} days old"


@click.group()
def keys() -> None:
    """API keys: create (shown once), list, revoke."""


_CONFIG = click.option("--config", "config_file", default=None, help="YAML config.")


@keys.command("create")
@click.option("--name", required=True, help="A unique name (recorded in the ledger).")
@click.option("--budget-usd", type=float, default=None, help="Dollars per UTC day.")
@click.option("--budget-joules", type=float, default=None, help="Joules per UTC day.")
@click.option("--rpm", type=int, default=None, help="Requests per minute (per limits window).")
@click.option("--tpm", type=int, default=None, help="Tokens per minute (prompt + max output).")
@click.option(
    "--freshness-min-cutoff",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Default need: knowledge cutoff on or after this date.",
)
@click.option(
    "--freshness-max-staleness-days",
    type=click.IntRange(min=0),
    default=None,
    help="Default need: knowledge cutoff at most N days old.",
)
@_CONFIG
def create(
    name: str,
    budget_usd: float | None,
    budget_joules: float | None,
    rpm: int | None,
    tpm: int | None,
    freshness_min_cutoff: dt.datetime | None,
    freshness_max_staleness_days: int | None,
    config_file: str | None,
) -> None:
    """Create a key and print it once (only its SHA-256 is stored)."""
    if freshness_min_cutoff is not None and freshness_max_staleness_days is not None:
        raise click.UsageError(
            "choose one of --freshness-min-cutoff and --freshness-max-staleness-days"
        )
    freshness = None
    if freshness_min_cutoff is not None or freshness_max_staleness_days is not None:
        freshness = Freshness(
            min_knowledge_cutoff=freshness_min_cutoff.date() if freshness_min_cutoff else None,
            max_staleness_days=freshness_max_staleness_days,
        )
    try:
        secret, key = new_key(
            name,
            budget_usd=budget_usd,
            budget_joules=budget_joules,
            rpm=rpm,
            tpm=tpm,
            freshness=freshness,
        )
    except FreshetError as exc:
        raise click.BadParameter(exc.message, param_hint=f"--{exc.param or 'name'}") from exc
    _run(config_file, lambda store: store.add(key))
    click.echo(secret)
    click.echo(
        f"freshet: key {name!r} created ({_limits(key)}); it is shown only this once", err=True
    )


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_CONFIG
def list_keys(as_json: bool, config_file: str | None) -> None:
    """Every key's name, limits, default freshness and state (never the key itself)."""
    found = _run(config_file, lambda store: store.all())
    if as_json:
        rows = [msgspec.to_builtins(k) for k in found]
        for row in rows:
            del row["digest"]
        click.echo(json.dumps(rows))
        return
    rows = [
        (
            k.name,
            dt.datetime.fromtimestamp(k.created, dt.UTC).strftime("%Y-%m-%d %H:%M"),
            _limits(k),
            _freshness(k),
            "revoked" if k.revoked else "active",
        )
        for k in found
    ]
    click.echo(table(("name", "created (UTC)", "limits", "freshness", "state"), rows))


@keys.command("revoke")
@click.argument("name")
@_CONFIG
def revoke(name: str, config_file: str | None) -> None:
    """Revoke a key by name (requests with it get 401 within a second)."""
    if not _run(config_file, lambda store: store.revoke(name)):
        click.echo(f"freshet: no key named {name!r}", err=True)
        sys.exit(1)
    click.echo(f"freshet: key {name!r} revoked", err=True)
