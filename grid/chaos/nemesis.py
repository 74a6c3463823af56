"""The faults a scenario injects, each recorded as a window of the run's time.

A window opens when the fault is injected and closes when it is healed: the member is
back (restarted or resumed), serving, and the partitions settled again. Inside it the
window notes when the survivors failed over (their tables no longer name the member).
The checkers excuse reads inside windows (a failover may answer from a copy that was not
yet the latest) and nothing else; the plot shades them.

After each failover the nemesis asks for an audit (see checkers.py): every write
acknowledged before the fault is read back from the survivors, because a write lost at
the failover can come back later from the restarted member's disk and would then be
invisible to a check of the final state only.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from grid.chaos import probe
from grid.chaos.backends import LinkFaults, ProcessBackend

FAILOVER_S = 30.0  # failure detection (2-6 s) plus the coordinator's round, with margin
SETTLE_S = 60.0  # partitions settled after a restart, on two loaded cores


@dataclass
class Window:
    kind: str  # kill, pause, leave, split, loss, one-way, slow, bridge, ring, disk-full
    target: str  # a member, or a split's sides: "member-1 | member-2,member-3"
    start: float
    end: float | None = None
    failover_s: float | None = None  # fault to the survivors' tables leaving it out
    heal_s: float | None = None  # heal (restart, SIGCONT, links back) to settled again
    notes: list[str] = field(default_factory=list)
    # a split's audit reads from one side (the largest), and only the keys of partitions
    # that had a replica there before the cut (the others are checked at the end)
    audit_from: tuple[str, ...] = ()
    audit_skip: tuple[int, ...] = ()
    partition_count: int = 0


class Nemesis:
    def __init__(
        self,
        backend: ProcessBackend,
        now: Callable[[], float],
        audit: Callable[[str, float], None],
        log: Callable[[str], None],
        quorum: int = 0,
    ) -> None:
        self.backend = backend
        self.quorum = quorum  # min_cluster_size: a smaller side publishes no table
        self.now = now
        self.audit = audit  # (label, time): read back what was acknowledged before time
        self.log = log
        self.windows: list[Window] = []

    @property
    def current(self) -> Window | None:
        return self.windows[-1] if self.windows and self.windows[-1].end is None else None

    # ---- the faults -------------------------------------------------------------------------
    def kill_and_restart(self, victim: str, down_s: float) -> Window:
        """kill -9; wait for the failover; audit; after `down_s` more, restart from its
        data dir and wait until settled."""
        w = self._open("kill", victim)
        self.backend.kill(victim)
        self.log(f"kill -9 {victim}")
        self._failover(w)
        time.sleep(down_s)
        t = self.now()
        self.backend.restart(victim)
        self.log(f"restarted {victim}")
        self._settle(w, t)
        return w

    def pause(self, victim: str) -> Window:
        """SIGSTOP until the others fail over without it (longer than failure detection);
        audit; SIGCONT and wait until settled."""
        w = self._open("pause", victim)
        self.backend.pause(victim)
        self.log(f"SIGSTOP {victim}")
        try:
            self._failover(w)
        finally:
            t = self.now()
            self.backend.resume(victim)
            self.log(f"SIGCONT {victim}")
        self._settle(w, t)
        return w

    def leave_and_rejoin(self, victim: str) -> Window:
        """SIGTERM (graceful leave: primaries handed off first), then start it again."""
        w = self._open("leave", victim)
        code = self.backend.terminate(victim)
        self.log(f"{victim} left (exit {code})")
        w.notes.append(f"exit code {code}")
        self._failover(w)
        t = self.now()
        self.backend.restart(victim)
        self.log(f"restarted {victim}")
        self._settle(w, t)
        return w

    def split(self, sides: list[list[str]], hold_s: float) -> Window:
        """Cut the network between `sides` (netns backend); wait until each side's tables
        name only its own members (a side smaller than min_cluster_size keeps its table:
        its coordinator publishes nothing); audit from the largest side; `hold_s` later, heal and
        wait until one table names everyone again and the partitions settled."""
        net = self.backend
        if not isinstance(net, LinkFaults):
            raise TypeError(f"a split needs the netns or compose backend, not {self.backend.name}")
        addresses = self.backend.members()
        before = probe.table(addresses[sides[0][0]])
        largest = max(sides, key=len)
        w = self._open("split", " | ".join(",".join(side) for side in sides))
        w.audit_from = tuple(largest)
        w.partition_count = before.partition_count
        w.audit_skip = tuple(
            p for p, replicas in enumerate(before.replicas) if not set(replicas) & set(largest)
        )
        net.split(sides)
        self.log(f"split {w.target}")
        try:
            parting = [side for side in sides if len(side) >= self.quorum]
            why = poll(lambda: cut_off(parting, addresses), FAILOVER_S)
            if why:
                w.notes.append(f"the sides did not part within {FAILOVER_S:.0f}s: {why}")
                self.log(f"sides not parted: {why}")
            else:
                w.failover_s = self.now() - w.start
                self.log(f"each side's tables name only its side after {w.failover_s:.1f}s")
                self.audit(f"during the split {w.target}", w.start)
            time.sleep(hold_s)
        finally:
            t = self.now()
            net.heal()
            self.log("healed the network")
        why = poll(lambda: joined(addresses), SETTLE_S)
        if why:
            w.notes.append(f"not one table {SETTLE_S:.0f}s after the heal: {why}")
            self.log(f"not joined: {why}")
        self._settle(w, t)
        return w

    def degrade(
        self,
        kind: str,
        target: str,
        apply: Callable[[], None],
        hold_s: float,
        failover: bool = False,
    ) -> Window:
        """Degrade links (`apply`: loss, a one-way cut, a slow link); with `failover`, wait
        until the others' tables leave `target` out (a one-way cut: it hears nobody, so it
        answers no probe) and audit from them; hold `hold_s`; then restore the links, wait
        until one table names everyone and the partitions settled, and audit again.
        Without `failover` whether the members fail anyone over is up to their failure
        detector (15% loss or a slow link should not make them): what must hold is what
        the checkers check."""
        net = self.backend
        if not isinstance(net, LinkFaults):
            raise TypeError(f"degraded links need the netns or compose backend, not {net.name}")
        addresses = self.backend.members()
        w = self._open(kind, target)
        apply()
        self.log(f"{kind} {target}")
        try:
            if failover:
                self._failover(w)
            time.sleep(hold_s)
        finally:
            t = self.now()
            net.restore_links()
            self.log("links restored")
        why = poll(lambda: joined(addresses), SETTLE_S)
        if why:
            w.notes.append(f"not one table {SETTLE_S:.0f}s after the links came back: {why}")
            self.log(f"not joined: {why}")
        self._settle(w, t)
        self.audit(f"after {kind} {target}", w.start)
        return w

    def fill_disk(self, victim: str, data_dir: Path, hold_s: float) -> Window:
        """Fill the victim's data dir with a ballast file until the disk refuses more; wait
        until the member says `disk_full` (its next journal append fails) and its writes
        are refused; hold; delete the ballast and wait until it resumes by itself; audit."""
        w = self._open("disk-full", victim)
        ballast = data_dir / BALLAST
        written = _fill(ballast)
        address = self.backend.members()[victim]
        self.log(f"filled {victim}'s disk: {written / 2**20:.1f} MiB of ballast")
        try:
            why = poll(lambda: "" if _disk_full(address) else "disk_full not set", FAILOVER_S)
            if why:
                w.notes.append(f"the member did not notice the full disk: {why}")
                self.log(f"no disk_full on {victim}: {why}")
            else:
                w.failover_s = self.now() - w.start  # here: until it refused writes
                self.log(f"{victim} refuses writes: disk full after {w.failover_s:.1f}s")
            time.sleep(hold_s)
        finally:
            t = self.now()
            ballast.unlink(missing_ok=True)
            self.log(f"freed {victim}'s disk")
        why = poll(lambda: "still disk_full" if _disk_full(address) else "", SETTLE_S)
        if why:
            w.notes.append(f"writes did not resume within {SETTLE_S:.0f}s: {why}")
            self.log(f"{victim} did not resume: {why}")
        self._settle(w, t)
        self.audit(f"after {victim}'s disk was full", w.start)
        return w

    # ---- steps ------------------------------------------------------------------------------
    def _open(self, kind: str, target: str) -> Window:
        w = Window(kind, target, self.now())
        self.windows.append(w)
        return w

    def _failover(self, w: Window) -> None:
        survivors = {n: a for n, a in self.backend.running().items() if n != w.target}
        why = poll(lambda: failed_over(survivors, w.target), FAILOVER_S)
        if why:
            w.notes.append(f"no failover within {FAILOVER_S:.0f}s: {why}")
            self.log(f"no failover: {why}")
            return
        w.failover_s = self.now() - w.start
        self.log(f"failed over without {w.target} in {w.failover_s:.1f}s")
        self.audit(f"after the failover from {w.target}", w.start)

    def _settle(self, w: Window, healed_at: float) -> None:
        why = poll(lambda: probe.settled(list(self.backend.running().values())), SETTLE_S)
        if why:
            w.notes.append(f"not settled within {SETTLE_S:.0f}s: {why}")
            self.log(f"not settled: {why}")
        w.end = self.now()
        w.heal_s = w.end - healed_at
        self.log(f"settled again in {w.heal_s:.1f}s")


BALLAST = "chaos-ballast"
"""The file that fills a member's disk (in its data dir, which the member ignores)."""


