"""Tags (grid/client/tags.py) on real members: invalidating a tag of thousands of keys
spread over the members removes all of them and nothing else, also while a member joins
and partitions move; tags go with entries that expire."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import grid
from grid.harness.cluster import LocalCluster, migration_state
from tests.integration.support import wait_partitions_settled, wait_until

pytestmark = pytest.mark.integration

KEYS = 14_000
TAGGED = 10_000


@pytest.fixture(scope="module")
def cluster(no_grid_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(4, log_dir=tmp_path_factory.mktemp("tags"))
    try:
        for i in range(3):  # the fourth joins during the test
            c.start_member(i)
        for m in c.members:
            c.wait_ready(m)
        wait_partitions_settled(c.addresses)
        yield c
    finally:
        c.stop(grace=5)


def tags_of(i: int) -> list[str]:
    """Keys below TAGGED carry "big"; every key "even" or "odd"; every tenth no more."""
    parity = ["even" if i % 2 == 0 else "odd"]
    if i % 10 == 0:
        return ["big"] if i < TAGGED else []
    return parity + (["big"] if i < TAGGED else [])


def test_invalidating_a_tag_during_a_migration_removes_it_and_nothing_else(
    cluster: LocalCluster,
) -> None:
    with grid.Client(cluster.addresses[0], timeout=30) as client:
        pages = grid.TaggedMap(client.map("pages"))
        for start in range(0, KEYS, 1000):
            pages.put_many({f"p{i}": (i, tags_of(i)) for i in range(start, start + 1000)})
        assert sorted(pages.get_with_tags("p3")[1]) == ["big", "odd"]  # type: ignore[index]
        assert pages.get_with_tags(f"p{KEYS - 10}")[1] == []  # type: ignore[index]

        cluster.start_member(3)  # a fourth member joins: partitions move while the scan runs
        cluster.wait_ready(cluster.members[3])
        wait_until(lambda: migration_state(cluster.addresses) not in (None, (0, 0)), 30,
                   what="partitions moving to the new member")  # fmt: skip
        removed = pages.invalidate_tag("big")
        moving = migration_state(cluster.addresses)
        tagged = [i for i in range(KEYS) if "big" in tags_of(i)]
        assert len(tagged) == TAGGED
        assert removed == len(tagged), f"{removed} of {len(tagged)} (migration after: {moving})"
        wait_until(lambda: migration_state(cluster.addresses) == (0, 0), 60, what="settled")
        left = client.map("pages", codec="raw").get_many([f"p{i}" for i in range(KEYS)])
        want = {f"p{i}" for i in range(KEYS)} - {f"p{i}" for i in tagged}
        assert {k for k, v in left.items() if v is not None} == want
        assert pages.keys_tagged("big") == []
        even = [i for i in range(TAGGED, KEYS) if "even" in tags_of(i)]  # the "big" went
        assert sorted(pages.keys_tagged("even")) == sorted(f"p{i}" for i in even)


def test_async_tags_and_expiry(cluster: LocalCluster) -> None:
    async def run() -> None:
        async with grid.AsyncClient(cluster.addresses[0]) as client:
            m = grid.AsyncTaggedMap(client.map("sessions"))
            await m.put("s1", {"u": 1}, tags=["user:1"])
            await m.put("s2", {"u": 1}, tags=["user:1"], ttl=0.2)
            await m.put("s3", {"u": 2}, tags=["user:2"])
            for _ in range(250):  # s2's TTL: it goes with its tags; there is no index
                if await m.get("s2") is None:
                    break
                await asyncio.sleep(0.02)
            assert await m.get("s2") is None
            assert await m.invalidate_tag("user:1") == 1
            assert await m.get("s1") is None and await m.get("s3") == {"u": 2}

    asyncio.run(run())
