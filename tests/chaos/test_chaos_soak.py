"""The long chaos suite (`make soak`, marker `soak`): every scenario for minutes.

Each scenario on each backend it runs on, for SOAK_S of load (its fault repeats with a
quiet spell before each), with two seeds: every checker must hold. The short runs in
test_chaos.py and test_chaos_netns.py are the default suite's; these find what only
shows after many faults in a row (a leak of lineage, a partition left unsettled by the
third split). About 2.5 minutes a run on two cores: the 58 runs (12 scenarios on the
backends each runs on, compose included, two seeds; majority-ring with 5 members) take
about 2 hours 25 minutes.
Each workload thread is bounded at MAX_OPS operations (enough for the whole run).

    .venv/bin/pytest -m soak tests/chaos/test_chaos_soak.py            # all of it
    .venv/bin/pytest -m soak tests/chaos/test_chaos_soak.py -k bridge  # one scenario
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from grid.chaos.compose import Prepared
from grid.chaos.run import Options, run
from grid.chaos.scenarios import SCENARIOS
from grid.harness.netns import available
from tests import needs

pytestmark = [pytest.mark.soak, pytest.mark.timeout(900)]

SOAK_S = 120.0
MAX_OPS = 60_000
SEEDS = (1, 2)
MAJORITY = {"isolate-one": 2, "one-way": 2}
"""Scenarios run with min_cluster_size 2: the point there is that nothing is lost."""

CASES = [
    (name, backend, seed)
    for name, s in SCENARIOS.items()
    for backend in s.backends
    for seed in SEEDS
]


@pytest.mark.parametrize(("scenario", "backend", "seed"), CASES)
def test_a_long_run_holds_every_checker(
    no_grid_env: None,
    tmp_path: Path,
    scenario: str,
    backend: str,
    seed: int,
    request: pytest.FixtureRequest,
) -> None:
    prepared = None
    if backend == "compose":  # the session's engine and image (tests/docker_fixtures.py)
        needs.root("the compose chaos backend")
        needs.command("nsenter")
        needs.command("nft")
        engine = request.getfixturevalue("docker_engine")
        prepared = Prepared(engine, request.getfixturevalue("grid_image"))
    if backend == "netns":
        needs.root("the netns chaos backend")
        needs.command("ip")
        needs.command("nft")
        if reason := available():
            pytest.skip(f"NETNS CHAOS BACKEND NOT TESTED: {reason}")
    if SCENARIOS[scenario].disk_mb:
        needs.root("a tmpfs per member")
    out = tmp_path / f"{scenario}-{backend}-{seed}"
    console = Console(file=io.StringIO(), width=120)
    opts = Options(
        scenario=scenario, backend=backend, duration=SOAK_S, seed=seed, out=str(out),
        min_cluster_size=MAJORITY.get(scenario, 0), max_ops=MAX_OPS,
        members=max(3, SCENARIOS[scenario].min_members),
    )  # fmt: skip
    code = run(opts, console, prepared=prepared)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    result = json.loads((out / "result.json").read_text())
    assert code == 0, text
    assert all(c["holds"] for c in result["checkers"]), text
    assert len(result["faults"]) >= 2, "a long run repeats its fault"
    assert all(f["end"] for f in result["faults"]), text
