"""Errors a person can read (issue 12): no member, one line, at once; exiting is silent.

Before the data plane, `grid get foo` with no member running waited out the 5 s
deadline and printed a gRPC error with its debug string, and a script that used a
client printed "Task was destroyed but it is pending!" at exit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from grid.harness.cluster import free_port
from tests.integration.support import REPO, run_grid

pytestmark = pytest.mark.integration


def test_cli_with_no_member_fails_fast_with_one_line(no_grid_env: None) -> None:
    port = free_port()
    t0 = time.monotonic()
    p = run_grid("get", "foo", "--address", f"127.0.0.1:{port}")
    took = time.monotonic() - t0
    assert p.returncode != 0
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, p.stderr
    assert f"cannot reach a grid member at 127.0.0.1:{port}" in lines[0]
    assert "Connection refused" in lines[0]
    assert "grid node" in lines[0]  # what to check
    assert "debug_error_string" not in p.stderr and "Traceback" not in p.stderr
    # A Python start, the gRPC import and one refused connect: nothing waits for the
    # 5 s deadline any more (a loaded 2-core machine takes about 1 s).
    assert took < 4.0, f"took {took:.1f} s"


def test_sdk_with_no_member_raises_unavailable_at_once(no_grid_env: None) -> None:
    import grid

    port = free_port()
    with grid.Client(f"127.0.0.1:{port}", timeout=5) as client:
        t0 = time.monotonic()
        with pytest.raises(grid.Unavailable, match="cannot reach a grid member"):
            client.map("m").get("k")
        assert time.monotonic() - t0 < 2.5


def test_script_that_never_closes_its_clients_exits_silently(address: str) -> None:
    """Sync and async clients used and left open: nothing on stderr at exit, exit code 0."""
    script = textwrap.dedent(
        f"""
        import asyncio, grid
        c = grid.Client({address!r})
        m = c.map("silent")
        m.put("k", 1)
        assert m.get("k") == 1 and m.incr("n") >= 1 and m.get_many(["k"]) == {{"k": 1}}

        async def main():
            a = grid.AsyncClient({address!r})
            assert await a.map("silent").get("k") == 1

        asyncio.run(main())
        print("done")
        """
    )
    p = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "done"
    assert p.stderr == "", p.stderr
