"""grid.Node: a full member inside the test process, used directly and over gRPC.

The embedded maps read and write the member's store in the caller's thread;
remote clients reach the same store through the member's gRPC server at
`node.address`. Both must see one consistent map.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import grid
import grid.harness.cluster  # grid.harness.cluster.is_serving: grid/__init__ imports no submodule
from tests.integration.support import (
    AsyncRunner,
    assert_member_healthy,
    local_roles,
    roles_at,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_sync_node_lifecycle_and_map_ops(no_grid_env: None) -> None:
    """`with grid.Node(port=0)`: a serving member with blocking maps; stopped on exit."""
    n = grid.Node(port=0)
    with pytest.raises(RuntimeError, match="start the node first"):
        n.map("m")
    with n as node:
        host, port = node.address.rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        assert node.name
        assert_member_healthy(node.address)
        with pytest.raises(RuntimeError, match="already running"):
            node.open()
        m = node.map("m")
        assert isinstance(m, grid.LocalMap)
        assert m.get("k") is None
        version = m.put("k", {"v": 1}, ttl=60)
        assert isinstance(version, grid.Version)
        assert m.get("k") == {"v": 1}
        assert 59 < (m.ttl("k") or 0) <= 60
        assert m.incr("c", 3) == 3 and m.decr("c") == 2
        assert m.put_if_absent("k", 2) is False
        assert m.compare_and_set("k", version, {"v": 2}) is True
        assert m.get_many(["k", "c", "x"]) == {"k": {"v": 2}, "c": 2}
        assert sorted(m.scan()) == ["c", "k"]
        address = node.address
    assert not grid.harness.cluster.is_serving(address, timeout=0.5)
    with pytest.raises(RuntimeError, match="start the node first"):
        n.map("m")


def test_async_node_with_async_client_on_the_same_loop(no_grid_env: None) -> None:
    """`async with grid.Node(port=0)`: async maps, and an AsyncClient on the same loop sees them."""

    async def main() -> None:
        async with grid.Node(port=0) as node:
            m = node.map("m")
            assert isinstance(m, grid.AsyncLocalMap)
            await m.put("local", [1, 2])
            assert await m.incr("c", 5) == 5
            async with grid.AsyncClient(node.address, timeout=5) as client:
                r = client.map("m")
                assert await r.get("local") == [1, 2]
                assert await r.incr("c") == 6
                await r.put("remote", "x", ttl=30)
            assert await m.get("remote") == "x"
            assert await m.get("c") == 6
            assert 29 < (await m.ttl("remote") or 0) <= 30
            assert sorted([k async for k in m.scan()]) == ["c", "local", "remote"]
            address = node.address
        assert not grid.harness.cluster.is_serving(address, timeout=0.5)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_async_node_fixture(aio: AsyncRunner, async_node: grid.Node) -> None:
    """`await node.start()` on a loop owned by the test: maps are coroutines."""
    m = async_node.map("m")
    aio.run(m.put_many({"a": 1, "b": 2}))
    assert aio.run(m.get_many(["a", "b", "c"])) == {"a": 1, "b": 2}
    assert aio.run(m.size()) == 2


def test_remote_client_sees_embedded_data(node: grid.Node) -> None:
    """Writes through node.map are visible to a Client at node.address, and the reverse."""
    local = node.map("shared")
    local.put_many({f"k{i}": i for i in range(50)}, ttl=100)
    local.put("doc", {"a": [1, 2]})
    with grid.Client(node.address, timeout=5) as client:
        remote = client.map("shared")
        assert remote.get_many([f"k{i}" for i in range(50)]) == {f"k{i}": i for i in range(50)}
        assert remote.get("doc") == {"a": [1, 2]}
        assert 99 < (remote.ttl("k7") or 0) <= 100
        e_local, e_remote = local.get_entry("doc"), remote.get_entry("doc")
        assert e_local is not None and e_remote is not None
        assert e_local.version == e_remote.version  # one store, one version
        assert remote.compare_and_set("doc", e_local.version, "new") is True
        remote.delete("k0")
        remote.put("from-remote", b"\x00")
        assert remote.size() == local.size() == 51
    assert local.get("doc") == "new"
    assert local.get("k0") is None
    assert local.get("from-remote") == b"\x00"


def test_threads_and_remote_client_keep_counters_exact(node: grid.Node) -> None:
    """4 threads on the embedded map and 2 threads on a remote Client hammer one counter:
    the total is exact, and every thread's own keys hold what it wrote."""
    local_rounds, remote_rounds = 1500, 300
    m = node.map("hammer")
    start = threading.Barrier(6, timeout=10)

    with grid.Client(node.address, timeout=10) as client:
        remote = client.map("hammer")

        def embedded(t: int) -> int:
            start.wait()
            for i in range(local_rounds):
                m.incr("total")
                m.put(f"e{t}:{i % 50}", i)
            return m.get(f"e{t}:49")

        def over_grpc(t: int) -> int:
            start.wait()
            for i in range(remote_rounds):
                remote.incr("total")
                remote.incr(f"r{t}")
                remote.put(f"r{t}:{i % 20}", i)
            return remote.get(f"r{t}")

        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(embedded, t) for t in range(4)]
            futures += [pool.submit(over_grpc, t) for t in range(2)]
            results = [f.result(timeout=90) for f in futures]

        expected_total = 4 * local_rounds + 2 * remote_rounds
        assert results == [local_rounds - 1] * 4 + [remote_rounds] * 2
        assert m.get("total") == expected_total
        assert remote.get("total") == expected_total
        assert m.get_many([f"e0:{i}" for i in range(50)]) == {
            f"e0:{i}": local_rounds - 50 + i for i in range(50)
        }
        assert m.size() == 1 + 4 * 50 + 2 * (20 + 1)


