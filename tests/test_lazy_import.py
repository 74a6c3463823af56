"""grid/__init__ exports lazily: importing a part of the package (the logs, the store)
loads no gRPC, and every public name still works as `grid.Name`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import grid

INIT = Path(grid.__file__)


def modules_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after `statement`."""
    done = subprocess.run(
        [sys.executable, "-c", f"{statement}\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=INIT.parent.parent,
        check=True,
    )
    return set(done.stdout.split())


@pytest.mark.parametrize(
    "statement", ["import grid.logs", "import grid.store", "from grid.store import copies"]
)
def test_a_part_of_grid_imports_no_grpc(statement: str) -> None:
    loaded = modules_after(statement)
    assert (
        "grpc" not in loaded and "grid.embedded.node" not in loaded and "grid.client" not in loaded
    )


def test_the_sdk_still_loads_on_first_use() -> None:
    loaded = modules_after("import grid\ngrid.Client")
    assert {"grid.client.sync", "grpc"} <= loaded


def typing_imports() -> dict[str, str]:
    """Name -> module of the imports under `if TYPE_CHECKING:` in grid/__init__.py."""
    tree = ast.parse(INIT.read_text())
    block = next(
        n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"
    )
    return {
        alias.name: str(node.module)
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def test_every_public_name_resolves_as_type_checkers_see_it() -> None:
    """`__all__`, the lazy table and the TYPE_CHECKING imports name the same things."""
    seen = typing_imports()
    assert set(seen) == set(grid.__all__) - {"__version__"}
    for name, module in seen.items():
        assert getattr(grid, name).__module__ == module, name
    assert isinstance(grid.__version__, str)
    with pytest.raises(AttributeError, match="NoSuchName"):
        _ = grid.NoSuchName  # type: ignore[attr-defined]
