"""The seeded fault schedule. One fault starts every few simulated seconds
(exponential gaps), each with its own end; all randomness comes from the world's
seeded `random.Random`, so a seed names one schedule.

| fault              | what happens                                                        |
|--------------------|---------------------------------------------------------------------|
| crash              | kill -9, restart 3-60 s later (with its store and table: persist)   |
| quick_restart      | kill -9 and restart within 10-50% of the suspicion timeout: the     |
|                    | gossip never declares it dead, so no table changes                  |
| coordinator_crash  | kill -9 of the coordinator, half the time at its next fill or       |
|                    | hand-off (in the middle of a wave); back as quick_restart or 1-30 s |
| partition          | two random sides, healed 5-60 s later                               |
| isolate            | one member cut from all others, healed 5-40 s later                 |
| one_way            | a few members cannot send to the rest (the rest still reach them)   |
| flapping           | a split that heals and comes back every 0.5-3 s for 10-40 s         |
| lossy_member       | one member's links drop 10-60% of messages for 5-40 s               |
| lossy_network      | every link drops 1-5% for 10-60 s                                   |
| pause              | a stall of 0.5-4 s (shorter than failure detection)                 |
| long_pause         | a stall of 12-30 s (longer than failure detection: it comes back    |
|                    | after the cluster failed it over, holding its old table)            |
| slow_member        | 20-400 ms more latency on one member's links for 5-40 s             |
| leave              | a graceful leave (everything handed off first), rejoin 5-60 s later |
| clock_jump         | one member's wall clock steps 5-40 s forwards or backwards          |

The first faults of a run are one of each kind, in a seeded order, so that every
run of a couple of minutes meets every kind; then kinds are drawn by weight.
Besides, a tenth of the members start with their wall clock 10-60 s off
(`World.skew_ms`); the rest within 25 ms. Crashes, leaves and their restarts
keep at most `max_down` members down at once.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from partitioning.decisions import Decision, Fill, Handoff

if TYPE_CHECKING:
    from simulation.member import SimMember
    from simulation.world import World

KINDS = (
    ("crash", 0.12),
    ("quick_restart", 0.12),
    ("coordinator_crash", 0.05),
    ("partition", 0.12),
    ("isolate", 0.05),
    ("one_way", 0.05),
    ("flapping", 0.04),
    ("lossy_member", 0.1),
    ("lossy_network", 0.05),
    ("pause", 0.09),
    ("long_pause", 0.04),
    ("slow_member", 0.05),
    ("leave", 0.06),
    ("clock_jump", 0.02),
)
"""Relative weights (`random.choices` normalizes them)."""
SPLITS = frozenset({"partition", "isolate", "one_way", "flapping"})
"""The kinds that split the network, skipped under `SimConfig.splits` False."""
MID_WAVE_WINDOW_S = 30.0
"""An armed coordinator crash waits this long for a fill or hand-off, then strikes anyway."""


class Faults:
    """Starts faults until `stop()`; a fault's end that comes after `stop()` is skipped
    (the world heals everything itself)."""

    def __init__(self, world: World) -> None:
        self.w = world
        self.rng = world.rng
        self.stopped = False
        self.lossy: dict[str, float] = {}
        self.slow: dict[str, float] = {}
        self.armed: float | None = None  # a coordinator crash waits for a wave until then
        self.deck = [k for k, _ in KINDS]  # one of each kind first
        self.rng.shuffle(self.deck)

    def start(self) -> None:
        self._next()

    def stop(self) -> None:
        self.stopped = True
        self.lossy.clear()
        self.slow.clear()
        self.armed = None

    def _later(self, delay: float, fn: object, *args: object) -> None:
        self.w.loop.call_later(delay, self._run, fn, args)

    def _run(self, fn: object, args: tuple[object, ...]) -> None:
        if not self.stopped:
            fn(*args)  # type: ignore[operator]

    def _next(self) -> None:
        self._later(self.rng.expovariate(1.0 / self.w.cfg.fault_mean_gap), self._fault)

    def _fault(self) -> None:
        self._next()
        if self.deck:
            kind = self.deck.pop()
        else:
            (kind,) = self.rng.choices([k for k, _ in KINDS], weights=[w for _, w in KINDS])
        if kind in SPLITS and not self.w.cfg.splits:
            return
        getattr(self, kind)()

    # ---- crashes -----------------------------------------------------------------------------
    def _may_stop_one(self) -> bool:
        w = self.w
        running = w.cluster.running()
        return w.cfg.members - len(running) < w.cfg.max_down and len(running) >= 3

    def crash(self) -> None:
        if not self._may_stop_one():
            return
        victim = self.rng.choice(sorted(self.w.cluster.running()))
        self.w.crash(victim)
        self._later(self.rng.uniform(3.0, 60.0), self.w.restart, victim)

    def suspicion_timeout(self) -> float:
        """The gossip's suspicion timeout at this cluster size (membership/config.py)."""
        c = self.w.cluster.config
        n = self.w.cfg.members
        return c.suspicion_mult * max(1.0, math.log10(n)) * c.probe_interval

    def quick_restart(self) -> None:
        if not self._may_stop_one():
            return
        victim = self.rng.choice(sorted(self.w.cluster.running()))
        self.w.stats.quick_restarts += 1
        self.w.crash(victim)
        delay = self.rng.uniform(0.1, 0.5) * self.suspicion_timeout()
        self._later(delay, self.w.restart, victim)

    def coordinator_crash(self) -> None:
        if not self._may_stop_one() or self.armed is not None:
            return
        if self.rng.random() < 0.5:
            self._crash_coordinator(self.w.coordinator())
        else:
            self.armed = self.w.loop.now + MID_WAVE_WINDOW_S
            self._later(MID_WAVE_WINDOW_S, self._armed_timeout, self.armed)

    def _armed_timeout(self, armed: float) -> None:
        if self.armed == armed and self._may_stop_one():
            self.armed = None
            self._crash_coordinator(self.w.coordinator())

    def decided(self, member: SimMember, decision: Decision) -> None:
        """A rebalancer's decision: an armed coordinator crash strikes at a fill or a
        hand-off, a moment after it was sent out."""
        if self.armed is None or self.stopped or not isinstance(decision, Fill | Handoff):
            return
        if not member.rebalancer.acting or not self._may_stop_one():
            return
        self.armed = None
        self._later(self.rng.uniform(0.0, 0.05), self._crash_coordinator, member)

    def _crash_coordinator(self, member: SimMember) -> None:
        if not member.alive or not self.w.cluster.up[member.name]:
            return
        self.w.stats.coordinator_crashes += 1
        self.w.note(f"coordinator crash {member.name}")
        self.w.crash(member.name)
        if self.rng.random() < 0.5:  # back before anyone noticed: no new coordinator
            delay = self.rng.uniform(0.1, 0.5) * self.suspicion_timeout()
        else:
            delay = self.rng.uniform(1.0, 30.0)
        self._later(delay, self.w.restart, member.name)

    # ---- leaves --------------------------------------------------------------------------------
    def leave(self) -> None:
        w = self.w
        if not self._may_stop_one() or any(r.leaving and r.alive for r in w.replicas.values()):
            return
        w.leave(self.rng.choice(sorted(w.cluster.running())))

    def left(self, name: str) -> None:
        """A member that left gracefully comes back later (a rolling restart)."""
        self._later(self.rng.uniform(5.0, 60.0), self.w.restart, name)

    # ---- the network -----------------------------------------------------------------------
    def partition(self) -> None:
        w = self.w
        if w.split is not None:
            return
        names = list(w.names)
        self.rng.shuffle(names)
        k = self.rng.randint(1, len(names) // 2)
        w.partition(sorted(names[:k]), sorted(names[k:]))
        self._later(self.rng.uniform(5.0, 60.0), w.heal)

    def isolate(self) -> None:
        w = self.w
        if w.split is not None:
            return
        victim = self.rng.choice(w.names)
        w.partition([victim], [n for n in w.names if n != victim])
        self._later(self.rng.uniform(5.0, 40.0), w.heal)

    def one_way(self) -> None:
        w = self.w
        if w.split is not None:
            return
        names = list(w.names)
        self.rng.shuffle(names)
        k = self.rng.randint(1, max(1, len(names) // 4))
        w.one_way(sorted(names[:k]), sorted(names[k:]))
        self._later(self.rng.uniform(5.0, 40.0), w.heal)

    def flapping(self) -> None:
        w = self.w
        if w.split is not None:
            return
        names = list(w.names)
        self.rng.shuffle(names)
        k = self.rng.randint(1, len(names) // 2)
        sides = (sorted(names[:k]), sorted(names[k:]))
        w.stats.flaps += 1
        self._flap(sides, w.loop.now + self.rng.uniform(10.0, 40.0), True)

    def _flap(self, sides: tuple[list[str], list[str]], until: float, cut: bool) -> None:
        w = self.w
        if w.loop.now >= until:
            w.heal()
            return
        if cut:
            w.partition(*sides)
        else:
            w.heal()
        self._later(self.rng.uniform(0.5, 3.0), self._flap, sides, until, not cut)

    def lossy_member(self) -> None:
        victim = self.rng.choice(self.w.names)
        if victim in self.lossy:
            return
        self.lossy[victim] = round(self.rng.uniform(0.1, 0.6), 3)
        self.w.set_links(self.lossy, self.slow)
        self._later(self.rng.uniform(5.0, 40.0), self._unlossy, victim)

    def _unlossy(self, victim: str) -> None:
        self.lossy.pop(victim, None)
        self.w.set_links(self.lossy, self.slow)

    def slow_member(self) -> None:
        victim = self.rng.choice(self.w.names)
        if victim in self.slow:
            return
        self.w.stats.slow += 1
        self.slow[victim] = round(self.rng.uniform(0.02, 0.4), 3)
        self.w.set_links(self.lossy, self.slow)
        self._later(self.rng.uniform(5.0, 40.0), self._unslow, victim)

    def _unslow(self, victim: str) -> None:
        self.slow.pop(victim, None)
        self.w.set_links(self.lossy, self.slow)

    def lossy_network(self) -> None:
        if self.w.default_loss:
            return
        self.w.set_default_loss(round(self.rng.uniform(0.01, 0.05), 4))
        self._later(self.rng.uniform(10.0, 60.0), self.w.set_default_loss, 0.0)

    # ---- processes and clocks --------------------------------------------------------------
    def pause(self) -> None:
        running = sorted(self.w.cluster.running())
        if running:
            self.w.pause(self.rng.choice(running), round(self.rng.uniform(0.5, 4.0), 3))

    def long_pause(self) -> None:
        running = sorted(self.w.cluster.running())
        if running:
            self.w.pause(self.rng.choice(running), round(self.rng.uniform(12.0, 30.0), 3))

    def clock_jump(self) -> None:
        victim = self.rng.choice(self.w.names)
        step = self.rng.uniform(5_000, 40_000) * self.rng.choice((-1, 1))
        self.w.jump_clock(victim, int(step))
