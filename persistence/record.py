"""The logical record: what one mutation of one key looks like on disk.

A record is a flat msgpack array of nine fields

    [seq, op, map_name, key, value, ts, member, expiry_ms, max_idle_ms]

flat (not a nested version pair) because every extra container is one more Python
object to allocate per record at recovery, and recovery speed is bounded by exactly
that.  `seq` is the partition's sequence number, strictly increasing in the log.
`(ts, member)` is the record's version (HLC timestamp, member id); every replay decision
uses last-writer-wins on it, the same rule as the store.  `expiry_ms` is absolute wall
milliseconds (0 = none); `max_idle_ms` is 0 for none.

The member logs *resulting state*, never an instruction whose outcome depends on prior
state: an increment is logged as INCR carrying the new integer (msgpack-encoded) as its
value, a TTL change as a PUT of the same value with the new expiry.  So replaying a
record twice, or replaying it over a snapshot that already contains it, changes nothing.

Ops and how replay applies them (LWW = only if the record's version is newer):

    PUT    value is bytes        set the entry (LWW)
    INCR   value is bytes        same as PUT; kept distinct for audits and statistics
    DELETE value is None         leave a tombstone (value None, with the version) (LWW)
    EXPIRE value is None         the entry expired: remove it, no tombstone, if the
                                 stored version is not newer than the record's
    EVICT  value is None         the entry was evicted for memory: same as EXPIRE
    CLEAR  value None, key b""   remove every entry of the map (tombstones too) whose
                                 version is not newer than the record's

An entry whose expiry has passed (at the recovery's now_ms) counts as absent for LWW,
as it does in the store: any later record replaces it.  The member must log only
mutations it applied (a write that lost LWW is not logged).

Snapshots hold only PUT, INCR and DELETE records (the live state and tombstones).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple

from persistence.errors import InvalidRecord


class Op(enum.IntEnum):
    PUT = 1
    DELETE = 2
    EXPIRE = 3
    INCR = 4
    EVICT = 5
    CLEAR = 6
    CLEARED = 7
    """A client's or replicated clear: removes what CLEAR removes and keeps the map's
    clear marker in the partition (key b"", the clear's version). A bare CLEAR (a copy
    dropped) removes entries and leaves no marker."""


VALUE_OPS = frozenset({Op.PUT, Op.INCR})
"""Ops that carry a value (bytes); all others carry None."""

SNAPSHOT_OPS = frozenset({Op.PUT, Op.INCR, Op.DELETE})
ALL_OPS = frozenset(Op)

U64 = 2**64


class Record(NamedTuple):
    """One mutation; a plain tuple on the hot path, named here for readability."""

    seq: int
    op: int
    map_name: str
    key: bytes
    value: bytes | None
    ts: int
    member: int
    expiry_ms: int = 0
    max_idle_ms: int = 0


Entry = tuple[bytes | None, int, int, int, int]
"""Recovered state of one key: (value, ts, member, expiry_ms, max_idle_ms).

A plain tuple (the tail slice of the record tuple) rather than a NamedTuple because
recovery creates one per key and a C-level slice is several times cheaper.  value None
means tombstone."""


def check_record(r: Sequence[object], ops: frozenset[Op] = ALL_OPS) -> None:
    """Raise InvalidRecord unless `r` has exactly the shape recovery will accept.

    Validating on the way in matters as much as on the way out: a record that the
    decoder rejects at recovery would stop replay of the whole partition there.
    """
    if not isinstance(r, tuple) or len(r) != 9:
        raise InvalidRecord(f"a record is a 9-tuple, got {type(r).__name__} {r!r:.80}")
    seq, op, map_name, key, value, ts, member, expiry, idle = r
    for name, v in (
        ("seq", seq),
        ("ts", ts),
        ("member", member),
        ("expiry_ms", expiry),
        ("max_idle_ms", idle),
    ):
        if type(v) is not int or not 0 <= v < U64:  # bool is not an int here
            raise InvalidRecord(f"{name} must be an int in [0, 2**64), got {v!r:.40}")
    if op not in ALL_OPS or type(op) not in (int, Op):
        raise InvalidRecord(f"unknown op {op!r:.40}")
    if op not in ops:
        raise InvalidRecord(f"op {Op(op).name} not allowed here")
    if type(map_name) is not str:
        raise InvalidRecord(f"map_name must be str, got {type(map_name).__name__}")
    if type(key) is not bytes:
        raise InvalidRecord(f"key must be bytes, got {type(key).__name__}")
    if op in VALUE_OPS:
        if type(value) is not bytes:
            raise InvalidRecord(f"{Op(op).name} needs a bytes value")
    elif value is not None:
        raise InvalidRecord(f"{Op(op).name} must have value None")
    if op == Op.CLEAR and key != b"":
        raise InvalidRecord("CLEAR must have key b''")


def check_batch(records: Sequence[Sequence[object]], last_seq: int) -> int:
    """Validate a batch for append; return its last seq.  Seqs must strictly increase."""
    if not records:
        raise InvalidRecord("empty batch")
    prev = last_seq
    for r in records:
        check_record(r)
        seq = r[0]
        if seq <= prev:  # type: ignore[operator]
            raise InvalidRecord(f"seq {seq} is not greater than the previous seq {prev}")
        prev = seq  # type: ignore[assignment]
    return prev
