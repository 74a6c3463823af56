"""Where the members of a chaos run live, and the few things a nemesis does to them.

A backend starts N members, names them (member-1 ...), gives their addresses, sends
them signals, restarts one that exited, and says which exits it was told to cause.
The process backend runs `grid node` processes on loopback through LocalCluster, each
with a data dir of its own under the run's folder (so a restarted member recovers its
data, as a deployed one would). A backend that cannot run on this machine raises
Unavailable, which the CLI turns into exit 2.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from grid.harness.cluster import LocalCluster, MemberProcess, wait_serving

PLANT_ENV = "GRID_TEST_PLANT"
"""Read only by grid/chaos/planted_member.py, never by the member itself."""


class Unavailable(Exception):
    """This backend (or this scenario on it) cannot run here; the message says why."""


@dataclass
class Exit:
    """A member process that ended: how, and whether a nemesis asked for it."""

    name: str
    pid: int
    code: int | None
    caused_by: str  # "" when nobody asked it to exit
    log_tail: str = ""


@dataclass
class Launch:
    """One process started for a member (a restart is a new launch)."""

    member: MemberProcess
    expected: str = ""  # set before a nemesis signals it: "kill", "term"


@dataclass
class ProcessBackend:
    """Members as local processes on 127.0.0.1 (LocalCluster)."""

    run_dir: Path
    member_args: tuple[str, ...] = ()
    plant: str = ""
    name: str = "process"
    cluster: LocalCluster | None = None
    launches: list[Launch] = field(default_factory=list)

    def start(self, size: int, timeout: float = 60.0) -> None:
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {PLANT_ENV: self.plant} if self.plant else {}
        launcher = ("-m", "grid.chaos.planted_member") if self.plant else ("-m", "grid")
        self.cluster = LocalCluster(
            size, member_args=self.member_args, log_dir=logs, env=env, launcher=launcher
        )
        for i in range(size):
            data = self.run_dir / "data" / f"member-{i + 1}"
            data.mkdir(parents=True, exist_ok=True)
            m = self.cluster.start_member(i, ("--data-dir", str(data)))
            self.launches.append(Launch(m))
        for m in self.cluster.members:
            wait_serving(m, timeout)

    # ---- who is there ----------------------------------------------------------------------
    def members(self) -> dict[str, str]:
        """Name -> gRPC address of every member, running or not."""
        assert self.cluster is not None
        return {m.name: m.address for m in self.cluster.members}

    def running(self) -> dict[str, str]:
        """Name -> address of the members whose process runs (a paused one runs)."""
        assert self.cluster is not None
        return {m.name: m.address for m in self.cluster.members if m.alive()}

    def process(self, name: str) -> MemberProcess:
        assert self.cluster is not None
        return next(m for m in self.cluster.members if m.name == name)

    def _launch(self, name: str) -> Launch:
        member = self.process(name)
        return next(la for la in self.launches if la.member is member)

    # ---- what a nemesis does ---------------------------------------------------------------
    def kill(self, name: str) -> None:
        """kill -9, and wait until the process is gone."""
        launch = self._launch(name)
        launch.expected = "kill"
        with contextlib.suppress(ProcessLookupError):
            launch.member.process.send_signal(signal.SIGKILL)
        launch.member.process.wait(10)

    def terminate(self, name: str, timeout: float = 30.0) -> int:
        """SIGTERM (a graceful leave: primaries handed off first); its exit code."""
        launch = self._launch(name)
        launch.expected = "term"
        launch.member.process.send_signal(signal.SIGTERM)
        try:
            return launch.member.process.wait(timeout)
        except subprocess.TimeoutExpired:
            launch.expected = "kill"  # the leave hung: a kill -9 that we report below
            launch.member.process.kill()
            launch.member.process.wait(10)
            raise

    def pause(self, name: str) -> None:
        self.process(name).process.send_signal(signal.SIGSTOP)
        _wait_stopped(self.process(name).pid)

    def resume(self, name: str) -> None:
        self.process(name).process.send_signal(signal.SIGCONT)

    def restart(self, name: str, timeout: float = 60.0) -> None:
        """Start an exited member again: same name, ports, flags and data dir. The first
        member was started with no seeds (it founded the cluster); started so again it
        would found a cluster of its own, so it is given the others' gossip addresses, as
        a deployment gives every member its peers (compose, Kubernetes DNS)."""
        assert self.cluster is not None
        member = self.process(name)
        if "--seeds" not in member.cmd:
            peers = [m.gossip_address for m in self.cluster.members if m is not member]
            member.cmd = (*member.cmd, "--seeds", ",".join(peers))
        fresh = self.cluster.restart(member)
        self.launches.append(Launch(fresh))
        wait_serving(fresh, timeout)

    # ---- after ------------------------------------------------------------------------------
    def exits(self) -> list[Exit]:
        """Every launch that has ended so far."""
        out = []
        for la in self.launches:
            code = la.member.process.poll()
            if code is None:
                continue
            caused = la.expected
            if caused == "term" and code != 0:
                caused = ""  # asked to leave gracefully, but it died another way
            out.append(Exit(la.member.name, la.member.pid, code, caused, la.member.log_tail(15)))
        return out

    def stop(self) -> None:
        """Stop every member (SIGCONT first: a paused one cannot leave), also on failure."""
        if self.cluster is None:
            return
        for m in self.cluster.members:
            if m.alive():
                with contextlib.suppress(ProcessLookupError):
                    m.process.send_signal(signal.SIGCONT)
        for la in self.launches:
            if la.member.alive() and not la.expected:
                la.expected = "term"  # the run's own stop: not a crash
        self.cluster.stop(grace=10)


def _wait_stopped(pid: int, timeout: float = 5.0) -> None:
    """Until a process sent SIGSTOP shows state T in /proc (it stops asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] in ("T", "t"):
                    return
        except OSError:
            return
        time.sleep(0.005)


def make_backend(
    name: str, run_dir: Path, member_args: tuple[str, ...], plant: str
) -> ProcessBackend:
    if name == "process":
        return ProcessBackend(run_dir, member_args, plant)
    if name == "netns":
        if os.geteuid() != 0:
            raise Unavailable("the netns backend needs root (network namespaces)")
        raise Unavailable("the netns backend is not built yet (issue 14); use --backend process")
    if name == "compose":
        raise Unavailable(
            "the compose backend is not built yet (issue 14; deploy/ and tests/deploy run "
            "compose by hand); use --backend process"
        )
    raise Unavailable(f"no backend {name!r}: process, netns or compose")
