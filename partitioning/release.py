"""The release of leaving members: what a graceful leave frees in one step.

A member that asked to leave (leave.py) should be free as soon as possible,
without waiting for the waves that rebuild the stayers' replica counts. So,
before any wave, the coordinator releases every live leaver at once:

1. Each partition a leaver is primary of is handed to its first backup that
   stays and is live (the heir). The heir is a follower of the partition's
   stream, so nothing is copied: the hand-off only switches the primary.
   With per-map backups, a backup past `narrowest` (the highest rank that
   holds every map) lacks some maps: it cannot take over by hand-off alone,
   so such a partition keeps its leaver until a wave fills a new primary.
2. Leavers leave every list in which they are no longer primary (their
   backups go at once; a primary whose hand-off failed, or that had no heir,
   stays primary).

The stayers' replica counts are restored by the next waves, once the
leavers are gone from the lists.
"""

from __future__ import annotations

from collections.abc import Collection

from partitioning.decisions import HandoffOrder
from partitioning.placement import Layout


class Release:
    """Plans the hand-offs that free `leavers` (`orders`), then the lists once they
    ran (`handed_off`)."""

    def __init__(
        self, layout: Layout, leavers: Collection[str], live: Collection[str], narrowest: int
    ) -> None:
        self.layout = layout
        self.leavers = leavers
        groups: dict[tuple[str, str], list[int]] = {}
        for p, replicas in enumerate(layout):
            if replicas[0] in leavers:
                heir = next((m for m in replicas[1:] if m not in leavers and m in live), None)
                if heir is not None and replicas.index(heir) <= narrowest:
                    groups.setdefault((replicas[0], heir), []).append(p)
        self.orders = tuple(HandoffOrder(o, h, tuple(parts)) for (o, h), parts in groups.items())

    def handed_off(self, failed: Collection[int]) -> Layout:
        """The lists after the hand-offs, `failed` being those that did not complete."""
        lists = list(self.layout)
        for order in self.orders:
            for p in order.partitions:
                if p not in failed:
                    lists[p] = (order.to, *(m for m in lists[p] if m != order.to))
        for p, replicas in enumerate(lists):
            if replicas[0] not in self.leavers:  # a leaver left as a backup only: it goes
                lists[p] = tuple(m for m in replicas if m not in self.leavers)
        return tuple(lists)
