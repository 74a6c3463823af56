"""`python -m grid.bench.nearcache`: a near cache's hits, staleness and repair, measured.

Three member processes on loopback, two blocking clients connected to different
members: `near` with a near cache on the map, `writer` without.

1. **Hits.** `near` warmed with `--keys` keys; one thread `get`s random keys for
   `--seconds` (every one a hit): ops/s, p50/p99 of one call (timed with
   perf_counter_ns around it, which adds about 0.1 us). The same gets without a
   near cache (a round trip each) for scale.
2. **Staleness.** `--writes` times: `writer.put(k, i)` returns (the write is
   acknowledged), then `near.get(k)` is polled (0.1 ms apart) until it returns i:
   the time from the acknowledgement to the first fresh read, p50/p99/max.
3. **Repair.** A member other than `near`'s is stopped (SIGSTOP: its connection
   stays open, nothing says it is gone) and `near`'s partitions there are watched:
   the time until none of them is served from the near cache any more (the
   reconciliation probe went unanswered). Then SIGCONT, and a kill -9 of it: the
   time until its partitions are dropped (the connection broke).

Every member process is stopped however the run ends (grid.bench.main.run_guarded).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grid
from grid.bench.main import run_guarded
from grid.bench.stats import percentile
from grid.cli.status import wide_console
from grid.harness.cluster import LocalCluster, wait_settled
from partitioning import partition_of

MAP = "nearcache"


@dataclass
class Settings:
    keys: int = 10_000
    seconds: float = 3.0
    writes: int = 500
    reconcile_interval: float = 1.0


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout}s")
        time.sleep(0.0005)


def timed_gets(m: grid.Map, keys: list[str], seconds: float) -> tuple[float, list[int]]:
    """ops/s and each call's ns, for random gets of `keys` during `seconds`."""
    lat: list[int] = []
    clock = time.perf_counter_ns
    rnd = random.Random(7)
    picks = [rnd.choice(keys) for _ in range(4096)]
    end = time.monotonic() + seconds
    i = 0
    started = time.perf_counter()
    while time.monotonic() < end:
        for _ in range(256):
            k = picks[i & 4095]
            i += 1
            t0 = clock()
            m.get(k)
            lat.append(clock() - t0)
    return len(lat) / (time.perf_counter() - started), lat


def covered(near: grid.Map, partitions: list[int]) -> int:
    """How many of these partitions the near cache serves (their stream is live)."""
    store = near._m._near
    assert store is not None
    return sum(store.covered[p] for p in partitions)


def measure(s: Settings, files: Path, say: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cluster = LocalCluster(3, log_dir=files)
    try:
        cluster.start()
        wait_settled(cluster.addresses)
        a_member, w_member, victim = cluster.members
        with grid.Client(a_member.address, timeout=30) as a, \
                grid.Client(w_member.address, timeout=30) as w:  # fmt: skip
            config = grid.NearCache(max_entries=s.keys * 2,
                                    reconcile_interval=s.reconcile_interval)  # fmt: skip
            near = a.map(MAP, near_cache=config)
            plain = a.map(MAP)
            writer = w.map(MAP)
            keys = [f"key:{i}" for i in range(s.keys)]
            writer.put_many({k: {"v": 0, "pad": "x" * 64} for k in keys})
            wait(lambda: near.near_cache_stats()["live_partitions"] == 271, 10, "live")  # type: ignore[index]
            for k in keys:
                near.get(k)
            ops, lat = timed_gets(near, keys, s.seconds)
            out["hit"] = (ops, percentile(lat, 50) / 1000, percentile(lat, 99) / 1000)
            say(f"near-cache hit: {ops:,.0f} ops/s, p50 {out['hit'][1]:.2f} us, "
                f"p99 {out['hit'][2]:.2f} us")  # fmt: skip
            ops, lat = timed_gets(plain, keys, s.seconds)
            out["remote"] = (ops, percentile(lat, 50) / 1000, percentile(lat, 99) / 1000)
            say(f"no near cache:  {ops:,.0f} ops/s, p50 {out['remote'][1]:.1f} us, "
                f"p99 {out['remote'][2]:.1f} us")  # fmt: skip
            stale: list[int] = []
            rnd = random.Random(11)
            for i in range(1, s.writes + 1):
                k = rnd.choice(keys)
                writer.put(k, {"v": i})
                acked = time.perf_counter_ns()
                deadline = time.monotonic() + 5
                while near.get(k) != {"v": i}:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{k} still stale after 5 s")
                    time.sleep(0.0001)
                stale.append(time.perf_counter_ns() - acked)
            ms = [x / 1e6 for x in (percentile(stale, 50), percentile(stale, 99), max(stale))]
            out["staleness_ms"] = ms
            say(f"staleness after another client's write ({s.writes}): p50 {ms[0]:.2f} ms, "
                f"p99 {ms[1]:.2f} ms, max {ms[2]:.2f} ms")  # fmt: skip
            table = a.table()
            assert table is not None
            theirs = [p for p in range(271) if table.owner(p) == victim.name]
            on_victim = [k for k in keys if partition_of(k.encode(), 271) in theirs]
            for k in on_victim[:500]:
                near.get(k)
            os.kill(victim.process.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                wait(lambda: covered(near, theirs) == 0, 10 * s.reconcile_interval, "repair")
                out["stopped_s"] = time.monotonic() - stopped
            finally:
                os.kill(victim.process.pid, signal.SIGCONT)
            say(f"member stopped (SIGSTOP): its {len(theirs)} partitions dropped from the near "
                f"cache after {out['stopped_s']:.2f} s (reconcile_interval "
                f"{s.reconcile_interval:g} s)")  # fmt: skip
            wait(lambda: covered(near, theirs) == len(theirs), 30, "resubscribed")
            for k in on_victim[:500]:
                near.get(k)
            cluster.kill(victim)
            killed = time.monotonic()
            wait(lambda: covered(near, theirs) == 0, 10, "dropped after kill")
            out["killed_s"] = time.monotonic() - killed
            say(f"member killed (-9): its partitions dropped after {out['killed_s'] * 1000:.1f} ms")
            out["stats"] = near.near_cache_stats()
            say(f"near cache counters: {out['stats']}")
    finally:
        cluster.stop(grace=5)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grid.bench.nearcache", description=__doc__)
    ap.add_argument("--keys", type=int, default=Settings.keys)
    ap.add_argument("--seconds", type=float, default=Settings.seconds)
    ap.add_argument("--writes", type=int, default=Settings.writes)
    ap.add_argument("--reconcile-interval", type=float, default=Settings.reconcile_interval)
    ap.add_argument("--keep", action="store_true", help="keep the members' logs")
    args = ap.parse_args(argv)
    s = Settings(args.keys, args.seconds, args.writes, args.reconcile_interval)
    console = wide_console()
    files = Path(tempfile.mkdtemp(prefix="grid-bench-nearcache-"))
    console.print(f"near cache, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores")
    _, code = run_guarded(console, "nearcache", lambda: measure(s, files, console.print),
                          files, args.keep)  # fmt: skip
    return code or 0


if __name__ == "__main__":
    raise SystemExit(main())
