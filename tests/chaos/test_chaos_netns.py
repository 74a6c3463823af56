"""`grid chaos` on the netns backend: real network splits whose checkers must hold.

Each run is 3 members in network namespaces (grid/harness/netns.py) for 12 s of load,
one split, a heal, and the checks (about 40 s in all on two loaded cores). Every packet
stays in namespaces the run made; the backend's stop removes them also on failure.

- partition-halves, grid's default (AP, min_cluster_size 0): both sides write. Every
  acknowledged write-once put must be there and the replicas must converge; a counter
  below its acknowledged count is reported, not failed (last writer wins keeps one
  side's counter: docs/replication.md, split brain).
- isolate-one with --min-cluster-size 2 (a majority): the isolated member refuses
  writes, so nothing acknowledged may be lost, counters included.

Skipped, loudly under CI=true (tests/needs.py), only where root or `ip` is missing or
the kernel refuses namespaces.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from grid.chaos.run import Options, run
from grid.cli.main import main
from grid.harness.netns import available
from tests import needs

pytestmark = pytest.mark.integration

DURATION = 12.0


@pytest.fixture
def netns_here() -> None:
    needs.root("the netns chaos backend (network namespaces)")
    needs.command("ip")  # iproute2: `make test` installs it
    if reason := available():  # what no package brings: `ip netns add`, veth, bridges
        pytest.skip(f"NETNS CHAOS BACKEND NOT TESTED: {reason}")


def chaos_run(tmp_path: Path, scenario: str, **kw: object) -> tuple[int, dict, str]:
    out = tmp_path / scenario
    console = Console(file=io.StringIO(), width=120)
    opts = Options(scenario=scenario, backend="netns", duration=DURATION, out=str(out), **kw)
    code = run(opts, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    result = json.loads((out / "result.json").read_text())
    return code, result, text


def checker(result: dict, name: str) -> dict:
    return next(c for c in result["checkers"] if c["name"] == name)


def no_namespaces_left() -> None:
    """The run's namespaces are gone (their names start with gt<our pid hex>)."""
    mine = f"gt{os.getpid():x}n"
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert mine not in listed, listed


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    ("scenario", "min_cluster_size"),
    [
        ("partition-halves", 0),
        ("isolate-one", 2),
    ],
)
def test_a_split_and_heal_holds_every_checker(
    no_grid_env: None, netns_here: None, tmp_path: Path, scenario: str, min_cluster_size: int
) -> None:
    code, result, text = chaos_run(tmp_path, scenario, min_cluster_size=min_cluster_size)
    assert code == 0, text
    assert all(c["holds"] for c in result["checkers"]), text
    faults = result["faults"]
    assert faults and all(f["kind"] == "split" for f in faults), text
    assert all(f["failover_s"] and f["end"] for f in faults), text  # parted, healed
    writes = checker(result, "acknowledged-writes")["figures"]
    assert writes["acknowledged"] > 100 and writes["lost_at_end"] == 0, text
    assert result["audits"] and result["audits"][0]["checked"] > 50, text
    assert checker(result, "convergence")["figures"]["converge_s"] is not None, text
    counters = checker(result, "counters")["figures"]
    if min_cluster_size >= 2:  # a majority rule: the split is no excuse for a lost increment
        assert not any("lost_reported" in c for c in counters.values()), text
    no_namespaces_left()


def test_netns_only_scenarios_and_plants_are_refused_elsewhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["chaos", "run", "--out", str(tmp_path / "out")]
    assert main([*base, "--scenario", "isolate-one"]) == 2  # the process backend
    assert "netns" in capsys.readouterr().err
    args = ["--scenario", "kill-primary", "--backend", "netns", "--plant", "skip-tenth"]
    assert main([*base, *args]) == 2
    assert "process backend only" in capsys.readouterr().err
    args = ["--scenario", "isolate-one", "--backend", "netns", "--min-cluster-size", "4"]
    assert main([*base, *args]) == 2  # more than --members: refused before anything starts
    assert "--min-cluster-size" in capsys.readouterr().err
