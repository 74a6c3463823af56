"""A partition copy as a whole: its snapshot, its digest, its tombstones.

Replication works a partition at a time. A new replica is filled from a
snapshot; replicas are compared by digests and repaired by exchanging the
records of the buckets that differ (replication/digest.py explains the
digest). All of them see the same three kinds of item per map:

- live entries (a put of the entry, with its own version);
- tombstones: a delete remembered, with its version, for
  `tombstone_grace_s`. Without them a replica that missed the delete would
  hand the key back at the next merge. Expiry and eviction leave none:
  expiry happens at the same absolute time on every replica, and an evicted
  key coming back from a replica is a cache refilling, not a lost delete;
- the map's clear marker: the version of its last CLEAR in the partition,
  which removes every older entry wherever it turns up.

Records have the stream's shape, (op, map, key, value, ts, member,
expire_at, max_idle), so a follower applies a snapshot or a repair with the
same `Store.apply` and the same last-writer-wins rule as live changes.

Everything here runs under the store lock, in one go per partition: the copy
is described at one instant.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from typing import Any

from grid.store.entry import HEAD, VHEAD, unpack
from grid.store.recordmap import ZERO
from grid.store.store import CLEAR, DELETE, PUT, Store
from replication.digest import CLEARED, LIVE, TOMBSTONE, Digest, bucket_of
from replication.hlc import LOGICAL_BITS

Record = tuple[int, str, bytes, "bytes | None", int, int, int, int]
Holds = Callable[[str], bool] | None
"""Which maps a copy holds (per-map backups, grid/member/replicas/map_backups.py); None: all of
them."""


def snapshot_records(store: Store, partition: int, now: int, holds: Holds = None) -> list[Record]:
    """Everything a new replica needs: clear markers, tombstones, then live entries."""
    out: list[Any] = []
    grace_floor = _grace_floor(store, now)
    for rmap in store.maps.values():
        name = rmap.name
        if holds is not None and not holds(name):
            continue
        cleared = rmap.cleared[partition]
        if cleared != ZERO:
            out.append((CLEAR, name, b"", None, cleared[0], cleared[1], 0, 0))
        for key, (ts, member) in rmap.tombs[partition].items():
            if ts >= grace_floor:
                out.append((DELETE, name, key, None, ts, member, 0, 0))
        expired = store.expired
        for key, blob in rmap.recs[partition].items():
            if not expired(blob, now):
                out.append((PUT, name, key, *unpack(blob)))
    return out


def _grace_floor(store: Store, now: int) -> int:
    """The smallest ts a tombstone may have and still count."""
    return max(0, now - store.tombstone_grace_ms) << LOGICAL_BITS


def digest(store: Store, partition: int, cut: int, now: int, holds: Holds = None) -> Digest:
    """The copy's digest over versions at or below `cut` (see replication/digest.py)."""
    d = Digest()
    add = d.add
    grace_floor = _grace_floor(store, now)
    for rmap in store.maps.values():
        if holds is not None and not holds(rmap.name):
            continue
        name = rmap.name.encode()
        cts, cmember = rmap.cleared[partition]
        if cts and cts <= cut:
            add(name, b"", cts, cmember, CLEARED)
        for key, (ts, member) in rmap.tombs[partition].items():
            if grace_floor <= ts <= cut:
                add(name, key, ts, member, TOMBSTONE)
        for key, blob in rmap.recs[partition].items():
            # expired by its TTL: gone on every replica alike. Max-idle is left out of
            # this: it is the primary's clock (a backup never hears of reads there), so
            # a backup's copy looks idle sooner, and every round would find it different
            ts, member, sv = HEAD.unpack_from(blob)
            if ts <= cut:
                expire_at = VHEAD.unpack_from(blob)[3] if sv & 1 else 0
                if not (expire_at and expire_at <= now):
                    add(name, key, ts, member, LIVE)
    return d


