"""A named map: its entries split over the cluster's partitions, and its counters.

Entries are kept in one dict per partition from day one, because everything
that moves data (snapshots, migration, backup fills, anti-entropy digests)
works a partition at a time and must not scan the whole map to do it.
"""

from __future__ import annotations

from grid.store.entry import Entry
from grid.store.stats import MapStats


class RecordMap:
    __slots__ = ("name", "parts", "stats")

    def __init__(self, name: str, partitions: int) -> None:
        self.name = name
        self.parts: list[dict[bytes, Entry]] = [{} for _ in range(partitions)]
        self.stats = MapStats()

    def __repr__(self) -> str:
        return f"RecordMap({self.name!r}, entries={self.stats.entries})"
