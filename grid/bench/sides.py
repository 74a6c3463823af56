"""Measurement loops: run one side of a workload for a slice bounded by count AND time.

Three shapes cover every workload:
- `SyncSide`: one caller, one unit (an operation or a batch) at a time, each unit timed;
- `ConcurrentSide`: N asyncio tasks sharing one client on one loop, each op timed;
- `InProcessSide`: sub-microsecond calls, where reading the clock around every
  call would cost as much as the call; throughput comes from untimed blocks and
  the latency percentiles from every Nth block, timed op by op.

A side is built once (clients connected, data loaded) and then asked for many
short slices, so the driver can interleave the two sides of a workload.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from time import perf_counter_ns
from typing import Protocol

from grid.bench.stats import Sample


class Side(Protocol):
    name: str
    pid: int | None
    """The server process whose CPU time is charged to this side (None: in-process)."""

    def run(self, duration_s: float, max_units: int) -> Sample: ...


class SyncSide:
    """One blocking caller; `op(i)` performs unit i and returns the number of keys it moved."""

    def __init__(self, name: str, op: Callable[[int], int], pid: int | None = None) -> None:
        self.name = name
        self.pid = pid
        self._op = op
        self._i = 0

    def run(self, duration_s: float, max_units: int) -> Sample:
        op = self._op
        lat: list[int] = []
        record = lat.append
        ops = 0
        i = self._i
        start = perf_counter_ns()
        deadline = start + int(duration_s * 1e9)
        t1 = start
        for _ in range(max_units):
            t0 = perf_counter_ns()
            ops += op(i)
            t1 = perf_counter_ns()
            record(t1 - t0)
            i += 1
            if t1 >= deadline:
                break
        self._i = i
        return Sample(ops, (t1 - start) / 1e9, lat)


class ConcurrentSide:
    """`concurrency` tasks on `loop`, all calling `op(i)` (one key each) through one client."""

    def __init__(
        self,
        name: str,
        loop: asyncio.AbstractEventLoop,
        op: Callable[[int], Awaitable[object]],
        concurrency: int,
        pid: int | None = None,
    ) -> None:
        self.name = name
        self.pid = pid
        self._loop = loop
        self._op = op
        self._concurrency = concurrency
        self._i = 0

    def run(self, duration_s: float, max_units: int) -> Sample:
        return self._loop.run_until_complete(self._run(duration_s, max_units))

    async def _run(self, duration_s: float, max_units: int) -> Sample:
        op = self._op
        lat: list[int] = []
        record = lat.append
        started = perf_counter_ns()
        deadline = started + int(duration_s * 1e9)
        budget = [max_units]
        base = self._i

        async def worker(w: int) -> None:
            i = base + w * 1_000_003
            while budget[0] > 0:
                budget[0] -= 1
                t0 = perf_counter_ns()
                await op(i)
                t1 = perf_counter_ns()
                record(t1 - t0)
                i += 1
                if t1 >= deadline:
                    return

        await asyncio.gather(*(worker(w) for w in range(self._concurrency)))
        elapsed = (perf_counter_ns() - started) / 1e9
        self._i += len(lat)
        return Sample(len(lat), elapsed, lat)


class InProcessSide:
    """A call that costs about a microsecond: time blocks, sample single ops every Nth block."""

    BLOCK = 128
    SAMPLE_EVERY = 8

    def __init__(self, name: str, get: Callable[[str], object], keys: list[str]) -> None:
        self.name = name
        self.pid = None
        self._get = get
        # Whole blocks of keys, so the inner loop is a plain `for k in block`.
        n = len(keys) - len(keys) % self.BLOCK
        self._blocks = [keys[j : j + self.BLOCK] for j in range(0, n, self.BLOCK)]
        self._b = 0

    def run(self, duration_s: float, max_units: int) -> Sample:
        get = self._get
        blocks = self._blocks
        lat: list[int] = []
        record = lat.append
        ops = 0
        b = self._b
        start = perf_counter_ns()
        deadline = start + int(duration_s * 1e9)
        now = start
        while ops < max_units and now < deadline:
            block = blocks[b % len(blocks)]
            if b % self.SAMPLE_EVERY == 0:
                for k in block:
                    t0 = perf_counter_ns()
                    get(k)
                    record(perf_counter_ns() - t0)
            else:
                for k in block:
                    get(k)
            ops += len(block)
            b += 1
            now = perf_counter_ns()
        self._b = b
        return Sample(ops, (now - start) / 1e9, lat)
