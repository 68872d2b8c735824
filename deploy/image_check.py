"""Check an installed Freshet the way deploy/Dockerfile needs it, before the image is kept.

    python image_check.py PLUGINS_DIR [--config FILE]

- every plugin directory under PLUGINS_DIR is installed as its distribution, depends on the
  distribution that provides the ``gateway`` package (a plugin that requires another name
  would have pulled that name from the package index), and registers its entry points;
- the fleet builds: the embedded default (what ``freshet serve`` serves with no config), or
  FILE. Backends are constructed, not started: nothing is loaded or contacted.

Prints one line per problem and exits 1, or prints what it checked and exits 0. The suite
runs it too (tests/deploy), against the development install.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return _canonical(match.group(1)) if match else ""


def core_distribution() -> str | None:
    names = sorted(set(metadata.packages_distributions().get("gateway", [])))
    return names[0] if len(names) == 1 else None


def check_plugins(plugins_dir: Path) -> list[str]:
    from gateway.plugins import Plugins

    problems: list[str] = []
    core = core_distribution()
    if core is None:
        return ["the `gateway` package is not installed from exactly one distribution"]
    registered = {(info.name, _canonical(info.distribution)) for info in Plugins().info()}
    projects = sorted(plugins_dir.glob("*/pyproject.toml"))
    if not projects:
        problems.append(f"no plugin directories under {plugins_dir}")
    for pyproject in projects:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        name = _canonical(project["name"])
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{pyproject.parent.name}: distribution {name} is not installed")
            continue
        requires = {_requirement_name(r) for r in dist.requires or []}
        if _canonical(core) not in requires:
            problems.append(
                f"{name}: does not depend on the core distribution {core} "
                f"(it requires {sorted(requires)})"
            )
        for entry in project.get("entry-points", {}).get("freshet", {}):
            if (entry, name) not in registered:
                problems.append(f"{name}: plugin {entry!r} is not registered")
    return problems


def check_fleet(config_file: str | None) -> list[str]:
    """Build the fleet and the cost model as ``freshet serve`` would, without starting them."""
    from gateway.errors import ConfigError
    from gateway.flow.accounting import build_cost_model
    from gateway.flow.fleet import Fleet
    from gateway.plugins import Plugins
    from gateway.settings import load_settings

    try:
        settings = load_settings(config_file, env={})
        plugins = Plugins(blocked=settings.blocked_plugins)
        Fleet(settings, plugins)
        build_cost_model(settings, plugins)
    except ConfigError as exc:
        return [f"configuration error: {exc}"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plugins_dir", type=Path)
    parser.add_argument("--config", default=None, help="a config file (default: embedded)")
    args = parser.parse_args(argv)
    problems = check_plugins(args.plugins_dir) + check_fleet(args.config)
    for problem in problems:
        print(f"image check: {problem}", file=sys.stderr)
    if problems:
        return 1
    plugins = ", ".join(p.parent.name for p in sorted(args.plugins_dir.glob("*/pyproject.toml")))
    print(
        f"image check: core {core_distribution()}; plugins {plugins}; "
        f"fleet of {args.config or 'the embedded default'} builds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
