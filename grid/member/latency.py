"""Batch latency on the member: a histogram per (first op, map), and the slow log.

What is timed is a batch from its arrival (decoded, on the data plane or gRPC) to its
reply being handed to the transport: the store's work, and whatever the reply waited
for (fsync under `fsync always`, sync backups, forwarded operations). That is the
member's share of what a client sees, the number an operator compares with the
client's own p99 to tell the network from the member.

Why per batch and keyed by the batch's first operation: timing every operation inside
a batch of 64 would cost more than the operations (a clock read and a dict update
each), and the SDK's batches are almost always of one kind (get_many, put_many, a
caller's single op). The key is (op code, map name); past MAX_SERIES distinct keys new
maps share the map label OTHER_MAP, so a client inventing map names cannot grow the
member's memory or the scrape without bound.

The histogram is plain lists of counts (Prometheus's default buckets from 100 µs to
10 s; a loopback get is ~50-100 µs, an fsync 0.2-10 ms), one `bisect` and one add per
batch, about half a microsecond; grid/member/metrics.py turns it into Prometheus
histograms at scrape time.

Slow log: a batch over `slow_log_ms` is logged (`slow batch`: first op, map, the key's
xxh3 hash rather than the key, which may be personal data, ops in the batch and
milliseconds), at most SLOW_LOG_PER_S a second, with the number left out said in the
next line, as Redis's SLOWLOG keeps commands over slowlog-log-slower-than.
"""

from __future__ import annotations

import time
from bisect import bisect_left

import xxhash

from grid import logs
from proto import grid_pb2 as pb

log = logs.get("grid.member.slowlog")

BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Upper bounds, seconds; one more slot counts everything above (+Inf)."""
MAX_SERIES = 256
OTHER_MAP = "(other)"
SLOW_LOG_PER_S = 10


def op_name(code: int) -> str:
    try:
        return pb.OpCode.Name(code).lower()
    except ValueError:
        return f"op{code}"


class Latencies:
    """Counts per bucket, sums and totals per (op code, map); and the slow log."""

    def __init__(self, slow_log_ms: float) -> None:
        self.counts: dict[tuple[int, str], list[int]] = {}
        self.sums: dict[tuple[int, str], float] = {}
        self.slow_s = slow_log_ms / 1000.0
        self.slow_logged = 0
        self._slow_window = 0.0  # the second the last slow lines were counted in
        self._slow_in_window = 0
        self._slow_left_out = 0

    def observe(self, request: pb.BatchRequest, seconds: float) -> None:
        ops = request.ops
        if not ops:
            return
        first = ops[0]
        if self.count(first.code, first.map, seconds):
            self.slow(first.code, first.map, first.key, len(ops), seconds)

    def count(self, code: int, map_name: str, seconds: float) -> bool:
        """Count a batch by its first op's code and map; True if it was slow (the caller
        then logs it with `slow`)."""
        key = (code, map_name)
        counts = self.counts.get(key)
        if counts is None:
            key, counts = self._series(key)
        counts[bisect_left(BUCKETS_S, seconds)] += 1
        self.sums[key] = self.sums.get(key, 0.0) + seconds
        return bool(self.slow_s) and seconds > self.slow_s

    def _series(self, key: tuple[int, str]) -> tuple[tuple[int, str], list[int]]:
        """The series for a key seen for the first time: its own, or past MAX_SERIES the
        op's OTHER_MAP series."""
        if len(self.counts) >= MAX_SERIES:
            key = (key[0], OTHER_MAP)
            found = self.counts.get(key)
            if found is not None:
                return key, found
        counts = self.counts[key] = [0] * (len(BUCKETS_S) + 1)
        return key, counts

    def slow(self, code: int, map_name: str, key: bytes, n: int, seconds: float) -> None:
        now = time.monotonic()
        if now - self._slow_window >= 1.0:
            if self._slow_left_out:
                log.warning("slow batches not logged", count=self._slow_left_out)
            self._slow_window, self._slow_in_window, self._slow_left_out = now, 0, 0
        if self._slow_in_window >= SLOW_LOG_PER_S:
            self._slow_left_out += 1
            return
        self._slow_in_window += 1
        self.slow_logged += 1
        log.warning(
            "slow batch",
            op=op_name(code),
            map=map_name,
            key_hash=f"{xxhash.xxh3_64_intdigest(key):016x}" if key else "",
            ops=n,
            ms=round(seconds * 1000, 2),
        )
