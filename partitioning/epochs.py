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
ours is another lineage. It notes that epoch as a floor and republishes its
own lists above it (an overtake); members then converge on one lineage, the
one whose coordinator is the smallest name both sides see.
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
