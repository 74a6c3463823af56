"""`grid chaos` on the process backend: short real runs whose checkers must hold, a run
with a planted bug that must fail, the listing, and what it refuses (exit 2).

Each run is 3 members for 10 s of load (about 25 s in all on two loaded cores); the
harness stops its members in a `finally`, and every workload thread is bounded in
operations and time (grid/chaos/workload.py).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from grid.chaos.run import Options, run
from grid.cli.main import main
from tests import needs
from tests.integration.support import run_grid

pytestmark = pytest.mark.integration

DURATION = 10.0


def chaos_run(tmp_path: Path, scenario: str, **kw: object) -> tuple[int, dict, str]:
    out = tmp_path / scenario
    console = Console(file=io.StringIO(), width=120)
    code = run(Options(scenario=scenario, duration=DURATION, out=str(out), **kw), console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    result = json.loads((out / "result.json").read_text())
    return code, result, text


def verdicts(result: dict) -> dict[str, bool]:
    return {c["name"]: c["holds"] for c in result["checkers"]}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("scenario", ["kill-primary", "kill-coordinator"])
def test_a_short_run_holds_every_checker(no_grid_env: None, tmp_path: Path, scenario: str) -> None:
    code, result, text = chaos_run(tmp_path, scenario)
    assert code == 0, text
    assert verdicts(result) == {
        "workload": True,
        "acknowledged-writes": True,
        "counters": True,
        "own-reads": True,
        "convergence": True,
        "no-crash": True,
    }, text
    faults = result["faults"]
    assert faults and all(f["kind"] == "kill" and f["failover_s"] for f in faults), text
    if scenario == "kill-coordinator":
        assert faults[0]["target"] == "member-1", "the coordinator is the smallest name"
    writes = next(c for c in result["checkers"] if c["name"] == "acknowledged-writes")
    assert writes["figures"]["acknowledged"] > 100, text
    assert result["audits"] and result["audits"][0]["checked"] > 50, text
    assert (tmp_path / scenario / "history.jsonl").stat().st_size > 0
    # make test installs the chaos extra (matplotlib): the plot is part of the report
    assert (tmp_path / scenario / "plot.png").stat().st_size > 10_000, text


@pytest.mark.timeout(150)
def test_a_full_disk_refuses_writes_and_the_member_resumes_by_itself(
    no_grid_env: None, tmp_path: Path
) -> None:
    """disk-full: a primary's data dir (a 64 MB tmpfs of its own) filled by a ballast file.
    The member must notice (disk_full, writes refused), stay up, and resume by itself
    once the ballast is gone; nothing acknowledged may be lost."""
    needs.root("the disk-full scenario (a tmpfs per member)")
    code, result, text = chaos_run(tmp_path, "disk-full")
    assert code == 0, text
    assert all(verdicts(result).values()), text
    faults = result["faults"]
    assert faults and all(f["kind"] == "disk-full" for f in faults), text
    assert all(f["failover_s"] is not None and f["end"] for f in faults), text  # noticed, resumed
    assert not any(f["notes"] for f in faults), text
    assert result["audits"] and all(a["checked"] > 50 for a in result["audits"]), text
    mounts = Path("/proc/self/mounts").read_text()
    assert str(tmp_path) not in mounts, "a member's tmpfs was left mounted"


@pytest.mark.timeout(150)
def test_a_planted_bug_fails_the_run_and_names_the_checker(
    no_grid_env: None, tmp_path: Path
) -> None:
    """skip-tenth: backups acknowledge changes they left out, so the promoted primary lacks
    acknowledged writes at the audit after the failover. Through the CLI: exit 1."""
    out = tmp_path / "planted"
    done = run_grid(
        "chaos", "run", "--scenario", "kill-primary", "--duration", str(DURATION),
        "--plant", "skip-tenth", "--out", str(out), timeout=140,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "acknowledged-writes" in done.stderr and "FAILS" in done.stderr, done.stderr
    result = json.loads((out / "result.json").read_text())
    failing = {name for name, holds in verdicts(result).items() if not holds}
    assert "acknowledged-writes" in failing, done.stderr
    # a skipped increment can show as well; the members and the workload did nothing wrong
    assert failing <= {"acknowledged-writes", "counters", "own-reads"}, done.stderr
    logs = (out / "logs" / "member-1.log").read_text()
    assert "planted bug 'skip-tenth'" in logs


def test_list_names_the_scenarios_and_the_plants(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chaos", "list"]) == 0
    out = capsys.readouterr().out
    for name in (
        "kill-primary",
        "kill-coordinator",
        "pause-primary",
        "rolling-restart",
        "partition-halves",
        "isolate-one",
        "lossy-links",
        "one-way",
        "bridge",
        "slow-link",
        "disk-full",
        "skip-tenth",
    ):
        assert name in out


@pytest.mark.parametrize(
    "args",
    [
        ["--scenario", "no-such-scenario"],
        ["--scenario", "partition-halves"],  # netns and compose only
        ["--scenario", "lossy-links"],  # netns and compose only
        ["--scenario", "kill-primary", "--backend", "nowhere"],
        ["--scenario", "kill-primary", "--plant", "no-such-plant"],
        ["--scenario", "kill-primary", "--members", "1"],
        ["--scenario", "kill-primary", "--duration", "0"],
    ],
)
def test_bad_arguments_exit_2_before_starting_anything(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["chaos", "run", *args, "--out", str(tmp_path / "out")]) == 2
    assert "grid chaos:" in capsys.readouterr().err
    assert not (tmp_path / "out" / "logs").exists(), "nothing may start"


def test_a_missing_scenario_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as e:
        main(["chaos", "run"])
    assert e.value.code == 2
