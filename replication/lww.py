"""The one last-writer-wins merge: whether a record changes a partition copy.

Every record carries a version `(ts, member)` (replication/hlc.py). Versions are totally
ordered, ts first, then member: plain tuple order, which is how `hlc.Version` (a
NamedTuple) compares too, so the store keeps versions as bare `(ts, member)` tuples.
Every merge decides with the functions below: a backup applying its primary's stream,
a fill or migration merging a snapshot into the copy it holds, anti-entropy and read
repair exchanging records, a hand-back (all through `Store.apply`), read repair's probes,
and the simulator's store. Recovery from the journal (persistence/recovery.py) replays
by the same rules, but persistence may not import this package (DESIGN.md's arrows).

What a copy holds, per map and partition (grid/store/copies.py):

- live entries: key -> value, with the version of the write that set it;
- tombstones: key -> the version of a delete, kept for the grace period. A key has an
  entry or a tombstone, never both;
- one clear marker: the version of the map's last CLEAR in the partition (ZERO: none).
  It stands for a tombstone of every key at once; snapshots carry it as a tombstone of
  the empty key, the journal as a CLEARED record.

The rules (a record "wins" when it changes the copy):

1. A write (PUT, INCR) wins iff it is newer than everything the copy knows of its key:
   the key's entry or tombstone, and the clear marker (`write_wins`). It replaces the
   entry, or the tombstone.
2. A removal (DELETE, EXPIRED, EVICTED) removes an entry that is not newer than it: a
   tie goes to the removal, because EXPIRED and EVICTED carry the version of the entry
   they removed (`removes`).
3. A DELETE is also kept as a tombstone when it would win as a write (rule 1), whether
   or not there was an entry to remove: after a split this side may never have had the
   key, and its delete must still beat an older value that arrives later. Expiry and
   eviction leave no tombstone (copies.py says why).
4. A CLEAR wins iff it is newer than the marker (`clear_wins`); it becomes the marker
   and removes every entry and tombstone that is not newer than it (`cleared_by`).

So for each key the copy ends with the newest of the writes, deletes and clears it was
given, whatever their order and however often each came: merging is commutative,
associative and idempotent. (An expiry or an eviction is not remembered, so an older
write arriving after one brings the key back: an expired value is expired on arrival
too, and an evicted key coming back is a cache refilling.)

`Store.apply`, the backups' hot path, writes the comparisons of `write_wins` and
`removes` out inline, where a call per record cost 5-21% more instructions (its
docstring says more); tests/store/test_apply_order.py holds it to these functions.
"""

from __future__ import annotations

VersionTuple = tuple[int, int]
"""(ts, member); `hlc.Version` is one."""

ZERO: VersionTuple = (0, 0)
"""Older than every real version: no marker, no record."""


def newer(a: VersionTuple, b: VersionTuple) -> bool:
    """Whether `a` is the later writer: the order every rule below is made of."""
    return a > b


def write_wins(version: VersionTuple, held: VersionTuple | None, cleared: VersionTuple) -> bool:
    """Rules 1 and 3: whether a write, or a delete's tombstone, at `version` replaces what
    the copy holds of its key. `held`: the version of the key's entry or tombstone, None
    if it has neither; `cleared`: the map's clear marker in the partition (ZERO: none)."""
    return version > cleared and (held is None or version > held)


def removes(version: VersionTuple, entry: VersionTuple) -> bool:
    """Rule 2: whether a removal at `version` removes a live entry at `entry` (a tie goes
    to the removal: expiry and eviction carry the entry's own version)."""
    return version >= entry


def clear_wins(version: VersionTuple, cleared: VersionTuple) -> bool:
    """Rule 4: whether a CLEAR at `version` replaces the map's marker `cleared`."""
    return version > cleared


def cleared_by(held: VersionTuple, clear: VersionTuple) -> bool:
    """Rule 4: whether an entry or tombstone at `held` is removed by a CLEAR at `clear`."""
    return held <= clear
