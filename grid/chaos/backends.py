"""Where the members of a chaos run live, and the few things a nemesis does to them.

A backend starts N members, names them (member-1 ...), gives their addresses, sends
them signals, restarts one that exited, and says which exits it was told to cause.
The process backend runs `grid node` processes on loopback through LocalCluster, each
with a data dir of its own under the run's folder (so a restarted member recovers its
data, as a deployed one would). The netns backend runs the same members, one network
namespace each (grid/harness/netns.py), and can also split the network. The compose
backend (grid/chaos/compose.py) runs them as containers. A backend that cannot run on
this machine raises Unavailable, which the CLI turns into exit 2.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from grid.harness import netns
from grid.harness.cluster import LocalCluster, MemberProcess, wait_serving
from grid.harness.netns import NetnsCluster

if TYPE_CHECKING:
    from grid.chaos.compose import ComposeRun

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
    smart_routing = True  # clients reach every member's advertised address
    launches: list[Launch] = field(default_factory=list)
    disk_mb: int = 0
    """When set, each member's data dir is a tmpfs of this size (root): a disk to fill."""
    _mounted: list[Path] = field(default_factory=list)

    def data_dir(self, name: str) -> Path:
        """The member's data dir, made on first use (a small tmpfs of its own when
        `disk_mb` is set, so filling it fills nobody else's disk)."""
        path = self.run_dir / "data" / name
        if path in self._mounted:
            return path
        path.mkdir(parents=True, exist_ok=True)
        if self.disk_mb:
            if os.geteuid() != 0:
                raise Unavailable("a small disk per member needs root (a tmpfs mount)")
            mount = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={self.disk_mb}m,mode=0700", "tmpfs",
                 str(path)],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            if mount.returncode:
                raise Unavailable(f"cannot mount a tmpfs on {path}: {mount.stderr.strip()}")
            self._mounted.append(path)
        return path

    def _unmount(self) -> None:
        for path in self._mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)
        self._mounted.clear()

    def start(self, size: int, timeout: float = 60.0) -> None:
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {PLANT_ENV: self.plant} if self.plant else {}
        launcher = ("-m", "grid.chaos.planted_member") if self.plant else ("-m", "grid")
        self.cluster = LocalCluster(
            size, member_args=self.member_args, log_dir=logs, env=env, launcher=launcher
        )
        for i in range(size):
            data = self.data_dir(f"member-{i + 1}")
            m = self.cluster.start_member(i, ("--data-dir", str(data)))
            self.launches.append(Launch(m))
        for m in self.cluster.members:
            wait_serving(m, timeout)

    # ---- who is there ----------------------------------------------------------------------
    def current(self) -> list[MemberProcess]:
        """The latest launch of every member, in order."""
        assert self.cluster is not None
        return self.cluster.members

    def members(self) -> dict[str, str]:
        """Name -> gRPC address of every member, running or not."""
        return {m.name: m.address for m in self.current()}

    def running(self) -> dict[str, str]:
        """Name -> address of the members whose process runs (a paused one runs)."""
        return {m.name: m.address for m in self.current() if m.alive()}

    def process(self, name: str) -> MemberProcess:
        return next(m for m in self.current() if m.name == name)

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
        """Stop every member (SIGCONT first: a paused one cannot leave), also on failure;
        then unmount the small disks."""
        try:
            if self.cluster is not None:
                self._before_stop()
                self.cluster.stop(grace=10)
        finally:
            self._unmount()

    def _before_stop(self) -> None:
        for m in self.current():
            if m.alive():
                with contextlib.suppress(ProcessLookupError):
                    m.process.send_signal(signal.SIGCONT)
        for la in self.launches:
            if la.member.alive() and not la.expected:
                la.expected = "term"  # the run's own stop: not a crash


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


class LinkFaults:
    """What a backend that owns its members' network can do to it: splits, and degraded
    links (loss, a one-way cut, a slow link). The netns backend re-wires bridges and adds
    nftables rules in namespaces; the compose backend adds rules in containers'
    namespaces. Scenarios that need these run on backends that have them."""

    def split(self, sides: Sequence[Sequence[str]]) -> None:
        """Members on different sides stop reaching each other (the run's clients still
        reach every member)."""
        raise NotImplementedError

    def heal(self) -> None:
        raise NotImplementedError

    def lose(self, names: Sequence[str], percent: int) -> None:
        """These members drop `percent`% of their cluster packets each way."""
        raise NotImplementedError

    def deafen(self, name: str, to: Sequence[str]) -> None:
        """`name` stops hearing `to`; they go on hearing it (a one-way cut)."""
        raise NotImplementedError

    def throttle(self, name: str, kbit: int) -> None:
        """`name`'s cluster link sends at most `kbit` kbit/s."""
        raise NotImplementedError

    def restore_links(self) -> None:
        """Undo `lose`, `deafen` and `throttle`."""
        raise NotImplementedError


