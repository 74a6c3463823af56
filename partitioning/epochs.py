"""Table epochs between coordinators: why each publish goes one epoch up, and when
a coordinator jumps over another's tables.

A member installs a table only if its epoch is higher than that of the table it
holds (`PartitionTable.newer_than`); equal epochs never replace each other. One
coordinator at a time publishes, each table one epoch above the one it holds,
so epochs only grow and every member ends up with the last table.

Two coordinators can act at once while membership views disagree (a network
partition, or two clusters started apart and then joined). Each side's tables
have their own fingerprints (their own lineage). After the heal, a member may
hold the other side's table at an epoch equal to or above ours: it would ignore
everything we publish. Every publish is answered with the version the member
then holds, so the coordinator sees it: another version at an epoch at least
ours is another lineage. It notes that epoch as a floor and republishes above
it (an overtake); members then converge on one lineage. Whose lists: if the
other lineage is ahead (a higher epoch), the coordinator first adopts that
table (it asks the members for their tables, as a new coordinator does) and
republishes its lists; at equal epochs, its own.

Why ahead wins: the side that moved on published more tables, and with
`min_cluster_size` the smaller side of a split publishes none (rebalancer.py),
so the larger side is always ahead. Taking the smaller side's lists (as this
did when the smallest name simply won) made its stale copies primaries again
after the heal: they served old values, and a counter incremented there beat
the larger side's newer value by last-writer-wins (found by `grid chaos run
--backend netns --scenario isolate-one --min-cluster-size 2`: 127 fell to 48).
"""

from __future__ import annotations


def epoch_of(version: int) -> int:
    """A table version's epoch (table.py: `version = epoch << 32 | fingerprint`)."""
    return version >> 32


def another_lineage(ours: int, theirs: int) -> bool:
    """Whether a member answering with version `theirs` ignores our tables (see above)."""
    return theirs != ours and epoch_of(theirs) >= epoch_of(ours)


def next_epoch(ours: int, floor: int) -> int:
    """The epoch of our next table: above our own, and above any other lineage seen."""
    return max(epoch_of(ours), floor) + 1
