"""One migration wave: a few partitions moved from their current lists to the target.

A wave is a three-step conversation with the members, planned here and carried
out by the runtime:

1. **Fill** (`Wave.fills`). Every member of a partition's target list that does
   not hold it yet follows it from its current primary (snapshot plus live
   changes) until it is live. So does the target primary when it is a backup
   past `narrowest`: with per-map backups such a backup holds only some maps,
   and a primary must hold them all. Orders are grouped by (member, source),
   one request each. A partition whose primary is not live (a member still
   restarting, waited for) is not touched.
2. **Hand off** (`Wave.filled`, given the partitions whose fill failed). Where
   the primary changes, the current primary hands the partition to the target
   primary, which now holds a live copy; grouped by (source, new primary).
   A partition whose fill failed is not handed off.
3. **Re-list** (`Wave.handed_off`, given the partitions whose hand-off
   failed). Every other partition of the wave takes its target list (minus
   members not live); the failed ones keep their old lists and are retried
   by a later round. The runtime publishes the result as one table, so a
   table installed after a hand-off already shows it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from partitioning.decisions import FillOrder, HandoffOrder
from partitioning.placement import Layout
from partitioning.table import PartitionTable


class Wave:
    """The plan for `partitions`, moved from `layout` (the lists in effect) towards
    `target`, with the members in `live`; see the module docstring for the steps."""

    def __init__(
        self,
        partitions: Sequence[int],
        layout: Layout,
        target: PartitionTable,
        live: Collection[str],
        narrowest: int,
    ) -> None:
        self.partitions = tuple(partitions)
        self.layout = layout
        self.target = target
        self.live = live
        self.narrowest = narrowest
        self.failed: set[int] = set()

    def fills(self) -> tuple[FillOrder, ...]:
        """Step 1: which member copies which partitions from which primary."""
        groups: dict[tuple[str, str], list[int]] = {}
        for p in self.partitions:
            current = self.layout[p]
            primary = current[0]
            if primary not in self.live:
                continue  # its primary is still starting (restart wait)
            heir = self.target.owner(p)
            for m in self.target.replicas(p):
                # a member not holding p yet is filled; so is a backup about to become
                # primary that holds only some maps (a rank past the narrowest map's)
                lacks = m not in current or (
                    m == heir and m != primary and current.index(m) > self.narrowest
                )
                if lacks and m in self.live:
                    groups.setdefault((m, primary), []).append(p)
        return tuple(FillOrder(m, s, tuple(parts)) for (m, s), parts in groups.items())

    def filled(self, failed: Collection[int]) -> tuple[HandoffOrder, ...]:
        """Step 2: the fills of `failed` did not complete; the hand-offs to run."""
        self.failed.update(failed)
        groups: dict[tuple[str, str], list[int]] = {}
        for p in self.partitions:
            if p in self.failed:
                continue
            new, old = self.target.owner(p), self.layout[p][0]
            if new != old and old in self.live and new in self.live:
                groups.setdefault((old, new), []).append(p)
        return tuple(HandoffOrder(o, n, tuple(parts)) for (o, n), parts in groups.items())

    def handed_off(self, failed: Collection[int]) -> Layout:
        """Step 3: the hand-offs of `failed` did not complete; the lists to publish."""
        self.failed.update(failed)
        layout = list(self.layout)
        for p in self.partitions:
            if p in self.failed or layout[p][0] not in self.live:
                continue  # keep the old list; the next round tries again
            if self.target.owner(p) not in self.live:
                continue
            layout[p] = tuple(m for m in self.target.replicas(p) if m in self.live)
        return tuple(layout)
