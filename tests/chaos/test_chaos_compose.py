"""`grid chaos` on the compose backend: members in containers, faults through Docker and
nftables rules in the containers' namespaces, checkers that must hold.

Each run is 3 member containers of the grid image on an internal compose network, 12 s
of load, one fault and its heal (30-50 s a run on two loaded cores). The engine and the
image are the session's (tests/docker_fixtures.py), shared with
tests/deploy/test_compose.py, so the image is built once; the run makes and removes its
own compose project (containers, network, volumes), which the test checks.

Skipped, loudly under CI=true (tests/needs.py), where Docker cannot run (no dockerd,
not root) or root, `nsenter` or `nft` are missing.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from grid.chaos.compose import Prepared
from grid.chaos.run import Options, run
from grid.harness import docker
from tests import needs

pytestmark = [pytest.mark.docker, pytest.mark.integration]

DURATION = 12.0


@pytest.fixture
def compose_here(docker_engine: docker.Engine, grid_image: str) -> Prepared:
    needs.root("the compose chaos backend (nsenter, nftables in containers)")
    needs.command("nsenter")
    needs.command("nft")
    return Prepared(docker_engine, grid_image)


def leftovers(engine: docker.Engine) -> list[str]:
    """Containers, networks and volumes of this process's runs still there."""
    tag = docker.run_tag()
    found = engine.run("ps", "-a", "--format", "{{.Names}}").stdout.split()
    found += engine.run("network", "ls", "--format", "{{.Name}}").stdout.split()
    found += engine.run("volume", "ls", "--format", "{{.Name}}").stdout.split()
    return [name for name in found if name.startswith(tag)]


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("scenario", "kind"), [("kill-primary", "kill"), ("partition-halves", "split")]
)
def test_a_compose_run_holds_every_checker(
    no_grid_env: None, compose_here: Prepared, tmp_path: Path, scenario: str, kind: str
) -> None:
    out = tmp_path / scenario
    console = Console(file=io.StringIO(), width=120)
    opts = Options(scenario=scenario, backend="compose", duration=DURATION, out=str(out))
    code = run(opts, console, prepared=compose_here)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    result = json.loads((out / "result.json").read_text())
    assert code == 0, text
    assert all(c["holds"] for c in result["checkers"]), text
    faults = result["faults"]
    assert faults and all(f["kind"] == kind and f["failover_s"] and f["end"] for f in faults), text
    writes = next(c for c in result["checkers"] if c["name"] == "acknowledged-writes")
    assert writes["figures"]["acknowledged"] > 100, text
    assert writes["figures"]["lost_at_end"] == 0, text
    assert result["audits"] and result["audits"][0]["checked"] > 50, text
    assert (out / "history.jsonl").stat().st_size > 0 and (out / "logs" / "member-1.log").exists()
    assert leftovers(compose_here.engine) == [], "the run removes its project"


def test_where_compose_cannot_run_the_run_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 2 with a one-line reason, before anything starts (no Docker needed)."""
    from grid.chaos import compose
    from grid.cli.main import main

    monkeypatch.setattr(compose, "host_unavailable", lambda: "no nsenter (Debian util-linux)")
    out = tmp_path / "out"
    assert main(["chaos", "run", "--backend", "compose", "--scenario", "kill-primary",
                 "--out", str(out)]) == 2  # fmt: skip
    assert "the compose backend cannot run here: no nsenter" in capsys.readouterr().err
    assert not (out / "compose").exists()
