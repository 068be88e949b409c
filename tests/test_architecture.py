"""The package's layout holds: no import circle, no oversized file, floors import downwards."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "ctvoco"
MAX_LINES = 600


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    """Every import of ctvoco, module by module (lazy and type-checking imports included)."""
    return grimp.build_graph(
        "ctvoco",
        include_external_packages=True,
        exclude_type_checking_imports=False,
        cache_dir=None,
    )


def import_circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm).

    Args:
        graph: The package's import graph.

    Returns:
        Each circle's modules, sorted; empty when the graph has no circle.
    """
    edges = {
        m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i in graph.modules)
        for m in graph.modules
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(start: str) -> None:
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        circles.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(edges[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return circles


def test_circle_finder_finds_a_two_module_circle() -> None:
    graph = grimp.ImportGraph()
    for name in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(name)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert import_circles(graph) == [["p.a", "p.b"]]


def test_no_import_circle_between_modules(graph: grimp.ImportGraph) -> None:
    assert import_circles(graph) == []


def test_no_source_file_is_over_600_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


@pytest.mark.parametrize(
    ("floor", "forbidden"),
    [
        ("ctvoco.reports", "pytorch_lightning"),
        ("ctvoco.reports", "ctvoco.classify.module"),
        ("ctvoco.reports", "ctvoco.voco.module"),
        ("ctvoco.data", "ctvoco.metrics"),
        ("ctvoco.metrics", "torch"),
    ],
)
def test_floor_does_not_import(graph: grimp.ImportGraph, floor: str, forbidden: str) -> None:
    offenders = sorted(
        module
        for module in graph.find_descendants(floor) | {floor}
        if not graph.is_module_squashed(module)
        if any(
            imported == forbidden or imported.startswith(forbidden + ".")
            for imported in graph.find_modules_directly_imported_by(module)
        )
    )
    assert offenders == []
