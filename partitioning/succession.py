"""Who coordinates, and which table a member starts from.

The coordinator, the one member that writes the partition table, is the live
(alive or suspect) member with the smallest name that is not leaving. Every
member computes it alike from its own membership view, so no election and no
extra state are needed (Hazelcast uses its oldest member; a name is as good).
When the coordinator dies, the next smallest live name takes over with the last
table it was sent; a leaving member never coordinates (it hands its work to the
others), so a cluster in which everyone is leaving has nobody to move anything
and falls back on this member.

A member that has no table yet (a start, or a restart whose saved table the
cluster may have gone past) asks the live members for theirs and adopts the
newest (`newest_table`). Only if every member answered and none has a table
may a coordinator build the first one (a member that did not answer may hold
one: never guess).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import NamedTuple


def coordinator_of(live: Collection[str], leaving: Collection[str], me: str) -> str:
    """The smallest live name not leaving; `me` if every live member is leaving."""
    candidates = [m for m in live if m not in leaving]
    return min(candidates) if candidates else me


class Adoption(NamedTuple):
    """`member`: whose table to install (None: nobody has a newer one than ours)."""

    member: str | None
    everyone_answered: bool


def newest_table(answers: Mapping[str, int | None], current: int) -> Adoption:
    """Pick from the versions members answered (0: it has no table; None: no answer).

    The first member with the highest version wins; equal versions are equal tables.
    """
    best: str | None = None
    best_version = 0
    everyone = True
    for member, version in answers.items():
        if version is None:
            everyone = False
            continue
        if version and (best is None or version > best_version):
            best, best_version = member, version
    take = best if best is not None and best_version != current else None
    return Adoption(take, everyone)
