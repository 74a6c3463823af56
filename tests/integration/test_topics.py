"""Topics (grid/client/topics.py) on three real members under sync backups: every message
published after a subscription reaches every subscriber once, in order per publisher,
also across a kill -9 of the member holding a publisher's partition. Publishers and
subscribers use clients of different members. The kill runs last."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

import grid
from grid.harness.cluster import LocalCluster
from partitioning import partition_of
from tests.integration.support import settled_cluster, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def three(no_grid_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with settled_cluster(3, tmp_path_factory.mktemp("topics"), ["--sync-backups", "1"]) as c:
        yield c


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def __call__(self, message: list[object]) -> None:
        with self.lock:
            self.messages.append((str(message[0]), int(message[1])))  # type: ignore[call-overload]

    def of(self, publisher: str) -> list[int]:
        with self.lock:
            return [n for p, n in self.messages if p == publisher]


def test_every_subscriber_gets_each_message_once_in_publisher_order(three: LocalCluster) -> None:
    a, b, _ = three.members
    with grid.Client(a.address) as pub_client, grid.Client(b.address) as sub_client:
        early = pub_client.topic("news")
        early.publish(["early", 0])  # before anyone listens: never delivered
        inboxes = [Inbox(), Inbox()]
        subs = [sub_client.topic("news").subscribe(box) for box in inboxes]
        publishers = {"p1": pub_client.topic("news"), "p2": pub_client.topic("news")}

        def publish(name: str) -> None:
            for n in range(1, 151):
                publishers[name].publish([name, n])

        threads = [threading.Thread(target=publish, args=(p,)) for p in publishers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for box in inboxes:
            wait_until(lambda box=box: len(box.of("p1")) == len(box.of("p2")) == 150, 30,
                       what="every message")  # fmt: skip
            assert box.of("p1") == list(range(1, 151)) and box.of("p2") == list(range(1, 151))
            assert box.of("early") == []
        for sub in subs:
            sub.close()


def test_async_publish_and_an_async_subscriber(three: LocalCluster) -> None:
    async def run() -> list[int]:
        got: list[int] = []
        async with grid.AsyncClient(three.addresses[0]) as client:
            topic = client.topic("async-news")

            async def on_message(message: int) -> None:
                got.append(message)

            sub = await topic.subscribe(on_message)
            for n in range(20):
                await topic.publish(n)
            for _ in range(500):
                if len(got) == 20:
                    break
                await asyncio.sleep(0.02)
            await sub.close()
        return got

    assert asyncio.run(run()) == list(range(20))


def test_an_embedded_node_publishes_and_subscribes(no_grid_env: None) -> None:
    inbox = Inbox()
    with grid.Node(port=0) as node:
        topic = node.topic("local")
        sub = topic.subscribe(inbox)
        for n in range(10):
            topic.publish(["n", n])
        wait_until(lambda: len(inbox.of("n")) == 10, 20, what="the node's messages")
        assert inbox.of("n") == list(range(10))
        sub.close()


def test_no_message_lost_across_a_kill_9_under_sync_backups(three: LocalCluster) -> None:
    """The publisher's partition's primary is killed mid-stream: every message whose
    publish returned reaches the subscriber, in order, once."""
    sub_member, pub_member, victim = three.members
    inbox = Inbox()
    with grid.Client(sub_member.address, timeout=30) as sub_client, \
            grid.Client(pub_member.address, timeout=30) as pub_client:  # fmt: skip
        table = pub_client.table()
        assert table is not None

        def owner(t: grid.client.topics.Topic) -> str:
            routing = f"{{{t._numbering.id}}}:x".encode()
            return table.owner(partition_of(routing, table.partition_count))  # type: ignore[union-attr]

        # a publisher whose messages the third member holds (ids are random: ~1 in 3)
        topic = next(t for t in (pub_client.topic("orders") for _ in range(300))
                     if owner(t) == victim.name)  # fmt: skip
        sub = sub_client.topic("orders").subscribe(inbox)
        acked = []
        for n in range(1, 121):
            if n == 40:
                three.kill(victim)
                victim.process.wait(10)
            topic.publish(["p", n])  # retried by the client until the new primary takes it
            acked.append(n)
        wait_until(lambda: inbox.of("p")[-1:] == [120], 30, what="the last message")
        assert inbox.of("p") == acked
        sub.close()
