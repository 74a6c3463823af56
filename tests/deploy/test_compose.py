"""deploy/docker-compose.yml for real: three members in containers form one cluster,
spread the partitions, keep data through a `docker kill` of one of them.

Docker's steps (engine, base image, wheelhouse, image, project) are
grid/harness/docker.py's; the engine and the image are made once per session
(tests/docker_fixtures.py, shared with tests/chaos/test_chaos_compose.py); this file
says what must hold. The host cannot reach the
members (the network is internal), so everything the test asks the cluster goes
through the workload container: tests/deploy/probe.py, fed to its Python on stdin.

Runs in the default suite (`make test`, so CI). It needs root to start dockerd when
none answers; where Docker cannot run it skips, saying why (and under CI=true the skip
is listed again at the end of the run, tests/needs.py). Everything it made is removed
when it ends, pass or fail: the project's containers, network and volumes, the image
tagged by the run, and the dockerd it started. The base image stays: it is the cache
(about a minute to build).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from grid.harness import docker
from tests.docker_fixtures import Timings

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
PROBE = (Path(__file__).parent / "probe.py").read_text()
MEMBERS = ("member-1", "member-2", "member-3")
ADDRESSES = tuple(f"{m}:5701" for m in MEMBERS)
PARTITIONS = 271
KEYS = 2000


@pytest.fixture(scope="module")
def project(
    docker_engine: docker.Engine, grid_image: str, request: pytest.FixtureRequest
) -> Iterator[docker.ComposeProject]:
    project = docker.ComposeProject(
        docker_engine,
        ROOT / "deploy" / "docker-compose.yml",
        docker.run_tag(),
        {"GRID_IMAGE": grid_image},
    )
    failed = request.session.testsfailed
    try:
        project.up()
        yield project
    except BaseException:  # `up` failed
        failed = -1
        raise
    finally:
        if request.session.testsfailed > failed:  # shown in the failure's report
            print(f"the members' last log lines:\n{project.logs()}")
        project.close()


def probe(project: docker.ComposeProject, *args: str) -> dict:
    out = project.exec("workload", "python", "-", *args, input=PROBE, timeout=90)
    return json.loads(out.stdout.strip().splitlines()[-1])


def wait_for(what: str, check: Callable[[], tuple[bool, object]], timeout: float) -> object:
    """Poll `check` (bounded in time) until it says ok; its detail then, or a failure with
    the last detail."""
    deadline = time.monotonic() + timeout
    detail: object = None
    while time.monotonic() < deadline:
        ok, detail = check()
        if ok:
            return detail
        time.sleep(1.0)
    pytest.fail(f"{what}: not within {timeout:.0f} s; last: {detail}")


def settled(
    project: docker.ComposeProject, members: tuple[str, ...]
) -> Callable[[], tuple[bool, object]]:
    """One cluster of exactly `members`: every one sees them all alive, one table, nothing
    moving, every partition with a primary and one backup, each member holding some."""
    addresses = [f"{m}:5701" for m in members]

    def check() -> tuple[bool, object]:
        views = probe(project, "view", *addresses)
        if not all(v is not None and "error" not in v for v in views.values()):
            return False, views
        ok = all(
            {n for n, s in v["members"].items() if s == "alive"} == set(members)
            and v["pending"] == v["in_flight"] == 0
            and v["primaries"] > 0
            and v["backups"] > 0
            for v in views.values()
        )
        ok = ok and len({v["table"] for v in views.values()}) == 1
        ok = ok and sum(v["primaries"] for v in views.values()) == PARTITIONS
        ok = ok and sum(v["backups"] for v in views.values()) == PARTITIONS
        return ok, views

    return check


def test_three_members_cluster_and_survive_a_kill(
    docker_engine: docker.Engine,
    project: docker.ComposeProject,
    docker_timings: Timings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine, timings = docker_engine, docker_timings
    started = time.monotonic()
    views = wait_for("one cluster, partitions spread", settled(project, MEMBERS), 90)
    timings("cluster settled", started)
    assert isinstance(views, dict)
    assert all(v["primaries"] >= PARTITIONS // 6 for v in views.values()), views
    # The member to kill: the coordinator, so the survivors must take over its role too.
    coordinators = [a.split(":")[0] for a, v in views.items() if v["coordinator"]]
    assert len(coordinators) == 1, views
    victim = coordinators[0]

    # The image's HEALTHCHECK (`grid health`, the gRPC health service) says healthy.
    def healthy() -> tuple[bool, object]:
        states = [
            engine.run(
                "inspect", "--format", "{{.State.Health.Status}}", project.container(m)
            ).stdout.strip()
            for m in MEMBERS
        ]
        return states == ["healthy"] * 3, states

    wait_for("docker says every member is healthy", healthy, 60)
    timings("healthy", started)

    # A non-root process, writing its data to the member's own volume.
    member = project.container(victim)
    assert engine.run("exec", member, "id", "-u").stdout.strip() == "10001"
    files = engine.run("exec", member, "ls", "/var/lib/grid").stdout.split()
    assert "LOCK" in files and "table.json" in files, files

    # The network has no way out: internal, and no host address on its bridge, so a
    # container's default gateway is nobody.
    network = f"{project.name}_grid"
    info = json.loads(engine.run("network", "inspect", network).stdout)[0]
    assert info["Internal"] is True
    bridge = "br-" + info["Id"][:12]
    addrs = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", bridge], capture_output=True, text=True
    )
    assert addrs.returncode == 0 and addrs.stdout.strip() == "", addrs

    started = time.monotonic()
    wrote = probe(project, "write", str(KEYS), ADDRESSES[0])
    assert wrote["written"] == KEYS and wrote["lag"] == 0, wrote
    read = probe(project, "read", str(KEYS), ADDRESSES[1])
    assert read["found"] == read["right"] == KEYS, read
    timings(f"write+read {KEYS} keys", started)

    project.kill(victim)
    killed = time.monotonic()
    survivors = tuple(m for m in MEMBERS if m != victim)

    def victim_dead() -> tuple[bool, object]:
        views = probe(project, "view", *(f"{m}:5701" for m in survivors))
        seen = {a: (v or {}).get("members", {}).get(victim) for a, v in views.items()}
        return all(s == "dead" for s in seen.values()), seen

    wait_for(f"the others see {victim} dead", victim_dead, 60)
    timings("kill seen as dead", killed)
    wait_for("the two survivors settled", settled(project, survivors), 90)
    timings("survivors settled", killed)
    read = probe(project, "read", str(KEYS), f"{survivors[0]}:5701")
    assert read["found"] == read["right"] == KEYS, read

    with capsys.disabled():
        print(f"\n[deploy compose] seconds: {dict(timings)}")
