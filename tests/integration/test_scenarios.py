"""The cache workloads of grid/harness/scenarios.py through every map flavour, plus API parity.

Flavours: the remote sync `Client` map, the remote `AsyncClient` map, the
embedded sync `Node` map (LocalMap) and the embedded async `Node` map
(AsyncLocalMap). The scenario functions are written against the blocking API;
the async flavours run them through `BlockingMap`, which drives each coroutine
on an event loop owned by the test.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import grid
from grid.harness import scenarios
from grid.harness.cluster import LocalCluster
from tests.conftest import Spawn
from tests.integration.support import AsyncRunner, BlockingMap

pytestmark = pytest.mark.integration

FLAVOURS = ("client", "async_client", "node", "async_node")
MakeMap = Callable[[str], Any]


@pytest.fixture(params=FLAVOURS)
def make_map(request: pytest.FixtureRequest) -> MakeMap:
    """A factory of maps of one flavour, all with the blocking API."""
    return _factory(request, request.param)


def _factory(request: pytest.FixtureRequest, flavour: str) -> MakeMap:
    if flavour == "client":
        client: grid.Client = request.getfixturevalue("client")
        return client.map
    if flavour == "node":
        node: grid.Node = request.getfixturevalue("node")
        return node.map
    aio: AsyncRunner = request.getfixturevalue("aio")
    if flavour == "async_client":
        aclient: grid.AsyncClient = request.getfixturevalue("async_client")
        return lambda name: BlockingMap(aclient.map(name), aio)
    anode: grid.Node = request.getfixturevalue("async_node")
    return lambda name: BlockingMap(anode.map(name), aio)


# ---- scenarios -----------------------------------------------------------------------------------
def test_cache_aside(make_map: MakeMap, map_name: str) -> None:
    """First read misses and loads from the database, the second hits; TTL is about an hour."""
    db = scenarios.FakeDatabase()
    r = scenarios.cache_aside(make_map(map_name), db, user_id=3)
    assert (r.first_hit, r.second_hit, r.db_loads) == (False, True, 1)
    assert r.value == {"id": 3, "name": "user-3", "plan": "pro"}
    assert r.ttl_s is not None and 3590 < r.ttl_s <= 3600


def test_batch_read(make_map: MakeMap, map_name: str) -> None:
    """500 users, 200 cached: 200 hits, 300 loaded and written back, 500 on the re-read."""
    db = scenarios.FakeDatabase()
    users = make_map(map_name)
    r = scenarios.batch_read(users, db, n=500, warm=200)
    assert (r.requested, r.hits_first, r.loaded, r.hits_second) == (500, 200, 300, 500)
    assert db.loads == 500
    assert users.size() == 500
    assert users.get("user:1499") == {"id": 1499, "name": "user-1499", "plan": "pro"}


def test_rate_limit(make_map: MakeMap, map_name: str) -> None:
    """Fixed window, limit 100: of 120 requests 100 pass and 20 are rejected."""
    # An hour-long window makes crossing a window boundary mid-test practically impossible.
    r = scenarios.rate_limit(make_map(map_name), user="alice", window_s=3600)
    assert (r.allowed, r.rejected) == (100, 20)
    assert r.counter_ttl_s is not None and 0 < r.counter_ttl_s <= 3600


def test_invalidate(make_map: MakeMap, map_name: str) -> None:
    """Deleting the cached copy makes the next read miss."""
    r = scenarios.invalidate(make_map(map_name), user_id=9)
    assert r.before == {"id": 9, "name": "stale"}
    assert r.deleted is True
    assert r.after is None


def test_sessions_max_idle(make_map: MakeMap, map_name: str) -> None:
    """A 10 KB session with 0.6 s max-idle lives while it is used and is gone after idling."""
    r = scenarios.sessions(make_map(map_name), idle_s=0.6)
    assert r.alive_while_active
    assert r.gone_after_idle
    assert r.size_bytes == 10_000


# ---- the same workloads written natively for asyncio ---------------------------------------------
@pytest.fixture(params=("async_client", "async_node"))
def async_map(request: pytest.FixtureRequest, map_name: str) -> Any:
    """An AsyncMap (remote) or AsyncLocalMap (embedded), used with aio.run(...)."""
    if request.param == "async_client":
        return request.getfixturevalue("async_client").map(map_name)
    return request.getfixturevalue("async_node").map(map_name)


def test_async_rate_limit_concurrent(aio: AsyncRunner, async_map: Any) -> None:
    """120 concurrent incr calls on one counter: exactly 100 allowed, every value seen once."""

    async def main() -> list[int]:
        return await asyncio.gather(*(async_map.incr("rl", ttl=60) for _ in range(120)))

    values = aio.run(main())
    assert sorted(values) == list(range(1, 121))
    assert sum(v <= 100 for v in values) == 100
    assert 0 < aio.run(async_map.ttl("rl")) <= 60


def test_async_cache_aside_and_batch(aio: AsyncRunner, async_map: Any) -> None:
    """Cache-aside, get_many/put_many, invalidation and a full async scan, natively async."""
    db = scenarios.FakeDatabase()

    async def main() -> None:
        assert await async_map.get("user:1") is None
        await async_map.put("user:1", db.load_user(1), ttl=3600)
        assert await async_map.get("user:1") == db.load_user(1)
        keys = [f"user:{i}" for i in range(100, 150)]
        await async_map.put_many({k: {"k": k} for k in keys[:20]})
        found = await async_map.get_many(keys)
        assert sorted(found) == sorted(keys[:20])
        await async_map.put_many({k: {"k": k} for k in keys if k not in found})
        assert len(await async_map.get_many(keys)) == 50
        assert sorted([k async for k in async_map.scan(count=7)]) == sorted(["user:1", *keys])
        assert await async_map.delete("user:1") is True
        assert await async_map.get("user:1") is None

    aio.run(main())


def test_async_session_sliding_expiry(aio: AsyncRunner, async_map: Any) -> None:
    """touch keeps a max-idle entry alive past its idle time; silence removes it."""

    async def main() -> None:
        await async_map.put("s", {"cart": [1, 2]}, max_idle=0.6)
        for _ in range(4):
            await asyncio.sleep(0.3)
            assert await async_map.touch("s") is True
        assert await async_map.get("s") == {"cart": [1, 2]}
        await asyncio.sleep(0.9)
        assert await async_map.get("s") is None
        assert await async_map.contains("s") is False

    aio.run(main())


# ---- eviction on a zipf read pattern -------------------------------------------------------------
EVICTION_MEMORY = 600_000  # 600KB: about a quarter of the workload's 4,000 keys


def _zipf_remote(spawn: Spawn, policy: str) -> tuple[scenarios.Eviction, dict[str, Any]]:
    cluster: LocalCluster = spawn("--max-memory", "600KB", "--eviction-policy", policy)
    with grid.Client(cluster.addresses[0], timeout=10) as client:
        result = scenarios.zipf_cache(client.map("zipf"))
        return result, client.stats()


def test_zipf_eviction_remote(spawn: Spawn) -> None:
    """Members bounded to 600KB: all policies evict and stay under max_memory; lfu > random."""
    results = {p: _zipf_remote(spawn, p) for p in ("lru", "lfu", "random")}
    for policy, (r, st) in results.items():
        assert st["eviction_policy"] == policy
        assert st["max_memory"] == EVICTION_MEMORY
        tot = st["total"]
        assert tot["evictions"] > 0, f"{policy} never evicted"
        assert 0 < tot["bytes"] <= EVICTION_MEMORY, f"{policy} uses {tot['bytes']} bytes"
        assert tot["entries"] < 4000
        assert r.reads == 40_000 and 0 < r.hits < r.reads
    lfu, rnd = results["lfu"][0].hit_ratio, results["random"][0].hit_ratio
    assert lfu > rnd, f"lfu hit ratio {lfu:.3f} is not above random's {rnd:.3f}"


def test_zipf_eviction_embedded() -> None:
    """The same bound on an embedded node: lfu beats random and memory stays bounded."""
    ratios = {}
    for policy in ("lfu", "random"):
        with grid.Node(port=0, max_memory="600KB", eviction_policy=policy) as node:
            r = scenarios.zipf_cache(node.map("zipf"))
            tot = node.stats()["total"]
            assert tot["evictions"] > 0
            assert 0 < tot["bytes"] <= EVICTION_MEMORY
            ratios[policy] = r.hit_ratio
    assert ratios["lfu"] > ratios["random"], ratios


# ---- API parity across the four flavours ---------------------------------------------------------
def _norm(value: Any) -> Any:
    """Make results comparable across flavours: versions and float TTLs vary run to run."""
    if isinstance(value, grid.Version):
        return "<version>"
    if isinstance(value, grid.EntryView):
        return ("entry", _norm(value.value), _norm(value.ttl))
    if isinstance(value, float):
        return "inf" if math.isinf(value) else round(value)
    if isinstance(value, tuple):
        return tuple(_norm(v) for v in value)
    return value


def _parity_steps(m: Any) -> Iterator[tuple[str, Callable[[], Any], Any]]:
    """(label, call, expected normalized result) for one map; run in order."""
    yield "get absent", lambda: m.get("a"), None
    yield "get absent default", lambda: m.get("a", "dflt"), "dflt"
    yield "put", lambda: m.put("a", {"x": 1}), "<version>"
    yield "get", lambda: m.get("a"), {"x": 1}
    yield "get_entry", lambda: m.get_entry("a"), ("entry", {"x": 1}, None)
    yield "get_entry absent", lambda: m.get_entry("nope"), None
    yield "put_if_absent exists", lambda: m.put_if_absent("a", 2), False
    yield "put_if_absent new", lambda: m.put_if_absent("b", [1, 2]), True
    yield "replace absent", lambda: m.replace("c", 1), False
    yield "replace present", lambda: m.replace("b", "bb"), True
    yield "get replaced", lambda: m.get("b"), "bb"
    entry: dict[str, Any] = {}
    yield "get_entry b", lambda: entry.setdefault("e", m.get_entry("b")), ("entry", "bb", None)
    yield "cas current", lambda: m.compare_and_set("b", entry["e"].version, "b2"), True
    yield "cas stale", lambda: m.compare_and_set("b", entry["e"].version, "b3"), False
    yield "cas absent", lambda: m.compare_and_set("zz", entry["e"].version, 1), False
    yield "get after cas", lambda: m.get("b"), "b2"
    yield "incr new", lambda: m.incr("n"), 1
    yield "incr 10", lambda: m.incr("n", 10), 11
    yield "decr 3", lambda: m.decr("n", 3), 8
    yield "decr new", lambda: m.decr("dn"), -1
    yield "get counter", lambda: m.get("n"), 8
    yield "incr non-integer", lambda: m.incr("a"), ("error", "InvalidArgument")
    yield "put ttl", lambda: m.put("t", "v", ttl=100), "<version>"
    yield "ttl", lambda: m.ttl("t"), 100
    yield "get_entry ttl", lambda: m.get_entry("t"), ("entry", "v", 100)
    yield "expire 50", lambda: m.expire("t", 50), True
    yield "ttl 50", lambda: m.ttl("t"), 50
    yield "expire persist", lambda: m.expire("t", None), True
    yield "ttl persisted", lambda: m.ttl("t"), "inf"
    yield "expire absent", lambda: m.expire("nope", 5), False
    yield "ttl absent", lambda: m.ttl("nope"), None
    yield "put max_idle", lambda: m.put("idle", 1, max_idle=100), "<version>"
    yield "ttl max_idle", lambda: m.ttl("idle"), 100
    yield "touch", lambda: m.touch("idle"), True
    yield "touch absent", lambda: m.touch("nope"), False
    yield "contains", lambda: m.contains("a"), True
    yield "contains absent", lambda: m.contains("nope"), False
    yield "delete", lambda: m.delete("a"), True
    yield "delete again", lambda: m.delete("a"), False
    yield "get deleted", lambda: m.get("a"), None
    yield "put_many", lambda: m.put_many({f"k{i}": i for i in range(10)}), None
    yield "put_many pairs", lambda: m.put_many([("p1", "x"), ("p2", "y")], ttl=30), None
    yield "ttl put_many", lambda: m.ttl("p2"), 30
    yield "get_many", lambda: m.get_many(["k0", "k5", "nope", "p1"]), {"k0": 0, "k5": 5, "p1": "x"}
    yield "delete_many", lambda: m.delete_many(["k0", "k1", "nope"]), 2
    keys = sorted(["b", "n", "dn", "t", "idle", "p1", "p2", *(f"k{i}" for i in range(2, 10))])
    yield "size", lambda: m.size(), len(keys)
    yield "scan", lambda: sorted(m.scan(count=3)), keys
    page = lambda: m.scan_page(b"", 4)  # noqa: E731
    yield "scan_page", lambda: (len(page()[0]), bool(page()[1])), (4, True)
    yield "bytes key", lambda: (m.put(b"\x00bin", 1), m.get(b"\x00bin")), ("<version>", 1)
    yield "empty key", lambda: m.put("", 1), ("error", "InvalidArgument")
    yield "empty key get", lambda: m.get(""), ("error", "InvalidArgument")
    yield "key too long", lambda: m.put("x" * 1025, 1), ("error", "TooLarge")
    yield "negative ttl", lambda: m.put("neg", 1, ttl=-1), ("error", "InvalidArgument")
    yield "negative max_idle", lambda: m.put("neg", 1, max_idle=-1), ("error", "InvalidArgument")
    yield "negative expire", lambda: m.expire("b", -1), ("error", "InvalidArgument")
    yield "negative incr ttl", lambda: m.incr("neg", ttl=-5), ("error", "InvalidArgument")
    yield "put None", lambda: m.put("none", None), ("error", "InvalidArgument")
    yield "nothing stored by errors", lambda: m.get_many(["neg", "none", "x"]), {}
    yield "clear", lambda: m.clear(), len(keys) + 1
    yield "size cleared", lambda: m.size(), 0
    yield "get_many cleared", lambda: m.get_many(keys), {}


def _run_steps(m: Any) -> list[tuple[str, Any]]:
    out = []
    for label, call, _ in _parity_steps(m):
        try:
            result = _norm(call())
        except grid.GridError as e:
            result = ("error", type(e).__name__)
        out.append((label, result))
    return out


def test_parity_of_the_four_flavours(request: pytest.FixtureRequest, map_name: str) -> None:
    """One sequence of every map operation gives the same, expected results on all 4 flavours."""
    expected = [(label, want) for label, _, want in _parity_steps(None)]
    results = {f: _run_steps(_factory(request, f)(map_name)) for f in FLAVOURS}
    for flavour, got in results.items():
        wrong = [(e[0], e[1], g[1]) for e, g in zip(expected, got, strict=True) if e != g]
        assert not wrong, f"{flavour}: (step, expected, got) {wrong}"
