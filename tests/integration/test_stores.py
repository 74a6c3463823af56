"""Read-through, write-through and durable write-behind (grid/client/stores.py) against
real members, with a database the test holds: a dict that can be stopped, that remembers
the idempotency keys it applied, and that refuses some keys on purpose."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

import grid
from grid.harness.cluster import LocalCluster
from tests.integration.support import live, settled_cluster, wait_until

WRITES = 10_000
POISON = {f"bad-{i}" for i in range(20)}


class Database:
    """What a MapStore writes to. `down`: every call fails as a database out of reach."""

    def __init__(self) -> None:
        self.rows: dict[str, object] = {}
        self.applied: set[str] = set()
        self.calls = 0
        self.loads = 0
        self.down = False
        self.lock = threading.Lock()

    def load(self, key: str) -> object:
        with self.lock:
            self.loads += 1
            return self.rows.get(key)

    def store(self, writes: list[grid.Write]) -> None:
        with self.lock:
            self.calls += 1
            if self.down:
                raise grid.StoreUnavailable("database stopped")
            bad = [w.key for w in writes if w.key in POISON]
            if bad:
                raise ValueError(f"rejected {bad[0]}")
            for w in writes:
                if w.idempotency_key in self.applied:
                    continue  # a retry of a write already applied
                self.applied.add(w.idempotency_key)
                if w.value is None:
                    self.rows.pop(w.key, None)
                else:
                    self.rows[w.key] = w.value


@pytest.fixture(scope="module")
def cluster(no_grid_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with settled_cluster(3, tmp_path_factory.mktemp("stores"), ["--sync-backups", "1"]) as c:
        yield c


def test_write_behind_survives_an_outage_and_a_kill_of_a_primary(cluster: LocalCluster) -> None:
    """10,000 writes queued while the database is stopped, a member killed -9 while it
    holds queued writes, the database back: every write reaches it, and the dead letters
    are exactly the writes refused on purpose, after max_attempts tries each."""
    db = Database()
    db.down = True
    keys = [f"k-{i}" for i in range(WRITES - len(POISON))] + sorted(POISON)

    async def fill() -> None:
        async with grid.AsyncClient(cluster.addresses[0], timeout=20) as client:
            stored = grid.AsyncStoredMap(client.map("orders"), db, delay=0.0, max_attempts=3,
                                         retry_base=0.01, retry_max=0.05)  # fmt: skip
            numbered = list(enumerate(keys))
            for start in range(0, len(numbered), 500):
                chunk = numbered[start : start + 500]
                await asyncio.gather(*(stored.put(k, {"n": i, "k": k}) for i, k in chunk))
            for n in range(5):  # coalesced: only the last reaches the database
                await stored.put("k-0", {"n": -n, "k": "k-0"})
            outage = await stored.drain()
            assert outage.outage.startswith("StoreUnavailable") and outage.stored == 0
            assert await stored.queued() == WRITES

    asyncio.run(fill())
    cluster.kill(cluster.members[1])  # it is the primary or the backup of about 2/3 of them

    db.down = False
    with grid.Client(cluster.addresses[0], timeout=20) as client:
        stored = grid.StoredMap(client.map("orders"), db, delay=0.0, batch_size=500,
                                max_attempts=3, retry_base=0.01, retry_max=0.05)  # fmt: skip
        deadline = time.monotonic() + 120
        while stored.queued() and time.monotonic() < deadline:
            stored.drain()
        assert stored.queued() == 0
        assert set(db.rows) == set(keys) - POISON
        assert db.rows["k-0"] == {"n": -4, "k": "k-0"}
        wrong = [k for i, k in enumerate(keys) if i and k in db.rows and db.rows[k]["n"] != i]
        assert not wrong, f"{len(wrong)} keys hold another write than their last"
        dead = stored.dead_letters()
        assert set(dead) == POISON
        assert all(
            d["attempts"] == 3 and d["error"].startswith("ValueError") for d in dead.values()
        )
        assert client.map("orders").get("bad-0")["k"] == "bad-0"  # the map keeps the value


def test_write_through_refused_leaves_the_map_alone_and_read_through_loads_once(
    cluster: LocalCluster,
) -> None:
    db = Database()
    db.rows["from-db"] = {"loaded": True}
    with grid.Client(live(cluster)[-1].address, timeout=10) as client:
        through = grid.StoredMap(client.map("customers"), db, write="through")
        through.put("c-1", {"name": "Ada"})
        assert db.rows["c-1"] == {"name": "Ada"} and through.get("c-1") == {"name": "Ada"}
        with pytest.raises(ValueError, match="rejected bad-0"):
            through.put("bad-0", {"name": "Eve"})
        assert client.map("customers").get("bad-0") is None
        through.delete("c-1")
        assert "c-1" not in db.rows and client.map("customers").get("c-1") is None

        threads = [threading.Thread(target=through.get, args=("from-db",)) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert through.get("from-db") == {"loaded": True} and db.loads == 1
        assert through.get("nowhere", "default") == "default"


def test_the_drainer_thread_stores_what_is_due(cluster: LocalCluster) -> None:
    db = Database()
    with grid.Client(live(cluster)[0].address, timeout=10) as client:
        stored = grid.StoredMap(client.map("events"), db, delay=0.05)
        stored.start()
        try:
            for i in range(50):
                stored.put(f"e-{i}", i)
            stored.delete("e-0")
            wait_until(lambda: len(db.rows) == 49 and not stored.queued(), 30, what="drained")
        finally:
            stored.stop()
        assert db.rows == {f"e-{i}": i for i in range(1, 50)}


def test_an_embedded_node_stores_through_its_own_client(no_grid_env: None) -> None:
    db = Database()
    db.rows["seed"] = {"from": "db"}
    with grid.Node(port=0) as node:
        stored = grid.StoredMap(node.map("local"), db, delay=0.0)
        stored.put("a", 1)
        assert node.map("local").get("a") == 1 and stored.get("seed") == {"from": "db"}
        assert stored.drain().stored == 1 and db.rows["a"] == 1
