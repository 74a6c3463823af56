"""Every eviction policy, the memory bound, and the LFU counter (Redis's evict.c semantics)."""

from __future__ import annotations

import random

import pytest

from grid.errors import OutOfMemory
from grid.store.entry import ENTRY_OVERHEAD, VOLATILE_OVERHEAD
from grid.store.eviction import LFU_INIT, lfu_decayed, lfu_touch
from tests.store.helpers import Clock, make_store

VALUE = b"x" * 100
ENTRY = ENTRY_OVERHEAD + 4 + 100  # keys are b"k%03d"


def fill(policy: str, n: int = 100, capacity: int = 50, **kw: object):
    clock = Clock()
    s = make_store(clock, max_memory=ENTRY * capacity, eviction_policy=policy, **kw)
    m = s.map("m")
    return clock, s, m


def test_memory_never_exceeds_max_memory() -> None:
    for policy in ("lru", "lfu", "random", "volatile-ttl"):
        clock, s, m = fill(policy)
        for i in range(300):
            s.put(m, b"k%03d" % i, VALUE, clock(), ttl_ms=10**9)
            assert s.used <= s.max_memory
        fits = s.max_memory // (ENTRY + VOLATILE_OVERHEAD)  # TTL entries cost a little more
        assert s.size(m) == fits
        assert m.stats.evictions == 300 - fits


def test_lru_keeps_recently_used_keys() -> None:
    clock, s, m = fill("lru", eviction_samples=10)
    for i in range(50):
        s.put(m, b"k%03d" % i, VALUE, clock())
        clock.advance(1)
    hot = [b"k%03d" % i for i in range(10)]
    clock.advance(1000)
    for k in hot:
        assert s.get(m, k, clock()) is not None
    clock.advance(1)
    for i in range(50, 90):  # 40 more: 40 evictions among 40 cold + 10 hot
        s.put(m, b"k%03d" % i, VALUE, clock())
        clock.advance(1)
    survivors = sum(s.contains(m, k, clock()) for k in hot)
    assert survivors >= 9, f"LRU evicted {10 - survivors} of 10 recently read keys"


def test_lfu_keeps_frequently_used_keys() -> None:
    clock, s, m = fill("lfu", eviction_samples=10)
    for i in range(50):
        s.put(m, b"k%03d" % i, VALUE, clock())
    hot = [b"k%03d" % i for i in range(10)]
    for _ in range(50):
        for k in hot:
            s.get(m, k, clock())
    for i in range(50, 90):
        s.put(m, b"k%03d" % i, VALUE, clock())
    survivors = sum(s.contains(m, k, clock()) for k in hot)
    assert survivors >= 9, f"LFU evicted {10 - survivors} of 10 hot keys"


def test_volatile_ttl_evicts_soonest_expiring_and_spares_persistent_keys() -> None:
    clock, s, m = fill("volatile-ttl", eviction_samples=10)
    for i in range(25):
        s.put(m, b"p%03d" % i, VALUE, clock())  # no TTL: never a candidate
    for i in range(25):
        s.put(m, b"t%03d" % i, VALUE, clock(), ttl_ms=1_000_000 + i * 1000)
    for i in range(10):
        s.put(m, b"n%03d" % i, VALUE, clock(), ttl_ms=10_000_000)
    assert all(s.contains(m, b"p%03d" % i, clock()) for i in range(25))
    remaining = [i for i in range(25) if s.contains(m, b"t%03d" % i, clock())]
    evicted = [i for i in range(25) if i not in remaining]
    assert m.stats.evictions == len(evicted) > 0
    assert all(s.contains(m, b"n%03d" % i, clock()) for i in range(10))  # latest expiry
    assert sum(evicted) / len(evicted) < sum(remaining) / len(remaining) - 5, (
        "mostly the soonest-expiring went first"
    )


def test_volatile_ttl_without_volatile_keys_is_out_of_memory() -> None:
    clock, s, m = fill("volatile-ttl")
    for i in range(50):
        s.put(m, b"p%03d" % i, VALUE, clock())
    with pytest.raises(OutOfMemory, match="volatile-ttl"):
        s.put(m, b"over", VALUE, clock())


def test_noeviction_answers_out_of_memory_and_keeps_data() -> None:
    clock, s, m = fill("noeviction")
    for i in range(50):
        s.put(m, b"k%03d" % i, VALUE, clock())
    with pytest.raises(OutOfMemory, match="max_memory"):
        s.put(m, b"k999", VALUE, clock())
    with pytest.raises(OutOfMemory):
        s.put(m, b"k000", VALUE * 2, clock())  # growing an entry needs memory too
    assert s.put(m, b"k000", b"small", clock())  # shrinking one does not
    assert s.delete(m, b"k001", clock())
    s.put(m, b"k999", VALUE, clock())  # the freed room is usable
    assert s.size(m) == 50 and m.stats.evictions == 0


def test_random_policy_evicts_uniformly_enough() -> None:
    clock, s, m = fill("random", capacity=100)
    for i in range(100):
        s.put(m, b"k%03d" % i, VALUE, clock())
    for i in range(100, 200):
        s.put(m, b"k%03d" % i, VALUE, clock())
    old = sum(s.contains(m, b"k%03d" % i, clock()) for i in range(100))
    assert 15 <= old <= 60  # neither "evict oldest" (0) nor "never evict old" (100)


def test_eviction_spans_maps_and_counts_per_map() -> None:
    clock, s, _ = fill("lru")
    a, b = s.map("a"), s.map("b")
    for i in range(50):
        s.put(a, b"k%03d" % i, VALUE, clock())
    clock.advance(10)
    for i in range(30):
        s.put(b, b"k%03d" % i, VALUE, clock())
    assert a.stats.evictions + b.stats.evictions == 30
    assert a.stats.evictions >= 25  # a's entries are the older ones
    assert s.used == a.stats.bytes + b.stats.bytes <= s.max_memory


def test_single_value_bigger_than_memory_is_out_of_memory_not_a_loop() -> None:
    clock, s, m = fill("lru", capacity=2)
    s.put(m, b"k000", VALUE, clock())
    with pytest.raises(OutOfMemory):
        s.put(m, b"huge", b"x" * (ENTRY * 3), clock())
    with pytest.raises(OutOfMemory):  # growing the only entry cannot evict itself
        s.put(m, b"k000", b"x" * (ENTRY * 3), clock())


def test_lfu_counter_grows_logarithmically_and_decays() -> None:
    clock, s, m = fill("lfu")
    e = s.put(m, b"k000", VALUE, clock())
    assert e.lfu == LFU_INIT
    rng = random.Random(3)
    for _ in range(1000):
        e.lfu = lfu_touch(e.lfu, e.last_access, clock(), 60_000, 10, rng)
    assert 15 < e.lfu < 40, e.lfu  # ~log growth: far below 1000
    counter = e.lfu
    e.last_access = clock()
    clock.advance(5 * 60_000)
    assert lfu_decayed(e.lfu, e.last_access, clock(), 60_000) == counter - 5
    clock.advance(10**9)
    assert lfu_decayed(e.lfu, e.last_access, clock(), 60_000) == 0
