"""The member's record store: named maps, TTL, eviction and memory accounting.

Every operation the member serves ends here, whether it came over gRPC or
from an embedded `grid.Node` in the same process, so validation lives here
too: the limits hold however a request arrives.

Concurrency: the store is not re-entrant. The gRPC server (event loop thread)
and embedded callers in other threads both take `lock` around their calls; a
batch takes it once. Nothing inside blocks or awaits, so the lock is held for
microseconds.

Time: `clock()` returns wall milliseconds and is injected, so tests drive TTL,
max-idle and LFU decay without sleeping. Expiry times are absolute wall ms,
which is what gets replicated (DESIGN.md: "time is absolute").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from random import Random
from typing import Any, Protocol

import msgpack
from xxhash import xxh3_64_intdigest

from grid.config import Config
from grid.errors import CasFailed, InvalidArgument, NotOwner, OutOfMemory, TooLarge
from grid.store.entry import (
    ENTRY_OVERHEAD,
    HEAD,
    HEAD_SIZE,
    SLOT,
    SLOT_AT,
    VERSION,
    VHEAD,
    VHEAD_SIZE,
    VOLATILE_OVERHEAD,
    VSLOT_AT,
    Entry,
    entry_size,
    unpack,
    value_of,
    with_slot,
    with_vslot,
)
from grid.store.eviction import LFU_INIT, Evictor, lfu_touch
from grid.store.expiry import expire_cycle
from grid.store.recordmap import ZERO, RecordMap
from grid.store.slots import SlotList
from grid.store.stats import MapStats
from partitioning.keys import OPEN_BRACE, partition_of, routing_key
from replication.hlc import LOGICAL_BITS, HybridClock
from replication.lww import clear_wins, cleared_by

ALWAYS, IF_ABSENT, IF_PRESENT, IF_VERSION = 0, 1, 2, 3  # proto Condition values
# What a sink is told about each applied change (the persistence record ops).
PUT, DELETE, EXPIRED, INCR, EVICTED, CLEAR = 1, 2, 3, 4, 5, 6
DROPPED = 8  # a copy forgotten (drop_maps): the journal removes its entries, no marker
Sink = Callable[[int, int, str, bytes, "bytes | None", int, int, int, int], None]


class BackupReads(Protocol):
    """Reads a client allowed to be answered from a backup copy (`read_from_backup`);
    grid/member/replicas/read_repair.py implements it. Both are called under the store lock."""

    def readable(self, partition: int, map_name: str) -> bool:
        """Whether this member holds a caught-up copy of the map in this partition."""
        ...

    def served(self, partition: int, map_name: str, key: bytes) -> None:
        """A read was answered from that copy (read repair may check it)."""
        ...


"""sink(partition, op, map, key, value, ts, member, expire_at, max_idle): called under the
store lock for every change the store applied, in order, with the resulting state."""
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
MAX_MAP_NAME = 255
MAX_SCAN_PAGE = 10_000
MAX_WHERE = 1 << 32  # map id * partitions + partition is a u32 in the slot lists
_field = SLOT.unpack_from  # (a u32 field of a record)
_version = VERSION.unpack_from  # (ts, member) of a record
# What a write does to the entry's last access (Store._write).
_NO_ACCESS, _CLOCK, _ACCESS = 0, 1, 2


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _monotonic_ms() -> float:
    return time.monotonic() * 1000.0


class Store:
    def __init__(
        self,
        config: Config,
        member_id: int,
        clock: Callable[[], int] = wall_ms,
        rng: Random | None = None,
    ) -> None:
        self.config = config
        self.partitions = config.partitions
        self.max_memory = config.max_memory
        self.restored_over_limit = 0  # entries `restore` loaded past max_memory
        self.max_key = config.max_key_bytes
        self.max_value = config.max_value_bytes
        self.clock = clock
        self.rng = rng or Random()
        self.lock = threading.Lock()
        # What embedded maps hold around an operation: the lock, or a durable guard that
        # also flushes to the log (grid/store/durability.py).
        self.guard: Any = self.lock
        self.maps: dict[str, RecordMap] = {}
        self.by_id: list[RecordMap] = []  # maps by RecordMap.id (where // partitions)
        self.all = SlotList(timed=True)
        self._last_access = self.all.last_access  # (the hot paths' shortcut)
        self.volatile = SlotList(timed=False)
        self.used = 0  # accounted bytes of all entries
        self.hlc = HybridClock(member_id, clock)
        self.evictor = Evictor(
            config.eviction_policy,
            config.eviction_samples,
            self.all,
            self.volatile,
            self.rng,
            config.lfu_decay_minutes,
            self.record_at,
            self.deadline,
        )
        self.sink: Sink | None = None  # persistence (and later replication) listen here
        self.existed = False
        """Whether the key of the PUT, INCR or DELETE the sink is being told of had a live
        entry before it: set just before the call, for client watches (added or updated;
        a delete of an absent key leaves a tombstone and no event)."""
        # Called before any client write touches memory; raises to refuse it (disk full).
        self.write_gate: Callable[[], None] | None = None
        # Partitions this member serves as primary (1) or not (0); None: all of them (a
        # member on its own). Client operations on other partitions raise NotOwner before
        # touching anything, and the server forwards them (grid/member/placement/routing.py keeps
        # this).
        self.owned: bytearray | None = None
        self.backup_reads: BackupReads | None = None  # set by the cluster runtime
        self._lfu = config.eviction_policy == "lfu"
        # Whether a read records its time for every entry: only LRU and LFU eviction look
        # at it, and only when max_memory bounds the store (fixed for the store's life).
        # Reads of max-idle entries always record it (their deadline moves with it).
        self._track = bool(config.max_memory) and config.eviction_policy in ("lru", "lfu")
        self._decay_ms = config.lfu_decay_minutes * 60_000
        self._log_factor = config.lfu_log_factor
        self.tombstone_grace_ms = int(config.tombstone_grace_s * 1000)

    # ---- maps -----------------------------------------------------------------------------
    def map(self, name: str) -> RecordMap:
        """The map called `name`, created on first use (as in Hazelcast and Redis)."""
        rmap = self.maps.get(name)
        if rmap is None:
            if not name:
                raise InvalidArgument("map name is empty")
            if len(name.encode()) > MAX_MAP_NAME:
                raise InvalidArgument(f"map name is over {MAX_MAP_NAME} bytes")
            if (len(self.by_id) + 1) * self.partitions > MAX_WHERE:
                raise InvalidArgument(f"too many maps ({len(self.by_id)})")
            rmap = RecordMap(name, self.partitions, len(self.by_id), self.all)
            self.maps[name] = rmap
            self.by_id.append(rmap)
        return rmap

    # ---- validation -----------------------------------------------------------------------
    def check_key(self, key: bytes) -> None:
        if not key:
            raise InvalidArgument("key is empty")
        if len(key) > self.max_key:
            raise TooLarge(f"key is {len(key)} bytes; max_key_bytes is {self.max_key}")

    def _check_value(self, value: bytes) -> None:
        if len(value) > self.max_value:
            raise TooLarge(f"value is {len(value)} bytes; max_value_bytes is {self.max_value}")

    def _owner_check(self, key: bytes) -> int:
        """The key's partition; raises NotOwner if this member does not serve it."""
        p = partition_of(key, self.partitions)
        if self.owned is not None and not self.owned[p]:
            raise NotOwner(f"partition {p} is not served by this member")
        return p

    def _read_partition(self, rmap: RecordMap, key: bytes, from_backup: bool) -> tuple[int, bool]:
        """The key's partition for a read, and whether it is answered from a backup copy
        (only if the client allows it, `from_backup`, and this member does not serve the
        partition but holds a caught-up copy); NotOwner if it has neither."""
        if not from_backup:
            return self._owner_check(key), False
        p = partition_of(key, self.partitions)
        if self.owned is None or self.owned[p]:
            return p, False
        reads = self.backup_reads
        if reads is None or not reads.readable(p, rmap.name):
            raise NotOwner(f"partition {p} is not served by this member")
        reads.served(p, rmap.name, key)
        return p, True

    @staticmethod
    def _in_copy(rmap: RecordMap, key: bytes, partition: int, now: int) -> bytes | None:
        """A backup copy's record as a read sees it. Only its TTL counts: max-idle is the
        primary's (reads there restart it, and a backup never hears of them), so a copy's
        own idle clock says nothing; and nothing is removed here, a copy changes only by
        its stream (and its own expiry cycle)."""
        blob = rmap.recs[partition].get(key)
        if blob is not None and blob[SLOT_AT] & 1:
            expire_at = VHEAD.unpack_from(blob)[3]
            if expire_at and expire_at <= now:
                return None
        return blob

    def owns(self, partition: int) -> bool:
        return self.owned is None or bool(self.owned[partition])

    @staticmethod
    def _check_ms(name: str, ms: int) -> None:
        if ms < 0:
            raise InvalidArgument(f"{name} is negative ({ms} ms)")

    # ---- records (grid/store/entry.py has the layout) ---------------------------------------
    def record_at(self, key: bytes, where: int) -> bytes | None:
        """The record under `key` in the map and partition a slot list's `where` names."""
        map_id, p = divmod(where, self.partitions)
        return self.by_id[map_id].recs[p].get(key)

    def expired(self, blob: bytes, now: int) -> bool:
        """Whether a record's TTL or max-idle has run out."""
        if not blob[SLOT_AT] & 1:
            return False
        _, _, sv, expire_at, max_idle, _ = VHEAD.unpack_from(blob)
        if expire_at and expire_at <= now:
            return True
        return bool(max_idle) and now - self.all.last_access[sv >> 1] >= max_idle

    def deadline(self, blob: bytes) -> int:
        """When a record expires (wall ms), 0 = never. Max-idle moves with each access."""
        if not blob[SLOT_AT] & 1:
            return 0
        _, _, sv, expire_at, max_idle, _ = VHEAD.unpack_from(blob)
        if max_idle:
            idle_deadline = self.all.last_access[sv >> 1] + max_idle
            return idle_deadline if not expire_at or idle_deadline < expire_at else expire_at
        return int(expire_at)

    # ---- lookups ----------------------------------------------------------------------------
    def _live(self, rmap: RecordMap, key: bytes, partition: int, now: int) -> bytes | None:
        """The record under key unless absent or expired (an expired one is removed here).
        `partition`: the key's, from the ownership check every caller makes first."""
        blob = rmap.recs[partition].get(key)
        if blob is not None and blob[SLOT_AT] & 1 and self.expired(blob, now):
            self._remove_expired(rmap, partition, key)
            return None
        return blob

    def _access(self, slot: int, now: int) -> None:
        index = self.all
        if self._lfu:
            index.lfu[slot] = lfu_touch(
                index.lfu[slot],
                index.last_access[slot],
                now,
                self._decay_ms,
                self._log_factor,
                self.rng,
            )
        index.last_access[slot] = now

    def read(
        self, rmap: RecordMap, key: bytes, now: int, from_backup: bool = False
    ) -> bytes | None:
        """The live entry's record, counted as a hit or miss and as an access for
        eviction; decode it with grid/store/entry.py (value_of, HEAD) and `deadline`.

        The hottest call of an embedded node: check_key and _owner_check are inlined for
        the primary's read (measured 0.1 us of a 1.5 us embedded get)."""
        if not key or len(key) > self.max_key:
            self.check_key(key)  # raises, saying which
        if from_backup:
            p, copy = self._read_partition(rmap, key, from_backup)
            if copy:
                blob = self._in_copy(rmap, key, p, now)
                if blob is None:
                    rmap.stats.misses += 1
                else:
                    rmap.stats.hits += 1
                return blob
        else:
            p = partition_of(key, self.partitions)
            owned = self.owned
            if owned is not None and not owned[p]:
                raise NotOwner(f"partition {p} is not served by this member")
        blob = rmap.recs[p].get(key)
        if blob is None:
            rmap.stats.misses += 1
            return None
        if blob[SLOT_AT] & 1:
            if self.expired(blob, now):
                self._remove_expired(rmap, p, key)
                rmap.stats.misses += 1
                return None
            self._access(_field(blob, SLOT_AT)[0] >> 1, now)
        elif self._track:
            if self._lfu:
                self._access(_field(blob, SLOT_AT)[0] >> 1, now)
            else:
                self._last_access[_field(blob, SLOT_AT)[0] >> 1] = now
        rmap.stats.hits += 1
        return blob

    def get(self, rmap: RecordMap, key: bytes, now: int, from_backup: bool = False) -> Entry | None:
        """`read`, as an Entry view."""
        blob = self.read(rmap, key, now, from_backup)
        if blob is None:
            return None
        return Entry(key, blob, rmap, partition_of(key, self.partitions))

    def contains(self, rmap: RecordMap, key: bytes, now: int, from_backup: bool = False) -> bool:
        """Whether a live entry exists; not an access (as Redis's EXISTS)."""
        self.check_key(key)
        p, copy = self._read_partition(rmap, key, from_backup)
        if copy:
            return self._in_copy(rmap, key, p, now) is not None
        return self._live(rmap, key, p, now) is not None

    def ttl(self, rmap: RecordMap, key: bytes, now: int, from_backup: bool = False) -> int | None:
        """Remaining ms before expiry, -1 for none, None if absent; not an access."""
        self.check_key(key)
        p, copy = self._read_partition(rmap, key, from_backup)
        if copy:
            blob = self._in_copy(rmap, key, p, now)
            if blob is None:
                return None
            expire_at = unpack(blob)[3]
            return expire_at - now if expire_at else -1  # (max-idle: the primary's)
        blob = self._live(rmap, key, p, now)
        if blob is None:
            return None
        deadline = self.deadline(blob)
        return deadline - now if deadline else -1

    def touch(self, rmap: RecordMap, key: bytes, now: int) -> bool:
        """Count an access without reading: restarts the max-idle clock."""
        self.check_key(key)
        p = self._owner_check(key)
        blob = self._live(rmap, key, p, now)
        if blob is None:
            return False
        self._access(HEAD.unpack_from(blob)[2] >> 1, now)
        return True

    def size(self, rmap: RecordMap) -> int:
        """Entries in the partitions this member serves (backup copies are not counted)."""
        owned = self.owned
        if owned is None:
            return rmap.stats.entries
        return sum(len(recs) for p, recs in enumerate(rmap.recs) if owned[p])

    def scan(
        self, rmap: RecordMap, cursor: bytes, limit: int, now: int
    ) -> tuple[list[bytes], bytes]:
        """A page of keys and the cursor for the next one (b"" when done).

        The cursor is (partition, last key returned); within a partition keys come in
        byte order. So a key that exists for the whole scan is returned exactly once,
        whatever is written or deleted meanwhile (Redis's SCAN promises at least once).
        """
        limit = limit or self.config.scan_page
        if not 0 < limit <= MAX_SCAN_PAGE:
            raise InvalidArgument(f"scan limit must be 1..{MAX_SCAN_PAGE}")
        part_no, after = _decode_cursor(cursor, self.partitions, self.max_key)
        owned = self.owned
        if owned is not None and not owned[part_no]:
            raise NotOwner(f"partition {part_no} is not served by this member")
        keys: list[bytes] = []
        expired = self.expired
        while part_no < self.partitions:
            if owned is not None and not owned[part_no]:
                break  # the next page starts on the member that serves this partition
            want = limit - len(keys)
            # Expired keys are skipped, not removed: scan is a read; expiry reclaims them.
            found = sorted(
                k for k, b in rmap.recs[part_no].items() if k > after and not expired(b, now)
            )
            if len(found) > want:
                keys.extend(found[:want])
                return keys, msgpack.packb([part_no, keys[-1]])
            keys.extend(found)
            part_no += 1
            after = b""
            if len(keys) == limit:
                break
        return keys, msgpack.packb([part_no, b""]) if part_no < self.partitions else b""

    # ---- writes -----------------------------------------------------------------------------
    def write(
        self,
        rmap: RecordMap,
        key: bytes,
        value: bytes,
        now: int,
        ttl_ms: int = 0,
        max_idle_ms: int = 0,
        condition: int = ALWAYS,
        expected: tuple[int, int] | None = None,
    ) -> bytes:
        """Write a value; returns the stored record (HEAD: its ts/member, the new version).

        The checks are inlined as in `read`: a method call each cost about a tenth of
        a write."""
        if not key or len(key) > self.max_key:
            self.check_key(key)  # raises, saying which
        p = partition_of(key, self.partitions)
        owned = self.owned
        if owned is not None and not owned[p]:
            raise NotOwner(f"partition {p} is not served by this member")
        if self.write_gate is not None:
            self.write_gate()
        if len(value) > self.max_value:
            self._check_value(value)  # raises
        if ttl_ms or max_idle_ms:
            self._check_ms("ttl", ttl_ms)
            self._check_ms("max_idle", max_idle_ms)
        recs = rmap.recs[p]
        old = recs.get(key)
        if old is not None and old[SLOT_AT] & 1 and self.expired(old, now):
            self._remove_expired(rmap, p, key)
            old = None
        if condition:
            _check_condition(condition, old, expected)
        if old is not None and not (ttl_ms or max_idle_ms or old[SLOT_AT] & 1):
            # The common overwrite (no TTL before or after), _write written out: it
            # keeps the slot, and records the access only where it is looked at.
            grow = len(value) + HEAD_SIZE - len(old)
            if grow > 0 and self.max_memory:
                self._reserve(grow, now, (key, rmap.id * self.partitions + p))
                old = recs[key]  # an eviction may have moved it to another slot
            sv = _field(old, SLOT_AT)[0]
            hlc = self.hlc
            ts = hlc.stamp(now)
            blob = recs[key] = HEAD.pack(ts, hlc.member, sv) + value
            if self._track:
                if self._lfu:
                    self._access(sv >> 1, now)
                else:
                    self._last_access[sv >> 1] = now
            self.used += grow
            stats = rmap.stats
            stats.bytes += grow
            stats.puts += 1
            if self.sink is not None:
                self.existed = True
                self.sink(p, PUT, rmap.name, key, value, ts, hlc.member, 0, 0)
            return blob
        expire_at = now + ttl_ms if ttl_ms else 0
        if old is None:
            self._reserve(entry_size(key, value, bool(ttl_ms or max_idle_ms)), now, None)
            tombs = rmap.tombs[p]
            if tombs:
                tombs.pop(key, None)  # a key is either live or remembered as deleted
        hlc = self.hlc
        ts = hlc.stamp(now)
        blob = self._write(
            rmap, p, key, old, value, ts, hlc.member, expire_at, max_idle_ms, now, _ACCESS
        )
        rmap.stats.puts += 1
        if self.sink is not None:
            self.existed = old is not None
            self.sink(p, PUT, rmap.name, key, value, ts, hlc.member, expire_at, max_idle_ms)
        return blob

    def put(
        self,
        rmap: RecordMap,
        key: bytes,
        value: bytes,
        now: int,
        ttl_ms: int = 0,
        max_idle_ms: int = 0,
        condition: int = ALWAYS,
        expected: tuple[int, int] | None = None,
    ) -> Entry:
        """`write`, returning an Entry view (its ts/member are the new version)."""
        blob = self.write(rmap, key, value, now, ttl_ms, max_idle_ms, condition, expected)
        return Entry(key, blob, rmap, partition_of(key, self.partitions))

    def _write(
        self,
        rmap: RecordMap,
        p: int,
        key: bytes,
        old: bytes | None,
        value: bytes,
        ts: int,
        member: int,
        expire_at: int,
        max_idle: int,
        now: int,
        access: int,
        reserve: bool = True,
    ) -> bytes:
        """Store the record of key (`old`: the one it replaces, or None for a new entry,
        whose memory the caller reserved), accounting its memory; returns the record.
        An overwrite keeps the entry's slots; `access` says what it does to the last
        access time: _ACCESS (a client write: LFU too), _CLOCK (a replicated write) or
        _NO_ACCESS."""
        recs = rmap.recs[p]
        volatile = expire_at or max_idle
        if old is None:
            where = rmap.id * self.partitions + p
            size = entry_size(key, value, bool(volatile))
            slot = self.all.add(key, where, now, LFU_INIT)
            if volatile:
                vslot = self.volatile.add(key, where)
                blob = VHEAD.pack(ts, member, slot << 1 | 1, expire_at, max_idle, vslot) + value
            else:
                blob = HEAD.pack(ts, member, slot << 1) + value
            recs[key] = blob
            rmap.stats.entries += 1
        else:
            # record_size(old) - entry_size(new), written out: this is every overwrite
            size = len(value) - len(old) + (VHEAD_SIZE if old[SLOT_AT] & 1 else HEAD_SIZE)
            if volatile:
                size += VOLATILE_OVERHEAD
            if old[SLOT_AT] & 1:
                size -= VOLATILE_OVERHEAD
            if size > 0 and reserve:
                self._reserve(size, now, (key, rmap.id * self.partitions + p))
                old = recs[key]  # an eviction may have moved it to another slot
            sv = _field(old, SLOT_AT)[0]
            slot = sv >> 1
            if sv & 1:
                vslot = _field(old, VSLOT_AT)[0]
                if not volatile:
                    self._volatile_remove(vslot)
            elif volatile:
                vslot = self.volatile.add(key, rmap.id * self.partitions + p)
            if volatile:
                blob = VHEAD.pack(ts, member, slot << 1 | 1, expire_at, max_idle, vslot) + value
            else:
                blob = HEAD.pack(ts, member, slot << 1) + value
            recs[key] = blob
            if access:
                index = self.all
                if access == _ACCESS and self._lfu:
                    index.lfu[slot] = lfu_touch(
                        index.lfu[slot],
                        index.last_access[slot],
                        now,
                        self._decay_ms,
                        self._log_factor,
                        self.rng,
                    )
                index.last_access[slot] = now
        self.used += size
        rmap.stats.bytes += size
        return blob

    def delete(
        self, rmap: RecordMap, key: bytes, now: int, expected: tuple[int, int] | None = None
    ) -> bool:
        """Remove the entry; `expected`: only if it has this version (CasFailed if not, so
        a read-modify-delete, as Redis's GETDEL, loses no write made in between)."""
        self.check_key(key)
        p = self._owner_check(key)
        if self.write_gate is not None:
            self.write_gate()
        blob = self._live(rmap, key, p, now)
        if expected is not None:
            _check_condition(IF_VERSION, blob, expected)
        if blob is not None:
            self._unlink(rmap, p, key)
            rmap.stats.deletes += 1
        # A tombstone even when the key is not here: after a split this side may simply
        # never have had the key, and the delete must still win over the other side's
        # older value when the two merge (last writer wins; Cassandra does the same).
        hlc = self.hlc
        ts = hlc.stamp(now)
        rmap.tombs[p][key] = (ts, hlc.member)
        if self.sink is not None:
            self.existed = blob is not None
            self.sink(p, DELETE, rmap.name, key, None, ts, hlc.member, 0, 0)
        return blob is not None

    def expire(self, rmap: RecordMap, key: bytes, ttl_ms: int, now: int) -> bool:
        """Set a new TTL from now (0 removes it, like Redis's PERSIST). A write: new version."""
        self.check_key(key)
        p = self._owner_check(key)
        if self.write_gate is not None:
            self.write_gate()
        self._check_ms("ttl", ttl_ms)
        blob = self._live(rmap, key, p, now)
        if blob is None:
            return False
        value, _, _, _, max_idle = unpack(blob)
        hlc = self.hlc
        ts = hlc.stamp(now)
        expire_at = now + ttl_ms if ttl_ms else 0
        blob = self._write(
            rmap, p, key, blob, value, ts, hlc.member, expire_at, max_idle, now, _NO_ACCESS, False
        )
        self.existed = True
        self._emit(PUT, rmap, p, key, blob)
        return True

    def incr(
        self,
        rmap: RecordMap,
        key: bytes,
        delta: int,
        ttl_ms: int,
        now: int,
        decimal: bool = False,
    ) -> int:
        """Add delta to a counter (a msgpack integer); create it at delta with ttl_ms if absent.

        The TTL applies only on creation, which is what a fixed-window rate limiter
        needs: the window starts with the first hit and later hits do not extend it.
        `decimal`: the counter is a decimal string instead, as Redis keeps it (the RESP
        front end's INCR: a GET after it must read b"11"), parsed by Redis's rules.
        """
        self.check_key(key)
        p = self._owner_check(key)
        if self.write_gate is not None:
            self.write_gate()
        self._check_ms("ttl", ttl_ms)
        if not INT64_MIN <= delta <= INT64_MAX:
            raise InvalidArgument("delta is outside the 64-bit integer range")
        blob = self._live(rmap, key, p, now)
        decode = decode_decimal if decimal else decode_counter
        current = 0 if blob is None else decode(value_of(blob))
        result = current + delta
        if not INT64_MIN <= result <= INT64_MAX:
            raise InvalidArgument("increment or decrement would overflow")
        value = str(result).encode() if decimal else msgpack.packb(result)
        if blob is None:
            self.write(rmap, key, value, now, ttl_ms=ttl_ms)
        else:
            _, _, _, expire_at, max_idle = unpack(blob)
            hlc = self.hlc
            blob = self._write(
                rmap, p, key, blob, value, hlc.stamp(now), hlc.member, expire_at, max_idle, now,
                _ACCESS,
            )  # fmt: skip
            rmap.stats.puts += 1
            self.existed = True
            self._emit(INCR, rmap, p, key, blob)
        return result

    def clear(self, rmap: RecordMap) -> int:
        if self.write_gate is not None:
            self.write_gate()
        removed = 0
        v = self.hlc.tick()
        owned = self.owned
        for p, recs in enumerate(rmap.recs):
            if owned is not None and not owned[p]:
                continue
            for key in list(recs):
                self._unlink(rmap, p, key)
                removed += 1
            rmap.cleared[p] = v
            rmap.tombs[p].clear()  # every delete before the clear is covered by it
            if self.sink is not None:
                self.sink(p, CLEAR, rmap.name, b"", None, v.ts, v.member, 0, 0)
        rmap.stats.deletes += removed
        return removed

    # ---- removal, eviction, expiry ----------------------------------------------------------
    def _emit(self, op: int, rmap: RecordMap, partition: int, key: bytes, blob: bytes) -> None:
        """Report a change of the entry under `key` (its record `blob`) to the sink."""
        if self.sink is not None:
            value, ts, member, expire_at, max_idle = unpack(blob)
            self.sink(
                partition,
                op,
                rmap.name,
                key,
                value if op in (PUT, INCR) else None,
                ts,
                member,
                expire_at,
                max_idle,
            )

    def _unlink(self, rmap: RecordMap, partition: int, key: bytes) -> bytes:
        """Remove the entry from every structure; returns its record."""
        blob = rmap.recs[partition].pop(key)
        sv = _field(blob, SLOT_AT)[0]
        if sv & 1:
            self._volatile_remove(_field(blob, VSLOT_AT)[0])
            size = ENTRY_OVERHEAD + VOLATILE_OVERHEAD + len(key) + len(blob) - VHEAD_SIZE
        else:
            size = ENTRY_OVERHEAD + len(key) + len(blob) - HEAD_SIZE  # record_size, inline
        index = self.all
        if index.remove(sv >> 1):
            self._moved(index, sv >> 1, with_slot)
        self.used -= size
        stats = rmap.stats
        stats.bytes -= size
        stats.entries -= 1
        return blob

    def _volatile_remove(self, vslot: int) -> None:
        if self.volatile.remove(vslot):
            self._moved(self.volatile, vslot, with_vslot)

    def _moved(self, slots: SlotList, slot: int, rewrite: Callable[[bytes, int], bytes]) -> None:
        """Another entry was moved into `slot` of a slot list: rewrite its record."""
        map_id, p = divmod(slots.where[slot], self.partitions)
        recs = self.by_id[map_id].recs[p]
        key = slots.keys[slot]
        recs[key] = rewrite(recs[key], slot)

    def _remove_expired(self, rmap: RecordMap, partition: int, key: bytes) -> None:
        blob = self._unlink(rmap, partition, key)
        rmap.stats.expirations += 1
        self._emit(EXPIRED, rmap, partition, key, blob)

    def remove_expired_at(self, key: bytes, where: int, blob: bytes) -> None:
        """Remove an expired entry found by a slot list (`where`: its map and partition)."""
        map_id, p = divmod(where, self.partitions)
        self._remove_expired(self.by_id[map_id], p, key)

    def _reserve(self, need: int, now: int, protect: tuple[bytes, int] | None) -> None:
        """Evict until `need` more bytes fit under max_memory, or raise OutOfMemory.
        `protect`: (key, where) of the entry being written, never evicted for itself."""
        limit = self.max_memory
        if not limit or self.used + need <= limit:
            return
        spared = 0
        while self.used + need > limit:
            victim = self.evictor.victim(now)
            if victim is not None and victim == protect:
                spared += 1  # never evict the entry being written; look again
                if spared < 8:
                    continue
                victim = None
            if victim is None:
                raise OutOfMemory(
                    f"max_memory {limit} bytes reached ({self.used} used, {need} more needed) "
                    f"and eviction_policy {self.evictor.policy} frees nothing"
                )
            key, where = victim
            map_id, p = divmod(where, self.partitions)
            rmap = self.by_id[map_id]
            blob = self._unlink(rmap, p, key)
            rmap.stats.evictions += 1
            self._emit(EVICTED, rmap, p, key, blob)

    def expire_cycle(self, budget_ms: float | None = None) -> int:
        """One active expiry cycle (see grid/store/expiry.py). Takes the lock."""
        budget = self.config.expiry_sweep_budget_ms if budget_ms is None else budget_ms
        with self.lock:
            return expire_cycle(self, self.clock(), budget, _monotonic_ms)

    def restore(
        self,
        rmap: RecordMap,
        key: bytes,
        value: bytes,
        ts: int,
        member: int,
        expire_at: int,
        max_idle: int,
        now: int,
    ) -> None:
        """Load a recovered entry as it was (its own version; last access = now).

        Not reported to the sink: it is already on disk. Memory is reserved like any
        write, so a data directory bigger than max_memory is cut down by the policy.
        A policy that frees nothing (noeviction, volatile-ttl with no TTLs) loads it all the
        same, over the limit, as Redis loads a dataset bigger than maxmemory: a member
        that refused to start would serve nothing, and what it holds is acknowledged
        data. Writes are then refused (OutOfMemory) until deletes or expiries bring it
        under; `restored_over_limit` counts these entries for the recovery's log.
        """
        p = partition_of(key, self.partitions)
        size = entry_size(key, value, bool(expire_at or max_idle))
        try:
            self._reserve(size, now, None)
        except OutOfMemory:
            self.restored_over_limit += 1
        self._write(rmap, p, key, None, value, ts, member, expire_at, max_idle, now, _CLOCK)
        self.hlc.observe(ts)

    def _insert(
        self,
        rmap: RecordMap,
        partition: int,
        key: bytes,
        value: bytes,
        ts: int,
        member: int,
        expire_at: int,
        max_idle: int,
        now: int,
    ) -> None:
        """Add an entry with a version of its own (recovered or replicated; the key must
        be absent), reserving its memory like any write."""
        self._reserve(entry_size(key, value, bool(expire_at or max_idle)), now, None)
        self._write(rmap, partition, key, None, value, ts, member, expire_at, max_idle, now, _CLOCK)

    # ---- replication: changes from a partition's primary --------------------------------------
    def apply(
        self,
        partition: int,
        op: int,
        map_name: str,
        key: bytes,
        value: bytes | None,
        ts: int,
        member: int,
        expire_at: int,
        max_idle: int,
        now: int,
    ) -> bool:
        """Apply one change replicated from the partition's primary; False if it lost.

        One rule decides, replication/lww.py's last writer wins on (hlc ts, member id),
        so a change applied twice, late or out of order leaves the same state: a write
        must be newer than the key's entry or tombstone and the map's clear marker; a
        removal (delete, expired, evicted) removes an entry that is not newer; a delete
        is kept as a tombstone as a write would be; a clear newer than the marker
        removes what is not newer. Ownership is not checked (backups hold partitions
        they do not serve) and the change goes to the sink, so this member's own log
        keeps the copy.

        The comparisons of writes and removals are lww.write_wins and lww.removes
        written out, here and nowhere else: this is the backups' hot path, where a
        Python call per record cost 5-21% more instructions (docs/benchmarks.md,
        "Store.apply"). tests/store/test_apply_order.py holds this method to lww's
        functions; clears are rare and call them.
        """
        self.hlc.observe(ts)
        rmap = self.maps.get(map_name) or self.map(map_name)
        part = rmap.recs[partition]
        version = (ts, member)
        if op in (PUT, INCR):
            assert value is not None
            blob = part.get(key)
            if blob is not None:
                # lww.write_wins against the entry; the marker is older than any entry
                if version <= _version(blob):
                    return False
                if not (expire_at or max_idle or blob[SLOT_AT] & 1):
                    # the common overwrite (no TTL before or after), _write written out
                    grow = len(value) + HEAD_SIZE - len(blob)
                    if grow > 0 and self.max_memory:
                        self._reserve(grow, now, (key, rmap.id * self.partitions + partition))
                        blob = part[key]  # an eviction may have moved it to another slot
                    sv = _field(blob, SLOT_AT)[0]
                    part[key] = HEAD.pack(ts, member, sv) + value
                    self._last_access[sv >> 1] = now
                    self.used += grow
                    rmap.stats.bytes += grow
                    if self.sink is not None:
                        self.existed = True
                        self.sink(partition, op, map_name, key, value, ts, member, 0, 0)
                    return True
                self.existed = True
                self._write(
                    rmap, partition, key, blob, value, ts, member, expire_at, max_idle, now, _CLOCK
                )
            else:
                # lww.write_wins against the tombstone, if any, and the marker
                if version <= rmap.cleared[partition]:
                    return False
                tombs = rmap.tombs[partition]
                if tombs:
                    dead = tombs.get(key)
                    if dead is not None:
                        if version <= dead:
                            return False
                        del tombs[key]  # a key is either live or remembered as deleted
                self.existed = False
                self._insert(rmap, partition, key, value, ts, member, expire_at, max_idle, now)
            if self.sink is not None:
                self.sink(partition, op, map_name, key, value, ts, member, expire_at, max_idle)
            return True
        if op == CLEAR:
            if not clear_wins(version, rmap.cleared[partition]):
                return False
            rmap.cleared[partition] = version
            for key_, blob in list(part.items()):  # (slot moves leave versions alone)
                if cleared_by(_version(blob), version):
                    self._unlink(rmap, partition, key_)
            tombs = rmap.tombs[partition]
            for k in [k for k, v in tombs.items() if cleared_by(v, version)]:
                del tombs[k]
            if self.sink is not None:
                self.sink(partition, CLEAR, map_name, b"", None, ts, member, 0, 0)
            return True
        removed = remembered = False
        blob = part.get(key)
        if blob is not None:
            if _version(blob) > version:  # not lww.removes: the entry is newer
                return False
            self._unlink(rmap, partition, key)
            removed = True
        if (
            op == DELETE
            and version > rmap.cleared[partition]  # lww.write_wins, for the tombstone
            and now - (ts >> LOGICAL_BITS) < self.tombstone_grace_ms
        ):
            # remembered even when there was nothing to remove here: the tombstone must
            # reach every replica (expiry and eviction leave none; see copies.py)
            tombs = rmap.tombs[partition]
            dead = tombs.get(key)
            if dead is None or version > dead:
                tombs[key] = version
                remembered = True
        if not (removed or remembered):
            return False
        self.existed = removed
        if self.sink is not None:
            self.sink(partition, op, map_name, key, None, ts, member, 0, 0)
        return True

    def restore_many(
        self,
        rmap: RecordMap,
        partition: int,
        entries: Mapping[bytes, tuple[bytes | None, int, int, int, int]],
        now: int,
    ) -> int:
        """restore(), restore_tombstone() and restore_cleared() for one recovered map of
        one partition (key -> (value, ts, member, expire_at, max_idle) as persistence
        returns it; value None is a tombstone, and under key b"" the map's clear marker).
        Returns the entries loaded.

        The same effect as a call per entry, with the common case (a new entry whose
        memory fits) written out: five Python calls per entry were about half of a
        member's start with a million entries (docs/benchmarks.md, 2026-12-08). An
        entry that needs an eviction first goes through restore().
        """
        if not entries:
            return 0
        parts = self.partitions
        base = rmap.id * parts
        recs = rmap.recs
        slots = self.all
        keys, where_of, last_access, lfu = slots.keys, slots.where, slots.last_access, slots.lfu
        vkeys, vwhere = self.volatile.keys, self.volatile.where
        head, vhead = HEAD.pack, VHEAD.pack
        overhead, voverhead, lfu_init = ENTRY_OVERHEAD, VOLATILE_OVERHEAD, LFU_INIT
        limit = self.max_memory
        loaded = added = nbytes = top = 0
        try:
            for key, (value, ts, member, expire_at, max_idle) in entries.items():
                if value is None:
                    if key == b"":
                        self.restore_cleared(rmap, partition, ts, member)
                    else:
                        self.restore_tombstone(rmap, key, ts, member, now)
                    continue
                loaded += 1
                volatile = expire_at or max_idle
                size = overhead + len(key) + len(value) + (voverhead if volatile else 0)
                if limit and self.used + size > limit:
                    rmap.stats.entries += added
                    rmap.stats.bytes += nbytes
                    added = nbytes = 0
                    self.hlc.observe(top)
                    self.restore(rmap, key, value, ts, member, expire_at, max_idle, now)
                    continue
                # partition_of, written out
                p = xxh3_64_intdigest(routing_key(key) if OPEN_BRACE in key else key) % parts
                where = base + p
                slot = len(keys)
                keys.append(key)
                where_of.append(where)
                last_access.append(now)
                lfu.append(lfu_init)
                if volatile:
                    vslot = len(vkeys)
                    vkeys.append(key)
                    vwhere.append(where)
                    recs[p][key] = (
                        vhead(ts, member, slot << 1 | 1, expire_at, max_idle, vslot) + value
                    )
                else:
                    recs[p][key] = head(ts, member, slot << 1) + value
                self.used += size
                added += 1
                nbytes += size
                if ts > top:
                    top = ts
        finally:  # an OutOfMemory (eviction_policy none or volatile-ttl) leaves it exact
            rmap.stats.entries += added
            rmap.stats.bytes += nbytes
            self.hlc.observe(top)
        return loaded

    def restore_tombstone(
        self, rmap: RecordMap, key: bytes, ts: int, member: int, now: int
    ) -> None:
        """Remember a recovered delete if it is still within the grace period."""
        self.hlc.observe(ts)
        if now - (ts >> LOGICAL_BITS) < self.tombstone_grace_ms:
            rmap.tombs[partition_of(key, self.partitions)][key] = (ts, member)

    def restore_cleared(self, rmap: RecordMap, partition: int, ts: int, member: int) -> None:
        """Remember a recovered CLEAR of the map in this partition (its marker's version:
        older entries that turn up from a replica stay removed)."""
        self.hlc.observe(ts)
        if clear_wins((ts, member), rmap.cleared[partition]):
            rmap.cleared[partition] = (ts, member)

    def drop_partition(self, partition: int) -> int:
        """Forget this member's copy of a partition (it moved away, or a fresh copy is
        coming); the sink is told, so the copy leaves the log too. Returns entries dropped."""
        return self.drop_maps(partition, lambda name: False)

    def holds_copy(self, partition: int) -> bool:
        """Whether anything of the partition is here: entries, tombstones, clear markers."""
        return any(
            rmap.recs[partition] or rmap.tombs[partition] or rmap.cleared[partition] != ZERO
            for rmap in self.maps.values()
        )

    def drop_maps(self, partition: int, keep: Callable[[str], bool]) -> int:
        """Forget the partition's copy of the maps `keep` refuses (a backup rank that no
        longer holds them, grid/member/replicas/map_backups.py); returns entries dropped."""
        dropped = 0
        v = self.hlc.tick()
        for rmap in self.maps.values():
            if keep(rmap.name):
                continue
            part = rmap.recs[partition]
            tombs = rmap.tombs[partition]
            if not (part or tombs or rmap.cleared[partition] != ZERO):
                continue
            # a copy of only tombstones or a clear marker is dropped on disk too, or a
            # restart would bring them back for a partition this member no longer holds
            tombs.clear()
            rmap.cleared[partition] = ZERO
            for key in list(part):
                self._unlink(rmap, partition, key)
                dropped += 1
            if self.sink is not None:
                self.sink(partition, DROPPED, rmap.name, b"", None, v.ts, v.member, 0, 0)
        return dropped

    def partition_count(self, partition: int) -> int:
        return sum(len(rmap.recs[partition]) for rmap in self.maps.values())

    # ---- introspection ------------------------------------------------------------------------
    def totals(self) -> MapStats:
        total = MapStats()
        for rmap in self.maps.values():
            total.add(rmap.stats)
        return total


