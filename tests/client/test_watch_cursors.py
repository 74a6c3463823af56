"""grid/client/watch.py's Cursors and grid/client/nearcache.py's store, with no network."""

from __future__ import annotations

import time

from grid.client.codec import resolve
from grid.client.nearcache import MISSING, NearCache, NearCacheStore
from grid.client.watch import Cursors, Phase
from proto import grid_pb2 as pb


def chunk(p: int, kind: int, term: int = 5, prev: int = 0, seq: int = 0,
          keys: tuple[bytes, ...] = (), forked: bool = False) -> pb.WatchChunk:  # fmt: skip
    return pb.WatchChunk(partition=p, kind=kind, term=term, prev=prev, seq=seq, forked=forked,
                         events=[pb.WatchEvent(kind=2, key=k) for k in keys])  # fmt: skip


def test_subscribe_sync_events_gap_and_resume() -> None:
    c = Cursors(2)
    subs = c.subscribe(lambda p: "a" if p == 0 else "b", 0.0)
    assert subs == {"a": [0], "b": [1]}
    assert c.chunk("a", chunk(0, pb.WATCH_SYNCED, seq=3)).live
    out = c.chunk("a", chunk(0, pb.WATCH_EVENTS, prev=3, seq=9, keys=(b"k",)))
    assert [e.key for e in out.events] == [b"k"] and c.pos[0].seq == 9
    assert c.chunk("a", chunk(0, pb.WATCH_EVENTS, prev=3, seq=9)).events == ()  # duplicate
    assert c.chunk("b", chunk(0, pb.WATCH_EVENTS, prev=9, seq=10)).events == ()  # wrong member
    gap = c.chunk("a", chunk(0, pb.WATCH_EVENTS, prev=11, seq=12, keys=(b"x",)))
    assert gap.stale and c.pos[0].phase is Phase.IDLE
    assert c.subscribe(lambda p: "a", 1.0) == {"a": [0]}  # again, from (5, 9)
    assert (c.pos[0].term, c.pos[0].seq) == (5, 9)
    reset = c.chunk("a", chunk(0, pb.WATCH_RESET, term=6, seq=40))
    assert reset.live and reset.gap and c.pos[0].term == 6


def test_lost_member_and_not_primary_make_partitions_stale() -> None:
    c = Cursors(3)
    c.subscribe(lambda p: "a", 0.0)
    for p in range(3):
        c.chunk("a", chunk(p, pb.WATCH_SYNCED, seq=1))
    assert c.chunk("a", chunk(2, pb.WATCH_NOT_PRIMARY)).stale
    assert sorted(c.lost("a")) == [0, 1]
    assert c.idle() == [0, 1, 2]
    c.subscribe(lambda p: "b", 0.0)
    forked = c.chunk("b", chunk(0, pb.WATCH_SYNCED, term=8, seq=1, forked=True))
    assert forked.live and "failover" in forked.gap


def test_near_cache_store_bounds_ttl_and_invalidation() -> None:
    store = NearCacheStore(NearCache(max_entries=2, ttl=0.05), resolve("raw"))
    store.start(4)
    assert store.reserve([b"a"])[0][1] == -1  # not live: nothing is cached
    for p in range(4):
        store.live(p)
    for k in (b"a", b"b", b"c"):
        store.fill(k, store.reserve([k])[0], b"v-" + k, 0)
    assert store.get(b"a") is MISSING and store.get(b"c") == b"v-c"  # LRU bound
    assert store.stats()["evictions"] == 1
    r = store.reserve([b"d"])[0]
    store.events(r[0], [pb.WatchEvent(kind=2, key=b"zzz")])  # an invalidation meanwhile
    store.fill(b"d", r, b"v", 0)
    assert store.get(b"d") is MISSING  # not cached: it may be older than the change
    time.sleep(0.06)
    assert store.get(b"c") is MISSING and store.stats()["expirations"] == 1
    store.fill(b"e", store.reserve([b"e"])[0], b"v", 0)
    p = store.reserve([b"e"])[0][0]
    store.stale(p)
    assert store.get(b"e") is MISSING and store.reserve([b"e"])[0][1] == -1


def test_near_cache_max_idle_and_byte_bound() -> None:
    store = NearCacheStore(NearCache(max_idle=0.05, max_bytes=20), resolve("raw"))
    store.start(1)
    store.live(0)
    store.fill(b"a", store.reserve([b"a"])[0], b"x" * 10, 0)
    store.fill(b"b", store.reserve([b"b"])[0], b"x" * 10, 0)
    assert store.get(b"a") is MISSING and store.stats()["bytes"] == 11  # 22 bytes were over 20
    for _ in range(3):  # hits keep it: idle is since the last hit
        time.sleep(0.03)
        assert store.get(b"b") == b"x" * 10
    time.sleep(0.07)
    assert store.get(b"b") is MISSING and store.stats()["expirations"] == 1
