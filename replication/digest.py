"""Digests of a partition copy, for anti-entropy between its replicas.

Replicas of a partition normally agree because every change flows through the
primary's ordered stream. Anti-entropy is the backstop for everything that
stream cannot see: a split brain where both sides took writes, a member that
comes back with an old copy, a change lost with a crashed primary's unsent
queue, a bug. Dynamo, Cassandra and Riak compare Merkle trees for this; we use
the two levels of one that matter at partition sizes of thousands of keys:

- every item of the copy (a live entry, a tombstone, a map's clear marker)
  hashes to a 64-bit digest of (map, key, version, kind), and falls in one of
  `BUCKETS` buckets chosen by a hash of its key alone, so the same key lands in
  the same bucket on every replica whatever its version;
- a bucket's digest is the sum (mod 2**64) of its items' digests, and the
  root is the sum of the buckets. Sums, not a hash over sorted items, so
  nothing has to be sorted and the order of a dict does not matter.

A round (grid/member/replicas/antientropy.py) sends roots first (8 bytes per partition), then
bucket digests only for partitions whose roots differ, then the records of
only the differing buckets, which each side merges by the one rule, last
writer wins on (ts, member). A merge is commutative, associative and
idempotent, so replicas converge whatever order repairs arrive in.

Both sides digest only versions at or below a `cut` (an HLC timestamp the
primary picks a little in the past): a change still travelling down the
stream is newer than the cut on both sides, so in-flight writes do not show
up as differences and cost nothing. A tombstone older than the grace period
is left out too, on both sides, so one member collecting it a moment before
another does not make them look different.

Pure: no IO, no clock of its own; the store feeds it items.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from xxhash import xxh3_64_intdigest

BUCKETS = 64
_MASK64 = (1 << 64) - 1
_BUCKET_MASK = BUCKETS - 1

# kinds of item, part of the item digest
LIVE, TOMBSTONE, CLEARED = 0, 1, 2


def bucket_of(key: bytes) -> int:
    """The bucket of a key: a hash of the key alone (not of its map or version)."""
    return xxh3_64_intdigest(key, 0x5EED) & _BUCKET_MASK


def item_digest(map_name: bytes, key: bytes, ts: int, member: int, kind: int) -> int:
    """64 bits that change with the map, the key, the version and the kind of an item."""
    seed = (ts * 0x9E3779B97F4A7C15 + (member << 2) + kind) & _MASK64
    return xxh3_64_intdigest(map_name + b"\x00" + key, seed)


class Digest:
    """Bucket digests of one partition copy, built one item at a time."""

    __slots__ = ("buckets", "items")

    def __init__(self) -> None:
        self.buckets = [0] * BUCKETS
        self.items = 0

    def add(self, map_name: bytes, key: bytes, ts: int, member: int, kind: int) -> None:
        b = bucket_of(key)
        self.buckets[b] = (self.buckets[b] + item_digest(map_name, key, ts, member, kind)) & _MASK64
        self.items += 1

    @property
    def root(self) -> int:
        return sum(self.buckets) & _MASK64

    def pack(self) -> bytes:
        return b"".join(d.to_bytes(8, "little") for d in self.buckets)


def unpack_buckets(data: bytes) -> list[int]:
    """Bucket digests from `Digest.pack()`; ValueError if the size is not exactly right."""
    if len(data) != 8 * BUCKETS:
        raise ValueError(f"bucket digests: {len(data)} bytes, expected {8 * BUCKETS}")
    return [int.from_bytes(data[i : i + 8], "little") for i in range(0, len(data), 8)]


def differing(mine: Sequence[int], theirs: Sequence[int]) -> list[int]:
    """Bucket numbers whose digests differ."""
    return [b for b, (x, y) in enumerate(zip(mine, theirs, strict=True)) if x != y]


def digest_of(items: Iterable[tuple[bytes, bytes, int, int, int]]) -> Digest:
    """A digest of (map, key, ts, member, kind) items."""
    d = Digest()
    for item in items:
        d.add(*item)
    return d
