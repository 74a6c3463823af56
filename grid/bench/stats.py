"""Samples, percentiles and the per-side result of one workload.

Latencies are kept as raw nanosecond samples (not a histogram): a run holds
at most a few hundred thousand of them, and exact percentiles over the
merged samples of interleaved slices are what make two sides comparable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Sample:
    """What one side did in one measured slice."""

    ops: int
    """Operations (keys) completed; a batch of 64 counts 64."""
    elapsed_s: float
    latencies_ns: list[int] = field(default_factory=list)
    """One entry per timed unit: an operation, or a whole batch for batched workloads."""


@dataclass
class SideResult:
    """One side of a workload, merged over all its slices."""

    name: str
    ops: int = 0
    elapsed_s: float = 0.0
    latencies_ns: list[int] = field(default_factory=list)
    server_cpu_s: float | None = None
    """CPU seconds the server process (member or redis-server) spent during the slices."""
    client_cpu_s: float = 0.0
    """CPU seconds this (benchmark) process spent during the slices, all threads."""

    def add(self, sample: Sample) -> None:
        self.ops += sample.ops
        self.elapsed_s += sample.elapsed_s
        self.latencies_ns.extend(sample.latencies_ns)

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_us(self, p: float) -> float:
        return percentile(self.latencies_ns, p) / 1000.0

    @property
    def server_cpu_us_per_op(self) -> float | None:
        if self.server_cpu_s is None or not self.ops:
            return None
        return self.server_cpu_s / self.ops * 1e6

    @property
    def client_cpu_us_per_op(self) -> float | None:
        return self.client_cpu_s / self.ops * 1e6 if self.ops else None

    def to_dict(self) -> dict[str, float | int | str | None]:
        return {
            "name": self.name,
            "ops": self.ops,
            "elapsed_s": round(self.elapsed_s, 4),
            "ops_per_s": round(self.ops_per_s, 1),
            "p50_us": round(self.percentile_us(50), 2),
            "p99_us": round(self.percentile_us(99), 2),
            "samples": len(self.latencies_ns),
            "server_cpu_us_per_op": _round(self.server_cpu_us_per_op),
            "client_cpu_us_per_op": _round(self.client_cpu_us_per_op),
        }


def percentile(samples: list[int], p: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 is a latency that really happened)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return float(ordered[rank - 1])


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), None where unavailable."""
    import os

    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    # fields[0] is the state (field 3 of stat), so utime (14) and stime (15) are 11 and 12.
    return (int(fields[11]) + int(fields[12])) / ticks


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)
