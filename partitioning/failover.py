"""Failover: members that are gone leave every replica list at once.

A replica list is ordered (primary, first backup, ...), so removing a dead
member moves the ranks after it up by one: a crashed primary's first surviving
backup becomes primary. No data moves: a backup follows its primary's stream
and already holds a live copy (minus the changes the dead primary had not
shipped yet, which is what `sync_backups` is for). A partition whose every
replica is gone (`backups = 0`, or all its replicas died together) has no copy
left anywhere; it starts empty on the member the target placement makes its
primary, and the caller logs how many did.

Members restarting from disk and named by the saved table are not "gone"
while they are waited for (rebalancer.py, restart waits): their partitions
keep them, so a whole-cluster restart does not hand out partitions whose
only copies are on members still starting.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

from partitioning.placement import Layout
from partitioning.table import PartitionTable


class Failover(NamedTuple):
    """The lists without the gone members, and the partitions that lost every copy."""

    layout: Layout
    lost: tuple[int, ...]


def drop_gone(layout: Layout, gone: Collection[str], target: PartitionTable) -> Failover:
    """Remove `gone` from every list; a list left empty restarts at `target`'s owner."""
    lists: list[tuple[str, ...]] = []
    lost: list[int] = []
    for p, replicas in enumerate(layout):
        kept = tuple(m for m in replicas if m not in gone)
        if not kept:
            kept = (target.owner(p),)  # no copy survives: start empty
            lost.append(p)
        lists.append(kept)
    return Failover(tuple(lists), tuple(lost))