def decode_counter(value: bytes) -> int:
    """The integer a counter holds, or InvalidArgument if the value is not one."""
    if len(value) <= 9:  # a msgpack int is at most 9 bytes
        try:
            n = msgpack.unpackb(value)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            n = None
        if type(n) is int:
            return n
    raise InvalidArgument("value is not an integer (incr needs a msgpack integer)")


NOT_AN_INTEGER = "value is not an integer or out of range"


def decode_decimal(value: bytes) -> int:
    """The integer a decimal counter holds, by Redis's string2ll: an optional minus, digits,
    no leading zero, no sign or space, within 64 bits; else InvalidArgument."""
    digits = value[1:] if value[:1] == b"-" else value
    if 0 < len(digits) <= 19 and digits.isdigit() and (digits[0] != 48 or value == b"0"):
        n = int(value)
        if INT64_MIN <= n <= INT64_MAX:
            return n
    raise InvalidArgument(NOT_AN_INTEGER)


def _check_condition(condition: int, blob: bytes | None, expected: tuple[int, int] | None) -> None:
    if condition == IF_ABSENT:
        if blob is not None:
            raise CasFailed("key exists (if_absent)")
    elif condition == IF_PRESENT:
        if blob is None:
            raise CasFailed("key does not exist (if_present)")
    elif condition == IF_VERSION:
        if blob is None:
            raise CasFailed("key does not exist (if_version)")
        if expected is None or _version(blob) != tuple(expected):
            raise CasFailed("version differs (if_version)")
    elif condition != ALWAYS:
        raise InvalidArgument(f"unknown put condition {condition}")


def _decode_cursor(cursor: bytes, partitions: int, max_key: int) -> tuple[int, bytes]:
    if not cursor:
        return 0, b""
    if len(cursor) > max_key + 16:
        raise InvalidArgument("scan cursor is too long")
    try:
        part_no, after = msgpack.unpackb(cursor)
    except Exception as e:  # any malformed cursor is the caller's mistake, said plainly
        raise InvalidArgument("scan cursor is malformed") from e
    if type(part_no) is not int or not isinstance(after, bytes) or not 0 <= part_no < partitions:
        raise InvalidArgument("scan cursor is malformed")
    return part_no, after
