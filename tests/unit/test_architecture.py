"""The layer contracts (pyproject.toml [tool.importlinter], docs/architecture.md "Layers") and
no import cycles, function-level imports included."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def graph():
    sys.path.insert(0, str(ROOT))  # training/ as the top-level package it is in the repo
    try:
        return grimp.build_graph(
            "streamguard", "training", include_external_packages=False, cache_dir=None,
            exclude_type_checking_imports=True,
        )  # fmt: skip
    finally:
        sys.path.remove(str(ROOT))


def test_lint_imports_keeps_every_contract():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_the_graph_sees_function_level_imports_and_the_trainer(graph):
    """What the contracts and the cycle check stand on: an import inside a function is an
    edge (``serve``'s run() imports the daemon; scan's scan_file() the offline scorer), and
    the trainer's modules are in the graph with their imports."""
    assert "streamguard.daemon" in graph.find_modules_directly_imported_by(
        "streamguard.commands.serve"
    )
    assert "streamguard.scoring.offline" in graph.find_modules_directly_imported_by(
        "streamguard.commands.scan"
    )
    assert "streamguard.policy" in graph.find_modules_directly_imported_by("training.policy")


def strongly_connected(graph) -> list[set[str]]:
    """Tarjan's algorithm, iteratively: every set of modules that import each other round."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_no_import_cycles_function_level_imports_included(graph):
    assert strongly_connected(graph) == []


def test_the_cycle_check_finds_a_cycle():
    """The check itself can fail: a two-module cycle through a function-level import."""
    g = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        g.add_module(name)
    g.add_import(importer="pkg.a", imported="pkg.b")
    g.add_import(importer="pkg.b", imported="pkg.a")  # say, inside a function
    g.add_import(importer="pkg.c", imported="pkg.a")
    assert strongly_connected(g) == [{"pkg.a", "pkg.b"}]


def test_the_source_core_contract_names_every_core():
    """The cores' contract lists modules (they share sources/ with the edges): a new core
    must be listed, or it would escape the contract."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = [
        c
        for c in config["tool"]["importlinter"]["contracts"]
        if c["name"].startswith("Source cores")
    ]
    cores = {
        f"streamguard.sources.{p.stem}"
        for p in (ROOT / "streamguard" / "sources").glob("*.py")
        if p.stem not in ("__init__", "table")
    }
    assert set(contract["source_modules"]) == cores
