"""The package's shape: no import cycles, no private names across modules, layers.

The layer order itself is the import-linter contract in ``pyproject.toml``
(``lint-imports``, run by ``.ci/run``); these tests add what a layers contract does
not say: no cycle anywhere (function-level imports included), and no module reaching
into another's private names. See ``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

grimp = pytest.importorskip("grimp")

PACKAGES = ("optscale_jax", "predictor")


def _graph():
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def _strongly_connected(graph) -> list[list[str]]:
    """Tarjan's algorithm on the direct-import graph; components of size > 1 are cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.find_modules_directly_imported_by(v)):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph.modules):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    """Function-level imports count too: grimp reads every import statement."""
    graph = _graph()
    cycles = _strongly_connected(graph)
    details = []
    for comp in cycles:
        a, b = comp[0], comp[1]
        details.append(
            f"{comp}: e.g. {graph.find_shortest_chain(a, b)} and {graph.find_shortest_chain(b, a)}"
        )
    assert not cycles, "import cycles:\n" + "\n".join(details)


def test_predictor_is_above_the_library() -> None:
    graph = _graph()
    assert not graph.chain_exists(importer="optscale_jax", imported="predictor", as_packages=True)


def _module_files() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        root = Path(importlib.util.find_spec(pkg).origin).parent
        for path in root.rglob("*.py"):
            rel = path.relative_to(root.parent).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str | None:
    if node.level == 0:
        return node.module
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def test_no_private_names_imported_across_modules() -> None:
    """``from a.b import _x`` inside the packages must not happen: a private name has
    one owner. Shared internals live in private *modules* (``_truncnorm``) under public
    names instead."""
    bad = []
    for module, path in _module_files().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            src = _resolve(module, node, path.name == "__init__.py")
            if not src or src.split(".")[0] not in PACKAGES or src == module:
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    bad.append(f"{module}:{node.lineno} imports {alias.name} from {src}")
    assert not bad, "\n".join(bad)
