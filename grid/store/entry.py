"""One stored record: one bytes object per entry, and what it costs in memory.

Layout
------

A partition of a map is a plain dict `key -> record`, and a record is ONE
bytes object: a packed little-endian header followed by the value.

    offset  size  field
    0       8     ts         version: hybrid logical clock timestamp (u64)
    8       4     member     version: member id, the LWW tie-breaker (u32)
    12      4     slot<<1|v  index in the store's "all" slot list; bit 0 (v) set
                             when the entry is volatile (has a TTL or max-idle)
    -- volatile entries only --
    16      8     expire_at  absolute wall ms, 0 = no TTL (i64)
    24      8     max_idle   ms without access before expiry, 0 = none (i64)
    32      4     vslot      index in the store's volatile slot list (u32)
    16|36   ...   value

What changes on every read (last access time, LFU counter) cannot live in an
immutable bytes object, so it lives in typed arrays of the store's slot list,
indexed by `slot` (grid/store/slots.py): `last_access` (i64 ms) and `lfu`
(u8). The slot list also holds each entry's key (a pointer to the dict's own
key object) and where it lives (map id * partitions + partition), which is
what a random sample for eviction or expiry needs to find the record again.
A removal swaps the last entry into the hole; that entry's record is rebuilt
with its new slot, one copy of one record per removal.

So an entry costs: its dict slot (about 40 B at the dicts' load), the key
bytes object, the record bytes object (33 B of object header + 16 or 36 B of
header + the value, rounded up to pymalloc's 16-byte classes), and 21 B in
the slot list (8 B key pointer, 4 B where, 8 B last access, 1 B lfu).
Nothing else: no per-entry Python object besides the two bytes objects, no
boxed integers. Reads return `blob[16:]` (or `[36:]`), a copy of the value;
writes build a new record (one copy of the value). `Entry` below is a view
for callers that want attributes; the hot paths (Store.read, the member's
executor, embedded maps) decode the record directly.

Why this layout: measured 2026-12-07 (1M entries, keys b"key:%08d", RSS
growth of a fresh interpreter, python 3.11; docs/benchmarks.md, "Entry
memory (issue 13)"), bytes per entry at 10 / 100 / 1000-byte values:

    one __slots__ object per entry (before)        356 / 453 / 1361
    tuple (value, ts, member, slot) per entry      352 / 449 / 1358
    dict key -> int slot, every field in arrays    213 / 310 / 1218
    dict key -> record bytes + slot arrays (this)  175 / 271 / 1180
    floor: dict key -> bytes(16 + value), no LRU   155 / 252 / 1160
    redis-server 7.0.15 (same keys and values)      95 / 192 / 1137

What is left over Redis is Python's object cost, not metadata: two bytes
objects (33 B of header each, plus rounding) and a dict slot, where Redis
has a 24 B dictEntry and sds strings with 3 B headers. Going lower would
take values packed into shared arenas with an index and a free-space
manager (a memory allocator written in Python), which costs a copy and
bookkeeping on every write; not done.

The memory estimate is what `max_memory` is enforced against. It is the
entry's own bytes plus a fixed per-entry overhead derived from the sizes of
the objects above. A test holds the sum of estimates within 20% of the
process's measured growth for 200k entries, so the bound means what it says.
"""

from __future__ import annotations

import sys
from struct import Struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grid.store.recordmap import RecordMap
    from grid.store.slots import SlotList

HEAD = Struct("<QII")  # ts, member, slot << 1 | volatile
VHEAD = Struct("<QIIqqI")  # ts, member, slot << 1 | 1, expire_at, max_idle, vslot
SLOT = Struct("<I")
VERSION = Struct("<QI")  # the head's first two fields: (ts, member), in LWW order
HEAD_SIZE = HEAD.size  # 16
VHEAD_SIZE = VHEAD.size  # 36
SLOT_AT = 12  # offset of the slot field (bit 0: volatile)
VSLOT_AT = 32  # offset of the vslot field (volatile records)


def pack(
    value: bytes, ts: int, member: int, slot: int, expire_at: int, max_idle: int, vslot: int
) -> bytes:
    """The record of an entry (volatile if it has a TTL or max-idle)."""
    if expire_at or max_idle:
        return VHEAD.pack(ts, member, slot << 1 | 1, expire_at, max_idle, vslot) + value
    return HEAD.pack(ts, member, slot << 1) + value


def value_of(blob: bytes) -> bytes:
    return blob[VHEAD_SIZE:] if blob[SLOT_AT] & 1 else blob[HEAD_SIZE:]


def value_len(blob: bytes) -> int:
    return len(blob) - (VHEAD_SIZE if blob[SLOT_AT] & 1 else HEAD_SIZE)


def unpack(blob: bytes) -> tuple[bytes, int, int, int, int]:
    """(value, ts, member, expire_at, max_idle) of a record."""
    if blob[SLOT_AT] & 1:
        ts, member, _, expire_at, max_idle, _ = VHEAD.unpack_from(blob)
        return blob[VHEAD_SIZE:], ts, member, expire_at, max_idle
    ts, member, _ = HEAD.unpack_from(blob)
    return blob[HEAD_SIZE:], ts, member, 0, 0


SMALL = 1024  # records up to this size are rebuilt by concatenation (fastest), larger by
# a join over a memoryview (one copy of the value instead of two)


def with_slot(blob: bytes, slot: int) -> bytes:
    """The record moved to another slot of the all list."""
    field = SLOT.pack(slot << 1 | (blob[SLOT_AT] & 1))
    if len(blob) <= SMALL:
        return blob[:SLOT_AT] + field + blob[HEAD_SIZE:]
    return b"".join((blob[:SLOT_AT], field, memoryview(blob)[HEAD_SIZE:]))


