"""`python -m grid.bench.memory`: bytes per entry against Redis, and the store's speed.

Memory: for each value size (10, 100, 1,000 bytes by default) it loads the same
N keys (b"key:%08d") with the same random values into

- a real redis-server on loopback (grid/bench/redis_side.py), memory only,
  loaded by pipelined SETs; its growth is the RSS of the server process (and
  INFO's used_memory, which leaves out allocator slack, for reference);
- a grid record store in a fresh child interpreter, loaded by `Store.write`
  as the member's executor does; its growth is the RSS of that process.

Why a child process and not a member behind its client: what a member keeps
per entry is exactly what the store keeps (the key and value bytes a request
decoded become the dict's key and the record). A member adds fixed costs
(event loop, gRPC, buffers) that do not grow with entries, and transient
garbage from the network path that the RSS would show as noise. A fresh
interpreter does nothing but load, so the growth is the entries' and nothing
else. Both sides report growth: entries / (RSS after - RSS before).

Speed: in-process ops/s of the store (100k keys of 100 bytes preloaded, random
keys, one call per op; unbounded, and bounded with LRU, where every read records
its time): `put`/`get` (the Entry API, on both checkouts) and
`write`/`read` (the record API the member and embedded maps call). With
`--baseline DIR` the same probe also runs against another checkout (e.g. the
main branch) in its own child interpreter, for a before/after in one run; the
two sides' runs alternate, and each op is measured in slices taken in turn, so
both see the same noise on a shared machine. `--callgrind N` counts instructions
per op under valgrind instead, which no load moves (but which leaves out cache
misses, where a record layout differs most).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from random import Random

MEMORY_PROBE = r"""
import gc, json, os, sys
from random import Random
from grid.config import Config
from grid.store import Store

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

n, size = int(sys.argv[1]), int(sys.argv[2])
store = Store(Config(), member_id=1, rng=Random(1))
m = store.map("bench")
put = getattr(store, "write", store.put)
rand = Random(2).randbytes
now = store.clock()
gc.collect()
before = rss()
for i in range(n):
    put(m, b"key:%08d" % i, rand(size), now)
gc.collect()
print(json.dumps({"growth": rss() - before, "estimate": store.used}))
"""

OPS_PROBE = r"""
import json, statistics, sys, time
from random import Random
from grid.config import Config
from grid.store import Store

seconds, max_memory = float(sys.argv[1]), int(sys.argv[2])
store = Store(Config(max_memory=max_memory), member_id=1, rng=Random(1))
m = store.map("bench")
keys = [b"key:%08d" % i for i in range(100_000)]
value = Random(2).randbytes(100)
now = store.clock()
for k in keys:
    store.put(m, k, value, now)
order = [keys[i] for i in Random(3).choices(range(len(keys)), k=20_000)]

def rate(op, seconds):
    done, start = 0, time.perf_counter()
    while True:
        for k in order:
            op(m, k, now)
        done += len(order)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed

ops = {}
for name in ("put", "write"):
    fn = getattr(store, name, None)
    if fn is not None:
        ops[name] = lambda m, k, now, fn=fn: fn(m, k, value, now)
for name in ("get", "read"):
    fn = getattr(store, name, None)
    if fn is not None:
        ops[name] = fn
samples = {name: [] for name in ops}
for _ in range(5):  # slices of every op in turn: all of them see the same noise
    for name, op in ops.items():
        samples[name].append(rate(op, seconds / 5))
print(json.dumps({name: statistics.median(v) for name, v in samples.items()}))
"""

COUNT_PROBE = r"""
import sys
from random import Random
from grid.config import Config
from grid.store import Store

op, n, max_memory = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = Store(Config(max_memory=max_memory), member_id=1, rng=Random(1))
m = store.map("bench")
keys = [b"key:%08d" % i for i in range(20_000)]
value = Random(2).randbytes(100)
now = 1_800_000_000_000
for k in keys:
    store.put(m, k, value, now)
order = [keys[i] for i in Random(3).choices(range(len(keys)), k=n)]
if op != "dry":
    fn = getattr(store, op)
    if op in ("put", "write"):
        for k in order:
            fn(m, k, value, now)
    else:
        for k in order:
            fn(m, k, now)
