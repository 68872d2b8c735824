"""``freshet calibrate``: measure each backend's speed on this machine, for ``freshet replay``.

A backend whose type can measure itself (:class:`~gateway.simulator.Calibratable`: the
llama.cpp backend's prefill and decode tokens/s) is started alone, measured and closed;
the others are listed as not measured. With ``--write`` the figures go into each measured
backend's ``profile:`` in the config file (a copy of the file as it was is kept beside
it, ``FILE.bak``), so that a replay of the fleet models what this machine does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

import click
import msgspec

from gateway.cli.output import table
from gateway.cli.profile_yaml import set_profile
from gateway.errors import ConfigError, FreshetError
from gateway.flow.fleet import Fleet
from gateway.plugins import Plugins
from gateway.settings import Settings, load_settings
from gateway.simulator import Calibratable


class Measured(msgspec.Struct, kw_only=True):
    id: str
    type: str
    before: dict[str, float]  # the profile's figures the replay used until now
    measured: dict[str, float] | None  # None: the type cannot measure itself


def _fail(message: str) -> None:
    click.echo(f"freshet calibrate: {message}", err=True)
    sys.exit(2)


async def measure(settings: Settings, plugins: Plugins) -> list[Measured]:
    """Each configured backend, measured where its type can measure itself."""
    fleet = Fleet(settings, plugins)
    out = []
    for config in settings.backends:
        backend = fleet.backends[config.id]
        profile = backend.profile
        before = {
            "prefill_tokens_per_s": float(profile.prefill_tokens_per_s),
            "decode_tokens_per_s": float(profile.decode_tokens_per_s),
        }
        measured: dict[str, float] | None = None
        if isinstance(backend, Calibratable):
            await backend.start()
            try:
                measured = {k: float(v) for k, v in (await backend.calibrate()).items()}
            finally:
                await backend.aclose()
        out.append(Measured(id=config.id, type=config.type, before=before, measured=measured))
    return out


def write(settings: Settings, results: list[Measured]) -> Path:
    """The figures into the config file's profiles; returns the backup's path."""
    assert settings.config_file is not None
    path = Path(settings.config_file)
    text = path.read_text(encoding="utf-8")
    index = {c.id: c.index for c in settings.backends}
    for r in results:
        if r.measured:
            text = set_profile(text, index[r.id], r.measured, str(path))
    backup = path.with_name(path.name + ".bak")
    shutil.copyfile(path, backup)
    path.write_text(text, encoding="utf-8")
    try:
        load_settings(str(path), env=_env())
    except ConfigError:
        shutil.copyfile(backup, path)  # never leave a file that no longer loads
        raise
    return backup


def _env() -> Mapping[str, str]:
    return {k: v for k, v in os.environ.items() if k != "FRESHET_CONFIG"}


def _rate(values: Mapping[str, float] | None, key: str) -> str:
    return f"{values[key]:,.0f}" if values and key in values else "-"


@click.command("calibrate")
@click.option(
    "--config",
    "config_file",
    default=None,
    help="The fleet's YAML (default: $FRESHET_CONFIG, else the embedded default).",
)
@click.option(
    "--write",
    "write_file",
    is_flag=True,
    help="Write the figures into each backend's profile: in the config file (FILE.bak kept).",
)
@click.option("--json", "as_json", is_flag=True, help="The figures as JSON.")
def calibrate_command(config_file: str | None, write_file: bool, as_json: bool) -> None:
    """Measure each backend's prefill and decode tokens/s on this machine.

    For the backend types that can measure themselves (llamacpp); freshet replay then
    models the fleet with this machine's figures once they are in the config (--write).
    """
    try:
        settings = load_settings(config_file) if config_file else load_settings()
        if write_file and settings.config_file is None:
            _fail("--write needs a config file (--config FILE) to write the figures into")
        plugins = Plugins(blocked=settings.blocked_plugins)
        results = asyncio.run(measure(settings, plugins))
        backup = write(settings, results) if write_file else None
    except ConfigError as exc:
        _fail(f"configuration error: {exc.message}")
        return
    except FreshetError as exc:
        _fail(exc.message)
        return
    if as_json:
        click.echo(msgspec.json.encode(results).decode())
        return
    rows = [
        [
            r.id,
            r.type,
            _rate(r.measured, "prefill_tokens_per_s"),
            _rate(r.measured, "decode_tokens_per_s"),
            f"{_rate(r.before, 'prefill_tokens_per_s')} / {_rate(r.before, 'decode_tokens_per_s')}",
        ]
        for r in results
    ]
    headers = ["backend", "type", "prefill tok/s", "decode tok/s", "profile had (prefill / decode)"]
    click.echo(table(headers, rows))
    if not any(r.measured for r in results):
        click.echo("no backend here measures itself (types that do: llamacpp)")
    elif backup is not None:
        click.echo(f"written into {settings.config_file} (as it was: {backup})")
    else:
        click.echo("--write puts them into the config file's profile: keys")


__all__ = ["calibrate_command", "measure", "write"]
