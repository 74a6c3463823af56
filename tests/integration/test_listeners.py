"""Entry listeners against three real members under sync backups (grid/client/listeners.py).

The listener's client and the writer's client are connected to different members, so
events cross the cluster. The last test kills a member with -9: it runs last, on the
module's cluster. Every wait is on a condition and bounded.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Iterator

import pytest

import grid
from grid.client.listeners import EntryEvent
from grid.harness.cluster import LocalCluster
from partitioning import partition_of
from tests.integration.support import settled_cluster, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def three(no_grid_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with settled_cluster(3, tmp_path_factory.mktemp("listeners"), ["--sync-backups", "1"]) as c:
        yield c


class Seen:
    """Events a callback got, thread-safe."""

    def __init__(self) -> None:
        self.events: list[EntryEvent] = []
        self.gaps: list[tuple[int, str]] = []
        self.lock = threading.Lock()

    def __call__(self, e: EntryEvent) -> None:
        with self.lock:
            self.events.append(e)

    def gap(self, partition: int, why: str) -> None:
        with self.lock:
            self.gaps.append((partition, why))

    def kinds(self, key: str) -> list[tuple[str, object]]:
        with self.lock:
            return [(e.kind, e.value) for e in self.events if e.key == key]


def test_kinds_prefix_and_values_sync_and_async(three: LocalCluster) -> None:
    sync_seen, async_seen = Seen(), Seen()
    with grid.Client(three.addresses[0], timeout=30) as listening, \
            grid.Client(three.addresses[1], timeout=30) as writing:  # fmt: skip
        lst = listening.map("kinds").add_listener(sync_seen, include_values=True, prefix="p:")

        async def async_side(started: threading.Event, stop: threading.Event) -> None:
            async with grid.AsyncClient(three.addresses[2], timeout=30) as ac:

                async def on_event(e: EntryEvent) -> None:
                    async_seen(e)

                async with await ac.map("kinds").add_listener(
                    on_event, kinds={"removed", "expired"}
                ):
                    started.set()
                    while not stop.is_set():
                        await asyncio.sleep(0.01)

        started, stop = threading.Event(), threading.Event()
        runner = threading.Thread(target=asyncio.run, args=(async_side(started, stop),))
        runner.start()
        try:
            assert started.wait(30)
            m = writing.map("kinds")
            m.put("p:a", 1)
            m.put("p:a", 2)
            m.put("other", 3)
            m.delete("p:a")
            m.delete("p:never")  # a tombstone only: no event
            m.put("p:t", 4, ttl=0.2)
            want = [("added", 1), ("updated", 2), ("removed", None)]
            wait_until(lambda: sync_seen.kinds("p:a") == want, 10, what="p:a's events")
            wait_until(lambda: ("expired", None) in sync_seen.kinds("p:t"), 10, what="expiry")
            wait_until(lambda: len(async_seen.events) >= 2, 10, what="async events")
            assert [(e.kind, e.key) for e in async_seen.events] == [
                ("removed", "p:a"), ("expired", "p:t")]  # fmt: skip
            assert not sync_seen.kinds("other") and not sync_seen.kinds("p:never")
            assert sync_seen.kinds("p:t")[0] == ("added", 4)
            watching = listening.stats()["migration"]
            assert int(watching["watch_subscriptions"]) > 0
            assert int(watching["watch_events"]) > 0
        finally:
            stop.set()
            runner.join(30)
            lst.close()


def test_an_embedded_node_listens_and_is_heard(no_grid_env: None) -> None:
    """A node's local writes (in this thread, straight to its store) reach a listener of
    its own and one of a remote client; closing the client ends its listener."""
    seen_here, seen_there = Seen(), Seen()
    with grid.Node(port=0) as node, node.map("emb").add_listener(seen_here):
        with grid.Client(node.address, timeout=30) as remote:
            there = remote.map("emb").add_listener(seen_there)
            m = node.map("emb")
            for i in range(40):
                m.put(f"e{i}", i)
            want = {f"e{i}" for i in range(40)}
            for seen in (seen_here, seen_there):
                wait_until(lambda s=seen: {e.key for e in s.events} >= want, 10, what="events")
        wait_until(lambda: not there._thread.is_alive(), 5, what="the listener's thread ends")


def test_no_event_lost_across_a_kill_9_under_sync_backups(three: LocalCluster) -> None:
    """A writer updates 24 keys with growing values while a member is killed with -9:
    every acknowledged value reaches the listener, and each key's values never go back.
    Runs last: the module's cluster is one member short after it."""
    seen = Seen()
    listener_member, writer_member, victim = three.members
    keys = [f"k{i}" for i in range(24)]
    with grid.Client(listener_member.address, timeout=30) as listening, \
            grid.Client(writer_member.address, timeout=30) as writing:  # fmt: skip
        table = writing.table()
        assert table is not None
        on_victim = [k for k in keys if table.owner(partition_of(k.encode(), 271)) == victim.name]
        assert on_victim, "some keys must be on the member killed"
        lst = listening.map("orders").add_listener(seen, include_values=True, on_gap=seen.gap)
        m = writing.map("orders")
        acked: dict[str, list[int]] = defaultdict(list)
        killed_at = 0.0
        for n in range(1, 31):
            if n == 10:
                three.kill(victim)
                victim.process.wait(10)
                killed_at = time.monotonic()
            for k in keys:
                m.put(k, n)  # retried by the client until the new primary takes it
                acked[k].append(n)
        assert time.monotonic() - killed_at > 0

        def missing() -> list[tuple[str, int]]:
            with seen.lock:
                got = {(e.key, e.value) for e in seen.events}
            return [(k, n) for k in keys for n in acked[k] if (k, n) not in got]

        wait_until(lambda: not missing(), 30, what="every acknowledged write's event")
        with seen.lock:
            for k in keys:
                values = [e.value for e in seen.events if e.key == k]
                assert values == sorted(values), (k, values)  # duplicates allowed, no going back
        lst.close()