"""

KEY = "key:%08d"
BATCH = 1_000


HERE = str(Path(__file__).resolve().parents[2])  # this checkout


def child(code: str, args: list[str], checkout: str = HERE) -> dict[str, float]:
    """Run a probe in a fresh interpreter that imports grid from `checkout`."""
    env = dict(os.environ, PYTHONPATH=checkout)
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
        env=env,
        cwd=checkout,
    )
    return dict(json.loads(out.stdout))


def instructions(checkout: str, op: str, n: int, max_memory: int) -> int:
    """Instructions callgrind counts for the count probe (setup included)."""
    out = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            COUNT_PROBE,
            op,
            str(n),
            str(max_memory),
        ],
        capture_output=True,
        text=True,
        timeout=3600,
        check=True,
        env=dict(os.environ, PYTHONPATH=checkout),
        cwd=checkout,
    )
    for line in out.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    raise RuntimeError(f"no instruction count from callgrind: {out.stderr[-500:]}")


def callgrind(checkouts: list[str], n: int) -> None:
    """Instructions per op, (probe - probe without the ops) / n: no load moves them."""
    print(f"\nStore instructions per op under callgrind ({n:,} random keys of 20k, 100 B)")
    for label, max_memory in (("unbounded (default)", 0), ("max_memory 4GB, lru", 4 << 30)):
        print(f" {label}")
        for checkout in checkouts:
            dry = instructions(checkout, "dry", n, max_memory)
            per_op = {}
            for op in ("get", "put", "read", "write"):
                try:
                    per_op[op] = (instructions(checkout, op, n, max_memory) - dry) // n
                except subprocess.CalledProcessError:
                    continue  # (an op this checkout does not have)
            print(f"  {checkout}: " + "  ".join(f"{k} {v:,}" for k, v in per_op.items()))


def proc_rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def redis_growth(binary: str, n: int, size: int) -> dict[str, float]:
    import redis

    from grid.bench.redis_side import running_redis

    with running_redis(binary) as server:
        client = redis.Redis(port=server.port)
        try:
            assert server.pid is not None
            used0 = int(client.info("memory")["used_memory"])
            rss0 = proc_rss(server.pid)
            rand = Random(2).randbytes
            for start in range(0, n, BATCH):
                pipe = client.pipeline(transaction=False)
                for i in range(start, min(n, start + BATCH)):
                    pipe.set(KEY % i, rand(size))
                pipe.execute()
            time.sleep(0.2)
            used1 = int(client.info("memory")["used_memory"])
            return {"growth": proc_rss(server.pid) - rss0, "used_memory": used1 - used0}
        finally:
            client.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m grid.bench.memory", description=__doc__)
    p.add_argument("--keys", type=int, default=1_000_000, help="entries per run [1000000]")
    p.add_argument("--sizes", default="10,100,1000", help="value sizes in bytes, comma-separated")
    p.add_argument("--no-redis", action="store_true", help="skip the Redis side")
    p.add_argument("--no-ops", action="store_true", help="skip the ops/s part")
    p.add_argument("--ops-seconds", type=float, default=2.0, help="seconds per op [2]")
    p.add_argument("--rounds", type=int, default=3, help="runs of the ops probe per side [3]")
    p.add_argument("--baseline", metavar="DIR", help="also run the ops probe on this checkout")
    p.add_argument(
        "--callgrind",
        type=int,
        metavar="N",
        help="also count instructions per op over N ops under valgrind (slow: ~1 min each)",
    )
    args = p.parse_args(argv)
    from grid.bench.redis_side import find_redis_server

    binary = None if args.no_redis else find_redis_server()
    if not args.no_redis and binary is None:
        print("redis-server not found: grid side only", file=sys.stderr)
    n = args.keys
    print(f"Entry memory: {n:,} keys ({KEY % 0!r}), bytes per entry (RSS growth / entries)")
    if args.baseline:
        print(f"(baseline: {args.baseline}, the same probe)")
    print(
        f"{'value':>6} {'baseline':>9} {'grid':>8} {'estimate':>9} {'redis':>8} {'used_mem':>9} "
        f"{'ratio':>6}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        base = "-"
        if args.baseline:
            b = child(MEMORY_PROBE, [str(n), str(size)], args.baseline)
            base = f"{b['growth'] / n:.1f}"
        g = child(MEMORY_PROBE, [str(n), str(size)])
        grid_b = g["growth"] / n
        est = g["estimate"] / n
        if binary is not None:
            r = redis_growth(binary, n, size)
            redis_b, used_b = r["growth"] / n, r["used_memory"] / n
            print(
                f"{size:>6} {base:>9} {grid_b:>8.1f} {est:>9.1f} {redis_b:>8.1f} {used_b:>9.1f} "
                f"{grid_b / redis_b:>5.2f}x"
            )
        else:
            print(f"{size:>6} {base:>9} {grid_b:>8.1f} {est:>9.1f}")
    if not args.no_ops:
        print(
            f"\nStore ops/s in-process (100k keys of 100 B, random keys; median of slices, "
            f"{args.rounds} runs per side alternating, median)"
        )
        sides = [(f"this checkout {HERE}", HERE)]
        if args.baseline:
            sides.insert(0, (f"baseline {args.baseline}", args.baseline))
        for label, max_memory in (("unbounded (default)", 0), ("max_memory 4GB, lru", 4 << 30)):
            runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in sides}
            for r in range(args.rounds):
                for name, path in sides if r % 2 == 0 else reversed(sides):
                    runs[name].append(
                        child(OPS_PROBE, [str(args.ops_seconds), str(max_memory)], path)
                    )
            print(f" {label}")
            for name, results in runs.items():
                ops = {op: statistics.median(r[op] for r in results) for op in results[0]}
                print(f"  {name}: " + "  ".join(f"{k} {v:,.0f}" for k, v in ops.items()))
    if args.callgrind:
        callgrind([*([args.baseline] if args.baseline else []), HERE], args.callgrind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
