"""A named map: its entries split over the cluster's partitions, and its counters.

Entries are kept in one dict per partition from day one, because everything
that moves data (snapshots, migration, backup fills, anti-entropy digests)
works a partition at a time and must not scan the whole map to do it.
"""

from __future__ import annotations

from grid.store.entry import Entry
from grid.store.stats import MapStats
from replication import lww

ZERO = lww.ZERO  # no clear marker: older than every version


class RecordMap:
    __slots__ = ("cleared", "name", "parts", "stats", "tombs")

    def __init__(self, name: str, partitions: int) -> None:
        self.name = name
        self.parts: list[dict[bytes, Entry]] = [{} for _ in range(partitions)]
        # Deletes remembered per partition, key -> version (ts, member), for the grace
        # period (grid/store/copies.py): without them a replica that missed a delete
        # would give the key back at the next anti-entropy merge.
        self.tombs: list[dict[bytes, tuple[int, int]]] = [{} for _ in range(partitions)]
        # The version of the last CLEAR of this map per partition: entries at or below it
        # are gone, wherever they turn up later.
        self.cleared: list[tuple[int, int]] = [ZERO] * partitions
        self.stats = MapStats()

    def __repr__(self) -> str:
        return f"RecordMap({self.name!r}, entries={self.stats.entries})"
