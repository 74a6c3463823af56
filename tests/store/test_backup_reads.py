"""Reads answered from a backup copy (read_from_backup) on the store alone: only the TTL
counts there (max-idle is the primary's clock: reads at the primary restart it and a
backup never hears of them), nothing is removed by a read, and partitions the member
neither serves nor may read from are NotOwner."""

from __future__ import annotations

from random import Random

import pytest

from grid.config import Config
from grid.errors import NotOwner
from grid.store import Store
from grid.store.store import PUT
from partitioning import partition_of
from tests.store.helpers import Clock

PARTS = 8
P = 5
KEY = next(k for k in (f"k{i}".encode() for i in range(500)) if partition_of(k, PARTS) == P)


class Reads:
    """The store's BackupReads hook: says whether a copy is readable, logs reads."""

    def __init__(self, readable: bool) -> None:
        self.ok = readable
        self.log: list[tuple[int, str, bytes]] = []

    def readable(self, partition: int, map_name: str) -> bool:
        return self.ok

    def served(self, partition: int, map_name: str, key: bytes) -> None:
        self.log.append((partition, map_name, key))


def backup(readable: bool = True) -> tuple[Store, Clock, Reads]:
    clock = Clock()
    store = Store(Config(partitions=PARTS), member_id=1, clock=clock, rng=Random(1))
    store.owned = bytearray(PARTS)  # a backup of everything, primary of nothing
    reads = Reads(readable)
    store.backup_reads = reads
    return store, clock, reads


def test_max_idle_does_not_expire_a_copy_and_reads_remove_nothing() -> None:
    store, clock, reads = backup()
    rmap = store.map("m")
    with store.lock:
        store.apply(P, PUT, "m", KEY, b"v", clock() << 16, 2, 0, 1_000, clock())
    clock.advance(5_000)  # idle for longer than max_idle by the copy's own clock
    with store.lock:
        e = store.get(rmap, KEY, clock(), from_backup=True)
        assert e is not None and e.value == b"v"
        assert store.contains(rmap, KEY, clock(), from_backup=True)
        assert store.ttl(rmap, KEY, clock(), from_backup=True) == -1
    assert len(reads.log) == 3


def test_an_expired_ttl_is_absent_but_left_to_the_stream() -> None:
    store, clock, _ = backup()
    rmap = store.map("m")
    with store.lock:
        store.apply(P, PUT, "m", KEY, b"v", clock() << 16, 2, clock() + 1_000, 0, clock())
        assert store.ttl(rmap, KEY, clock(), from_backup=True) == 1_000
    clock.advance(2_000)
    with store.lock:
        assert store.get(rmap, KEY, clock(), from_backup=True) is None
        assert not store.contains(rmap, KEY, clock(), from_backup=True)
        assert store.ttl(rmap, KEY, clock(), from_backup=True) is None
    assert KEY in rmap.parts[P]  # not removed by a read


def test_without_a_readable_copy_or_the_flag_the_read_is_not_owned() -> None:
    store, clock, _ = backup(readable=False)
    rmap = store.map("m")
    with store.lock, pytest.raises(NotOwner):
        store.get(rmap, KEY, clock(), from_backup=True)
    store, clock, _ = backup(readable=True)
    with store.lock, pytest.raises(NotOwner):
        store.get(store.map("m"), KEY, clock())  # the client did not allow it
