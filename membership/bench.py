"""Membership benchmark in the simulator: ``python -m membership.bench [--quick]``.

For N = 10, 100, 1000 it measures, in virtual time:

* join: protocol periods (and seconds) until every member knows a new member;
* crash: until every member marks a kill -9'd member dead, next to the target
  3 periods + suspicion timeout;
* messages sent per member per second over that 60 s run, and its wall time;
* false deaths (a running member declared dead by anyone) with 5% packet loss
  on every link, and with one member stalled 2 s every 30 s, each with
  Lifeguard on and off.

Runs are seeded; the same command prints the same numbers (except wall time).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from membership.actions import EventKind, MemberEvent
from membership.config import Config
from membership.sim import Cluster
from membership.simnet import Link

RUN_SECONDS = 60.0
JOIN_AT = 5.0
CRASH_AT = 20.0


@dataclass
class Detection:
    join: list[float] = field(default_factory=list)
    crash: list[float] = field(default_factory=list)
    msgs: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)


def _first_time_all(
    c: Cluster, kind: EventKind, subject: str, expected: Callable[[], int]
) -> Callable[[], float | None]:
    """Hook that notes when `expected()` distinct observers saw `kind` about subject."""
    seen: set[str] = set()
    result: list[float] = []

    def hook(observer: str, ev: MemberEvent) -> None:
        if ev.kind is kind and ev.member.name == subject and not result:
            seen.add(observer)
            if len(seen) >= expected():
                result.append(c.now)

    c.hooks.append(hook)
    return lambda: result[0] if result else None


def detection_run(n: int, seed: int, config: Config) -> tuple[float, float, float, float]:
    """One 60 s run: join at 5 s, crash at 20 s.  Returns (join s, crash s,
    msgs/member/s, wall s); inf when an event was not seen by all."""
    t0 = time.perf_counter()
    c = Cluster(seed=seed, config=config, trace=False, record_events=False)
    names = c.bootstrap(n)
    c.run_for(JOIN_AT)
    joined = _first_time_all(c, EventKind.JOINED, "joiner", lambda: n)
    c.add_member("joiner", seeds=[names[n // 2]])
    c.run_for(CRASH_AT - JOIN_AT)
    victim = names[1]
    dead = _first_time_all(c, EventKind.DEAD, victim, lambda: n)  # n+1 members, minus victim
    c.crash(victim)
    c.run_for(RUN_SECONDS - CRASH_AT)
    wall = time.perf_counter() - t0
    tj, td = joined(), dead()
    msgs = c.net.stats.sent / ((n + 1) * RUN_SECONDS)
    return (
        float("inf") if tj is None else tj - JOIN_AT,
        float("inf") if td is None else td - CRASH_AT,
        msgs,
        wall,
    )


def false_deaths(n: int, seed: int, config: Config, scenario: str, seconds: float) -> int:
    """Count of (observer, subject) false death declarations in one run."""
    link = Link(loss=0.05) if scenario == "loss" else Link()
    c = Cluster(seed=seed, config=config, link=link, trace=False, record_events=False)
    names = c.bootstrap(n)
    if scenario == "stall":
        victim = names[n // 3]

        def stall(now: float) -> None:
            c.pause(victim, 2.0)
            c.loop.call_at(now + 30.0, lambda: stall(c.now))

        c.loop.call_at(10.0, lambda: stall(c.now))
    c.run_for(seconds)
    return len(c.false_deaths)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m membership.bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer trials, shorter fault runs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sizes", type=str, default="10,100,1000")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    cfg = Config()
    plain = cfg.without_lifeguard()

    for n in sizes:
        trials = 1 if args.quick else (3 if n >= 1000 else 5)
        d = Detection()
        for t in range(trials):
            tj, td, msgs, wall = detection_run(n, args.seed + t, cfg)
            d.join.append(tj)
            d.crash.append(td)
            d.msgs.append(msgs)
            d.wall.append(wall)
        fp_seconds = 60.0 if args.quick else 600.0 if n <= 100 else 60.0
        fps = {}
        for scen in ("loss", "stall"):
            for label, c in (("on", cfg), ("off", plain)):
                fps[scen, label] = false_deaths(n, args.seed, c, scen, fp_seconds)

        _print_row(cfg, n, trials, d, fps, fp_seconds)
    return 0


_HEADER_DONE: list[bool] = []


def _print_row(
    cfg: Config, n: int, trials: int, d: Detection, fps: dict[tuple[str, str], int], fp_s: float
) -> None:
    p = cfg.probe_interval
    target = 3 * p + cfg.suspicion_timeout(n + 1)
    if not _HEADER_DONE:
        _HEADER_DONE.append(True)
        print(
            f"{'N':>5} {'runs':>4} | {'join: periods':>13} {'(s)':>6} | "
            f"{'dead-by-all: periods':>20} {'(s)':>6} {'target s':>8} | "
            f"{'msg/member/s':>12} | {'FP loss5% on/off':>16} | "
            f"{'FP stall on/off':>15} | {'FP sim s':>8} | {'wall 60s':>8}"
        )
    jm = statistics.mean(d.join)
    cm = statistics.mean(d.crash)
    print(
        f"{n:>5} {trials:>4} | {jm / p:>13.1f} {jm:>6.2f} | "
        f"{cm / p:>20.1f} {cm:>6.2f} {target:>8.2f} | "
        f"{statistics.mean(d.msgs):>12.2f} | "
        f"{fps['loss', 'on']:>7} / {fps['loss', 'off']:<6} | "
        f"{fps['stall', 'on']:>6} / {fps['stall', 'off']:<6} | "
        f"{fp_s:>8.0f} | {statistics.mean(d.wall):>7.1f}s",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
