"""Per-map backups: which maps a partition's backup at a given rank holds.

The partition table has as many backups per partition as the widest map
needs. A map with fewer (`map_backups = "sessions=0"`, or the member-wide
`backups` for maps not listed) is copied only to the first N of them, as
Hazelcast's per-map backup-count: the backup at rank r (1 = first backup)
holds the maps whose backups are >= r. Rank 0 is a member being filled to
take the partition over: it gets every map.

Every member must be configured alike (like `partitions`), because a primary
decides from its own configuration what each backup gets, and a backup from
its own what it should hold.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

Holds = Callable[[str], bool] | None
"""Which maps a copy holds; None: all of them (the common case, checked first)."""


class MapBackups:
    __slots__ = ("by_map", "default", "narrowest", "table", "uniform")

    def __init__(self, default: int, by_map: Mapping[str, int], table: int) -> None:
        self.by_map = dict(by_map)
        self.default = default
        self.table = table
        self.narrowest = min([default, *self.by_map.values()])
        """The fewest backups any map has: a backup past this rank lacks some map."""
        # the common case: every map has the table's backups, nothing to filter
        self.uniform = default == table and all(b == table for b in self.by_map.values())

    def of(self, map_name: str) -> int:
        return self.by_map.get(map_name, self.default)

    def holds(self, map_name: str, rank: int) -> bool:
        """Whether the replica at this rank holds the map (rank 0: a filling member)."""
        return rank == 0 or self.uniform or self.by_map.get(map_name, self.default) >= rank

    def held(self, rank: int) -> Holds:
        """The maps a replica at this rank holds, as a filter (None: every map)."""
        if self.uniform or rank == 0:
            return None
        return lambda name: self.holds(name, rank)