def test_node_stats(node: grid.Node) -> None:
    """node.stats(): identity, per-map counters for embedded ops, requests for remote batches."""
    m = node.map("st")
    m.put("a", 1)
    m.get("a")
    m.get("missing")
    m.delete("a")
    st = node.stats()
    assert st["member"] == node.name and st["address"] == node.address
    assert st["version"] == grid.__version__ and st["partitions"] == 271
    assert st["max_memory"] == 0 and st["eviction_policy"] == "lru"
    (ms,) = [x for x in st["maps"] if x["name"] == "st"]
    assert (ms["puts"], ms["hits"], ms["misses"], ms["deletes"], ms["entries"]) == (1, 1, 1, 1, 0)
    assert ms["hit_ratio"] == 0.5
    with grid.Client(node.address) as client:
        client.map("st").get_many(["x", "y", "z"])
        after = node.stats()
        assert after["requests"] == st["requests"] + 1
        assert after["operations"] == st["operations"] + 3
        assert client.stats()["member"] == node.name


def test_node_options_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Node(**options) beats GRID_* environment, which beats defaults; config= is honoured."""
    for key in [k for k in os.environ if k.startswith("GRID_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("GRID_MAX_MEMORY", "2MB")
    monkeypatch.setenv("GRID_EVICTION_POLICY", "random")
    with grid.Node(port=0, eviction_policy="lfu") as node:
        st = node.stats()
        assert (st["max_memory"], st["eviction_policy"]) == (2_000_000, "lfu")
    cfg = grid.Config(port=0, max_memory=1_000_000, eviction_policy="volatile-ttl")
    with grid.Node(cfg, max_memory="3MB") as node:
        st = node.stats()
        assert (st["max_memory"], st["eviction_policy"]) == (3_000_000, "volatile-ttl")
    with pytest.raises(grid.ConfigError, match="eviction_policy"):
        grid.Node(port=0, eviction_policy="sometimes")


def test_embedded_active_expiry_reclaims_unread_entries(no_grid_env: None) -> None:
    """Entries with a TTL that nobody reads are removed by the member's sweep, not just lazily."""
    with grid.Node(port=0, expiry_sweep_interval_ms=20) as node:
        m = node.map("exp")
        m.put_many({f"k{i}": i for i in range(200)}, ttl=0.2)
        m.put("keep", 1)

        def reclaimed() -> bool:
            return node.stats()["total"]["entries"] == 1

        wait_until(reclaimed, timeout=5, what="the expiry sweep")
        (ms,) = node.stats()["maps"]
        assert ms["expirations"] == 200
        assert m.get("keep") == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_embedded_node_in_a_cluster_routes_what_it_does_not_serve(
    no_grid_env: None, mode: str
) -> None:
    """An embedded node joined to a member process: its maps serve their own partitions
    from the store and send the rest to the owner (through the node's smart client), so
    every key lands on the primary the table names, whichever side wrote it."""
    from grid.harness.cluster import LocalCluster
    from tests.integration.support import wait_partitions_settled

    keys = [f"{mode}-k{i}" for i in range(400)]
    with LocalCluster(1) as cluster:
        cluster.start()
        other = cluster.members[0]
        node_options = {"port": 0, "seeds": other.gossip_address, "backups": 0}

        def check(node: grid.Node) -> None:
            wait_partitions_settled([node.address, other.address])
            held_here = [r == 1 for r in roles_at(node.address, "m", keys)]
            held_there = [r == 1 for r in roles_at(other.address, "m", keys)]
            assert all(a != b for a, b in zip(held_here, held_there, strict=True))
            assert 0 < sum(held_here) < len(keys), "both members should hold some keys"
            with grid.Client(other.address) as client:
                assert client.map("m").get_many(keys) == {k: i for i, k in enumerate(keys)}
                assert client.map("m").size() == len(keys)

        if mode == "sync":
            with grid.Node(**node_options) as node:
                wait_partitions_settled([node.address, other.address])
                m = node.map("m")
                for i, k in enumerate(keys[:200]):
                    m.put(k, i)
                m.put_many({k: i for i, k in enumerate(keys) if i >= 200})
                assert m.get_many(keys) == {k: i for i, k in enumerate(keys)}
                assert m.size() == len(keys)
                assert m.incr(keys[0] + "-ctr", 5) == 5 and m.get(keys[0] + "-ctr") == 5
                m.delete(keys[0] + "-ctr")
                check(node)
        else:

            async def main() -> None:
                async with grid.Node(**node_options) as node:
                    await asyncio.to_thread(wait_partitions_settled, [node.address, other.address])
                    m = node.map("m")
                    for i, k in enumerate(keys[:200]):
                        await m.put(k, i)
                    await m.put_many({k: i for i, k in enumerate(keys) if i >= 200})
                    assert await m.get_many(keys) == {k: i for i, k in enumerate(keys)}
                    assert await m.size() == len(keys)
                    await asyncio.to_thread(check, node)

            asyncio.run(main())


