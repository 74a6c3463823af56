"""RESP publish/subscribe against a real redis-server, byte for byte, and across members.

A subscriber connection and a publisher connection run the same steps on a grid member
and on redis-server 7.0; every reply and every message the subscriber receives must be
the same bytes, in RESP2 and RESP3. Then redis-py subscribes on one member of two and
publishes on the other: the message crosses the cluster, as in Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from grid.harness.cluster import LocalCluster
from tests import needs
from tests.integration.resp_support import RawResp, redis_server
from tests.integration.support import settled_cluster, wait_until

pytestmark = pytest.mark.integration

# (who, command...) : "sub" replies are read from the subscriber, "pub" from the
# publisher; ("sub-read",) reads one pushed message on the subscriber.
STEPS: list[tuple[str, ...]] = [
    ("pub", "PUBLISH", "news", "nobody"),
    ("sub", "SUBSCRIBE", "news", "sport"),
    ("sub-read",),  # the second confirmation
    ("pub", "PUBLISH", "news", "hello"),
    ("sub-read",),
    ("sub", "PSUBSCRIBE", "w?ather*"),
    ("pub", "PUBLISH", "weather:today", "sun"),
    ("sub-read",),
    ("pub", "PUBLISH", "news", "again"),
    ("sub-read",),
    ("sub", "GET", "k"),
    ("sub", "PING"),
    ("sub", "PING", "there"),
    ("pub", "PUBSUB", "NUMSUB", "news", "sport", "none"),
    ("pub", "PUBSUB", "NUMPAT"),
    ("pub", "PUBSUB", "CHANNELS", "n*"),
    ("sub", "UNSUBSCRIBE", "news"),
    ("sub", "UNSUBSCRIBE", "nothere"),
    ("sub", "PUNSUBSCRIBE"),
    ("sub", "UNSUBSCRIBE", "sport"),
    ("sub", "UNSUBSCRIBE"),
    ("sub", "PUNSUBSCRIBE"),
    ("sub", "GET", "k"),
    ("pub", "PUBLISH", "news", "gone"),
    ("sub", "SUBSCRIBE"),
    ("pub", "PUBSUB", "NOPE"),
]


def transcript(address: str, resp3: bool) -> list[bytes]:
    sub, pub = RawResp(address), RawResp(address)
    try:
        out = []
        if resp3:
            sub.call("HELLO", "3")
        for step in STEPS:
            who, args = step[0], step[1:]
            if who == "sub-read":
                out.append(sub.reply())
            else:
                side = sub if who == "sub" else pub
                out.append(side.call(*args))
        return out
    finally:
        sub.close()
        pub.close()


@pytest.fixture(scope="module")
def two(no_grid_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with settled_cluster(2, tmp_path_factory.mktemp("pubsub"), resp=True) as cluster:
        yield cluster


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_pubsub_replies_and_messages_are_redis_bytes(two: LocalCluster, resp3: bool) -> None:
    needs.command("redis-server")
    with redis_server("--databases", "1") as redis:
        theirs = transcript(redis, resp3)
    ours = transcript(two.members[0].resp_address, resp3)
    for step, a, b in zip(STEPS, ours, theirs, strict=True):
        assert a == b, f"{step}: grid {a!r}, redis {b!r}"


def test_a_message_published_on_one_member_reaches_a_subscriber_on_another(
    two: LocalCluster,
) -> None:
    import redis

    first, second = (m.resp_address.rsplit(":", 1) for m in two.members)
    listener = redis.Redis(first[0], int(first[1]), socket_timeout=5)
    publisher = redis.Redis(second[0], int(second[1]), socket_timeout=5)
    pubsub = listener.pubsub()
    try:
        pubsub.subscribe("cross")
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        got: list[bytes] = []

        def arrived() -> bool:
            publisher.publish("cross", b"from the other member")  # until the relay is up
            msg = pubsub.get_message(timeout=0.5)
            if msg and msg["type"] == "message":
                got.append(msg["data"])
            return bool(got)

        wait_until(arrived, 20, 0.1, "the message from the other member")
        assert got[0] == b"from the other member"
        for i in range(50):
            publisher.publish("cross", str(i))
        seen = []
        while len(seen) < 50:
            msg = pubsub.get_message(timeout=5)
            assert msg is not None, f"only {len(seen)} of 50 arrived"
            if msg["type"] == "message" and msg["data"] != b"from the other member":
                seen.append(int(msg["data"]))
        assert seen == list(range(50)), "one publisher's messages arrive in its order"
    finally:
        pubsub.close()
        listener.close()
        publisher.close()