def _fill(path: Path, chunk: int = 1 << 20) -> int:
    """Write zeros to `path` until the filesystem is full; the bytes written."""
    block = bytes(chunk)
    written = 0
    with open(path, "wb", buffering=0) as fh:
        while True:
            try:
                n = fh.write(block)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                if chunk > 4096:  # the last few pages: fill them too, in smaller writes
                    block = bytes(chunk := chunk // 16)
                    continue
                return written
            written += n or 0


def _disk_full(address: str) -> bool:
    return bool(probe.stats(address).persistence.disk_full)


def failed_over(survivors: dict[str, str], dead: str) -> str:
    """Empty when every survivor's table leaves `dead` out and one survivor coordinates."""
    for name, address in survivors.items():
        t = probe.table(address)
        if t.version == 0 or dead in t.members:
            return f"{name}'s table still names {dead}"
    if not probe.coordinator(survivors):
        return "no single coordinator"
    return ""


def cut_off(sides: list[list[str]], addresses: dict[str, str]) -> str:
    """Empty when every member's table names only the members of its own side."""
    for side in sides:
        for name in side:
            t = probe.table(addresses[name])
            if t.version == 0 or not set(t.members) <= set(side):
                return f"{name}'s table names {sorted(t.members)}"
    return ""


def joined(addresses: dict[str, str]) -> str:
    """Empty when every member's table names every member."""
    for name, address in addresses.items():
        t = probe.table(address)
        if set(t.members) != set(addresses):
            return f"{name}'s table names {sorted(t.members)}"
    return ""


def poll(check: Callable[[], str], timeout: float, interval: float = 0.1) -> str:
    """Call `check` until it returns "" (then "") or `timeout` passes (then its last
    answer). An RPC error is an answer ("not yet"), not a failure."""
    deadline = time.monotonic() + timeout
    why = "not checked"
    while True:
        try:
            why = check()
        except (grpc.RpcError, ValueError) as e:
            why = f"{type(e).__name__}: {str(e)[:200]}"
        if not why or time.monotonic() >= deadline:
            return why
        time.sleep(interval)
