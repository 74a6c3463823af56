"""The arrows of DESIGN.md: subsystem packages never import grid, nor each other except
replication -> partitioning; the simulation drives membership, partitioning,
replication and the real store (grid.store, with the config it is built from), and
nothing else of grid."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {
    "proto": set(),
    "membership": set(),
    "persistence": set(),
    "partitioning": set(),
    "replication": {"partitioning"},
    "simulation": {"membership", "partitioning", "replication", "persistence"},
}
ALLOWED_MODULES = {
    "simulation": ("grid.store", "grid.config", "grid.store.durability", "grid.logs")
}
"""Modules of other packages a package may import besides whole packages: the simulator
runs the real store and journal (DESIGN.md: "the cores, the store"), not the member runtime."""
PROJECT = {
    "grid",
    "proto",
    "membership",
    "persistence",
    "partitioning",
    "replication",
    "simulation",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {m for m in found if m.split(".")[0] in PROJECT}


def imported_packages(path: Path, allowed_modules: tuple[str, ...] = ()) -> set[str]:
    return {
        m.split(".")[0]
        for m in imported_modules(path)
        if not any(m == a or m.startswith(a + ".") for a in allowed_modules)
    }


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_design_allows(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_packages(path, ALLOWED_MODULES.get(package, ())) - ALLOWED[package]
        bad -= {package}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


GRID_MAY_NOT = {
    "grid.store": ("grid.member", "grid.client", "grid.embedded", "grid.harness", "grid.cli"),
    "grid.client": ("grid.member", "grid.store", "grid.embedded", "grid.harness", "grid.cli"),
    "grid.member.gossip": (
        "grid.member.member",
        "grid.member.runtime",
        "grid.member.replicas",
        "grid.member.placement",
        "grid.store",
        "grid.client",
    ),
    "grid.member": (
        "grid.client.aio",
        "grid.client.sync",
        "grid.client.router",
        "grid.client.blocking",
        "grid.embedded",
        "grid.harness",
        "grid.cli",
        "grid.bench",
    ),
    "grid.frontends": ("grid.store", "grid.client", "grid.embedded", "grid.harness", "grid.cli"),
    "grid.harness": ("grid.member", "grid.store", "grid.embedded"),
    "grid.chaos": ("grid.member", "grid.store", "grid.embedded"),
}
"""The arrows inside grid (docs/architecture.md): the store and the SDK know nothing of
the member runtime, gossip knows nothing of the data, and the harness and the chaos
runner only start processes and talk to them as clients, and the protocol front ends
reach the data only through the member's GridService.run. A member is a client of its
peers' data planes (forwarding) through the SDK's connection (grid/client/connection.py),
and of nothing else of the SDK."""


@pytest.mark.parametrize("package", sorted(GRID_MAY_NOT))
def test_grid_subpackages_point_one_way(package: str) -> None:
    banned = GRID_MAY_NOT[package]
    for path in sorted((ROOT / package.replace(".", "/")).rglob("*.py")):
        bad = {
            m
            for m in imported_modules(path)
            if any(m == b or m.startswith(b + ".") for b in banned)
        }
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
