"""python -m persistence.bench: append and recovery throughput of the persistence layer.

Append: 64-record batches of 100-byte values over 16 partitions, for each fsync policy.
`always` is measured twice: one fsync per batch (a lone client) and group commit of 16
batches per fsync (the runtime under load).  Latency is per batch, append + its share
of the sync the client waits for.  Recovery: --records records (default 1M) of 100-byte
values under distinct keys, loaded cold-process but warm page cache (as Redis's AOF
load is usually measured), compared with `redis-server` if --redis-aof-s is given.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path

from persistence import Config, FsyncPolicy, Log, Op

VALUE = b"v" * 100
BATCH = 64
PARTS = 16


def _batches(n_records: int, seq0: dict[int, int]) -> list[tuple[int, list[tuple]]]:
    out = []
    i = 0
    while i < n_records:
        p = (i // BATCH) % PARTS
        recs = []
        for _ in range(min(BATCH, n_records - i)):
            seq0[p] += 1
            recs.append((seq0[p], Op.PUT, "bench", b"key:%d" % i, VALUE, seq0[p], 1, 0, 0))
            i += 1
        out.append((p, recs))
    return out


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def bench_append(
    root: Path, policy: FsyncPolicy, n: int, group: int, pool: Executor | None = None
) -> dict[str, float]:
    d = root / f"append-{policy}-{group}-{pool is not None}"
    batches = _batches(n, dict.fromkeys(range(PARTS), 0))
    lat: list[float] = []
    with Log.open(Config(d, fsync=policy)) as log:
        t0 = time.perf_counter()
        for g in range(0, len(batches), group):
            ts = time.perf_counter()
            for p, recs in batches[g : g + group]:
                log.append(p, recs)
            if log.sync_due():
                log.sync(pool)
            lat.append(time.perf_counter() - ts)
        elapsed = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in d.rglob("seg-*"))
    shutil.rmtree(d)
    return {
        "records_s": n / elapsed,
        "mb_s": size / elapsed / 1e6,
        "p50_ms": statistics.median(lat) * 1e3,
        "p99_ms": _pct(lat, 0.99) * 1e3,
    }


def bench_recovery(root: Path, n: int) -> dict[str, float]:
    d = root / "recovery"
    batches = _batches(n, dict.fromkeys(range(PARTS), 0))
    with Log.open(Config(d, fsync=FsyncPolicy.NEVER)) as log:
        for p, recs in batches:
            log.append(p, recs)
    size = sum(f.stat().st_size for f in d.rglob("seg-*"))
    log = Log.open(Config(d))
    t0 = time.perf_counter()
    states, report = log.recover(0)
    elapsed = time.perf_counter() - t0
    log.close()
    keys = sum(len(m) for s in states.values() for m in s.maps.values())
    assert keys == n and not report.problems, (keys, report.problems)
    shutil.rmtree(d)
    return {"records_s": n / elapsed, "mb_s": size / elapsed / 1e6, "seconds": elapsed}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000, help="records to recover")
    ap.add_argument("--append-records", type=int, default=200_000)
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    ap.add_argument("--redis-aof-s", type=float, default=None, help="Redis AOF load time")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="persist-bench-", dir=args.dir))
    try:
        n = args.append_records
        rows = [
            ("never", FsyncPolicy.NEVER, n, 1),
            ("interval (1 s)", FsyncPolicy.INTERVAL, n, 1),
            ("always, fsync per batch", FsyncPolicy.ALWAYS, min(n, 64_000), 1),
            ("always, 16 batches/fsync", FsyncPolicy.ALWAYS, n, 16),
            ("always, 16/fsync, 8 threads", FsyncPolicy.ALWAYS, n, 16, ThreadPoolExecutor(8)),
        ]
        print(f"append: {BATCH}-record batches, 100-byte values, {PARTS} partitions")
        print(f"{'policy':28} {'records/s':>11} {'MB/s':>7} {'p50 ms':>8} {'p99 ms':>8}")
        for name, policy, count, group, *pool in rows:
            r = bench_append(root, policy, count, group, *pool)
            print(
                f"{name:28} {r['records_s']:11,.0f} {r['mb_s']:7.1f} "
                f"{r['p50_ms']:8.3f} {r['p99_ms']:8.3f}"
            )
        r = bench_recovery(root, args.records)
        print(
            f"recovery of {args.records:,} records: {r['seconds']:.2f} s, "
            f"{r['records_s']:,.0f} records/s, {r['mb_s']:.1f} MB/s"
        )
        if args.redis_aof_s:
            redis_rate = args.records / args.redis_aof_s
            ratio = r["records_s"] / redis_rate
            print(f"redis AOF load: {redis_rate:,.0f} records/s; ratio {ratio:.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
