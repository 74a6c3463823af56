"""Per-map backups: which maps a partition's backup at a given rank holds.

The partition table has as many backups per partition as the widest map
needs (`Config.table_backups`). A map with fewer (`map_backups =
"sessions=0"`, or the member-wide `backups` for maps not listed) is copied
only to the first N of them, as Hazelcast's per-map backup-count: the backup
at rank r (1 = first backup) holds the maps whose backups are >= r. Rank 0 is
a member being filled to take the partition over: it gets every map.

Every member must be configured alike (like `partitions`), because a primary
decides from its own configuration what each backup gets, and a backup from
its own what it should hold.
"""

from __future__ import annotations

from grid.config import Config


class MapBackups:
    __slots__ = ("by_map", "default", "table", "uniform")

    def __init__(self, config: Config) -> None:
        self.by_map = config.backups_by_map()
        self.default = config.backups
        self.table = config.table_backups
        # the common case: every map has the table's backups, nothing to filter
        self.uniform = self.default == self.table and all(
            b == self.table for b in self.by_map.values()
        )

    @property
    def narrowest(self) -> int:
        """The highest backup rank that holds every map: a backup past it lacks some
        maps, so it must be filled before it can become primary."""
        return min([self.default, *self.by_map.values()])

    def of(self, map_name: str) -> int:
        return self.by_map.get(map_name, self.default)

    def holds(self, map_name: str, rank: int) -> bool:
        """Whether the replica at this rank holds the map (rank 0: a filling member)."""
        return rank == 0 or self.uniform or self.by_map.get(map_name, self.default) >= rank
