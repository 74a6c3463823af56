"""`python -m grid.bench.apply`: what `Store.apply`, the backups' hot path, costs per record.

In-process, no network, no sink: only the store's work on a replicated change, which is
what every backup does for every write of its primaries (and what a fill, a repair and
a hand-back do per record). Records are made before the clock starts, one map, keys of
16 bytes, values of 100, spread over the default 271 partitions. Cases:

- insert: PUTs of new keys into an empty store (reserve, insert, the LWW checks
  against the clear marker and a tombstone);
- overwrite: PUTs with a newer version over every key (in place);
- stale: PUTs with an older version over every key (the check alone, then refused:
  duplicates after a re-subscribe, or a repair's losing half);
- delete: DELETEs with a newer version of every key (unlink, tombstone).

Each case runs --rounds times on a fresh store; the best round is reported in ns of
process CPU time per record (the machine is shared: CPU time leaves out the time other
processes had the core, and the best round is the least disturbed). Compare two builds
by running each in turn, in the same minute, more than once. For a count that no load
disturbs, run under `valgrind --tool=callgrind` with and without `--dry` (everything
but the measured loops) and divide the difference of instructions by the records.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

from grid.config import Config
from grid.store.store import DELETE, PUT, Store
from partitioning.keys import partition_of

MAP = "m"
VALUE = b"v" * 100
NOW = 1_800_000_000_000
BASE_TS = NOW << 16


def records(n: int, partitions: int) -> list[tuple[int, bytes]]:
    keys = [b"key-%012d" % i for i in range(n)]
    return [(partition_of(k, partitions), k) for k in keys]


def fresh_store() -> Store:
    return Store(Config(), member_id=1, clock=lambda: NOW)


def fill(store: Store, recs: list[tuple[int, bytes]], ts: int) -> None:
    apply = store.apply
    for p, k in recs:
        apply(p, PUT, MAP, k, VALUE, ts, 2, 0, 0, NOW)


def timed(run: Callable[[], None]) -> float:
    gc.collect()
    gc.disable()
    try:
        t0 = time.process_time()
        run()
        return time.process_time() - t0
    finally:
        gc.enable()


def case(name: str, recs: list[tuple[int, bytes]], dry: bool = False) -> float:
    """CPU seconds of one round of `name` over `recs` (the setup is not timed; `dry`:
    the setup alone)."""
    store = fresh_store()
    apply = store.apply
    if name != "insert":
        fill(store, recs, BASE_TS + 10)
    if name == "insert":
        ts, op, value = BASE_TS + 10, PUT, VALUE
    elif name == "overwrite":
        ts, op, value = BASE_TS + 20, PUT, VALUE
    elif name == "stale":
        ts, op, value = BASE_TS + 5, PUT, VALUE
    else:
        ts, op, value = BASE_TS + 20, DELETE, None

    def run() -> None:
        if dry:
            return
        for p, k in recs:
            apply(p, op, MAP, k, value, ts, 3, 0, 0, NOW)

    return timed(run)


CASES = ("insert", "overwrite", "stale", "delete")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1_000_000, help="records per round (1,000,000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per case, best kept (3)")
    ap.add_argument("--only", nargs="*", choices=CASES, default=list(CASES))
    ap.add_argument("--dry", action="store_true", help="the setup alone (see the doc)")
    args = ap.parse_args(argv)
    recs = records(args.n, Config().partitions)
    for name in args.only:
        best = min(case(name, recs, args.dry) for _ in range(args.rounds))
        print(f"{name:10s} {best * 1e9 / args.n:7.0f} ns/record  ({args.n:,} records)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
