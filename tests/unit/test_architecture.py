"""The layout keeps its promises: no import circles, no service importing another, no module
past 450 lines (docs/architecture.md). The import graph is grimp's (import-linter's engine),
over every import statement, deferred and TYPE_CHECKING ones included."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "services", "capsearch")
SERVICES = ("gateway", "encoder", "search", "caption")
MAX_LINES = 450


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def _circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iteratively)."""
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & set(modules))
             for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in modules:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(edges[node]):
                work.append((node, i + 1))
                nxt = edges[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def test_no_import_circles(graph: grimp.ImportGraph) -> None:
    assert _circles(graph) == []


def test_the_circle_finder_finds_a_circle() -> None:
    fake = grimp.ImportGraph()
    for name in ("p", "p.a", "p.b", "p.c"):
        fake.add_module(name)
    fake.add_import(importer="p.a", imported="p.b")
    fake.add_import(importer="p.b", imported="p.a")
    fake.add_import(importer="p.b", imported="p.c")
    assert _circles(fake) == [["p.a", "p.b"]]


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_imports_another(graph: grimp.ImportGraph, service: str) -> None:
    others = [f"services.{o}" for o in SERVICES if o != service]
    for module in graph.find_descendants(f"services.{service}") | {f"services.{service}"}:
        imported = graph.find_modules_directly_imported_by(module)
        assert not [m for m in imported if m.startswith(tuple(others))], module


def test_no_module_is_over_450_lines() -> None:
    long = {str(path.relative_to(REPO)): n for package in PACKAGES
            for path in (REPO / package).rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