# ---- sync backups: embedded writes wait for them as remote ones do -------------------------------
SYNC_KEYS = 600  # about half of them on the embedded node's partitions


def _sync_node_options(other_gossip: str, **extra: object) -> dict[str, object]:
    return {"port": 0, "seeds": other_gossip, "backups": 1, "sync_backups": 1, **extra}


def test_embedded_writes_with_sync_backups_wait_for_the_backup(no_grid_env: None) -> None:
    """sync_backups=1: a put through the embedded map of a key this node is primary of
    returns only once the backup (a member process) applied it; so do put_many, incr
    and delete (of present and of absent keys). A map with map_sync_backups=0 does not
    wait, and the backup shows its writes later."""
    from grid.harness.cluster import LocalCluster
    from tests.integration.support import raw_channel, wait_partitions_settled, wait_replicated

    with LocalCluster(1) as cluster:
        other = cluster.members[0]
        options = _sync_node_options(other.gossip_address, map_sync_backups="fast=0")
        with (
            grid.Node(**options) as node,
            raw_channel(node.address) as here,
            raw_channel(other.address) as there,
        ):
            wait_partitions_settled([node.address, other.address])
            wait_replicated([node.address, other.address])
            m = node.map("m")
            assert isinstance(m, grid.LocalMap) and type(m).__name__ == "SyncLocalMap"
            assert type(node.map("fast")) is grid.LocalMap  # decided once per map
            mine = []
            for i in range(SYNC_KEYS):
                k = f"s{i}"
                m.put(k, i)
                backup_role = local_roles(there, "m", [k])[0]  # first: the backup may lag
                if local_roles(here, "m", [k])[0] == 1:
                    assert backup_role == 2, f"{k}: put returned before the backup had it"
                    mine.append(k)
                else:  # the other member is primary: the node's smart client wrote it
                    assert backup_role == 1
            assert 100 < len(mine) < SYNC_KEYS - 100, "both members should be primaries"

            many = {f"many{i}": i for i in range(300)}
            m.put_many(many)
            roles_there = local_roles(there, "m", list(many))
            roles_here = local_roles(here, "m", list(many))
            assert all(t == 2 for h, t in zip(roles_here, roles_there, strict=True) if h == 1)

            for k in mine[:50]:
                assert m.delete(k) is True
                assert local_roles(there, "m", [k]) == [0], f"{k}: deleted, still on the backup"
            absent = [f"absent{i}" for i in range(50)]
            assert all(m.delete(k) is False for k in absent)  # tombstones, waited for too
            assert m.incr(mine[60] + "-ctr", 3) == 3
            assert m.get_many(mine[50:]) == {k: int(k[1:]) for k in mine[50:]}


