"""Failover: members that are gone leave every replica list at once.

A replica list is ordered (primary, first backup, ...), so removing a dead
member moves the ranks after it up by one: a crashed primary's first surviving
backup becomes primary. No data moves: a backup follows its primary's stream
and already holds a live copy (minus the changes the dead primary had not
shipped yet, which is what `sync_backups` is for). A partition whose every
replica is gone (`backups = 0`, or all its replicas died together) has no copy
left anywhere; it starts empty on the member the target placement makes its
primary (or, if that member is the one that lacks it, on the next one), and
the caller logs how many did.

A live member that says it lacks its copies (it restarted without its data
quicker than failure detection, so the table still names it:
partitioning/ownership.py) is gone from the lists that name it there, and
only from those: the same failover, partition by partition.

Members restarting from disk and named by the saved table are not "gone"
while they are waited for (rebalancer.py, restart waits): their partitions
keep them, so a whole-cluster restart does not hand out partitions whose
only copies are on members still starting.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import NamedTuple

from partitioning.placement import Layout
from partitioning.table import PartitionTable


class Failover(NamedTuple):
    """The lists without the gone members, and the partitions that lost every copy."""

    layout: Layout
    lost: tuple[int, ...]


def drop_gone(
    layout: Layout,
    gone: Collection[str],
    target: PartitionTable,
    lacking: Mapping[str, Collection[int]] | None = None,
) -> Failover:
    """Remove `gone` from every list, and each member of `lacking` from the lists of
    the partitions it lacks; a list left empty restarts at `target`'s owner."""
    lists: list[tuple[str, ...]] = []
    lost: list[int] = []
    without = {p: {m for m, ps in (lacking or {}).items() if p in ps} for p in range(len(layout))}
    for p, replicas in enumerate(layout):
        out = without[p]
        kept = tuple(m for m in replicas if m not in gone and m not in out)
        if not kept:  # no copy survives: start empty, on a member that knows it does
            heir = [m for m in (*target.replicas(p), *target.members) if m not in out]
            kept = (heir[0] if heir else target.owner(p),)
            lost.append(p)
        lists.append(kept)
    return Failover(tuple(lists), tuple(lost))
