"""The Redis Cluster side of grid.bench.failover_vs_redis: the cluster it starts is a real,
healthy 3 + 3 cluster at Redis's default node timeout, its router follows MOVED, and stopping
it leaves no redis-server behind. The failover itself (about 20 s) is left to the bench."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from redis.crc import key_slot

from grid.bench.failover_vs_redis import RedisClusterProcs, SlotRouter, find_redis_cli
from grid.bench.redis_side import find_redis_server
from tests import needs

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def put_via_wrong_node(addresses: list[str], masters: list[str]) -> bytes | None:
    """Put a key through the router with its slot pointing at the wrong master."""
    router = SlotRouter(addresses)
    try:
        await router.refresh()
        slot = key_slot(b"failover-key")
        right = router.owner[slot]
        router.owner[slot] = next(a for a in masters if a != right)
        await router.put("failover-key", b"v", timeout=5)  # MOVED, followed in the call
        assert router.owner[slot] == right
        value: bytes | None = await router._client(right).get("failover-key")
        return value
    finally:
        await router.close()


@pytest.mark.timeout(60)
def test_redis_cluster_starts_ok_routes_and_stops_clean(tmp_path: Path) -> None:
    server = find_redis_server() or needs.missing("redis-server")
    cli = find_redis_cli() or needs.missing("redis-cli")
    procs = RedisClusterProcs(server, cli, tmp_path)
    pids: list[int] = []
    try:
        procs.start(timeout=40)  # returns once every node says cluster_state:ok
        pids = [s.pid for s in procs.servers if s.pid is not None]
        assert len(pids) == 6
        nodes = procs.nodes()
        masters = [n for n in nodes if n.is_master]
        assert len(masters) == 3
        replicas_of = sorted(n.master_id or "" for n in nodes if not n.is_master)
        assert replicas_of == sorted(m.id for m in masters)
        assert procs.node_timeout_ms() == 15000  # Redis's default: nothing overridden
        value = asyncio.run(put_via_wrong_node(procs.addresses, [m.address for m in masters]))
        assert value == b"v"
    finally:
        procs.stop()
    assert pids
    assert not any(alive(pid) for pid in pids)
