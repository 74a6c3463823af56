"""The scenarios: which faults, on whom, and when, while the workload runs.

Each scenario repeats its fault while the run's duration lasts (at least once), with a
quiet spell before each so there are acknowledged writes to lose. A victim is chosen by
its role at the moment of the fault, with the run's seeded random source choosing among
equals, so a seed replays the same choices against the same cluster state.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from grid.chaos import probe
from grid.chaos.backends import LinkFaults, ProcessBackend
from grid.chaos.nemesis import Nemesis
from grid.chaos.workload import COUNTERS, counter_key

QUIET_S = 2.0  # load without faults before each fault (writes to lose, a baseline to plot)
DOWN_S = 2.0  # a killed member stays down this long after the failover
HOLD_S = 4.0  # a split lasts this long after every side's tables name only that side
LOSS_PERCENT = 15  # each way: about 28% of round trips fail, as on a bad wireless link
BRIDGE_HOLD_S = 12.0  # past the 10 s forwarding deadline: TCP alone rides out a short cut
DISK_MB = 64  # a member's own disk: big enough for a run's journal, quick to fill
SLOW_KBIT = 256  # a congested WAN link: a 64-key batch of 100-byte values takes ~0.3 s


@dataclass
class Context:
    backend: ProcessBackend
    nemesis: Nemesis
    rng: random.Random
    deadline: float  # monotonic: no new fault after it
    log: Callable[[str], None]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    backends: tuple[str, ...]  # where it can run
    run: Callable[[Context], None]
    min_members: int = 3
    disk_mb: int = 0  # each member's data dir a tmpfs of this size (a disk to fill)


def _primary_not_coordinator(ctx: Context) -> str:
    """A member that is primary of partitions and does not coordinate (killing the
    coordinator is a scenario of its own)."""
    running = ctx.backend.running()
    coordinator = probe.coordinator(running)
    candidates = sorted(
        n for n, a in running.items() if n != coordinator and probe.stats(a).migration.primaries
    )
    return ctx.rng.choice(candidates)


def _coordinator(ctx: Context) -> str:
    name = probe.coordinator(ctx.backend.running())
    if not name:
        raise RuntimeError("no single member says it coordinates")
    return name


def _repeat(ctx: Context, fault: Callable[[], None]) -> None:
    """Quiet spell, fault; again while the run's duration leaves time for one more."""
    while True:
        time.sleep(QUIET_S)
        started = time.monotonic()
        fault()
        took = time.monotonic() - started
        if time.monotonic() + QUIET_S + took > ctx.deadline:
            return


def kill_primary(ctx: Context) -> None:
    _repeat(ctx, lambda: ctx.nemesis.kill_and_restart(_primary_not_coordinator(ctx), DOWN_S))


def kill_coordinator(ctx: Context) -> None:
    _repeat(ctx, lambda: ctx.nemesis.kill_and_restart(_coordinator(ctx), DOWN_S))


def pause_primary(ctx: Context) -> None:
    _repeat(ctx, lambda: ctx.nemesis.pause(_primary_not_coordinator(ctx)))


def rolling_restart(ctx: Context) -> None:
    """Every member in turn leaves gracefully (SIGTERM) and is started again."""

    def each() -> None:
        for name in sorted(ctx.backend.members()):
            ctx.nemesis.leave_and_rejoin(name)

    _repeat(ctx, each)


def partition_halves(ctx: Context) -> None:
    """The members, shuffled by the seed, cut into halves (the second the larger)."""

    def once() -> None:
        names = sorted(ctx.backend.members())
        ctx.rng.shuffle(names)
        half = len(names) // 2
        ctx.nemesis.split([names[:half], names[half:]], HOLD_S)

    _repeat(ctx, once)


def isolate_one(ctx: Context) -> None:
    """Cut off the primary of the shared counters (every workload thread writes them),
    the seed choosing among the primaries of counter-0..3 by how many they hold."""

    def once() -> None:
        names = sorted(ctx.backend.members())
        t = probe.table(ctx.backend.members()[names[0]])
        owners = [t.primary_of(counter_key(i)) for i in range(COUNTERS)]
        most = max(owners.count(n) for n in names)
        victim = ctx.rng.choice(sorted(n for n in names if owners.count(n) == most))
        ctx.nemesis.split([[n for n in names if n != victim], [victim]], HOLD_S)

    _repeat(ctx, once)


def _links(ctx: Context) -> LinkFaults:
    net = ctx.backend
    if not isinstance(net, LinkFaults):
        raise TypeError(f"degraded links need the netns or compose backend, not {net.name}")
    return net


def lossy_links(ctx: Context) -> None:
    """Every member drops LOSS_PERCENT of its cluster packets, each way, for HOLD_S."""
    net = _links(ctx)
    names = sorted(ctx.backend.members())

    def once() -> None:
        ctx.nemesis.degrade(
            "loss", f"{LOSS_PERCENT}% each way, every member",
            lambda: net.lose(names, LOSS_PERCENT), HOLD_S,
        )  # fmt: skip

    _repeat(ctx, once)


def one_way(ctx: Context) -> None:
    """A primary (not the coordinator) stops hearing the others while they still hear it
    (the asymmetric cut that failure detectors get wrong most often), until they fail it
    over and HOLD_S more; then it hears them again and must rejoin."""
    net = _links(ctx)

    def once() -> None:
        victim = _primary_not_coordinator(ctx)
        others = sorted(n for n in ctx.backend.members() if n != victim)
        ctx.nemesis.degrade(
            "one-way", victim, lambda: net.deafen(victim, others), HOLD_S, failover=True
        )

    _repeat(ctx, once)


