"""`python -m grid.bench.tls`: the same workloads against a plain member and a secured one.

The secured member serves TLS with a CA (mutual TLS: the client presents a certificate)
and an auth_token, with certificates made on the spot (grid/harness/certs.py). Both
members run at once on loopback, and the workloads alternate between them slice by
slice, so the machine's noise falls on both alike. Per workload: ops/s (keys), p50 and
p99 latency of a call, and the secured/plain ratio of ops/s (issue 17's target:
batched at least 0.8x). redis-server's TLS is not the reference here: Debian's build
has it, but a fair comparison would need redis-py with TLS too; noted in
docs/benchmarks.md.

Workloads, sync Client, 100-byte values: seq get and seq put (one key a call),
get_many and put_many of 64 keys.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

import grid
from grid.bench.stats import Sample, SideResult
from grid.harness.certs import Authority
from grid.harness.cluster import LocalCluster

TOKEN = "bench-token"
VALUE = b"v" * 100
KEYS = [f"key-{i:06d}" for i in range(10_000)]


def workloads(m: grid.Map) -> dict[str, tuple[int, Callable[[int], None]]]:
    """name -> (keys per call, call i)."""
    batches = [KEYS[i : i + 64] for i in range(0, len(KEYS), 64)]
    items = [{k: VALUE for k in b} for b in batches]
    return {
        "seq get": (1, lambda i: m.get(KEYS[i % len(KEYS)])),
        "seq put": (1, lambda i: m.put(KEYS[i % len(KEYS)], VALUE)),
        "get_many 64": (64, lambda i: m.get_many(batches[i % len(batches)])),
        "put_many 64": (64, lambda i: m.put_many(items[i % len(items)])),
    }


def slice_of(call: Callable[[int], None], per_call: int, calls: int) -> Sample:
    lat = []
    start = time.perf_counter()
    for i in range(calls):
        t = time.perf_counter_ns()
        call(i)
        lat.append(time.perf_counter_ns() - t)
    return Sample(calls * per_call, time.perf_counter() - start, lat)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=400, help="calls per slice [%(default)s]")
    args = ap.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="grid-bench-tls-"))
    ca = Authority(folder / "ca", "bench CA")
    member, client = ca.issue("member"), ca.issue("client")
    creds = grpc.ssl_channel_credentials(
        Path(ca.ca).read_bytes(), Path(client.key).read_bytes(), Path(client.cert).read_bytes()
    )
    secured_args = ["--tls-cert", member.cert, "--tls-key", member.key, "--tls-ca", ca.ca,
                    "--auth-token", TOKEN]  # fmt: skip
    plain = LocalCluster(1, log_dir=folder / "plain-logs")
    secured = LocalCluster(1, member_args=secured_args, log_dir=folder / "tls-logs",
                           health_credentials=creds)  # fmt: skip
    (folder / "plain-logs").mkdir()
    (folder / "tls-logs").mkdir()
    try:
        plain.start()
        secured.start()
        kw = {"tls_ca": ca.ca, "tls_cert": client.cert, "tls_key": client.key, "token": TOKEN}
        with (
            grid.Client(plain.addresses[0], timeout=10) as pc,
            grid.Client(secured.addresses[0], timeout=10, **kw) as sc,
        ):
            sides = {"plain": workloads(pc.map("b", codec="raw")),
                     "tls": workloads(sc.map("b", codec="raw"))}  # fmt: skip
            for side in sides.values():  # warm up: connections, the keys present
                side["put_many 64"][1](0)
                for i in range(len(KEYS) // 64 + 1):
                    side["put_many 64"][1](i)
            results = {(s, w): SideResult(s) for s in sides for w in sides[s]}
            for _ in range(args.rounds):
                for w in sides["plain"]:
                    for s in ("plain", "tls"):
                        per_call, call = sides[s][w]
                        results[(s, w)].add(slice_of(call, per_call, args.calls))
        when = time.strftime("%Y-%m-%d %H:%M")
        print(f"grid.bench.tls {when}, {args.rounds} rounds x {args.calls} calls a slice, "
              "1 member each on loopback, 100-byte values")  # fmt: skip
        print(f"{'workload':<13} {'plain ops/s':>12} {'p50 us':>8} {'p99 us':>8}   "
              f"{'TLS ops/s':>10} {'p50 us':>8} {'p99 us':>8}   {'TLS/plain':>9}")  # fmt: skip
        for w in sides["plain"]:
            p, t = results[("plain", w)], results[("tls", w)]
            print(f"{w:<13} {p.ops_per_s:>12,.0f} {p.percentile_us(50):>8.0f} "
                  f"{p.percentile_us(99):>8.0f}   {t.ops_per_s:>10,.0f} "
                  f"{t.percentile_us(50):>8.0f} {t.percentile_us(99):>8.0f}   "
                  f"{t.ops_per_s / p.ops_per_s:>8.2f}x")  # fmt: skip
    finally:
        plain.stop()
        secured.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
