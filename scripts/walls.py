"""The walls of the house, checked from the source: an AST import checker with no dependency.

Collects every import in ``gateway/**/*.py`` and ``plugins/*/freshet_*/**/*.py``: module-level,
inside functions, inside ``if TYPE_CHECKING:`` blocks, relative ones, and
``importlib.import_module("...")`` / ``__import__("...")`` calls with a literal string. Nothing
is imported or executed. ``from a.b import c`` counts as an import of the module ``a.b.c`` when
that is one of ours, else of ``a.b``. A package's ``__init__`` that Python runs on the way to a
submodule is not counted as an import of it (as in import-linter/grimp).

    python scripts/walls.py          # graph summary, every violation, the cycles; exit 1 if any
    python scripts/walls.py --edges  # ... and every import between gateway modules

The rules (``tests/test_walls.py`` runs one test per rule):

    R1  no import cycle among gateway modules, counting in-function, TYPE_CHECKING and
        importlib imports too
    R2  the layers: who may import whom inside gateway/ (the table below)
    R3  below the HTTP edge (NO_HTTP_LAYERS) nothing imports an HTTP framework or client
    R4  nothing in gateway/ imports a plugin's package (freshet_*)
    R5  plugins import from the core only PLUGIN_CORE_ALLOWED
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# ---------------------------------------------------------------------------------------------
# The walls, as data: a change to a wall is a one-line diff here.
# ---------------------------------------------------------------------------------------------

CORE = "gateway"
PLUGIN_SOURCES = "plugins/*/freshet_*"  # each plugin's import package, not its tests

# A module's layer: gateway.<package>.* is in <package>; gateway.testing is "testing"; every other
# module directly in gateway/ (and gateway/__init__ itself) is a contract.
PACKAGES = ("flow", "telemetry", "ledger", "state", "api", "cli", "builtins", "replay")
TOP_LEVEL_NOT_CONTRACTS = {"testing": "testing"}
# Contracts too big for one module, made packages: every module in them is a contract.
CONTRACT_PACKAGES = frozenset({"settings"})
LAYERS = ("contracts", *PACKAGES, "testing")
_ALL = frozenset(LAYERS)

# R2. importer layer -> what it may import: layer names, or exact module names (with a dot, or
# "gateway" itself). A layer missing here may import nothing.
ALLOWED: dict[str, frozenset[str]] = {
    # the top: types, hook specs, plugin manager, settings; nothing below them
    "contracts": frozenset({"contracts"}),
    "ledger": frozenset({"contracts", "ledger", "state"}),
    "state": frozenset({"contracts", "ledger", "state"}),
    # ledger: the usage record; not the flow, which hands telemetry its events
    "telemetry": frozenset({"contracts", "ledger", "telemetry"}),
    # not telemetry: the flow is handed an observer
    "flow": frozenset({"contracts", "ledger", "state", "flow"}),
    "replay": frozenset({"contracts", "flow", "ledger", "state", "replay"}),  # freshet replay
    "api": _ALL - {"cli"},
    "cli": _ALL,
    # like a third-party plugin: the plugin API, and `gateway` for hookimpl
    "builtins": frozenset({"gateway.plugin_api", "gateway", "builtins"}),
    "testing": _ALL,
}
# R2. importlib strings a module may name on top of ALLOWED: builtins are loaded like plugins.
DYNAMIC_ALLOWED: dict[str, frozenset[str]] = {
    "gateway.plugins": frozenset({"builtins"}),
}

# R3. Layers below the HTTP edge, and what they must not import (top-level package names).
NO_HTTP_LAYERS = frozenset({"contracts", "ledger", "telemetry", "state", "flow", "builtins"})
HTTP_FRAMEWORKS = frozenset({"litestar", "uvicorn", "httptools", "starlette", "h11"})
HTTP_CLIENTS = frozenset({"httpx", "aiohttp"})  # fine in plugins only

# R4. A plugin's import package, by its top-level name.
PLUGIN_PACKAGE_PREFIX = "freshet_"

# R5. The core modules a plugin may import (exactly these): the public face, and `gateway` for
# hookimpl.
PLUGIN_CORE_ALLOWED = frozenset({"gateway.plugin_api", "gateway"})

RULES = {
    "R1": "no import cycle",
    "R2": "layers",
    "R3": "no HTTP framework below the edge",
    "R4": "the core imports no plugin",
    "R5": "plugins import only the plugin API",
}

# ---------------------------------------------------------------------------------------------

MODULE, IN_FUNCTION, TYPE_CHECKING, IMPORTLIB = (
    "module",
    "in-function",
    "TYPE_CHECKING",
    "importlib",
)
KINDS = (MODULE, IN_FUNCTION, TYPE_CHECKING, IMPORTLIB)


@dataclass(frozen=True, order=True)
class Import:
    importer: str
    target: str
    path: str  # relative to the root
    line: int
    kind: str  # one of KINDS
    names: tuple[str, ...] = ()  # what `from ... import` took from it, if it is not a module

    @property
    def what(self) -> str:
        """``a -> b (x, y) [kind]``"""
        names = f" ({', '.join(self.names)})" if self.names else ""
        return f"{self.importer} -> {self.target}{names} [{self.kind}]"


@dataclass(frozen=True, order=True)
class Violation:
    rule: str
    path: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.rule} {self.path}:{self.line}: {self.text}"


@dataclass
class Tree:
    root: Path
    modules: dict[str, Path] = field(default_factory=dict)  # module name -> file
    packages: set[str] = field(default_factory=set)  # module names that are packages
    imports: list[Import] = field(default_factory=list)

    def is_core(self, module: str) -> bool:
        return module == CORE or module.startswith(CORE + ".")

    @property
    def core_imports(self) -> list[Import]:
        """Imports from a gateway module of a gateway module."""
        return [i for i in self.imports if self.is_core(i.importer) and self.is_core(i.target)]


def _module_name(path: Path, base: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(base).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _sources(root: Path) -> Iterator[tuple[Path, Path]]:
    """(file, the folder its module names are relative to)."""
    for path in sorted((root / CORE).rglob("*.py")):
        yield path, root
    for package in sorted(root.glob(PLUGIN_SOURCES)):
        if package.is_dir():
            for path in sorted(package.rglob("*.py")):
                yield path, package.parent


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
    package = importer if is_package else importer.rpartition(".")[0]
    parts = package.split(".")
    if level - 1 >= len(parts):
        raise ValueError(f"{importer}: relative import beyond the top-level package")
    base = ".".join(parts[: len(parts) - (level - 1)])
    return f"{base}.{module}" if module else base


def _dynamic_target(call: ast.Call, importer: str, is_package: bool) -> str | None:
    """The module an ``importlib.import_module``/``__import__`` call names literally, if any."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("import_module", "__import__") or not call.args:
        return None
    first = call.args[0]
    if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
        return None
    target = first.value
    if not target.startswith("."):
        return target
    package = next((k.value for k in call.keywords if k.arg == "package"), None)
    if not (isinstance(package, ast.Constant) and isinstance(package.value, str)):
        return None
    level = len(target) - len(target.lstrip("."))
    return _resolve_relative(package.value, True, level, target[level:] or None)


