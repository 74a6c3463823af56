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
import sys
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
    assert "process and compose backends only" in capsys.readouterr().err
    args = ["--scenario", "isolate-one", "--backend", "netns", "--min-cluster-size", "4"]
    assert main([*base, *args]) == 2  # more than --members: refused before anything starts
    assert "--min-cluster-size" in capsys.readouterr().err


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    ("scenario", "min_cluster_size", "kind"),
    [
        ("lossy-links", 0, "loss"),
        ("one-way", 2, "one-way"),
        ("slow-link", 0, "slow"),
        ("bridge", 0, "bridge"),
    ],
)
def test_degraded_links_hold_every_checker(
    no_grid_env: None,
    netns_here: None,
    tmp_path: Path,
    scenario: str,
    min_cluster_size: int,
    kind: str,
) -> None:
    """Loss on every link, a one-way cut of a primary (with a majority rule: the deaf
    member sees itself alone and must refuse writes, so no counter loses an increment),
    a slow coordinator, and a bridge (two members cut, a third hearing both: nobody is
    failed over, so no write may be lost, counters included): nothing acknowledged
    lost, replicas converge after."""
    needs.command("nft")
    code, result, text = chaos_run(tmp_path, scenario, min_cluster_size=min_cluster_size)
    assert code == 0, text
    assert all(c["holds"] for c in result["checkers"]), text
    faults = result["faults"]
    assert faults and all(f["kind"] == kind and f["end"] for f in faults), text
    if kind == "one-way":  # the others stop hearing its acks: they must fail it over
        assert all(f["failover_s"] for f in faults), text
    writes = checker(result, "acknowledged-writes")["figures"]
    assert writes["acknowledged"] > 100 and writes["lost_at_end"] == 0, text
    assert result["audits"] and all(a["checked"] > 50 for a in result["audits"]), text
    counters = checker(result, "counters")["figures"]
    assert not any("lost_reported" in c for c in counters.values()), text
    no_namespaces_left()


UDP_COUNTER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999))
s.settimeout(0.5)
n = 0
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        s.recv(2048)
        n += 1
    except TimeoutError:
        pass
print(n, flush=True)
"""


def test_degraded_links_are_real(netns_here: None) -> None:
    """What `lose`, `deafen` and `throttle` do to packets: 400 UDP datagrams from member 0
    to member 1, counted where they arrive (no member processes: the links alone)."""
    from grid.harness.netns import NetnsCluster

    needs.command("nft")
    net = NetnsCluster(2)
    try:
        net.setup_network()

        def delivered(size: int = 200) -> int:
            receiver = subprocess.Popen(
                ["ip", "netns", "exec", net.namespaces[1], sys.executable, "-c", UDP_COUNTER,
                 net.cluster_ip(1), "3"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert receiver.stdout is not None
            assert receiver.stdout.readline().strip() == "ready"
            send = (
                "import socket, time\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "for _ in range(400):\n"
                f"    s.sendto(b'x' * {size}, ('{net.cluster_ip(1)}', 9999)); time.sleep(0.002)\n"
            )
            subprocess.run(
                ["ip", "netns", "exec", net.namespaces[0], sys.executable, "-c", send],
                check=True, timeout=30,
            )  # fmt: skip
            out, _ = receiver.communicate(timeout=30)
            return int(out.strip())

        assert delivered() >= 390  # a clean link (a veth pair drops nothing at this rate)
        net.lose(1, 30)  # inbound at member 1 is what counts here: ~30% lost
        assert 200 <= delivered() <= 340
        net.restore_links()
        net.deafen(1, [0])
        assert delivered() == 0
        net.restore_links()
        net.throttle(0, 256)  # 400 x 1 KB in ~1 s is 3 Mbit/s: most wait, then drop
        assert delivered(1000) < 200
        net.restore_links()
        assert delivered() >= 390
    finally:
        net.close()
    no_namespaces_left()
