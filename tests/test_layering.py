"""The arrows of DESIGN.md: subsystem packages never import grid, nor each other except
replication -> partitioning; the simulation drives membership, partitioning and
replication but never grid."""

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
    "simulation": {"membership", "partitioning", "replication"},
}
PROJECT = {
    "grid",
    "proto",
    "membership",
    "persistence",
    "partitioning",
    "replication",
    "simulation",
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & PROJECT


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_the_design_allows(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_packages(path) - ALLOWED[package] - {package}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