@dataclass
class NetnsBackend(ProcessBackend, LinkFaults):
    """Members in network namespaces (grid.harness.netns.NetnsCluster): one namespace each,
    cluster links on bridges in a hub namespace, so a split is real (links moved between
    bridges) while every member's client link to the root namespace stays up. Members
    advertise cluster addresses the root namespace cannot reach, so the run's clients
    are plain (`smart_routing=False`, members forward). Needs root and `ip`."""

    name: str = "netns"
    net: NetnsCluster | None = None
    smart_routing = False
    _started: set[int] = field(default_factory=set)

    def start(self, size: int, timeout: float = 60.0) -> None:
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.net = NetnsCluster(
            size, member_args=self.member_args, member_extra=self._extra, log_dir=logs
        )
        self.net.start(timeout)  # closes what it made if a member does not serve
        self.launches.extend(Launch(m) for m in self.net.members)
        self._started = set(range(size))

    def _extra(self, i: int) -> list[str]:
        """Member i's own flags: its data dir; and, when the founding member (started with
        no seeds) is started again, its peers as seeds (see ProcessBackend.restart)."""
        assert self.net is not None
        data = self.data_dir(self.net.name(i))
        extra = ["--data-dir", str(data)]
        if i == 0 and i in self._started:
            peers = [self.net.gossip_address(j) for j in range(1, self.net.size)]
            extra += ["--seeds", ",".join(peers)]
        return extra

    def current(self) -> list[MemberProcess]:
        assert self.net is not None
        return self.net.members

    def restart(self, name: str, timeout: float = 60.0) -> None:
        assert self.net is not None
        i = self.index(name)
        fresh = self.net.restart(i, timeout)
        self.launches.append(Launch(fresh))

    def index(self, name: str) -> int:
        return next(i for i, m in enumerate(self.current()) if m.name == name)

    # ---- the network ------------------------------------------------------------------------
    def split(self, sides: Sequence[Sequence[str]]) -> None:
        """Members on different sides stop reaching each other (client links stay up)."""
        assert self.net is not None
        self.net.split([[self.index(n) for n in side] for side in sides])

    def heal(self) -> None:
        assert self.net is not None
        self.net.heal()

    def lose(self, names: Sequence[str], percent: int) -> None:
        """These members drop `percent`% of their cluster packets each way."""
        assert self.net is not None
        for n in names:
            self.net.lose(self.index(n), percent)

    def deafen(self, name: str, to: Sequence[str]) -> None:
        """`name` stops hearing `to`; they go on hearing it (a one-way cut)."""
        assert self.net is not None
        self.net.deafen(self.index(name), [self.index(n) for n in to])

    def throttle(self, name: str, kbit: int) -> None:
        """`name`'s cluster link sends at most `kbit` kbit/s."""
        assert self.net is not None
        self.net.throttle(self.index(name), kbit)

    def restore_links(self) -> None:
        assert self.net is not None
        self.net.restore_links()

    def stop(self) -> None:
        """Stop the members, then remove every namespace, link and route, and unmount the
        small disks (also on failure)."""
        try:
            if self.net is not None:
                self._before_stop()
                self.net.close(grace=10)
        finally:
            self._unmount()


def make_backend(
    name: str,
    run_dir: Path,
    member_args: tuple[str, ...],
    plant: str,
    disk_mb: int = 0,
    project: ComposeRun | None = None,
) -> ProcessBackend:
    """disk_mb: give each member a tmpfs data dir of that size (the disk-full scenario).
    project: the compose project this process was started for (grid/chaos/compose.py)."""
    if disk_mb and os.geteuid() != 0:
        raise Unavailable("this scenario gives each member a small disk: a tmpfs, which needs root")
    if name == "process":
        return ProcessBackend(run_dir, member_args, plant, disk_mb=disk_mb)
    if name == "netns":
        if why := netns.available():
            raise Unavailable(
                f"the netns backend cannot run here: {why} (it needs Linux, root and "
                "iproute2's `ip`); use --backend process"
            )
        if plant:
            raise Unavailable("--plant runs on the process backend only")
        return NetnsBackend(run_dir, member_args, disk_mb=disk_mb)
    if name == "compose":
        if project is None:
            raise Unavailable(
                "the compose backend runs its checks inside the project's network: start "
                "it with `grid chaos run --backend compose`"
            )
        from grid.chaos.compose import ComposeBackend

        return ComposeBackend(run_dir, member_args, plant, disk_mb=disk_mb, project=project)
    raise Unavailable(f"no backend {name!r}: process, netns or compose")