def test_embedded_sync_put_fails_when_the_backup_is_gone(no_grid_env: None) -> None:
    """The only backup killed with -9: before the table drops it, a sync put of a key
    this node is primary of is refused UNAVAILABLE after sync_backup_timeout_s, as a
    remote client's would be, and the value stays applied on the primary."""
    import signal
    import time

    from grid.harness.cluster import LocalCluster
    from tests.integration.support import raw_channel, wait_partitions_settled, wait_replicated

    timeout_s = 1.0
    with LocalCluster(1) as cluster:
        other = cluster.members[0]
        options = _sync_node_options(other.gossip_address, sync_backup_timeout_s=timeout_s)
        with grid.Node(**options) as node, raw_channel(node.address) as here:
            wait_partitions_settled([node.address, other.address])
            wait_replicated([node.address, other.address])
            m = node.map("m")
            keys = [f"k{i}" for i in range(100)]
            m.put_many({k: 0 for k in keys})
            mine = [k for k, r in zip(keys, local_roles(here, "m", keys), strict=True) if r == 1]
            assert len(mine) >= 3
            cluster.kill(other, signal.SIGKILL)
            other.process.wait(5)
            started = time.monotonic()
            with pytest.raises(grid.Unavailable, match="not confirmed by its sync backups"):
                m.put(mine[0], "after")
            took = time.monotonic() - started
            assert timeout_s * 0.9 <= took < timeout_s + 3, took
            assert m.get(mine[0]) == "after"  # applied on the primary all the same
            with pytest.raises(grid.Unavailable, match="not confirmed"):
                m.delete(mine[1])
            assert m.get(mine[1]) is None