def bridge(ctx: Context) -> None:
    """Two members stop hearing each other while a third still hears both (a bridge: the
    cut that no side of a clean split describes). Failure detection's indirect probes go
    round it through the bridge, so nobody is failed over, while replication streams and
    forwarding between the two stall (TCP retransmits) past their deadlines; nothing
    acknowledged may be lost, and the streams must resume after.
    One of the two is the coordinator; the seed picks the other."""
    net = _links(ctx)

    def once() -> None:
        names = sorted(ctx.backend.members())
        a = _coordinator(ctx)
        b = ctx.rng.choice([n for n in names if n != a])
        ctx.nemesis.degrade(
            "bridge", f"{a} x {b}",
            lambda: (net.deafen(a, [b]), net.deafen(b, [a])), BRIDGE_HOLD_S,
        )  # fmt: skip

    _repeat(ctx, once)


def majority_ring(ctx: Context) -> None:
    """The members in a ring (order chosen by the seed), each hearing only the members
    within `reach` of it on either side: every member sees a majority, counting itself,
    but no two members far apart see the same one (Jepsen's majorities ring). Failure
    detection's indirect probes go round through the neighbours, so nobody should be
    failed over while streams between far members stall; held BRIDGE_HOLD_S, past the
    forwarding deadline, then restored; nothing acknowledged may be lost."""
    net = _links(ctx)

    def once() -> None:
        names = sorted(ctx.backend.members())
        ctx.rng.shuffle(names)
        n = len(names)
        reach = (n // 2 + 1) // 2  # self + 2 x reach >= a majority
        far = {
            a: [b for j, b in enumerate(names) if min((i - j) % n, (j - i) % n) > reach]
            for i, a in enumerate(names)
        }

        def cut() -> None:
            for a, others in far.items():
                if others:
                    net.deafen(a, others)

        ctx.nemesis.degrade("ring", " - ".join(names), cut, BRIDGE_HOLD_S)

    _repeat(ctx, once)


def slow_link(ctx: Context) -> None:
    """The coordinator's cluster link sends at most SLOW_KBIT kbit/s for HOLD_S: table
    publishes, replication and acknowledgements queue behind each other."""
    net = _links(ctx)

    def once() -> None:
        victim = _coordinator(ctx)
        ctx.nemesis.degrade(
            "slow", f"{victim} at {SLOW_KBIT} kbit/s", lambda: net.throttle(victim, SLOW_KBIT),
            HOLD_S,
        )  # fmt: skip

    _repeat(ctx, once)


def disk_full(ctx: Context) -> None:
    """A primary's data dir (a DISK_MB tmpfs) is filled by a ballast file until its writes
    fail for lack of space; HOLD_S later the ballast goes and the member must resume by
    itself (it re-persists what did not reach the disk, then takes writes again)."""

    def once() -> None:
        victim = _primary_not_coordinator(ctx)
        ctx.nemesis.fill_disk(victim, ctx.backend.data_dir(victim), HOLD_S)

    _repeat(ctx, once)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "kill-primary",
            "kill -9 a primary (not the coordinator), restart it from its data dir",
            ("process", "netns", "compose"),
            kill_primary,
        ),
        Scenario(
            "kill-coordinator",
            "kill -9 the coordinator, restart it from its data dir",
            ("process", "netns", "compose"),
            kill_coordinator,
        ),
        Scenario(
            "pause-primary",
            "SIGSTOP a primary until the others fail over without it, then SIGCONT",
            ("process", "netns", "compose"),
            pause_primary,
        ),
        Scenario(
            "rolling-restart",
            "every member in turn leaves gracefully (SIGTERM) and is started again",
            ("process", "netns", "compose"),
            rolling_restart,
        ),
        Scenario(
            "partition-halves",
            "cut the cluster in two halves (chosen by the seed), then heal",
            ("netns", "compose"),
            partition_halves,
        ),
        Scenario(
            "isolate-one",
            "cut the counters' primary off from the others, then heal",
            ("netns", "compose"),
            isolate_one,
        ),
        Scenario(
            "lossy-links",
            f"every member drops {LOSS_PERCENT}% of its cluster packets each way, then heals",
            ("netns", "compose"),
            lossy_links,
        ),
        Scenario(
            "one-way",
            "a primary stops hearing the others (they still hear it) until failed over, then heals",
            ("netns", "compose"),
            one_way,
        ),
        Scenario(
            "bridge",
            "two members stop hearing each other while a third still hears both, then heals",
            ("netns", "compose"),
            bridge,
        ),
        Scenario(
            "majority-ring",
            "5 or more members in a ring, each hearing only its neighbours (each sees a "
            "majority, none the same), then heals",
            ("netns", "compose"),
            majority_ring,
            min_members=5,
        ),
        Scenario(
            "slow-link",
            f"the coordinator's cluster link slowed to {SLOW_KBIT} kbit/s, then restored",
            ("netns", "compose"),
            slow_link,
        ),
        Scenario(
            "disk-full",
            "fill a primary's data dir (a tmpfs of its own) until writes fail, then free it",
            ("process", "netns", "compose"),
            disk_full,
            disk_mb=DISK_MB,
        ),
    )
}


def listing() -> str:
    """One scenario a line: name, backends, what it does."""
    width = max(len(s.name) for s in SCENARIOS.values())
    where = {s.name: "[" + ",".join(s.backends) + "]" for s in SCENARIOS.values()}
    wide = max(len(w) for w in where.values())
    return "\n".join(
        f"{s.name:<{width}}  {where[s.name]:<{wide}}  {s.description}" for s in SCENARIOS.values()
    )
