"""The import graph of dslm_zoo: no circles, and every module imports only its own floor or the floors below.

Read from the source with ``ast`` (imports inside functions count: a lazy import is still a dependency), one node
per module file, ``from . import x`` resolved to the submodule when there is one.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "dslm_zoo"

# Bottom to top. The theory is pure math; models and init stand on it; data, diagnostics, evals, training and the
# commands on top. Modules of one floor may import each other (without circles).
FLOORS = [
    {"theory"},
    {"_config", "_registry", "_argtypes", "layers", "evals"},  # evals: the official metrics, pure functions
    {"_hub", "init"},
    {"_builder"},
    {"models"},
    {"dslm_zoo"},  # the package's __init__: create_model and friends
    {"data", "diagnostics"},
    {"train"},
    {"release", "demo", "robustness", "translation"},
    {"cli"},
]
FLOOR_OF = {g: i for i, gs in enumerate(FLOORS) for g in gs}


def _modules() -> dict[str, tuple[Path, list[str]]]:
    mods = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
            pkg = parts
        else:
            pkg = parts[:-1]
        mods[".".join(parts)] = (p, pkg)
    return mods


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of dslm_zoo it imports}``."""
    mods = _modules()

    def resolve(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    edges: dict[str, set[str]] = {}
    for m, (path, pkg) in mods.items():
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                out |= {resolve(a.name) for a in node.names if a.name.split(".")[0] == "dslm_zoo"}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    target = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != "dslm_zoo":
                    continue
                for a in node.names:
                    full = f"{target}.{a.name}"
                    out.add(full if full in mods else resolve(target))
        out.discard(m)
        edges[m] = out
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "dslm_zoo"


def test_the_import_graph_has_no_circle():
    assert _cycles(import_graph()) == []


def test_every_module_has_a_floor():
    assert {_group(m) for m in import_graph()} <= set(FLOOR_OF)


def test_modules_import_only_their_floor_and_below():
    up = [f"{m} -> {d}" for m, deps in import_graph().items() for d in deps
          if FLOOR_OF[_group(d)] > FLOOR_OF[_group(m)]]
    assert up == []


def test_the_theory_imports_nothing_of_the_zoo():
    outside = {m: sorted(d for d in deps if _group(d) != "theory") for m, deps in import_graph().items()
               if _group(m) == "theory"}
    assert all(not v for v in outside.values()), outside


@pytest.mark.parametrize("graph, want", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_cycle_finder_finds_cycles(graph, want):
    assert _cycles(graph) == want
