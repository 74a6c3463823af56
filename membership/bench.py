"""Membership benchmark in the simulator: ``python -m membership.bench [--quick]``.

For N = 10, 100, 1000 it measures, in virtual time:

* join: protocol periods (and seconds) until every member knows a new member;
* crash: until every member marks a kill -9'd member dead, next to the target
  3 periods + suspicion timeout;
* messages sent per member per second over that 60 s run, and its wall time;
* false deaths (a running member declared dead by anyone) over 600 simulated
  seconds, each with Lifeguard on and off, in three scenarios:
  - loss: 5% packet loss on every link;
  - stall: one member paused 2 s every 30 s;
  - slow: 10% of the members (at least one) are CPU-starved 10 s out of
    every 30 s (staggered): they handle every inbound message
    SLOW_LAG_MULT x the minimum suspicion timeout late while their timers
    fire on time, so they answer probes late *and* read the answers to
    their own probes late, and accuse healthy members -- the Lifeguard
    paper's slow-member model.  Counted separately: false deaths of healthy
    members (what Lifeguard targets) and of the slow ones.
  Opt-in (--scenarios): loss20 (20% loss) and stalls (10% of the members
  paused 0.8 s every 4 s).

Runs are seeded; the same command prints the same numbers (except wall time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
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
SLOW_FRACTION = 0.1
SLOW_FOR = 10.0
SLOW_EVERY = 30.0
SLOW_LAG_MULT = 1.25
"""A slow member's processing lag, as a multiple of the minimum suspicion
timeout at that N (2.5 s at N <= 10, 5 s at 100, 7.5 s at 1,000): long
enough that, without Lifeguard, a suspicion it raises expires before it
reads the refutation."""


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


@dataclass
class FalseDeaths:
    """False death declarations (observer, subject) in one run."""

    healthy: int
    """Of members that were never slowed or stalled."""
    impaired: int
    """Of the slowed or stalled members (running, but late to answer)."""

    @property
    def total(self) -> int:
        return self.healthy + self.impaired


def false_deaths(n: int, seed: int, config: Config, scenario: str, seconds: float) -> FalseDeaths:
    """Count false death declarations in one run of `scenario` (loss, stall, slow)."""
    loss = {"loss": 0.05, "loss20": 0.2}.get(scenario, 0.0)
    link = Link(loss=loss)
    c = Cluster(seed=seed, config=config, link=link, trace=False, record_events=False)
    names = c.bootstrap(n)
    impaired: list[str] = []
    if scenario == "stall":
        victim = names[n // 3]
        impaired.append(victim)

        def stall(now: float) -> None:
            c.pause(victim, 2.0)
            c.loop.call_at(now + 30.0, lambda: stall(c.now))

        c.loop.call_at(10.0, lambda: stall(c.now))
    elif scenario == "stalls":  # shorter stalls, more often, of 10% of the members
        count = max(1, int(n * SLOW_FRACTION))
        impaired.extend(names[1 : 1 + count])

        def short_stall(name: str) -> None:
            c.pause(name, 0.8)
            c.loop.call_at(c.now + 4.0, short_stall, name)

        for i, name in enumerate(impaired):
            c.loop.call_at(10.0 + i * 4.0 / count, short_stall, name)
    elif scenario == "slow":
        count = max(1, int(n * SLOW_FRACTION))
        impaired.extend(names[1 : 1 + count])
        lag = SLOW_LAG_MULT * config.suspicion_timeout(n)

        def slow(name: str) -> None:
            c.slow(name, lag, SLOW_FOR)
            c.loop.call_at(c.now + SLOW_EVERY, slow, name)

        for i, name in enumerate(impaired):
            c.loop.call_at(10.0 + i * SLOW_EVERY / count, slow, name)
    elif scenario not in ("loss", "loss20"):
        raise ValueError(f"unknown scenario {scenario!r}")
    c.run_for(seconds)
    bad = set(impaired)
    impaired_deaths = sum(1 for _, _, subject in c.false_deaths if subject in bad)
    return FalseDeaths(len(c.false_deaths) - impaired_deaths, impaired_deaths)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m membership.bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer trials, shorter fault runs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sizes", type=str, default="10,100,1000")
    ap.add_argument(
        "--fp-seconds",
        type=float,
        default=None,
        help="simulated seconds of each false-positive run [600; 60 with --quick]",
    )
    ap.add_argument(
        "--scenarios",
        default="loss,stall,slow",
        help="false-positive scenarios [%(default)s]; also: loss20 (20%% loss), stalls "
        "(10%% of the members paused 0.8 s every 4 s)",
    )
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
        fp_seconds = args.fp_seconds or (60.0 if args.quick else 600.0)
        fps: dict[tuple[str, str], FalseDeaths] = {}
        t0 = time.perf_counter()
        scenarios = args.scenarios.split(",")
        for scen in scenarios:
            for label, c in (("on", cfg), ("off", plain)):
                t1 = time.perf_counter()
                fps[scen, label] = fd = false_deaths(n, args.seed, c, scen, fp_seconds)
                print(
                    f"  (N={n} {scen} lifeguard {label}: {fd.healthy} healthy + "
                    f"{fd.impaired} impaired false deaths, {time.perf_counter() - t1:.0f}s wall)",
                    file=sys.stderr,
                    flush=True,
                )

        fp_wall = time.perf_counter() - t0
        _print_row(cfg, n, trials, d, fps, fp_seconds, fp_wall, scenarios)
    return 0


_HEADER_DONE: list[bool] = []


def _print_row(
    cfg: Config,
    n: int,
    trials: int,
    d: Detection,
    fps: dict[tuple[str, str], FalseDeaths],
    fp_s: float,
    fp_wall: float,
    scenarios: list[str],
) -> None:
    p = cfg.probe_interval
    target = 3 * p + cfg.suspicion_timeout(n + 1)
    if not _HEADER_DONE:
        _HEADER_DONE.append(True)
        print(
            f"{'N':>5} {'runs':>4} | {'join: periods':>13} {'(s)':>6} | "
            f"{'dead-by-all: periods':>20} {'(s)':>6} {'target s':>8} | "
            f"{'msg/member/s':>12} | {'wall 60s':>8}"
        )
    jm = statistics.mean(d.join)
    cm = statistics.mean(d.crash)
    print(
        f"{n:>5} {trials:>4} | {jm / p:>13.1f} {jm:>6.2f} | "
        f"{cm / p:>20.1f} {cm:>6.2f} {target:>8.2f} | "
        f"{statistics.mean(d.msgs):>12.2f} | {statistics.mean(d.wall):>7.1f}s",
        flush=True,
    )

    def pair(scen: str, part: str) -> str:
        on = getattr(fps[scen, "on"], part)
        off = getattr(fps[scen, "off"], part)
        ratio = f"{off / on:.0f}x" if on else ("inf" if off else "-")
        return f"{on} / {off} ({ratio})"

    parts = []
    for scen in scenarios:
        label = {"loss": "loss5%", "loss20": "loss20%"}.get(scen, scen)
        if scen in ("slow", "stalls"):
            parts.append(
                f"{label}: healthy {pair(scen, 'healthy')}, impaired {pair(scen, 'impaired')}"
            )
        else:
            parts.append(f"{label} {pair(scen, 'total')}")
    print(
        f"      false deaths in {fp_s:.0f} simulated s, Lifeguard on / off (off/on): "
        + "; ".join(parts)
        + f"  [{fp_wall:.0f}s wall]",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