def with_vslot(blob: bytes, vslot: int) -> bytes:
    """The (volatile) record moved to another slot of the volatile list."""
    if len(blob) <= SMALL:
        return blob[:VSLOT_AT] + SLOT.pack(vslot) + blob[VHEAD_SIZE:]
    return b"".join((blob[:VSLOT_AT], SLOT.pack(vslot), memoryview(blob)[VHEAD_SIZE:]))


def with_version(blob: bytes, ts: int, member: int) -> bytes:
    head = HEAD.pack(ts, member, HEAD.unpack_from(blob)[2])
    return b"".join((head, memoryview(blob)[HEAD_SIZE:]))


class Entry:
    """A view of one entry, for callers that want attributes (tests, the simulator,
    read repair). It reads the record stored under its key now, or the one it was made
    from once the key is gone; the ts/member, last_access and lfu setters write through."""

    __slots__ = ("blob", "key", "partition", "rmap")

    def __init__(self, key: bytes, blob: bytes, rmap: RecordMap, partition: int) -> None:
        self.key = key
        self.blob = blob
        self.rmap = rmap
        self.partition = partition

    def _cur(self) -> bytes:
        blob = self.rmap.recs[self.partition].get(self.key)
        if blob is not None:
            self.blob = blob
            return blob
        return self.blob

    @property
    def value(self) -> bytes:
        return value_of(self._cur())

    @property
    def ts(self) -> int:
        return int(HEAD.unpack_from(self._cur())[0])

    @ts.setter
    def ts(self, ts: int) -> None:
        self._set_version(ts, self.member)

    @property
    def member(self) -> int:
        return int(HEAD.unpack_from(self._cur())[1])

    @member.setter
    def member(self, member: int) -> None:
        self._set_version(self.ts, member)

    def _set_version(self, ts: int, member: int) -> None:
        blob = self.blob = with_version(self._cur(), ts, member)
        recs = self.rmap.recs[self.partition]
        if self.key in recs:
            recs[self.key] = blob

    @property
    def expire_at(self) -> int:
        return unpack(self._cur())[3]

    @property
    def max_idle(self) -> int:
        return unpack(self._cur())[4]

    @property
    def slot(self) -> int:
        """Index in the store's all list; -1 once removed."""
        if self.key not in self.rmap.recs[self.partition]:
            return -1
        return int(HEAD.unpack_from(self._cur())[2] >> 1)

    @property
    def vslot(self) -> int:
        """Index in the store's volatile list; -1 if not volatile or removed."""
        blob = self._cur()
        if self.key not in self.rmap.recs[self.partition] or not blob[SLOT_AT] & 1:
            return -1
        return int(VHEAD.unpack_from(blob)[5])

    @property
    def last_access(self) -> int:
        return self._index().last_access[self.slot]

    @last_access.setter
    def last_access(self, now: int) -> None:
        self._index().last_access[self.slot] = now

    @property
    def lfu(self) -> int:
        return self._index().lfu[self.slot]

    @lfu.setter
    def lfu(self, counter: int) -> None:
        self._index().lfu[self.slot] = counter

    def _index(self) -> SlotList:
        index = self.rmap.index
        assert index is not None and self.slot >= 0, "the entry is no longer stored"
        return index

    def deadline(self) -> int:
        """When the entry expires (wall ms), 0 = never. Max-idle moves with each access."""
        _, _, _, exp, max_idle = unpack(self._cur())
        if max_idle:
            idle_deadline = self.last_access + max_idle
            return idle_deadline if not exp or idle_deadline < exp else exp
        return exp

    def expired(self, now: int) -> bool:
        deadline = self.deadline()
        return bool(deadline) and deadline <= now

    def __repr__(self) -> str:
        return f"Entry({self.key!r}, ts={self.ts}, member={self.member})"


def _alloc(size: int) -> int:
    """Bytes pymalloc really hands out for an object of `size`: 16-byte size classes."""
    return (size + 15) & ~15


def _measure_overhead() -> tuple[int, int]:
    """Per-entry and extra per-volatile-entry overhead in bytes, from real object sizes."""
    # The key's and the record's object headers, plus on average half a size class each
    # for rounding their variable length up; and the record's own header.
    bytes_headers = 2 * (sys.getsizeof(b"") + 8) + HEAD_SIZE
    # A dict slot is hash + key + value pointers (24 bytes) plus its index byte(s),
    # at a load between 1/3 and 2/3: about 24 * 1.5 + 4 on average.
    dict_slot = 40
    # The all list: key pointer (a list over-allocates by ~1/8), then arrays (~1/16):
    # where (u32), last_access (i64), lfu (u8).
    slot_list = 9 + 14
    per_entry = bytes_headers + dict_slot + slot_list
    # The record's longer header, and the volatile list's key pointer and where.
    per_volatile = (VHEAD_SIZE - HEAD_SIZE) + 9 + 4
    return per_entry, per_volatile


ENTRY_OVERHEAD, VOLATILE_OVERHEAD = _measure_overhead()


def entry_size(key: bytes, value: bytes, volatile: bool) -> int:
    """Accounted bytes of an entry: what max_memory is enforced against."""
    return ENTRY_OVERHEAD + len(key) + len(value) + (VOLATILE_OVERHEAD if volatile else 0)


def record_size(key: bytes, blob: bytes) -> int:
    """entry_size of a stored record (the same figure, from its record)."""
    if blob[SLOT_AT] & 1:
        return ENTRY_OVERHEAD + VOLATILE_OVERHEAD + len(key) + len(blob) - VHEAD_SIZE
    return ENTRY_OVERHEAD + len(key) + len(blob) - HEAD_SIZE
