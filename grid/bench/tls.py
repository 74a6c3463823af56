"""`python -m grid.bench.tls`: the same workloads against a plain member and a secured one.

The secured member serves TLS with a CA (mutual TLS: the client presents a certificate)
and an auth_token, with certificates made on the spot (grid/harness/certs.py). Both
members run at once on loopback, and the workloads alternate between them slice by
slice, so the machine's noise falls on both alike. Per workload: ops/s (keys), p50 and
p99 latency of a call, and the secured/plain ratio of ops/s (issue 17's target:
batched at least 0.8x). The reference, where redis-server is installed (Debian's build
has TLS): one redis-server serving a plain port and a TLS port with the same CA and
client certificate, driven by redis-py plain and with TLS through the same workloads
(pipelines of 64 GET/SET for the batches), so its TLS/plain ratio stands beside grid's.

Workloads, sync Client, 100-byte values: seq get and seq put (one key a call),
get_many and put_many of 64 keys.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

import grid
from grid.bench.redis_side import find_redis_server
from grid.bench.stats import Sample, SideResult
from grid.harness.certs import Authority
from grid.harness.cluster import LocalCluster, free_port

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


def redis_workloads(r: Any) -> dict[str, tuple[int, Callable[[int], None]]]:
    """The same shapes on redis-py: a pipeline of 64 for a batch."""
    batches = [KEYS[i : i + 64] for i in range(0, len(KEYS), 64)]

    def pipe(i: int, put: bool) -> None:
        p = r.pipeline(transaction=False)
        for k in batches[i % len(batches)]:
            p.set(k, VALUE) if put else p.get(k)
        p.execute()

    return {
        "seq get": (1, lambda i: r.get(KEYS[i % len(KEYS)])),
        "seq put": (1, lambda i: r.set(KEYS[i % len(KEYS)], VALUE)),
        "get_many 64": (64, lambda i: pipe(i, False)),
        "put_many 64": (64, lambda i: pipe(i, True)),
    }


@contextlib.contextmanager
def redis_pair(ca: Authority, member: Any, client: Any) -> Iterator[dict[str, Any] | None]:
    """redis-py clients of one redis-server, plain and TLS (None: no redis-server)."""
    binary = find_redis_server()
    if binary is None:
        yield None
        return
    import redis

    plain_port, tls_port = free_port(), free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(plain_port), "--tls-port", str(tls_port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--tls-cert-file", member.cert,
         "--tls-key-file", member.key, "--tls-ca-cert-file", ca.ca],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    sides = {
        "plain": redis.Redis("127.0.0.1", plain_port),
        "tls": redis.Redis("127.0.0.1", tls_port, ssl=True, ssl_ca_certs=ca.ca,
                           ssl_certfile=client.cert, ssl_keyfile=client.key),
    }  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                for r in sides.values():
                    r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server with TLS did not start") from None
                time.sleep(0.05)
        yield sides
    finally:
        for r in sides.values():
            r.close()
        proc.terminate()
        proc.wait(10)


def row(workload: str, plain: SideResult, tls: SideResult) -> str:
    """One line of the table: both sides' ops/s, p50 and p99, and TLS / plain."""
    return (f"{workload:<13} {plain.ops_per_s:>12,.0f} {plain.percentile_us(50):>8.0f} "
            f"{plain.percentile_us(99):>8.0f}   {tls.ops_per_s:>10,.0f} "
            f"{tls.percentile_us(50):>8.0f} {tls.percentile_us(99):>8.0f}   "
            f"{tls.ops_per_s / plain.ops_per_s:>8.2f}x")  # fmt: skip


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
            with redis_pair(ca, member, client) as reference:
                if reference is not None:
                    sides["redis plain"] = redis_workloads(reference["plain"])
                    sides["redis tls"] = redis_workloads(reference["tls"])
                    sides["redis plain"]["put_many 64"][1](0)  # connect, warm up
                    sides["redis tls"]["put_many 64"][1](0)
                results = {(s, w): SideResult(s) for s in sides for w in sides[s]}
                for _ in range(args.rounds):
                    for w in sides["plain"]:
                        for s in sides:
                            per_call, call = sides[s][w]
                            results[(s, w)].add(slice_of(call, per_call, args.calls))
        when = time.strftime("%Y-%m-%d %H:%M")
        print(f"grid.bench.tls {when}, {args.rounds} rounds x {args.calls} calls a slice, "
              "1 member each on loopback, 100-byte values")  # fmt: skip
        print(f"{'workload':<13} {'plain ops/s':>12} {'p50 us':>8} {'p99 us':>8}   "
              f"{'TLS ops/s':>10} {'p50 us':>8} {'p99 us':>8}   {'TLS/plain':>9}")  # fmt: skip
        for w in sides["plain"]:
            print(row(w, results[("plain", w)], results[("tls", w)]))
        if "redis tls" not in sides:
            print("no redis-server here: no Redis TLS reference")
        else:
            print("reference: redis-server and redis-py, the same workloads (pipelines of 64)")
            for w in sides["plain"]:
                print(row(w, results[("redis plain", w)], results[("redis tls", w)]))
    finally:
        plain.stop()
        secured.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
