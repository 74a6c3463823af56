"""The catalogue: what each workload compares, and the target its ratio must reach.

Targets are fixed here, next to the workloads, so the table, the JSON and
docs/benchmarks.md all quote the same numbers: issue 12's. A target is a floor on
grid ops/s divided by reference ops/s, or for the sequential workloads a ceiling on
grid p50 divided by reference p50 (a single caller's latency is what they measure);
None means "report only".
"""

from __future__ import annotations

from dataclasses import dataclass

BATCH = 64
BULK = 1000
CONCURRENCY = 64
VALUE_BYTES = 100
N_KEYS = 10_240


@dataclass(frozen=True)
class Spec:
    name: str
    """What --only takes."""
    title: str
    reference: str
    target: float | None
    per_batch: bool = False
    """True when one latency sample is one batch of BATCH keys (ops/s still counts keys)."""
    network: bool = True
    """False for the in-process workload, which needs no redis-server."""
    p50_max: float | None = None
    """Ceiling on grid p50 / reference p50 (None: no latency target)."""


SPECS: tuple[Spec, ...] = (
    Spec("get", "seq get (Client)", "GET", None, p50_max=1.2),
    Spec("put", "seq put (Client)", "SET", None, p50_max=1.2),
    Spec("get_many", f"get_many {BATCH}", f"pipeline {BATCH} GET", 1.5, per_batch=True),
    Spec("put_many", f"put_many {BATCH}", f"pipeline {BATCH} SET", 1.5, per_batch=True),
    Spec("bulk", f"put_many {BULK}", f"MSET {BULK}", 0.5, per_batch=True),
    Spec("async", f"async get x{CONCURRENCY}", f"redis.asyncio x{CONCURRENCY}", 3.0),
    Spec("embedded", "embedded get", "TTLCache+unpackb", 1.0, network=False),
)
BY_NAME = {s.name: s for s in SPECS}


def select(only: list[str] | None) -> list[Spec]:
    """The specs named by --only (comma or repeated flags), in catalogue order."""
    if not only:
        return list(SPECS)
    names = {n.strip() for item in only for n in item.split(",") if n.strip()}
    unknown = names - BY_NAME.keys()
    if unknown:
        raise ValueError(
            f"unknown workload(s) {', '.join(sorted(unknown))}; choose from {', '.join(BY_NAME)}"
        )
    return [s for s in SPECS if s.name in names]


def bench_keys(n: int = N_KEYS) -> list[str]:
    return [f"bench:{i:06d}" for i in range(n)]


def bench_value() -> tuple[bytes, bytes]:
    """A value and its msgpack encoding, which is VALUE_BYTES long: what both servers store."""
    import msgpack

    raw = bytes(range(256))[: VALUE_BYTES - 2]  # bin 8: two header bytes
    blob = msgpack.packb(raw, use_bin_type=True)
    assert len(blob) == VALUE_BYTES
    return raw, blob


def batches(keys: list[str], size: int = BATCH) -> list[list[str]]:
    return [keys[j : j + size] for j in range(0, len(keys) - size + 1, size)]