_Raw = tuple[int, str, str, str | None]  # line, kind, module, the name imported from it


def _collect(module: str, is_package: bool, path: Path) -> list[_Raw]:
    source = ast.parse(path.read_bytes(), filename=str(path))
    raw: list[_Raw] = []

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        kind = TYPE_CHECKING if type_checking else IN_FUNCTION if in_function else MODULE
        if isinstance(node, ast.Import):
            raw.extend((node.lineno, kind, alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve_relative(module, is_package, node.level, node.module)
            else:
                base = node.module or ""
            raw.extend((node.lineno, kind, base, alias.name) for alias in node.names)
        elif isinstance(node, ast.Call):
            target = _dynamic_target(node, module, is_package)
            if target:
                raw.append((node.lineno, IMPORTLIB, target, None))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                visit(stmt, in_function, True)
            for stmt in node.orelse:
                visit(stmt, in_function, type_checking)
            return
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner, type_checking)

    visit(source, False, False)
    return raw


def scan(root: Path) -> Tree:
    """Read every source file under ``root`` and collect its imports."""
    tree = Tree(root=root.resolve())
    files: list[tuple[str, bool, Path]] = []
    for file, folder in _sources(tree.root):
        module, is_package = _module_name(file, folder)
        tree.modules[module] = file
        if is_package:
            tree.packages.add(module)
        files.append((module, is_package, file))
    collected = [(m, p, _collect(m, is_package, p)) for m, is_package, p in files]
    # Only now that every module is known: `from a.b import c` is a.b.c if that is a module.
    for module, path, raw in collected:
        rel = path.relative_to(tree.root).as_posix()
        # One Import per statement and target: `from m import a, b` is one import of m.
        names: dict[tuple[int, str, str], list[str]] = {}
        for line, kind, base, name in raw:
            target = base
            if name is not None and name != "*" and f"{base}.{name}" in tree.modules:
                target, name = f"{base}.{name}", None
            names.setdefault((line, kind, target), [])
            if name is not None:
                names[(line, kind, target)].append(name)
        for (line, kind, target), taken in names.items():
            tree.imports.append(Import(module, target, rel, line, kind, tuple(taken)))
    tree.imports.sort(key=lambda i: (i.path, i.line, i.target))
    return tree


def layer_of(tree: Tree, module: str) -> str | None:
    """The layer of a gateway module; None outside gateway or in no layer (a new package)."""
    parts = module.split(".")
    if parts[0] != CORE:
        return None
    if len(parts) == 1:
        return "contracts"
    if parts[1] in PACKAGES:
        return parts[1]
    if parts[1] in TOP_LEVEL_NOT_CONTRACTS:
        return TOP_LEVEL_NOT_CONTRACTS[parts[1]]
    if parts[1] in CONTRACT_PACKAGES:
        return "contracts"
    if len(parts) > 2 or f"{CORE}.{parts[1]}" in tree.packages:
        return None  # a package the table does not know
    return "contracts"


def _here(tree: Tree, module: str) -> str:
    path = tree.modules.get(module)
    return path.relative_to(tree.root).as_posix() if path else module


# --- R1 ---------------------------------------------------------------------------------------


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                found.append(sorted(component))
    return found


def _shortest_cycle(start: str, members: set[str], graph: dict[str, set[str]]) -> list[str]:
    before: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node] & members):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(before[path[-1]])
                return [*reversed(path), start]
            if child not in before:
                before[child] = node
                queue.append(child)
    return [start]


