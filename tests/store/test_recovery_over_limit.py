"""A data dir bigger than max_memory, restarted under an eviction policy that frees
nothing (noeviction, or volatile-ttl with no TTLs): the member loads all of it, over the
limit, as Redis loads a dataset bigger than maxmemory, and refuses writes until it is
under. Before, recovery raised OutOfMemory partway through the load and the member
did not start at all."""

from __future__ import annotations

import asyncio
from pathlib import Path
from random import Random

import pytest

from grid.config import Config
from grid.errors import OutOfMemory
from grid.store import Store
from grid.store.durability import Durability
from tests.store.helpers import Clock

KEYS = 2_000


def open_store(data_dir: Path, clock: Clock, **options: object) -> tuple[Store, Durability]:
    config = Config(partitions=8, data_dir=str(data_dir), fsync="never", **options)
    store = Store(config, member_id=1, clock=clock, rng=Random(1))
    durability = Durability(config, store, store.clock)
    durability.recover()
    return store, durability


def written(data_dir: Path, clock: Clock) -> int:
    """KEYS entries of 100 bytes written to a data dir with no bound: the store's use."""
    store, durability = open_store(data_dir, clock)
    with store.lock:
        for i in range(KEYS):
            store.write(store.map("m"), b"k%d" % i, b"v" * 100, store.clock())
        durability.flush()
    asyncio.run(durability.close())
    return store.used


@pytest.mark.parametrize("policy", ["noeviction", "volatile-ttl"])
def test_a_data_dir_over_max_memory_loads_whole_and_refuses_writes(
    tmp_path: Path, policy: str
) -> None:
    clock = Clock()
    limit = written(tmp_path, clock) // 2
    again, durability = open_store(tmp_path, clock, max_memory=limit, eviction_policy=policy)
    try:
        assert again.restored_over_limit > 0 and again.used > limit
        with again.lock:
            now = again.clock()
            rmap = again.map("m")
            assert all(again.read(rmap, b"k%d" % i, now) is not None for i in range(KEYS))
            with pytest.raises(OutOfMemory):
                again.write(rmap, b"new", b"v" * 100, now)
            for i in range(KEYS):  # deletes bring it under: writes are taken again
                again.delete(rmap, b"k%d" % i, now)
            again.write(rmap, b"new", b"v" * 100, now)
    finally:
        asyncio.run(durability.close())


def test_a_policy_that_evicts_cuts_the_data_dir_down_to_max_memory(tmp_path: Path) -> None:
    clock = Clock()
    limit = written(tmp_path, clock) // 2
    again, durability = open_store(tmp_path, clock, max_memory=limit)
    try:
        assert again.restored_over_limit == 0 and again.used <= limit
    finally:
        asyncio.run(durability.close())
