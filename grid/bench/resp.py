"""redis-benchmark against grid's RESP front end and against redis-server, side by side.

    python -m grid.bench.resp [--members 1] [--trials 3] [-n 200000] [-P 16]

Runs `redis-benchmark -t set,get -n N -P P -q` against a member started with
`--resp-port` (and, with --members 3, against the first member of a three-member
cluster, which forwards what it does not own) and against a memory-only
redis-server, alternating trials so that drift of the machine hits both sides
alike, and prints the best and median requests per second of each and the ratio.
The figures in docs/benchmarks.md ("RESP (issue 15)") come from this.

    python -m grid.bench.resp --in-process 1000 --only get

feeds 1000 reads of 16 pipelined GETs (or SETs) to a RESP connection in this
process (a real GridService and store, no sockets) and prints the CPU time per
command: the member's own cost, without the event loop's reads and writes. Run it
under `valgrind --tool=callgrind` twice with different counts for instructions
per command, a figure this machine's noise does not move.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import tempfile
import time

from grid.bench import inprocess
from grid.bench.redis_side import RedisServer, find_redis_server
from grid.harness.cluster import LocalCluster, migration_state


def run_benchmark(binary: str, address: str, n: int, pipeline: int) -> dict[str, float]:
    """One redis-benchmark run: requests per second of SET and GET."""
    host, port = address.rsplit(":", 1)
    out = subprocess.run(
        [binary, "-h", host, "-p", port, "-t", "set,get", "-n", str(n), "-P", str(pipeline), "-q"],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout  # fmt: skip
    return {k: float(v) for k, v in re.findall(r"(SET|GET): ([\d.]+) requests per second", out)}


def in_process(reads: int, only: str) -> None:
    from grid.frontends.resp.server import RespServer

    def request(*args: bytes) -> bytes:
        return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)

    keys = [b"key:%012d" % i for i in range(16)]
    sets = b"".join(request(b"SET", k, b"xxx") for k in keys)
    gets = b"".join(request(b"GET", k) for k in keys)
    tests = [
        (name, data, 16) for name, data in (("set", sets), ("get", gets)) if only in ("", name)
    ]
    inprocess.run(RespServer, tests, reads, prime=sets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1, help="grid members [1]")
    parser.add_argument("--trials", type=int, default=3, help="trials per side [3]")
    parser.add_argument("-n", type=int, default=200_000, help="requests per test [200000]")
    parser.add_argument("-P", type=int, default=16, help="pipelined requests [16]")
    parser.add_argument("--in-process", type=int, metavar="READS", help="see the module doc")
    parser.add_argument("--only", choices=("get", "set"), default="", help="with --in-process")
    args = parser.parse_args(argv)
    if args.in_process:
        in_process(args.in_process, args.only)
        return 0
    bench = shutil.which("redis-benchmark")
    server = find_redis_server()
    if bench is None or server is None:
        raise SystemExit(
            "needs redis-benchmark and redis-server (Debian: redis-tools, redis-server)"
        )
    cluster = LocalCluster(args.members, resp=True, log_dir=tempfile.mkdtemp(prefix="grid-resp-"))
    redis = RedisServer(server)
    results: dict[str, dict[str, list[float]]] = {"grid": {}, "redis": {}}
    try:
        cluster.start()
        deadline = time.monotonic() + 60
        while migration_state(cluster.addresses) != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.2)  # until every partition has its owner (else -TRYAGAIN)
        redis.start()
        sides = {"grid": cluster.members[0].resp_address, "redis": f"127.0.0.1:{redis.port}"}
        for _ in range(args.trials):
            for side, address in sides.items():
                for test, rps in run_benchmark(bench, address, args.n, args.P).items():
                    results[side].setdefault(test, []).append(rps)
    finally:
        redis.stop()
        cluster.stop()
    cmd = f"redis-benchmark -t set,get -n {args.n} -P {args.P} -q"
    print(f"{cmd}; grid: {args.members} member(s), {args.trials} trials each, alternating")
    print("| test | grid best | grid median | redis best | redis median | grid / redis (median) |")
    print("|---|---|---|---|---|---|")
    for test in ("SET", "GET"):
        g, r = results["grid"].get(test, [0.0]), results["redis"].get(test, [0.0])
        ratio = statistics.median(g) / statistics.median(r) if statistics.median(r) else 0.0
        print(f"| {test} | {max(g):,.0f} | {statistics.median(g):,.0f} | {max(r):,.0f} | "
              f"{statistics.median(r):,.0f} | {ratio:.2f}x |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