@dataclass(frozen=True)
class Cycle:
    members: list[str]
    path: list[str]  # one shortest cycle through the first member: a -> b -> ... -> a
    edges: list[Import]  # every import inside the component


def cycles(tree: Tree) -> list[Cycle]:
    graph: dict[str, set[str]] = {m: set() for m in tree.modules if tree.is_core(m)}
    for imp in tree.core_imports:
        graph.setdefault(imp.importer, set()).add(imp.target)
        graph.setdefault(imp.target, set())
    found = []
    for component in _strongly_connected(graph):
        members = set(component)
        if len(component) == 1 and component[0] not in graph[component[0]]:
            continue
        edges = [i for i in tree.core_imports if i.importer in members and i.target in members]
        found.append(Cycle(component, _shortest_cycle(component[0], members, graph), edges))
    return sorted(found, key=lambda c: c.members)


def check_cycles(tree: Tree) -> list[Violation]:
    out = []
    for cycle in cycles(tree):
        first = cycle.edges[0]
        out.append(Violation("R1", first.path, first.line, "cycle " + " -> ".join(cycle.path)))
    return out


# --- R2 ---------------------------------------------------------------------------------------


def crosses_layers(tree: Tree, imp: Import) -> bool:
    """Whether an import between gateway modules is one the layer table does not allow."""
    source, target = layer_of(tree, imp.importer), layer_of(tree, imp.target)
    if source is None or target is None:
        return False  # a module in no layer is reported by itself
    allowed = ALLOWED.get(source, frozenset())
    if target in allowed or imp.target in allowed:
        return False
    dynamic = DYNAMIC_ALLOWED.get(imp.importer, frozenset())
    return not (imp.kind == IMPORTLIB and target in dynamic)


def check_layers(tree: Tree) -> list[Violation]:
    out = [
        Violation("R2", _here(tree, m), 1, f"{m} is in no layer (add its package to PACKAGES)")
        for m in sorted(m for m in tree.modules if tree.is_core(m))
        if layer_of(tree, m) is None
    ]
    for imp in tree.core_imports:
        if crosses_layers(tree, imp):
            source, target = layer_of(tree, imp.importer), layer_of(tree, imp.target)
            text = f"{source} -> {target}: {imp.what}"
            out.append(Violation("R2", imp.path, imp.line, text))
    return out


# --- R3, R4, R5 -------------------------------------------------------------------------------


def check_http(tree: Tree) -> list[Violation]:
    out = []
    for imp in tree.imports:
        top = imp.target.partition(".")[0]
        if top not in HTTP_FRAMEWORKS | HTTP_CLIENTS or not tree.is_core(imp.importer):
            continue
        layer = layer_of(tree, imp.importer)
        if layer in NO_HTTP_LAYERS:
            what = "HTTP framework" if top in HTTP_FRAMEWORKS else "HTTP client"
            text = f"{what} in {layer}: {imp.what}"
            out.append(Violation("R3", imp.path, imp.line, text))
    return out


