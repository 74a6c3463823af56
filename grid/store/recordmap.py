"""A named map: its entries split over the cluster's partitions, and its counters.

Entries are kept in one dict per partition from day one, because everything
that moves data (snapshots, migration, backup fills, anti-entropy digests)
works a partition at a time and must not scan the whole map to do it. A
partition's dict maps a key to its record, one bytes object
(grid/store/entry.py); `parts[p]` is a read-mostly view of it that hands out
`Entry` views, for code that wants attributes rather than records.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from grid.store.entry import Entry
from grid.store.stats import MapStats
from replication import lww

if TYPE_CHECKING:
    from grid.store.slots import SlotList

ZERO = lww.ZERO  # no clear marker: older than every version


class RecordMap:
    __slots__ = ("cleared", "id", "index", "name", "recs", "stats", "tombs")

    def __init__(
        self, name: str, partitions: int, id: int = -1, index: SlotList | None = None
    ) -> None:
        self.name = name
        self.id = id  # the store's number for the map (where = id * partitions + partition)
        self.index = index  # the store's all list (last access and lfu of each slot)
        self.recs: list[dict[bytes, bytes]] = [{} for _ in range(partitions)]
        # Deletes remembered per partition, key -> version (ts, member), for the grace
        # period (grid/store/copies.py): without them a replica that missed a delete
        # would give the key back at the next anti-entropy merge.
        self.tombs: list[dict[bytes, tuple[int, int]]] = [{} for _ in range(partitions)]
        # The version of the last CLEAR of this map per partition: entries at or below it
        # are gone, wherever they turn up later.
        self.cleared: list[tuple[int, int]] = [ZERO] * partitions
        self.stats = MapStats()

    @property
    def parts(self) -> Parts:
        """Per-partition views handing out Entry objects (the records are in `recs`)."""
        return Parts(self)

    def __repr__(self) -> str:
        return f"RecordMap({self.name!r}, entries={self.stats.entries})"


class Parts:
    __slots__ = ("rmap",)

    def __init__(self, rmap: RecordMap) -> None:
        self.rmap = rmap

    def __getitem__(self, partition: int) -> PartView:
        return PartView(self.rmap, partition)  # (IndexError as a list would raise)

    def __len__(self) -> int:
        return len(self.rmap.recs)

    def __iter__(self) -> Iterator[PartView]:
        return (PartView(self.rmap, p) for p in range(len(self.rmap.recs)))


class PartView:
    """One partition of a map as key -> Entry (a read-only mapping)."""

    __slots__ = ("partition", "recs", "rmap")

    def __init__(self, rmap: RecordMap, partition: int) -> None:
        self.rmap = rmap
        self.partition = partition
        self.recs = rmap.recs[partition]

    def get(self, key: bytes, default: Entry | None = None) -> Entry | None:
        blob = self.recs.get(key)
        return default if blob is None else Entry(key, blob, self.rmap, self.partition)

    def __getitem__(self, key: bytes) -> Entry:
        return Entry(key, self.recs[key], self.rmap, self.partition)

    def __contains__(self, key: object) -> bool:
        return key in self.recs

    def __len__(self) -> int:
        return len(self.recs)

    def __bool__(self) -> bool:
        return bool(self.recs)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.recs)

    def keys(self) -> Iterator[bytes]:
        return iter(list(self.recs))

    def values(self) -> list[Entry]:
        rmap, p = self.rmap, self.partition
        return [Entry(k, b, rmap, p) for k, b in self.recs.items()]

    def items(self) -> list[tuple[bytes, Entry]]:
        rmap, p = self.rmap, self.partition
        return [(k, Entry(k, b, rmap, p)) for k, b in self.recs.items()]
