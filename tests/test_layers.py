"""The layers contract: which of devloop's packages may import which (STYLE.md, point 10).

Every module under ``src/devloop`` is parsed with :mod:`ast`, never imported, and every import
counts wherever it is: at the top, inside a function (lazy), under ``TYPE_CHECKING``. Three rules:

layer
    A package imports only packages of its own layer or of a lower one::

        config -> collector -> store -> (core, analytics, simulate) -> tune
               -> (runner, dashboard, exporter) -> cli

    simulate sits beside core and analytics because it needs no more: it imports config (the
    allocation included) and store, and only the cli imports it. The top-level modules
    (``devloop.errors``, ``units``, ``tags``, ``_proc``, ``_atomic``, ``devloop`` itself) are the
    base layer every package may use, and they use no package; ``devloop.__main__`` is the entry
    point, above the cli.
cycle
    No import cycle between packages, nor between the modules of a package.
private
    A private name stays inside its package: nothing outside package ``x`` imports
    ``devloop.x._mod`` or ``from devloop.x.mod import _name``. :data:`KNOWN_PRIVATE` lists the
    crossings that exist today, exactly, so a new one fails and so does a stale entry.

A failure prints each violation as ``module -> imported (rule)``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "devloop"

#: Lowest first; the packages of one tuple are one layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("config",),
    ("collector",),
    ("store",),
    ("core", "analytics", "simulate"),
    ("tune",),
    ("runner", "dashboard", "exporter"),
    ("cli",),
)
BASE = -1  # the top-level modules
ENTRY = len(LAYERS)  # devloop.__main__

#: Private names that cross a package: none. Keep it so: a new one fails the test below.
KNOWN_PRIVATE: frozenset[str] = frozenset()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted((SRC / ROOT).rglob("*.py"))}


MODULES = _modules()


def _imports(module: str, path: Path) -> Iterator[tuple[str, str | None]]:
    """Every devloop import of a module: (module imported from, name or None)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                yield source, alias.name


def _target(source: str, name: str | None) -> str:
    """The devloop module an import runs: the submodule when the name is one."""
    if name is not None and f"{source}.{name}" in MODULES:
        return f"{source}.{name}"
    while source not in MODULES:
        source = source.rpartition(".")[0]
    return source


def _edges() -> set[tuple[str, str, str]]:
    """(importer, module imported, what is imported as written) for every devloop import."""
    edges = set()
    for module, path in MODULES.items():
        for source, name in _imports(module, path):
            if source != ROOT and not source.startswith(f"{ROOT}."):
                continue
            target = _target(source, name)
            written = source if name is None else f"{source}.{name}"
            if target != module:
                edges.add((module, target, written))
    return edges


EDGES = _edges()


def _package(module: str) -> str | None:
    """The package a module belongs to; None for the top-level modules."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (SRC / ROOT / parts[1]).is_dir() else None


def _layer(module: str) -> int:
    package = _package(module)
    if package is None:
        return ENTRY if module == f"{ROOT}.__main__" else BASE
    for level, packages in enumerate(LAYERS):
        if package in packages:
            return level
    raise AssertionError(f"package {package} has no layer in LAYERS")


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _fail(rule: str, violations: Iterable[str]) -> None:
    __tracebackhide__ = True
    lines = sorted(set(violations))
    if lines:
        pytest.fail(f"{len(lines)} import(s) break the {rule} rule:\n" + "\n".join(lines))


def test_every_package_has_a_layer() -> None:
    packages = {p for p in map(_package, MODULES) if p is not None}
    layered = {p for layer in LAYERS for p in layer}
    assert packages == layered


def test_no_package_imports_a_higher_layer() -> None:
    _fail(
        "layer",
        (
            f"{module} -> {written} (layer: {_package(module) or 'base'} is below "
            f"{_package(target) or 'base'})"
            for module, target, written in EDGES
            if _layer(module) < _layer(target)
        ),
    )


def test_no_import_cycle() -> None:
    packages: dict[str, set[str]] = {}
    for module, target, _ in EDGES:
        source, into = _package(module), _package(target)
        if source and into and source != into:
            packages.setdefault(source, set()).add(into)
    modules: dict[str, set[str]] = {}
    for module, target, _ in EDGES:
        if _package(module) and _package(module) == _package(target):
            modules.setdefault(module, set()).add(target)
    violations = []
    for cycle in _cycles(packages):
        members = ", ".join(sorted(cycle))
        # the imports that close it: those that do not go down a layer
        violations += [
            f"{module} -> {written} (cycle between packages {members})"
            for module, target, written in EDGES
            if _package(module) in cycle
            and _package(target) in cycle
            and _package(module) != _package(target)
            and _layer(module) <= _layer(target)
        ]
    for cycle in _cycles(modules):
        members = ", ".join(sorted(cycle))
        violations += [
            f"{module} -> {written} (cycle between modules {members})"
            for module, target, written in EDGES
            if module in cycle and target in cycle
        ]
    _fail("cycle", violations)


def _private(module: str, target: str, written: str) -> str | None:
    """The private part of an import that crosses a package (the private module, else the
    private name), or None."""
    package = _package(target)
    if package is None or package == _package(module):
        return None
    parts = written.split(".")
    for depth in range(2, len(parts)):
        if parts[depth].startswith("_") and not parts[depth].startswith("__"):
            return ".".join(parts[: depth + 1])
    return None


def test_private_names_stay_in_their_package() -> None:
    crossing = {
        f"{module} -> {private}"
        for module, target, written in EDGES
        if (private := _private(module, target, written)) is not None
    }
    _fail(
        "private",
        [f"{line} (private)" for line in crossing - KNOWN_PRIVATE]
        + [f"{line} (private: allowlisted but gone, drop it)" for line in KNOWN_PRIVATE - crossing],
    )


def test_duckdb_errors_are_caught_in_the_store_only() -> None:
    """DuckDB's errors are mapped to devloop's in one place (``devloop.store``): no module
    above it names ``duckdb.Error`` (they ask through ``devloop.store.db``)."""
    _fail(
        "DuckDB errors caught outside devloop.store",
        sorted(
            f"{module}: catches duckdb.Error"
            for module, path in MODULES.items()
            if _package(module) != "store" and "duckdb.Error" in path.read_text()
        ),
    )