def test_async_embedded_writes_with_sync_backups_wait_for_the_backup(no_grid_env: None) -> None:
    """The async map: `await m.put(...)` returns once the backup applied the write; with
    the backup gone it raises Unavailable after sync_backup_timeout_s."""
    import signal

    from grid.harness.cluster import LocalCluster
    from tests.integration.support import raw_channel, wait_partitions_settled, wait_replicated

    with LocalCluster(1) as cluster:
        other = cluster.members[0]
        options = _sync_node_options(other.gossip_address, sync_backup_timeout_s=1.0)

        async def main() -> None:
            async with grid.Node(**options) as node:
                addresses = [node.address, other.address]
                await asyncio.to_thread(wait_partitions_settled, addresses)
                await asyncio.to_thread(wait_replicated, addresses)
                m = node.map("m")
                assert isinstance(m, grid.AsyncLocalMap)
                with raw_channel(node.address) as here, raw_channel(other.address) as there:
                    mine = []
                    for i in range(SYNC_KEYS // 2):
                        k = f"a{i}"
                        await m.put(k, i)
                        backup_role = (await asyncio.to_thread(local_roles, there, "m", [k]))[0]
                        if (await asyncio.to_thread(local_roles, here, "m", [k]))[0] == 1:
                            assert backup_role == 2, f"{k}: put returned before the backup"
                            mine.append(k)
                    assert len(mine) > 30
                    await m.put_many({f"many{i}": i for i in range(100)})
                    assert await m.incr(mine[0] + "-ctr") == 1
                    cluster.kill(other, signal.SIGKILL)
                    await asyncio.to_thread(other.process.wait, 5)
                    with pytest.raises(grid.Unavailable, match="not confirmed"):
                        await m.put(mine[0], "after")
                    assert await m.get(mine[0]) == "after"

        asyncio.run(asyncio.wait_for(main(), 90))


def test_the_cache_patterns_work_on_an_embedded_node(no_grid_env: None) -> None:
    """get_or_load, the lease lock and rate limits (docs/patterns.md) through a node's
    maps: they go through its own client to the key's primary, itself here."""
    calls: list[object] = []

    def load(key: object) -> object:
        calls.append(key)
        return {"loaded": key}

    with grid.Node(port=0) as node:
        m = node.map("cache")
        assert m.get_or_load("k", load, ttl=60) == {"loaded": "k"}
        assert m.get_or_load("k", load, ttl=60) == {"loaded": "k"}
        assert calls == ["k"] and m.get("k") == {"loaded": "k"}
        with node.lock("job", ttl=5) as first:
            pass
        with node.lock("job", ttl=5) as second:
            assert second > first
        assert [node.rate_limit("api", "ada", limit=2, window=10).allowed
                for _ in range(3)] == [True, True, False]  # fmt: skip


def test_an_embedded_node_near_caches_what_other_members_serve(no_grid_env: None) -> None:
    """Keys another member serves are read through the node's client, and with a near
    cache kept in the node: the second read is a hit, and another client's write
    reaches it (invalidated by that member's change stream)."""
    from grid.harness.cluster import LocalCluster
    from partitioning import partition_of
    from tests.integration.support import wait_partitions_settled, wait_until

    keys = [f"nc-{i}" for i in range(200)]
    with LocalCluster(1) as cluster:
        cluster.start()
        other = cluster.members[0]
        with grid.Node(port=0, seeds=other.gossip_address, backups=0) as node:
            wait_partitions_settled([node.address, other.address])
            with grid.Client(other.address) as client:
                table = client.table()
                assert table is not None
                remote = [
                    k for k in keys if table.owner(partition_of(k.encode(), 271)) == other.name
                ]
                assert remote, "the other member should serve some keys"
                key = remote[0]
                client.map("m").put(key, "v1")
                m = node.map("m", near_cache=grid.NearCache(max_entries=100))
                assert m.get(key) == "v1"

                def hit() -> bool:  # served from the cache once its partition's stream is live
                    assert m.get(key) == "v1"
                    stats = m.remote().near_cache_stats()
                    return stats is not None and stats["hits"] >= 1

                wait_until(hit, 10, what="a near-cache hit")
                client.map("m").put(key, "v2")
                wait_until(lambda: m.get(key) == "v2", 10, what="the invalidation")
