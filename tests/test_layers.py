"""The house's floors: imports run one way (features -> training -> serving -> batch -> app), and no
module imports itself back through others.

Every import counts, module-level, inside functions and under ``TYPE_CHECKING`` alike: a lazy
import that goes upward is still an upward dependency, only deferred. The batch floor sits above
serving because the picks job scores through the recommender the endpoints use (one code path);
serving never imports the batch.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FLOORS = ("features", "training", "serving", "batch", "app")
"""Bottom to top: a module may import its own floor and those below it, never one above."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, package: str) -> set[str]:
    """The project names a module of ``package`` imports: ``import x`` gives ``x``; ``from x import
    name`` gives ``x`` and ``x.name`` (kept where that is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in FLOORS}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for floor in FLOORS for p in sorted((REPO / floor).rglob("*.py"))}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        graph[name] = {i for i in _imports(path.read_text(), package) if i in modules and i != name}
    return graph


GRAPH = _graph()


def test_the_floors_are_all_there() -> None:
    assert {name.split(".")[0] for name in GRAPH} == set(FLOORS)
    assert {"app.cli", "batch.job", "batch.spark", "serving.service", "training.pipeline"} <= set(GRAPH)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_upward_import(module: str) -> None:
    floor = FLOORS.index(module.split(".")[0])
    upward = sorted(i for i in GRAPH[module] if FLOORS.index(i.split(".")[0]) > floor)
    assert not upward, f"{module} (floor {FLOORS[floor]}) imports from above: {', '.join(upward)}"


def test_no_import_cycle() -> None:
    """Tarjan's strongly connected components over every import; any component of two or more
    modules is a cycle, named with its members."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(GRAPH[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_walk_sees_lazy_and_relative_imports() -> None:
    """The walker itself: an import inside a function, under TYPE_CHECKING and a relative one all count;
    other libraries do not."""
    source = ("import numpy\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from batch.job import JobResult\n"
              "def f():\n    import app.cli\nfrom . import recommender\nfrom ..training import bundle\n")
    assert _imports(source, "serving") >= {"batch.job", "app.cli", "serving.recommender", "training.bundle"}
    assert not {name for name in _imports(source, "serving") if name.startswith(("numpy", "typing"))}


MAX_MODULE_LINES = 400
"""A module a newcomer can read in one sitting; past it, it holds more than one job."""


def test_no_module_over_the_size_a_newcomer_reads_in_one_go() -> None:
    sizes = {name: len((REPO / (name.replace(".", "/") + ".py")).read_text().splitlines())
             for name in GRAPH if (REPO / (name.replace(".", "/") + ".py")).is_file()}
    packages = {name: len((REPO / name.replace(".", "/") / "__init__.py").read_text().splitlines())
                for name in GRAPH if (REPO / name.replace(".", "/") / "__init__.py").is_file()}
    large = {name: n for name, n in {**sizes, **packages}.items() if n > MAX_MODULE_LINES}
    assert not large, f"modules over {MAX_MODULE_LINES} lines: {large}"
