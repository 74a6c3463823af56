"""Docker for the tests that need it, made once per session: the engine and the grid image.

tests/deploy/test_compose.py (deploy/docker-compose.yml for real) and
tests/chaos/test_chaos_compose.py (the compose backend of `grid chaos run`) both need
a Docker engine and the grid image built offline (grid/harness/docker.py: the local
base image, a wheelhouse, `docker build --network none`). Building the image costs
about 30 s and the base image about a minute when it is not cached, so both are
session fixtures: made by the first test that asks, removed when the session ends.
The base image stays (it is the cache); a dockerd these fixtures started is stopped.

Where Docker cannot run, every test that asks skips, saying why, loudly under CI=true
(tests/needs.py: a missing package that `make test` installs fails instead).
Loaded by tests/conftest.py as a plugin.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from grid.harness import docker
from tests import needs


class Timings(dict[str, float]):
    """Seconds each Docker step took, printed by the tests that use them."""

    def __call__(self, name: str, since: float) -> None:
        self[name] = round(time.monotonic() - since, 1)


@pytest.fixture(scope="session")
def docker_timings() -> Timings:
    return Timings()


@pytest.fixture(scope="session")
def docker_engine(
    tmp_path_factory: pytest.TempPathFactory, docker_timings: Timings
) -> Iterator[docker.Engine]:
    """The engine answering on the default socket, started (root) when none answers and
    stopped at the end of the session."""
    for command in ("dockerd", "docker-compose", "debootstrap"):
        needs.command(command)
    started = time.monotonic()
    try:
        engine = docker.Engine.start(tmp_path_factory.mktemp("dockerd"))
    except docker.DockerUnavailable as e:
        pytest.skip(f"DOCKER CANNOT RUN HERE, deploy/ and the compose chaos backend untested: {e}")
    docker_timings("engine", started)
    try:
        docker.sweep_stale(engine)
        yield engine
    finally:
        engine.close()


@pytest.fixture(scope="session")
def grid_image(
    docker_engine: docker.Engine,
    tmp_path_factory: pytest.TempPathFactory,
    docker_timings: Timings,
) -> Iterator[str]:
    """The grid image, tagged by this session (removed at its end)."""
    base, built = docker.base_image(docker_engine)
    docker_timings["base image (0: cached)"] = round(built, 1)
    started = time.monotonic()
    wheelhouse = tmp_path_factory.mktemp("wheelhouse")
    docker.build_wheelhouse(wheelhouse)
    docker_timings("wheelhouse", started)
    tag = f"grid:{docker.run_tag()}"
    started = time.monotonic()
    try:
        docker.build_image(docker_engine, wheelhouse, base, tag)
        docker_timings("image", started)
        yield tag
    finally:
        docker_engine.run("rmi", "--force", tag, check=False)
