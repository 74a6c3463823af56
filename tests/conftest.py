"""Shared fixtures: real member processes, clients and embedded nodes.

Members are real `python -m grid node` processes on loopback, started with
grid.harness.cluster.LocalCluster (the same harness `grid cluster up` and the demo
use). Every fixture that starts something stops it in a `finally`, so a
failing test never leaves a member behind.

- `member` / `address`: one member per test module (override the module-scoped
  `member_args` fixture in a test module to start it with flags). Tests share it
  and isolate themselves with distinct map names (`map_name`).
- `spawn`: start dedicated members for tests that need special flags, kill
  them, or pause them.
- `client` / `async_client` / `aio`: the sync Client, the AsyncClient on an
  event loop owned by the test thread (`aio.run(coro)` drives it).
- `node` / `async_node`: an embedded grid.Node, sync (`with`) and async.

tests/needs.py (loaded here as a plugin) says what a test needs from the machine and
lists every skip at the end of a CI=true run; tests/docker_fixtures.py (a plugin too)
makes the Docker engine and the grid image once per session for the tests that need them.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

import grid
from grid.harness.cluster import LocalCluster, MemberProcess
from tests.integration.support import AsyncRunner

pytest_plugins = ["tests.needs", "tests.docker_fixtures"]

_names = itertools.count(1)


@pytest.fixture(scope="session")
def no_grid_env() -> Iterator[None]:
    """Members and nodes read GRID_* variables; a stray one in the runner's shell must not leak."""
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("GRID_"):
                mp.delenv(key)
        yield


@pytest.fixture(scope="module")
def member_args() -> Sequence[str]:
    """Flags of the module's shared member; override in a test module to change them."""
    return ()


@pytest.fixture(scope="module")
def cluster(
    no_grid_env: None, member_args: Sequence[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """One member process shared by the tests of a module."""
    c = LocalCluster(1, member_args=member_args, log_dir=tmp_path_factory.mktemp("member"))
    c.start()
    try:
        yield c
    finally:
        c.stop(grace=5)


@pytest.fixture(scope="module")
def member(cluster: LocalCluster) -> MemberProcess:
    return cluster.members[0]


@pytest.fixture(scope="module")
def address(member: MemberProcess) -> str:
    return member.address


Spawn = Callable[..., LocalCluster]


@pytest.fixture
def spawn(no_grid_env: None, tmp_path: Path) -> Iterator[Spawn]:
    """Start dedicated single-member clusters: spawn("--max-memory", "1MB", env=..., port=...).

    Everything spawned is stopped after the test (SIGCONT first, in case a test paused it).
    """
    started: list[LocalCluster] = []

    def start(*args: str, env: dict[str, str] | None = None, port: int = 0) -> LocalCluster:
        log_dir = tmp_path / f"spawn-{len(started)}"
        log_dir.mkdir()
        c = LocalCluster(1, base_port=port, member_args=args, log_dir=log_dir, env=env)
        started.append(c)
        c.start()
        return c

    try:
        yield start
    finally:
        for c in started:
            for m in list(c.members):
                if m.alive():
                    c.kill(m, signal.SIGCONT)
            c.stop(grace=5)


@pytest.fixture
def map_name(request: pytest.FixtureRequest) -> str:
    """A map name unique to this test, so tests can share one member."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:80]
    return f"{base}-{next(_names)}"


@pytest.fixture
def client(address: str) -> Iterator[grid.Client]:
    c = grid.Client(address, timeout=10)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def aio() -> Iterator[AsyncRunner]:
    """An event loop for asyncio code in a synchronous test: aio.run(coro)."""
    runner = AsyncRunner()
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture
def async_client(aio: AsyncRunner, address: str) -> Iterator[grid.AsyncClient]:
    """An AsyncClient created on `aio`'s loop; use it with aio.run(...)."""

    async def make() -> grid.AsyncClient:
        return grid.AsyncClient(address, timeout=10)

    c = aio.run(make())
    try:
        yield c
    finally:
        aio.run(c.close())


@pytest.fixture
def node(no_grid_env: None) -> Iterator[grid.Node]:
    """An embedded member in this process, started with `with` (blocking maps)."""
    with grid.Node(port=0) as n:
        yield n


@pytest.fixture
def async_node(no_grid_env: None, aio: AsyncRunner) -> Iterator[grid.Node]:
    """An embedded member started on `aio`'s loop (`await node.start()`: async maps)."""
    n = grid.Node(port=0)
    aio.run(n.start())
    try:
        yield n
    finally:
        aio.run(n.stop())
