"""A partition's snapshot written a slice at a time (grid/store/disk_snapshot.py) while
writes go on: the file holds the partition exactly as it was at the snapshot's seq, and a
restart from it (plus the log after it) gives back the state with every later write.

A real Durability on a real disk; slices of a few records, so writes (puts, overwrites,
deletes, TTLs, a clear) land between slices of the same snapshot."""

from __future__ import annotations

import asyncio
from pathlib import Path
from random import Random

import pytest

from grid.config import Config
from grid.store import Store, disk_snapshot
from grid.store.durability import Durability
from grid.store.entry import unpack
from partitioning import partition_of
from persistence.layout import partition_dir
from persistence.snapshot import load_snapshot
from tests.store.helpers import Clock

PARTITIONS = 4
P = 1
MAPS = ("a", "b")

State = dict[str, dict[bytes, tuple[object, ...]]]


def open_store(data_dir: Path, clock: Clock) -> tuple[Store, Durability]:
    config = Config(partitions=PARTITIONS, data_dir=str(data_dir), fsync="never")
    store = Store(config, member_id=1, clock=clock, rng=Random(1))
    durability = Durability(config, store, store.clock)
    durability.recover()
    return store, durability


def keys_of(p: int, n: int, prefix: str) -> list[bytes]:
    keys = (f"{prefix}{i}".encode() for i in range(100 * n))
    return [k for k in keys if partition_of(k, PARTITIONS) == p][:n]


def state(store: Store, p: int) -> State:
    """The partition as a snapshot describes it: entries, tombstones, clear markers."""
    out: State = {}
    for rmap in store.maps.values():
        m: dict[bytes, tuple[object, ...]] = {}
        for key, blob in rmap.recs[p].items():
            m[key] = unpack(blob)
        for key, (ts, member) in rmap.tombs[p].items():
            m[key] = (None, ts, member, 0, 0)
        if rmap.cleared[p][0]:
            m[b""] = (None, *rmap.cleared[p], 0, 0)
        if m:
            out[rmap.name] = m
    return out


def write_some(store: Store, durability: Durability, rng: Random, keys: list[bytes]) -> None:
    """One batch as a client's would be: a few puts, overwrites, deletes, TTLs."""
    now = store.clock()
    with store.lock:
        for _ in range(rng.randint(1, 5)):
            rmap = store.map(rng.choice(MAPS))
            key = rng.choice(keys)
            roll = rng.random()
            if roll < 0.2:
                store.delete(rmap, key, now)
            elif roll < 0.3:
                store.write(rmap, key, b"t" * rng.randint(0, 50), now, ttl_ms=3_600_000)
            else:
                store.write(rmap, key, rng.randbytes(rng.randint(0, 300)), now)
        durability.flush()


@pytest.mark.parametrize("slice_records", [1, 7, 256])
def test_snapshot_while_writes_go_on_is_the_state_at_its_seq(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slice_records: int
) -> None:
    monkeypatch.setattr(disk_snapshot, "SLICE_RECORDS", slice_records)
    monkeypatch.setattr(disk_snapshot, "WRITE_BYTES", 2048)  # many writes in flight
    rng = Random(slice_records)
    clock = Clock()
    data = tmp_path / "data"
    store, durability = open_store(data, clock)
    keys = keys_of(P, 300, "k")
    others = [k for p in range(PARTITIONS) if p != P for k in keys_of(p, 50, "o")]
    for _ in range(400):
        write_some(store, durability, rng, keys + others)
    with store.lock:  # a clear marker, then entries after it
        store.clear(store.map("b"))
        durability.flush()
    for _ in range(50):
        write_some(store, durability, rng, keys)
    at_start = state(store, P)
    writes_during = 0

    async def run() -> int:
        nonlocal writes_during
        snap = asyncio.create_task(durability.snapshot(P))
        await asyncio.sleep(0)  # its first step copies the partition, packs a slice
        while not snap.done():
            write_some(store, durability, rng, keys + others)
            writes_during += 1
            clock.advance(1)
            await asyncio.sleep(0)
        return await snap

    records = asyncio.run(run())
    assert writes_during >= 5, "the writes should land while the slices are written"
    assert records == sum(len(m) for m in at_start.values())

    # the file: exactly the partition at the snapshot's seq, not one later write in it
    snaps = list(partition_dir(data, P).glob("snap-*.snap"))
    assert len(snaps) == 1
    loaded = load_snapshot(snaps[0], P, 64 << 20)
    assert {name: dict(m) for name, m in loaded.maps.items()} == at_start
    assert not list(partition_dir(data, P).glob("*.tmp"))

    # a restart: the snapshot, then the writes after it from the log
    final = {p: state(store, p) for p in range(PARTITIONS)}
    with store.lock:
        durability.flush()
    durability.log.close()
    store, durability = open_store(data, clock)
    assert {p: state(store, p) for p in range(PARTITIONS)} == final
    durability.log.close()


def test_a_snapshot_cancelled_mid_write_leaves_the_old_state_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped between slices (the member closing): no file half-adopted, the .tmp goes,
    and the partition recovers from its log as before."""
    monkeypatch.setattr(disk_snapshot, "SLICE_RECORDS", 2)
    monkeypatch.setattr(disk_snapshot, "WRITE_BYTES", 64)
    clock = Clock()
    data = tmp_path / "data"
    store, durability = open_store(data, clock)
    rng = Random(3)
    keys = keys_of(P, 200, "k")
    for _ in range(200):
        write_some(store, durability, rng, keys)
    final = state(store, P)

    async def run() -> None:
        snap = asyncio.create_task(durability.snapshot(P))
        for _ in range(5):
            await asyncio.sleep(0)
        snap.cancel()
        with pytest.raises(asyncio.CancelledError):
            await snap
        await durability.close()  # waits for the writer thread, closes the log

    asyncio.run(run())
    assert not list(partition_dir(data, P).glob("snap-*"))
    store, durability = open_store(data, clock)
    assert state(store, P) == final
    durability.log.close()