def records_in(
    store: Store, partition: int, buckets: Collection[int], cut: int, now: int, holds: Holds = None
) -> list[Record]:
    """The records of these buckets, at or below `cut`: what a repair exchanges."""
    want = set(buckets)
    out: list[Any] = []
    grace_floor = _grace_floor(store, now)
    for rmap in store.maps.values():
        name = rmap.name
        if holds is not None and not holds(name):
            continue
        cts, cmember = rmap.cleared[partition]
        if cts and cts <= cut and bucket_of(b"") in want:
            out.append((CLEAR, name, b"", None, cts, cmember, 0, 0))
        for key, (ts, member) in rmap.tombs[partition].items():
            if grace_floor <= ts <= cut and bucket_of(key) in want:
                out.append((DELETE, name, key, None, ts, member, 0, 0))
        for key, blob in rmap.recs[partition].items():
            if HEAD.unpack_from(blob)[0] <= cut and bucket_of(key) in want:
                value, ts, member, expire_at, max_idle = unpack(blob)
                if expire_at and expire_at <= now:  # (as in digest)
                    continue
                out.append((PUT, name, key, value, ts, member, expire_at, max_idle))
    return out


def key_record(store: Store, partition: int, map_name: str, key: bytes, now: int) -> Record | None:
    """The newest thing this copy knows of one key: its live entry, its tombstone, or the
    map's clear marker (which removed it); None if it knows nothing (read repair)."""
    rmap = store.maps.get(map_name)
    if rmap is None:
        return None
    blob = rmap.recs[partition].get(key)
    if blob is not None:
        value, ts, member, expire_at, max_idle = unpack(blob)
        if not (expire_at and expire_at <= now):
            return (PUT, map_name, key, value, ts, member, expire_at, max_idle)
    dead = rmap.tombs[partition].get(key)
    if dead is not None and dead[0] >= _grace_floor(store, now):
        return (DELETE, map_name, key, None, dead[0], dead[1], 0, 0)
    cts, cmember = rmap.cleared[partition]
    if cts:
        return (CLEAR, map_name, b"", None, cts, cmember, 0, 0)
    return None


def collect_tombstones(store: Store, partition: int, now: int) -> int:
    """Forget the partition's tombstones older than the grace period; returns how many."""
    grace_floor = _grace_floor(store, now)
    collected = 0
    for rmap in store.maps.values():
        tombs = rmap.tombs[partition]
        if tombs:
            old = [k for k, (ts, _) in tombs.items() if ts < grace_floor]
            for k in old:
                del tombs[k]
            collected += len(old)
    return collected


def tombstone_count(store: Store) -> int:
    return sum(len(t) for rmap in store.maps.values() for t in rmap.tombs)


class StoreCopies:
    """The store as the anti-entropy core (replication/antientropy.py) reads and changes
    it: one partition per call, each under `lock` (the member's store lock; none in the
    simulator), `after_apply` (the journal's flush) after a merge."""

    def __init__(
        self,
        store: Store,
        after_apply: Callable[[], object] = lambda: None,
        lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        self.store = store
        self.after_apply = after_apply
        self.lock = lock if lock is not None else contextlib.nullcontext()

    def digest(self, p: int, cut: int, holds: Holds) -> Digest:
        store = self.store
        with self.lock:
            return digest(store, p, cut, store.clock(), holds)

    def records(self, p: int, buckets: Collection[int], cut: int, holds: Holds) -> list[Record]:
        store = self.store
        with self.lock:
            return records_in(store, p, buckets, cut, store.clock(), holds)

    def merge(
        self, p: int, records: Sequence[Record], only: Callable[[int], bool] | None = None
    ) -> int:
        """Last writer wins; returns winners. `only`: checked under the lock first (the
        role may have changed since the records were asked for)."""
        won = 0
        store = self.store
        with self.lock:
            if only is not None and not only(p):
                return 0
            now = store.clock()
            for r in records:
                if not (isinstance(r, tuple) and len(r) == 8):
                    raise ValueError(f"partition {p}: a repair record is not an 8-field array")
                if store.apply(p, *r, now):
                    won += 1
            self.after_apply()
        return won
