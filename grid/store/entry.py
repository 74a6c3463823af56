"""One stored record, and what it costs in memory.

An Entry is a __slots__ object rather than a tuple so updates happen in place:
an overwrite keeps the entry's position in the sampling lists, and the
eviction pool can hold a reference and check `slot >= 0` to know whether the
entry is still stored.

The memory estimate is what `max_memory` is enforced against. It is the
entry's own bytes plus a fixed per-entry overhead, derived from the sizes of
the objects the store really allocates for a record (the Entry, the key and
value bytes objects, the int objects of its version, access time and slot,
and its share of the partition dict and the sampling list). A test holds the
sum of estimates within 20% of the process's measured growth for 200k
entries, so the bound means what it says.
"""

from __future__ import annotations

import sys
from typing import Any


class Entry:
    __slots__ = (
        "expire_at",  # absolute wall ms, 0 = no TTL
        "key",
        "last_access",  # wall ms of the last read or write
        "lfu",  # Redis-style logarithmic access counter (0..255)
        "max_idle",  # ms without access before expiry, 0 = none
        "member",  # version: member id (tie-breaker)
        "rmap",  # the RecordMap holding this entry
        "slot",  # index in the store's sampling list, -1 once removed
        "ts",  # version: hybrid logical clock timestamp
        "value",
        "vslot",  # index in the store's volatile list, -1 if it has no TTL/max-idle
    )

    def __init__(
        self,
        key: bytes,
        value: bytes,
        ts: int,
        member: int,
        expire_at: int,
        max_idle: int,
        now: int,
        lfu: int,
        rmap: Any,
    ) -> None:
        self.key = key
        self.value = value
        self.ts = ts
        self.member = member
        self.expire_at = expire_at
        self.max_idle = max_idle
        self.last_access = now
        self.lfu = lfu
        self.rmap = rmap
        self.slot = -1
        self.vslot = -1

    def deadline(self) -> int:
        """When the entry expires (wall ms), 0 = never. Max-idle moves with each access."""
        exp = self.expire_at
        if self.max_idle:
            idle_deadline = self.last_access + self.max_idle
            return idle_deadline if not exp or idle_deadline < exp else exp
        return exp

    def expired(self, now: int) -> bool:
        exp = self.expire_at
        if exp and exp <= now:
            return True
        mi = self.max_idle
        return bool(mi) and now - self.last_access >= mi


def _alloc(size: int) -> int:
    """Bytes pymalloc really hands out for an object of `size`: 16-byte size classes."""
    return (size + 15) & ~15


def _measure_overhead() -> tuple[int, int]:
    """Per-entry and extra per-volatile-entry overhead in bytes, from real object sizes."""
    e = Entry(b"", b"", 1 << 62, 1, 0, 0, 1 << 41, 5, None)
    entry = _alloc(sys.getsizeof(e))
    # The key's and the value's object headers, plus on average half a size class each
    # for rounding their variable length up.
    bytes_headers = 2 * (sys.getsizeof(b"") + 8)
    big_int = _alloc(sys.getsizeof(1 << 62))  # ts
    ms_int = _alloc(sys.getsizeof(1 << 41))  # last_access
    small_int = _alloc(sys.getsizeof(1 << 20))  # slot
    # A dict slot is hash + key + value pointers (24 bytes) plus its index byte(s),
    # at a load between 1/3 and 2/3: about 24 * 1.5 + 4 on average.
    dict_slot = 40
    list_slot = 9  # 8-byte pointer, lists over-allocate by ~1/8
    per_entry = entry + bytes_headers + big_int + ms_int + small_int + dict_slot + list_slot
    per_volatile = ms_int + small_int + list_slot  # expire_at int, vslot int, volatile list
    return per_entry, per_volatile


ENTRY_OVERHEAD, VOLATILE_OVERHEAD = _measure_overhead()


def entry_size(key: bytes, value: bytes, volatile: bool) -> int:
    """Accounted bytes of an entry: what max_memory is enforced against."""
    return ENTRY_OVERHEAD + len(key) + len(value) + (VOLATILE_OVERHEAD if volatile else 0)
