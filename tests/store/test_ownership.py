"""The store in a cluster: refusing partitions it does not serve before touching
anything, and applying a primary's changes by last-writer-wins."""

from __future__ import annotations

import pytest

from grid.errors import NotOwner
from grid.store.copies import snapshot_records
from grid.store.store import DELETE, DROPPED, EVICTED, PUT
from partitioning import partition_of
from tests.store.helpers import make_store


def keys_in(p: int, count: int, partitions: int = 271) -> list[bytes]:
    out, i = [], 0
    while len(out) < count:
        k = f"key-{i}".encode()
        if partition_of(k, partitions) == p:
            out.append(k)
        i += 1
    return out


def test_operations_on_unserved_partitions_raise_not_owner_and_change_nothing() -> None:
    store = make_store()
    m = store.map("m")
    mine, theirs = keys_in(3, 1)[0], keys_in(4, 1)[0]
    store.owned = bytearray(store.partitions)
    store.owned[3] = 1
    store.put(m, mine, b"v", store.clock())
    for call in (
        lambda: store.get(m, theirs, store.clock()),
        lambda: store.put(m, theirs, b"v", store.clock()),
        lambda: store.delete(m, theirs, store.clock()),
        lambda: store.incr(m, theirs, 1, 0, store.clock()),
        lambda: store.expire(m, theirs, 10, store.clock()),
        lambda: store.contains(m, theirs, store.clock()),
        lambda: store.ttl(m, theirs, store.clock()),
        lambda: store.touch(m, theirs, store.clock()),
    ):
        with pytest.raises(NotOwner):
            call()
    assert m.stats.entries == 1 and m.stats.misses == 0
    assert store.size(m) == 1


def test_size_scan_and_clear_cover_only_served_partitions() -> None:
    store = make_store()
    m = store.map("m")
    for k in keys_in(3, 5) + keys_in(4, 7):
        store.put(m, k, b"v", store.clock())
    store.owned = bytearray(store.partitions)
    store.owned[3] = 1
    assert store.size(m) == 5
    with pytest.raises(NotOwner):
        store.scan(m, b"", 100, store.clock())  # the scan starts on partition 0
    import msgpack

    keys, cursor = store.scan(m, msgpack.packb([3, b""]), 100, store.clock())
    assert sorted(keys) == sorted(keys_in(3, 5)) and msgpack.unpackb(cursor) == [4, b""]
    assert store.clear(m) == 5
    assert m.stats.entries == 7  # the other partition's copy is untouched


def test_apply_is_last_writer_wins_and_idempotent() -> None:
    store = make_store()
    seen: list[tuple] = []
    store.sink = lambda *change: seen.append(change)
    k = keys_in(9, 1)[0]
    assert store.apply(9, PUT, "m", k, b"new", 200, 1, 0, 0, store.clock())
    assert not store.apply(9, PUT, "m", k, b"old", 100, 1, 0, 0, store.clock())  # older: lost
    assert not store.apply(9, PUT, "m", k, b"new", 200, 1, 0, 0, store.clock())  # duplicate
    assert store.apply(9, PUT, "m", k, b"tie", 200, 2, 0, 0, store.clock())  # member breaks ties
    m = store.maps["m"]
    assert m.parts[9][k].value == b"tie"
    assert not store.apply(9, DELETE, "m", k, None, 150, 1, 0, 0, store.clock())  # older delete
    assert store.apply(9, EVICTED, "m", k, None, 200, 2, 0, 0, store.clock())  # same version
    assert k not in m.parts[9] and m.stats.entries == 0 and store.used == 0
    assert [c[1] for c in seen] == [PUT, PUT, EVICTED]  # applied changes reach the log


def test_drop_partition_forgets_one_partition_and_tells_the_sink() -> None:
    store = make_store()
    m = store.map("m")
    for k in keys_in(5, 4) + keys_in(6, 2):
        store.put(m, k, b"v", store.clock())
    seen: list[tuple] = []
    store.sink = lambda *change: seen.append(change)
    assert store.drop_partition(5) == 4
    assert m.stats.entries == 2 and store.partition_count(5) == 0
    assert [(c[0], c[1]) for c in seen] == [(5, DROPPED)]  # journaled as a bare CLEAR
    copy = snapshot_records(store, 6, store.clock())
    assert {e[2] for e in copy} == set(keys_in(6, 2))