def _is_plugin_package(module: str) -> bool:
    return module.partition(".")[0].startswith(PLUGIN_PACKAGE_PREFIX)


def check_core_imports_no_plugin(tree: Tree) -> list[Violation]:
    return [
        Violation("R4", i.path, i.line, i.what)
        for i in tree.imports
        if tree.is_core(i.importer) and _is_plugin_package(i.target)
    ]


def check_plugins(tree: Tree) -> list[Violation]:
    return [
        Violation("R5", i.path, i.line, i.what)
        for i in tree.imports
        if _is_plugin_package(i.importer)
        and tree.is_core(i.target)
        and i.target not in PLUGIN_CORE_ALLOWED
    ]


CHECKS = {
    "R1": check_cycles,
    "R2": check_layers,
    "R3": check_http,
    "R4": check_core_imports_no_plugin,
    "R5": check_plugins,
}


def check(tree: Tree) -> list[Violation]:
    return [v for rule in CHECKS.values() for v in sorted(rule(tree))]


# --- report -----------------------------------------------------------------------------------


def _matrix(tree: Tree) -> list[str]:
    counts: Counter[tuple[str, str]] = Counter()
    bad: set[tuple[str, str]] = set()
    for imp in tree.core_imports:
        pair = (layer_of(tree, imp.importer) or "?", layer_of(tree, imp.target) or "?")
        counts[pair] += 1
        if crosses_layers(tree, imp):
            bad.add(pair)
    layers = list(LAYERS) + (["?"] if any("?" in pair for pair in counts) else [])
    width = max(len(x) for x in layers) + 1
    lines = [" " * width + "".join(f"{x[:9]:>10}" for x in layers)]
    for source in layers:
        cells = []
        for target in layers:
            n = counts[(source, target)]
            mark = "!" if (source, target) in bad else ""
            cells.append(f"{f'{n}{mark}' if n else '.':>10}")
        lines.append(f"{source:<{width}}" + "".join(cells))
    return lines


def section(tree: Tree, rule: str, found: list[Violation]) -> list[str]:
    """One rule's part of the report: its verdict, then each violation (each cycle in full)."""
    lines = [f"{rule} {RULES[rule]}: " + (f"{len(found)} violation(s)" if found else "ok")]
    if rule == "R1":
        for cycle in cycles(tree):
            lines.append("  cycle: " + " -> ".join(cycle.path))
            lines.append("    in the component: " + ", ".join(cycle.members))
            lines += [f"    {i.path}:{i.line}: {i.what}" for i in cycle.edges]
    else:
        lines += [f"  {v.path}:{v.line}: {v.text}" for v in found]
    return lines


def report(tree: Tree, violations: Iterable[Violation], edges: bool = False) -> list[str]:
    violations = list(violations)
    core = [m for m in tree.modules if tree.is_core(m)]
    plugins = sorted({m.partition(".")[0] for m in tree.modules if _is_plugin_package(m)})
    kinds = Counter(i.kind for i in tree.core_imports)
    lines = [
        f"Import graph: {len(core)} gateway modules, "
        f"{len(tree.modules) - len(core)} plugin modules ({', '.join(plugins) or 'none'})",
        f"  {len(tree.imports)} imports in all; {len(tree.core_imports)} between gateway modules ("
        + ", ".join(f"{kinds[k]} {k}" for k in KINDS)
        + ")",
        "  gateway imports by layer (row imports column; ! = not allowed):",
        *("    " + line for line in _matrix(tree)),
    ]
    missing = sorted({i.target for i in tree.core_imports if i.target not in tree.modules})
    if missing:
        lines.append("  note: imports of gateway modules that do not exist: " + ", ".join(missing))
    if edges:
        lines.append("Imports between gateway modules:")
        lines += [f"  {i.path}:{i.line}: {i.what}" for i in tree.core_imports]
    by_rule: dict[str, list[Violation]] = defaultdict(list)
    for v in violations:
        by_rule[v.rule].append(v)
    lines.append("")
    for rule in RULES:
        lines += section(tree, rule, by_rule.get(rule, []))
    lines.append("")
    lines.append("no import cycle" if not by_rule.get("R1") else f"{len(by_rule['R1'])} cycle(s)")
    lines.append(
        f"{len(violations)} violation(s)" if violations else "all walls hold: no violation"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--edges", action="store_true", help="list every gateway -> gateway import")
    args = parser.parse_args(argv)
    tree = scan(args.root)
    violations = check(tree)
    print("\n".join(report(tree, violations, edges=args.edges)))
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
