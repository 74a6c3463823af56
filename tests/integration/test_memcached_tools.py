"""libmemcached's tools against grid (memcstat, memcflush, memcslap) and a three-member
cluster where every member serves every key over the memcached protocols."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from pymemcache.client.base import Client as PyMemcache

from grid.bench.memcached import run_memcslap
from grid.harness.cluster import LocalCluster
from tests import needs
from tests.integration.memcached_support import RawMemcache
from tests.integration.support import wait_partitions_settled


@pytest.fixture(scope="module")
def single(no_grid_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(1, memcached=True, log_dir=tmp_path_factory.mktemp("mc-tools"))
    cluster.start()  # and no waiting for the partition table: requests wait for it
    try:
        yield cluster
    finally:
        cluster.stop(grace=5)


def tool(name: str, address: str, *args: str) -> str:
    return subprocess.run(
        [needs.command(name), f"--servers={address}", *args],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip


def client(address: str) -> PyMemcache:
    host, port = address.rsplit(":", 1)
    return PyMemcache((host, int(port)), timeout=10, default_noreply=False)


def test_memcstat_memcflush_memcslap(single: LocalCluster) -> None:
    address = single.members[0].memcached_address
    c = client(address)
    c.set("tools:a", b"1")
    stats = tool("memcstat", address)
    assert "pid:" in stats and "version: 1.6.18" in stats and "curr_items:" in stats, stats
    tool("memcflush", address)
    assert c.get("tools:a") is None  # flushed
    for test in ("set", "get"):
        assert run_memcslap(needs.command("memcslap"), address, test, 2, 500) > 0
    assert c.stats()[b"curr_items"] > 0  # memcslap's keys are there
    c.close()


def test_three_members_every_member_serves_every_key(
    no_grid_env: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cluster = LocalCluster(3, memcached=True, log_dir=tmp_path_factory.mktemp("mc-three"))
    cluster.start()
    try:
        wait_partitions_settled(cluster.addresses)
        clients = [client(m.memcached_address) for m in cluster.members]
        first, *others = clients
        first.set_many({f"three:{i}": str(i).encode() for i in range(300)})
        for c in others:
            got = c.get_many([f"three:{i}" for i in range(300)])
            assert got == {f"three:{i}": str(i).encode() for i in range(300)}
        first.set("three:n", b"0", flags=9)
        for c in clients:  # increments through every member land on one counter
            for _ in range(10):
                c.incr("three:n", 1)
        assert {c.get("three:n") for c in clients} == {b"30"}
        raw = RawMemcache(cluster.members[2].memcached_address)
        assert raw.step(b"mg three:n v f\r\n") == b"VA 2 f9\r\n30\r\n"  # flags kept by incr
        raw.close()
        _, cas = others[0].gets("three:n")
        assert others[1].cas("three:n", b"x", cas) is True  # a CAS read on one, used on another
        assert first.cas("three:n", b"y", cas) is False
        assert all(c.stats()[b"curr_items"] == 301 for c in clients)  # the whole map
        assert others[1].flush_all() is True
        assert first.get("three:0") is None and first.stats()[b"curr_items"] == 0
        for c in clients:
            c.close()
    finally:
        cluster.stop(grace=5)
