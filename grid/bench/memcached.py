"""memcslap (libmemcached) against grid's memcached front end and against memcached.

    python -m grid.bench.memcached [--trials 3] [-c 4] [-e 10000] [--members 1]

Runs `memcslap --test=set` then `--test=get` (each of `-c` threads doing `-e`
requests, one at a time: memcslap does not pipeline) against a member started with
`--memcached-port` and against a memcached started here (64 MiB, 4 threads),
alternating trials so that drift of the machine hits both sides alike, and prints
the best and median operations per second of each and the ratio. The figures in
docs/benchmarks.md ("memcached (issue 15)") come from this.

    python -m grid.bench.memcached --in-process 1000 --only get [-P 16]

feeds 1000 reads of P pipelined gets (or sets of 3 bytes) to a memcached
connection in this process (grid/bench/inprocess.py) and prints the CPU time per
command; under callgrind at two counts, the instructions per command.
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
from grid.harness.cluster import LocalCluster, free_port, migration_state

_LINE = re.compile(r"Time to (set|get)\s+(\d+) keys by\s+\d+ threads:\s+([\d.]+) seconds")


def run_memcslap(binary: str, address: str, test: str, threads: int, n: int) -> float:
    """One memcslap run: operations per second of `test` (set or get)."""
    out = subprocess.run(
        [binary, f"--servers={address}", f"--test={test}", f"--concurrency={threads}",
         f"--execute-number={n}"],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout  # fmt: skip
    for kind, keys, seconds in _LINE.findall(out):
        if kind == test:
            return int(keys) / float(seconds)
    raise RuntimeError(f"memcslap printed no '{test}' time:\n{out}")


def in_process(reads: int, only: str, pipeline: int) -> None:
    from grid.frontends.memcached.server import MemcachedServer

    keys = [b"key:%012d" % i for i in range(pipeline)]
    sets = b"".join(b"set %b 0 0 3\r\nxxx\r\n" % k for k in keys)
    gets = b"".join(b"get %b\r\n" % k for k in keys)
    tests = [(name, data, pipeline) for name, data in (("set", sets), ("get", gets))
             if only in ("", name)]  # fmt: skip
    inprocess.run(MemcachedServer, tests, reads, prime=sets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1, help="grid members [1]")
    parser.add_argument("--trials", type=int, default=3, help="trials per side [3]")
    parser.add_argument("-c", type=int, default=4, help="memcslap threads [4]")
    parser.add_argument("-e", type=int, default=10_000, help="requests per thread [10000]")
    parser.add_argument("--in-process", type=int, metavar="READS", help="see the module doc")
    parser.add_argument("--only", choices=("get", "set"), default="", help="with --in-process")
    parser.add_argument("-P", type=int, default=16, help="pipelined, with --in-process [16]")
    args = parser.parse_args(argv)
    if args.in_process:
        in_process(args.in_process, args.only, args.P)
        return 0
    slap, server = shutil.which("memcslap"), shutil.which("memcached")
    if slap is None or server is None:
        raise SystemExit("needs memcslap and memcached (Debian: libmemcached-tools, memcached)")
    cluster = LocalCluster(
        args.members, memcached=True, log_dir=tempfile.mkdtemp(prefix="grid-memcached-")
    )
    port = free_port()
    real = subprocess.Popen(
        [server, "-p", str(port), "-l", "127.0.0.1", "-U", "0", "-u", "nobody", "-m", "64"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results: dict[str, dict[str, list[float]]] = {"grid": {}, "memcached": {}}
    try:
        cluster.start()
        deadline = time.monotonic() + 60
        while migration_state(cluster.addresses) != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        sides = {"grid": cluster.members[0].memcached_address, "memcached": f"127.0.0.1:{port}"}
        for _ in range(args.trials):
            for side, address in sides.items():
                for test in ("set", "get"):
                    rate = run_memcslap(slap, address, test, args.c, args.e)
                    results[side].setdefault(test, []).append(rate)
    finally:
        cluster.stop()
        real.terminate()
        real.wait(10)
    print(f"memcslap -c {args.c} -e {args.e}, {args.trials} trials, {args.members} member(s)")
    print(f"{'test':6} {'grid median (best)':>26} {'memcached median (best)':>28} {'ratio':>7}")
    for test in ("set", "get"):
        g, m = results["grid"][test], results["memcached"][test]
        ratio = statistics.median(g) / statistics.median(m)
        print(
            f"{test:6} {statistics.median(g):>15,.0f} ({max(g):>8,.0f}) "
            f"{statistics.median(m):>17,.0f} ({max(m):>8,.0f}) {ratio:>6.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
