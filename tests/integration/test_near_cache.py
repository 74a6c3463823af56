"""The near cache against three real members (grid/client/nearcache.py).

The cached client and the writing client are connected to different members. Every
wait is on a condition and bounded; the last test kills and restarts a member.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

import grid
from grid.harness.cluster import LocalCluster
from partitioning import partition_of
from tests.integration.support import settled_cluster, wait_partitions_settled, wait_until

pytestmark = pytest.mark.integration

REPAIR_S = 0.5  # the reconcile interval of these tests' near caches


@pytest.fixture(scope="module")
def three(no_grid_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with settled_cluster(3, tmp_path_factory.mktemp("near-cache")) as c:
        yield c


def cached(client: grid.Client, name: str, **kw: object) -> grid.Map:
    m = client.map(name, near_cache=grid.NearCache(reconcile_interval=REPAIR_S, **kw))  # type: ignore[arg-type]
    wait_until(lambda: m.near_cache_stats()["live_partitions"] == 271, 10, what="live")  # type: ignore[index]
    return m


def test_hits_invalidation_own_writes_and_bounds(three: LocalCluster) -> None:
    with grid.Client(three.addresses[0], timeout=30) as a, \
            grid.Client(three.addresses[1], timeout=30) as b:  # fmt: skip
        near = cached(a, "users", max_entries=50, ttl=30)
        other = b.map("users")
        other.put_many({f"u{i}": {"n": i} for i in range(100)})
        # (a fill is refused while the put_many's invalidations are still arriving)
        wait_until(lambda: near.get("u1") == {"n": 1} and near.near_cache_stats()["entries"],  # type: ignore[index]
                   5, what="u1 cached")  # fmt: skip
        hits = near.near_cache_stats()["hits"]  # type: ignore[index]
        assert near.get("u1") == {"n": 1} and near.near_cache_stats()["hits"] == hits + 1  # type: ignore[index]
        other.put("u1", {"n": "new"})  # another client's write reaches it by its event
        wait_until(lambda: near.get("u1") == {"n": "new"}, 5, what="invalidation")
        other.delete("u1")
        wait_until(lambda: near.get("u1") is None, 5, what="delete")
        near.put("u2", "mine")  # its own write: visible at once
        assert near.get("u2") == "mine"
        for i in range(100):
            near.get(f"u{i}")
        stats = near.near_cache_stats()
        assert stats is not None and stats["entries"] <= 50 and stats["evictions"] > 0
        other.clear()
        wait_until(lambda: near.get("u3") is None, 5, what="clear")
        ttl_near = cached(a, "short", ttl=0.2)
        b.map("short").put("k", 1)
        assert ttl_near.get("k") == 1
        b.map("short").put("k", 2, ttl=2)  # the member's TTL also bounds the entry
        wait_until(lambda: ttl_near.get("k") == 2, 5, what="update")
        wait_until(lambda: ttl_near.get("k") is None, 5, what="expiry")


def test_async_client_near_cache_and_get_many(three: LocalCluster) -> None:
    async def run() -> None:
        async with grid.AsyncClient(three.addresses[2], timeout=30) as ac:
            near = ac.map("amap", near_cache=grid.NearCache(reconcile_interval=REPAIR_S))
            writer = ac.map("amap")
            await writer.put_many({"a": 1, "b": 2})
            for _ in range(500):  # bounded: until every partition's stream is live
                if near.near_cache_stats()["live_partitions"] == 271:  # type: ignore[index]
                    break
                await asyncio.sleep(0.01)
            assert await near.get_many(["a", "b", "c"]) == {"a": 1, "b": 2}
            assert await near.get_many(["a", "b"]) == {"a": 1, "b": 2}  # from the cache
            stats = near.near_cache_stats()
            assert stats is not None and stats["hits"] == 2
            with grid.Client(three.addresses[0], timeout=30) as other:
                other.map("amap").put("a", 10)
            for _ in range(500):
                if await near.get("a") == 10:
                    break
                await asyncio.sleep(0.01)
            assert await near.get("a") == 10

    asyncio.run(run())


def test_no_stale_value_after_a_member_is_killed_and_restarted(three: LocalCluster) -> None:
    cached_on, writer_on, victim = three.members
    with grid.Client(cached_on.address, timeout=30) as a, \
            grid.Client(writer_on.address, timeout=30) as b:  # fmt: skip
        table = b.table()
        assert table is not None
        keys = [f"k{i}" for i in range(60)]
        on_victim = [k for k in keys if table.owner(partition_of(k.encode(), 271)) == victim.name]
        assert on_victim
        near = cached(a, "orders")
        writes = b.map("orders")
        writes.put_many({k: 1 for k in keys})
        assert all(near.get(k) == 1 for k in keys)
        three.kill(victim)
        victim.process.wait(10)
        for k in on_victim:
            writes.put(k, 2)  # retried until the promoted backup takes it
            acked = time.monotonic()
            # the old value may be served only until the broken stream is noticed
            wait_until(lambda k=k: near.get(k) == 2, 3 * REPAIR_S + 2, what=f"{k} fresh")
            assert time.monotonic() - acked < 3 * REPAIR_S + 2
        stats = near.near_cache_stats()
        assert stats is not None and stats["stale"] >= 1
        three.restart(victim)
        wait_partitions_settled(three.addresses)
        writes.put_many({k: 3 for k in keys})
        wait_until(lambda: all(near.get(k) == 3 for k in keys), 10, what="after the restart")
        wait_until(lambda: near.near_cache_stats()["live_partitions"] == 271, 10,  # type: ignore[index]
                   what="every partition live again")  # fmt: skip
