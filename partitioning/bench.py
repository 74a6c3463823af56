"""`python -m partitioning.bench`: balance, movement and cost of placement.

Clusters are synthetic but shaped like real ones (addresses "10.0.<t>.<i>:5701");
each figure is given for trial 0 and as mean and worst over `--trials`
differently named clusters, because one member set can be lucky.

* balance: max/mean of primaries per member, and of all replicas.
* movement: fraction of partitions whose ordered replica list changes when
  member "10.1.<t>.99:5701" joins N members, or when the first of N leaves,
  divided by the ideal share (1 + backups) / (N + 1) for a join and
  (1 + backups) / N for a leave (capped at 1). "copy" counts only partitions
  whose replica *set* changes, i.e. where data must be copied.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from partitioning.config import PlacementConfig
from partitioning.placement import Layout, place, place_plain
from partitioning.table import build_table

SIZES = (3, 5, 10, 50)
BALANCE_TARGET = 1.15
MOVEMENT_TARGET = 1.5  # x ideal

Placer = Callable[[Sequence[str], PlacementConfig], Layout]


def cluster(n: int, trial: int) -> list[str]:
    return [f"10.0.{trial}.{i}:5701" for i in range(1, n + 1)]


def balance(layout: Layout, members: Sequence[str], ranks: int | None) -> float:
    counts = Counter(m for replicas in layout for m in replicas[:ranks])
    mean = sum(counts.values()) / len(members)
    return max(counts[m] for m in members) / mean


def changed(a: Layout, b: Layout, ordered: bool = True) -> float:
    if ordered:
        moved = sum(x != y for x, y in zip(a, b, strict=True))
    else:
        moved = sum(set(x) != set(y) for x, y in zip(a, b, strict=True))
    return moved / len(a)


@dataclass
class Row:
    n: int
    primary: list[float]
    replicas: list[float]
    join: list[float]
    join_copy: list[float]
    leave: list[float]
    leave_copy: list[float]


def measure(placer: Placer, config: PlacementConfig, n: int, trials: int) -> Row:
    row = Row(n, [], [], [], [], [], [])
    r = config.replica_count
    for t in range(trials):
        members = cluster(n, t)
        base = placer(members, config)
        row.primary.append(balance(base, members, 1))
        row.replicas.append(balance(base, members, None))
        joined = placer([*members, f"10.1.{t}.99:5701"], config)
        ideal_join = min(1.0, r / (n + 1))
        row.join.append(changed(base, joined) / ideal_join)
        row.join_copy.append(changed(base, joined, ordered=False) / ideal_join)
        if n > 1:
            left = placer(members[1:], config)
            ideal_leave = min(1.0, r / n)
            row.leave.append(changed(base, left) / ideal_leave)
            row.leave_copy.append(changed(base, left, ordered=False) / ideal_leave)
    return row


def _fmt(values: list[float], target: float) -> str:
    worst = max(values)
    verdict = "met" if worst <= target else "MISSED"
    return f"{values[0]:5.3f} {statistics.fmean(values):5.3f} {worst:5.3f} {verdict:>6}"


def report(name: str, placer: Placer, config: PlacementConfig, trials: int) -> None:
    print(f"\n## {name}")
    print("   cells: trial0 mean worst verdict(worst vs target)")
    header = ["N", "primary bal", "all-replica bal", "join/ideal", "leave/ideal"]
    print(f"{header[0]:>3} | " + " | ".join(f"{h:<26}" for h in header[1:]) + " | copy j/l mean")
    for n in SIZES:
        row = measure(placer, config, n, trials)
        cells = [
            _fmt(row.primary, BALANCE_TARGET),
            _fmt(row.replicas, BALANCE_TARGET),
            _fmt(row.join, MOVEMENT_TARGET),
            _fmt(row.leave, MOVEMENT_TARGET),
        ]
        copy = f"{statistics.fmean(row.join_copy):.3f}/{statistics.fmean(row.leave_copy):.3f}"
        print(f"{n:>3} | " + " | ".join(f"{c:<26}" for c in cells) + f" | {copy}")


def timing(config: PlacementConfig, n: int = 50, repeat: int = 20) -> tuple[float, float]:
    members = cluster(n, 0)
    samples = []
    for epoch in range(repeat):
        start = time.perf_counter()
        build_table(members, epoch, config)
        samples.append(time.perf_counter() - start)
    return min(samples), statistics.median(samples)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m partitioning.bench", description=__doc__)
    defaults = PlacementConfig()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--vnodes", type=int, default=defaults.virtual_nodes)
    parser.add_argument("--load-factor", type=float, default=defaults.load_factor)
    parser.add_argument("--backups", type=int, default=defaults.backups)
    parser.add_argument("--plain", action="store_true", help="also show plain consistent hashing")
    args = parser.parse_args(argv)
    config = PlacementConfig(
        backups=args.backups, virtual_nodes=args.vnodes, load_factor=args.load_factor
    )
    print(
        f"partitions={config.partition_count} backups={config.backups} "
        f"vnodes={config.virtual_nodes} load_factor={config.load_factor} trials={args.trials}"
    )
    print(f"targets: balance <= {BALANCE_TARGET}, movement <= {MOVEMENT_TARGET}x ideal")
    report("bounded loads (grid's placement)", place, config, args.trials)
    if args.plain:
        report("plain uhashring walk (baseline, not used)", place_plain, config, args.trials)
    best, median = timing(config)
    print(
        f"\nbuild_table N=50 P={config.partition_count}: best {best * 1e3:.1f} ms, "
        f"median {median * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
