"""The member's journal stays bounded: a partition written once and then idle would
keep every journal segment after its history starts, so the member snapshots the
partitions pinning the oldest segment once the journal outgrows its bound
(Durability.journal_bound), and the segment goes; a restart gives back every write."""

from __future__ import annotations

import asyncio
from pathlib import Path
from random import Random

from grid.config import Config
from grid.store import Store
from grid.store.durability import Durability
from partitioning import partition_of
from persistence.journal import JOURNAL_DIR, segment_name
from tests.store.helpers import Clock

PARTITIONS = 4


def open_store(data_dir: Path, clock: Clock) -> tuple[Store, Durability]:
    config = Config(
        partitions=PARTITIONS, data_dir=str(data_dir), fsync="never", journal_segment_mb=1
    )
    store = Store(config, member_id=1, clock=clock, rng=Random(1))
    durability = Durability(config, store, store.clock)
    durability.recover()
    return store, durability


def key_in(p: int, prefix: str) -> bytes:
    return next(
        k
        for k in (f"{prefix}{i}".encode() for i in range(10_000))
        if partition_of(k, PARTITIONS) == p
    )


def segments(data_dir: Path) -> list[str]:
    return sorted(f.name for f in (data_dir / JOURNAL_DIR).glob("jnl-*.log"))


def test_an_idle_partition_is_snapshotted_so_the_oldest_segment_goes(tmp_path: Path) -> None:
    clock = Clock()
    data = tmp_path / "data"
    store, durability = open_store(data, clock)
    idle, hot = key_in(0, "idle"), key_in(1, "hot")
    value = b"x" * 2000
    with store.lock:  # partition 0: one write, then nothing
        store.write(store.map("m"), idle, b"kept", store.clock())
        durability.flush()

    written: list[int] = []

    async def run() -> None:
        for _ in range(12):
            before = durability.log.journal_bytes()
            for i in range(300):  # 600 KB a round, overwrites of one key: 2 KB live
                with store.lock:
                    store.write(store.map("m"), hot, value + b"%d" % i, store.clock())
                    durability.flush()
            written.append(durability.log.journal_bytes() - before)
            await durability.snapshot_due()

    asyncio.run(run())
    names = segments(data)
    assert segment_name(1) not in names, names  # partition 0 no longer pins it
    # bounded: the bound, plus what two rounds write before the pinning partitions'
    # older kept snapshots are past a segment (12 rounds wrote 7 MB)
    limit = durability.journal_bound() + 2 * max(written) + (1 << 20)
    assert durability.log.journal_bytes() <= limit, (durability.log.journal_bytes(), limit)
    final = store.get(store.map("m"), hot, store.clock())
    assert final is not None
    want = (final.value, final.ts)
    asyncio.run(durability.close())
    store, durability = open_store(data, clock)
    assert store.get(store.map("m"), idle, store.clock()) is not None
    got = store.get(store.map("m"), hot, store.clock())
    assert got is not None and (got.value, got.ts) == want
    durability.log.close()
