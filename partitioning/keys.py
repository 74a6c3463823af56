"""Key -> partition.

`xxh3_64(routing_key) % P`. The routing key is the text inside the first
`{...}` of the key when that text is non-empty (Redis Cluster's hash tags), so
`user:{42}:profile` and `user:{42}:cart` land in one partition and can be
co-located; otherwise it is the whole key. xxh3 is used because it is fast on
short keys and stable across platforms and versions, which matters because a
client and every member must agree on the answer forever: the partition count
P is fixed for the life of a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable

from xxhash import xxh3_64_intdigest

DEFAULT_PARTITION_COUNT = 271
"""Hazelcast's default: prime, so keys with regular hash patterns still spread,
and large enough that partitions move in small pieces when members change."""


OPEN_BRACE = ord("{")


def routing_key(key: bytes) -> bytes:
    """The part of `key` that decides its partition (see module docstring)."""
    start = key.find(b"{")
    if start < 0:
        return key
    end = key.find(b"}", start + 1)
    if end <= start + 1:  # no closing brace, or `{}`: hash the whole key
        return key
    return key[start + 1 : end]


def partition_of(key: bytes, partitions: int = DEFAULT_PARTITION_COUNT) -> int:
    """The partition id in [0, partitions) that owns `key`."""
    # `123 in key` (the byte "{"), not `b"{" in key`: bytes.__contains__ first tries its
    # argument as an integer and, for a bytes one, raises and clears a TypeError with a
    # formatted message, 160 ns a key against 18 (every key of every client and member)
    if OPEN_BRACE in key:
        key = routing_key(key)
    return xxh3_64_intdigest(key) % partitions


def partitions_of(keys: Iterable[bytes], partitions: int = DEFAULT_PARTITION_COUNT) -> list[int]:
    """`partition_of` of each key, for a client routing a batch: one comprehension, no
    Python call per key."""
    return [xxh3_64_intdigest(routing_key(k) if OPEN_BRACE in k else k) % partitions for k in keys]
