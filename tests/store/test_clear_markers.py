"""Clear markers on disk (grid/store/durability.py, persistence Op.CLEARED): a client's CLEAR
leaves its marker across a restart; a dropped copy (a partition that moved away) must
not, or the restarted member would hand the primary a CLEAR newer than every entry it
holds, and the primary would lose them all (found in review: drops were journaled as
CLEAR records, and recovery took every CLEAR for a marker)."""

from __future__ import annotations

from pathlib import Path
from random import Random

from grid.config import Config
from grid.store import Store, copies
from grid.store.durability import Durability
from grid.store.recordmap import ZERO
from grid.store.store import PUT
from partitioning import partition_of
from tests.store.helpers import Clock

P = 3


def open_store(tmp_path: Path, clock: Clock) -> tuple[Store, Durability]:
    config = Config(partitions=8, data_dir=str(tmp_path), fsync="never")
    store = Store(config, member_id=1, clock=clock, rng=Random(1))
    durability = Durability(config, store, store.clock)
    durability.recover()
    return store, durability


def restart(tmp_path: Path, durability: Durability, clock: Clock) -> tuple[Store, Durability]:
    with durability.store.lock:
        durability.flush()
    durability.log.close()
    clock.advance(1000)
    return open_store(tmp_path, clock)


KEYS = [k for k in (f"k{i}".encode() for i in range(200)) if partition_of(k, 8) == P]


def put_copy(store: Store, clock: Clock, n: int = 5) -> None:
    """As a backup would: replicated puts of keys of partition P."""
    with store.lock:
        for i, key in enumerate(KEYS[:n]):
            store.apply(P, PUT, "m", key, b"v", (clock() << 16) + i, 2, 0, 0, clock())


def test_a_dropped_copy_leaves_no_marker_after_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    store, durability = open_store(tmp_path, clock)
    put_copy(store, clock)
    clock.advance(10)
    with store.lock:
        assert store.drop_partition(P) == 5
    store, _ = restart(tmp_path, durability, clock)
    rmap = store.maps.get("m")
    assert rmap is None or (rmap.cleared[P] == ZERO and not rmap.parts[P])
    with store.lock:
        assert copies.digest(store, P, store.hlc.last, clock()).root == 0


def test_a_clear_keeps_its_marker_and_a_later_drop_removes_it(tmp_path: Path) -> None:
    clock = Clock()
    store, durability = open_store(tmp_path, clock)
    put_copy(store, clock)
    clock.advance(10)
    with store.lock:
        store.clear(store.map("m"))
        marker = store.maps["m"].cleared[P]
    assert marker != ZERO
    store, durability = restart(tmp_path, durability, clock)
    assert store.maps["m"].cleared[P] == marker
    assert not store.maps["m"].parts[P]

    # then the copy is dropped (the partition moved away): its marker goes too
    clock.advance(10)
    put_copy(store, clock, 2)
    with store.lock:
        store.drop_partition(P)
    store, _ = restart(tmp_path, durability, clock)
    assert store.maps["m"].cleared[P] == ZERO
    assert not store.maps["m"].parts[P]
