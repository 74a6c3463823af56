"""The seeded fault schedule: crashes and restarts, splits and heals, lossy links,
stalls. One fault starts every few simulated seconds (exponential gaps), each with
its own end; all randomness comes from the world's seeded `random.Random`, so a
seed names one schedule."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulation.world import World

KINDS = (
    ("crash", 0.35),
    ("partition", 0.15),
    ("lossy_member", 0.2),
    ("lossy_network", 0.1),
    ("pause", 0.2),
)


class Faults:
    """Starts faults until `stop()`; a fault's end that comes after `stop()` is skipped
    (the world heals everything itself)."""

    def __init__(self, world: World) -> None:
        self.w = world
        self.rng = world.rng
        self.stopped = False
        self.lossy: dict[str, float] = {}

    def start(self) -> None:
        self._next()

    def stop(self) -> None:
        self.stopped = True
        self.lossy.clear()

    def _later(self, delay: float, fn: object, *args: object) -> None:
        self.w.loop.call_later(delay, self._run, fn, args)

    def _run(self, fn: object, args: tuple[object, ...]) -> None:
        if not self.stopped:
            fn(*args)  # type: ignore[operator]

    def _next(self) -> None:
        self._later(self.rng.expovariate(1.0 / self.w.cfg.fault_mean_gap), self._fault)

    def _fault(self) -> None:
        self._next()
        (kind,) = self.rng.choices([k for k, _ in KINDS], weights=[w for _, w in KINDS])
        getattr(self, kind)()

    def crash(self) -> None:
        w = self.w
        running = sorted(w.cluster.running())
        if w.cfg.members - len(running) >= w.cfg.max_down or len(running) < 3:
            return
        victim = self.rng.choice(running)
        w.crash(victim)
        self._later(self.rng.uniform(3.0, 60.0), w.restart, victim)

    def partition(self) -> None:
        w = self.w
        if w.split is not None:
            return
        names = list(w.names)
        self.rng.shuffle(names)
        k = self.rng.randint(1, len(names) // 2)
        w.partition(sorted(names[:k]), sorted(names[k:]))
        self._later(self.rng.uniform(5.0, 60.0), w.heal)

    def lossy_member(self) -> None:
        victim = self.rng.choice(self.w.names)
        if victim in self.lossy:
            return
        self.lossy[victim] = round(self.rng.uniform(0.1, 0.6), 3)
        self.w.set_lossy(dict(self.lossy))
        self._later(self.rng.uniform(5.0, 40.0), self._unlossy, victim)

    def _unlossy(self, victim: str) -> None:
        self.lossy.pop(victim, None)
        self.w.set_lossy(dict(self.lossy))

    def lossy_network(self) -> None:
        if self.w.default_loss:
            return
        self.w.set_default_loss(round(self.rng.uniform(0.01, 0.05), 4))
        self._later(self.rng.uniform(10.0, 60.0), self.w.set_default_loss, 0.0)

    def pause(self) -> None:
        running = sorted(self.w.cluster.running())
        if running:
            self.w.pause(self.rng.choice(running), round(self.rng.uniform(0.5, 4.0), 3))
