"""The near cache: a map's values kept in the client, invalidated by the members.

Opt in per map: `client.map("users", near_cache=NearCache(max_entries=10_000))`. A get
served from it costs a dict lookup in the caller's thread (no socket, no decode: the
decoded value is kept, so do not mutate what a get returns). It is Hazelcast's near
cache, on this grid's change streams (watch.py):

- **Invalidation.** The client watches the map on every partition's primary (a
  `Watcher` without values). Every change (put, delete, expiry, eviction, clear)
  removes the key here as its event arrives, in the partition's order. The
  client's own writes remove the key at once, before they are sent and again when
  answered.
- **Only what the stream covers.** A partition's values are cached only while its
  stream is live. When it stops being live (the connection broke, the member
  dropped a subscription that fell behind, the primary changed, a gap in the
  sequence numbers, a failover's new term) every entry of the partition is dropped
  at once, and the partition caches again once subscribed anew. This is
  Hazelcast's reconciliation made eager: a stale partition is never served.
- **Reconciliation.** Every `reconcile_interval` the client asks each member for
  its partitions' positions (term, seq) and compares them with its own; a
  difference is a gap (above), and a member that does not answer within the
  interval is taken as lost. So a stream that went quiet without breaking (a
  stalled member, a lost frame) serves stale values for at most about two
  intervals.
- **No stale fill.** A miss reads the member and caches the answer only if no
  invalidation of its partition arrived meanwhile (a generation counter per
  partition, as Hazelcast's reservation ids).
- **Bounds.** LRU by `max_entries` and, if set, `max_bytes` (key plus encoded value
  lengths); `ttl` and `max_idle` are honoured locally, and an entry also leaves by
  the TTL the member gave it.

Counters (`map.near_cache_stats()`): hits, misses, evictions, invalidations,
expirations, stale (partitions dropped for not being live), entries and bytes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grid.client.codec import Codec
from grid.client.keys import Duration, to_ms
from grid.client.wireops import AnyOp
from partitioning import partition_of
from proto import grid_pb2 as pb

MISSING: Any = object()
"""What `NearCacheStore.get` returns for a key it does not hold."""

WRITE_OPS = frozenset({pb.PUT, pb.DELETE, pb.EXPIRE, pb.INCR})
"""Ops of this client that change a key: it leaves the near cache at once."""


@dataclass(frozen=True)
class NearCache:
    """A near cache's configuration (Hazelcast's NearCacheConfig)."""

    max_entries: int = 10_000
    """Entries kept at most; the least recently used go first."""
    max_bytes: int = 0
    """Bytes kept at most (keys plus encoded values); 0: no byte bound."""
    ttl: Duration = None
    """Seconds an entry is served after it was read from a member; None: until changed."""
    max_idle: Duration = None
    """Seconds an entry is kept without a hit; None: no limit."""
    reconcile_interval: float = 1.0
    """Seconds between position checks with the members (see the module's docstring)."""


class _Entry:
    __slots__ = ("accessed", "expires", "partition", "size", "value")

    def __init__(self, value: Any, size: int, partition: int, expires: float, now: float) -> None:
        self.value = value
        self.size = size
        self.partition = partition
        self.expires = expires  # monotonic seconds; 0: never
        self.accessed = now


class NearCacheStore:
    """The entries of one map's near cache in one client, and the Watcher's consumer.
    Thread-safe: gets run in callers' threads, invalidations on the client's loop."""

    def __init__(self, config: NearCache, codec: Codec) -> None:
        self.config = config
        self.codec = codec
        self.ttl_s = to_ms(config.ttl) / 1000
        self.max_idle_s = to_ms(config.max_idle) / 1000
        self.max_entries = max(1, config.max_entries)
        self.max_bytes = config.max_bytes
        self.entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self.partitions = 0  # known once the watcher has the table (`start`)
        self.keys_of: list[set[bytes]] = []
        self.covered = bytearray()  # partitions whose stream is live
        self.gen: list[int] = []
        self.bytes = 0
        self.lock = threading.Lock()
        self.hits = self.misses = self.evictions = self.invalidations = 0
        self.expirations = self.stale_drops = 0

    def start(self, partitions: int) -> None:
        """The cluster's partition count (the watcher learned it): caching may begin."""
        with self.lock:
            if self.partitions != partitions:
                self.partitions = partitions
                self.keys_of = [set() for _ in range(partitions)]
                self.covered = bytearray(partitions)
                self.gen = [0] * partitions
                self.entries.clear()
                self.bytes = 0

    # ---- reads ---------------------------------------------------------------------------------
    def get(self, key: bytes) -> Any:
        """The cached value of `key`, or MISSING."""
        with self.lock:
            e = self.entries.get(key)
            if e is None:
                self.misses += 1
                return MISSING
            now = time.monotonic()
            if (e.expires and now >= e.expires) or (
                self.max_idle_s and now - e.accessed > self.max_idle_s
            ):
                self._remove(key, e)
                self.expirations += 1
                self.misses += 1
                return MISSING
            e.accessed = now
            self.entries.move_to_end(key)
            self.hits += 1
            return e.value

    def reserve(self, keys: Sequence[bytes]) -> list[tuple[int, int]]:
        """Before a read of the members: each key's (partition, generation); a value comes
        back cacheable only if its partition's generation did not move meanwhile."""
        gen = self.gen
        out = []
        if not self.partitions:
            return [(0, -1)] * len(keys)
        for k in keys:
            p = partition_of(k, self.partitions)
            out.append((p, gen[p] if self.covered[p] else -1))
        return out

    def fill(self, key: bytes, reserved: tuple[int, int], data: bytes, ttl_ms: int) -> None:
        """Cache a value read from a member (encoded `data`) if still valid."""
        p, gen = reserved
        if gen < 0:
            return
        value = self.codec.decode(data)
        now = time.monotonic()
        expires = now + self.ttl_s if self.ttl_s else 0.0
        if ttl_ms > 0:
            member_expiry = now + ttl_ms / 1000
            expires = min(expires, member_expiry) if expires else member_expiry
        size = len(key) + len(data)
        with self.lock:
            if not self.covered[p] or self.gen[p] != gen:
                return
            old = self.entries.get(key)
            if old is not None:
                self._remove(key, old)
            self.entries[key] = _Entry(value, size, p, expires, now)
            self.keys_of[p].add(key)
            self.bytes += size
            while len(self.entries) > self.max_entries or (
                self.max_bytes and self.bytes > self.max_bytes and len(self.entries) > 1
            ):
                k, e = self.entries.popitem(last=False)
                self._forget(k, e)
                self.evictions += 1

    # ---- invalidation --------------------------------------------------------------------------
    def invalidate(self, keys: Sequence[bytes]) -> None:
        """This client changes these keys: forget them now."""
        with self.lock:
            if not self.partitions:
                return
            for k in keys:
                p = partition_of(k, self.partitions)
                self.gen[p] += 1
                e = self.entries.get(k)
                if e is not None:
                    self._remove(k, e)
                    self.invalidations += 1

    def invalidate_all(self) -> None:
        with self.lock:
            for p in range(self.partitions):
                self.gen[p] += 1
            self.entries.clear()
            for s in self.keys_of:
                s.clear()
            self.bytes = 0

    def _remove(self, key: bytes, e: _Entry) -> None:
        del self.entries[key]
        self._forget(key, e)

    def _forget(self, key: bytes, e: _Entry) -> None:
        self.keys_of[e.partition].discard(key)
        self.bytes -= e.size

    def _drop(self, p: int) -> None:
        self.gen[p] += 1
        keys = self.keys_of[p]
        for k in keys:
            e = self.entries.pop(k, None)
            if e is not None:
                self.bytes -= e.size
        keys.clear()

    # ---- the Watcher's consumer (on the client's loop) -----------------------------------------
    def events(self, partition: int, events: Sequence[pb.WatchEvent]) -> None:
        with self.lock:
            self.gen[partition] += 1
            entries = self.entries
            for ev in events:
                if ev.kind == 32:  # cleared: the map's whole partition
                    self._drop(partition)
                    continue
                e = entries.get(ev.key)
                if e is not None:
                    self._remove(ev.key, e)
                    self.invalidations += 1

    def live(self, partition: int) -> None:
        with self.lock:
            self.covered[partition] = 1

    def stale(self, partition: int) -> None:
        with self.lock:
            self.covered[partition] = 0
            if self.keys_of[partition]:
                self.stale_drops += 1
            self._drop(partition)

    def gap(self, partition: int, why: str) -> None:
        with self.lock:
            self._drop(partition)

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {"hits": self.hits, "misses": self.misses, "evictions": self.evictions,
                    "invalidations": self.invalidations, "expirations": self.expirations,
                    "stale": self.stale_drops, "entries": len(self.entries), "bytes": self.bytes,
                    "live_partitions": sum(self.covered)}  # fmt: skip


class NearCachedCalls:
    """A map's calls through its near cache: this client's writes invalidate their keys
    (before they are sent and when answered), and GET answers fill the cache. Whatever
    else a map asks of its connection passes through."""

    def __init__(self, inner: Any, store: NearCacheStore, started: Any) -> None:
        self._inner = inner
        self.store = store
        self._started = started  # the watcher's ensure_started

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def call(
        self, ops: Sequence[AnyOp], timeout: float | None = None, idempotent: bool = True
    ) -> list[pb.Result]:
        store = self.store
        self._started()
        written = [op.key for op in ops if op.code in WRITE_OPS]
        cleared = any(op.code == pb.CLEAR for op in ops)
        gets = [i for i, op in enumerate(ops) if op.code == pb.GET]
        if written:
            store.invalidate(written)
        if cleared:
            store.invalidate_all()
        reserved = store.reserve([ops[i].key for i in gets]) if gets else []
        try:
            results = await self._inner.call(ops, timeout, idempotent)
        finally:
            if written:
                store.invalidate(written)
            if cleared:
                store.invalidate_all()
        if written or self._inner.options.read_from_backup:
            return results  # a backup's answer may be older than an invalidation seen
        for i, r in zip(gets, reserved, strict=True):
            res = results[i]
            if res.status == 0:
                store.fill(ops[i].key, r, res.value, res.ttl_ms)
        return results
