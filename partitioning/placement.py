"""Partition -> ordered replica list, a pure function of the member set.

How placement works, and why
============================

Base: a uhashring ring. Every live member gets `virtual_nodes * weight`
points on a uhashring.HashRing (uhashring's default hash: md5 of
"<member>-<i>", so positions are identical in every process; Python's
randomized `hash()` is never involved). Each partition p sits at
`ring.hashi("partition/<p>")`. Walking the ring clockwise from there and
keeping the first occurrence of each member gives p's *preference list*: the
plain consistent-hashing answer is its first `1 + backups` entries. Members
are fed to the ring in sorted order, so even a (practically impossible) md5
point collision is resolved identically everywhere: the table depends on the
member *set*, never on the order in which members were seen.

Why plain consistent hashing is not enough: with 271 partitions the number
of partitions landing in a member's arcs is a sum of many small chances, so it
is roughly Poisson with mean P/N. At N = 50 that mean is 5.4 and the busiest
of 50 members gets ~10-17 primaries (max/mean 1.9-3.1 measured), and no
amount of virtual nodes helps: vnodes only even out arc *lengths*, while this
spread comes from throwing 271 points at them. The target is max/mean <= 1.15.

Correction: consistent hashing with bounded loads (Mirrokni, Thorup,
Zadimoghaddam, 2018), made order-free. Ranks are assigned one after the
other (primaries, then first backups, ...). After rank k, member m may hold
at most

    cap_k(m) = max(ceil(share), floor(load_factor * share)),
    share = (k + 1) * partition_count * weight(m) / total weight

replicas of ranks 0..k together (`load_caps`; shares are water-filled so
nobody is asked for more than one replica per partition). Caps on the
*cumulative* count, not per rank, give a member that got few primaries room
for more backups: measured, this moves fewer partitions than a separate cap
per rank, and it still bounds both figures that matter, primaries (k = 0)
and all replicas (k = last).

Each rank is a partition-proposing *deferred acceptance* (Gale-Shapley with
capacities): every partition asks the members of its preference list in
order, skipping members it already holds at an earlier rank; a member over
its cap keeps the partitions with the strongest claim and rejects the
weakest, which then ask their next member. A claim is stronger when the
member sits earlier in the partition's preference list, then when the
partition lies closer (clockwise) to that member's ring point, then by lower
partition id. Why deferred acceptance rather than the paper's greedy "first
come, first served": its result (the partition-optimal stable assignment)
does not depend on the order in which partitions are processed, and in
measurements it moved fewer partitions on a membership change than greedy by
partition id, because which partitions overflow is decided by ring geometry
local to the full member, not by a global processing order.

Every partition therefore stays on its ring-preferred member unless that
member is full, and the balance bound holds by construction: for primaries
and for all replicas, max/mean <= max(load_factor, ceil(share)/share). At
P = 271 the integer part matters only when shares are small: N = 50 gives
cap 6 vs mean 5.42 = 1.107, within 1.15, but N = 45, 52-54, 63-66, ... give
ceil(P/N)/(P/N) > 1.15 (e.g. N = 45: 7 / 6.02 = 1.16), a limit of 271
partitions, not of the method.

Rarely a partition finds every eligible member full while the only members
with room already hold it at an earlier rank. It then takes a slot along the
shortest augmenting path (it displaces one partition of a full member, which
moves to another member, ... until a member with room), searched breadth
first in sorted order so it is deterministic. For unweighted members this
always succeeded in the property tests. With skewed weights the earlier
ranks can leave a later rank infeasible; then the partition overflows onto
the eligible member furthest below its cap (primaries, rank 0, can never be
infeasible, so their weighted cap always holds).

Cost of the correction: movement. A join or leave changes some member's
intake; the freed or lost slot lets a previously rejected partition return
(or forces another one out), a chain that continues while it meets full
members. With slack of under one partition per member (cap 6 vs mean 5.42 at
N = 50), chains are longer than the ideal (1 + backups) / (N + 1) allows;
docs/partitioning.md has the measured figures and the targets they miss.

The result is a tuple of `partition_count` tuples, each `min(1 + backups, N)`
distinct member names, primary first.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect
from collections.abc import Iterable, Iterator, Mapping

from uhashring import HashRing

from partitioning.config import PlacementConfig

Members = Mapping[str, int] | Iterable[str]
"""Live members: names (weight 1) or names -> positive integer weight."""

Layout = tuple[tuple[str, ...], ...]

_RING_SIZE = 1 << 128  # md5 output space: uhashring's default positions


def normalize_members(members: Members) -> tuple[tuple[str, int], ...]:
    """Sorted (name, weight) pairs, so that input order can never leak into placement."""
    pairs = members.items() if isinstance(members, Mapping) else ((m, 1) for m in members)
    weights: dict[str, int] = {}
    for name, weight in pairs:
        if not isinstance(name, str) or not name:
            raise ValueError(f"member names must be non-empty strings, got {name!r}")
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
            raise ValueError(f"member weight must be a positive int, got {weight!r} for {name}")
        if weights.get(name, weight) != weight:
            raise ValueError(f"member {name} given twice with different weights")
        weights[name] = weight
    if not weights:
        raise ValueError("placement needs at least one live member")
    return tuple(sorted(weights.items()))


def partition_point(ring: HashRing, partition: int) -> int:
    """Where a partition sits on the ring; a label, not the bare int, so it reads in dumps."""
    return ring.hashi(f"partition/{partition}")


class _Preferences:
    """Lazy ring walks: most partitions settle on their first choices, so a
    full walk (members x vnodes points) per partition would be wasted work."""

    def __init__(self, ring: HashRing, partition_count: int, member_count: int) -> None:
        points = ring.get_points()
        self._positions = [pos for pos, _ in points]
        self._names = [name for _, name in points]
        self._member_count = member_count
        self._origin = [partition_point(ring, p) for p in range(partition_count)]
        self._start = [bisect(self._positions, x) for x in self._origin]
        self._cursor = list(self._start)
        self._order: list[list[str]] = [[] for _ in range(partition_count)]
        self._claim: list[dict[str, tuple[int, int]]] = [{} for _ in range(partition_count)]

    def _extend(self, partition: int) -> bool:
        order, claim = self._order[partition], self._claim[partition]
        if len(order) >= self._member_count:
            return False
        size = len(self._positions)
        # Bounded by one lap: a member whose every point collided away is unreachable.
        while self._cursor[partition] - self._start[partition] < size:
            index = self._cursor[partition] % size
            self._cursor[partition] += 1
            name = self._names[index]
            if name not in claim:
                distance = (self._positions[index] - self._origin[partition]) % _RING_SIZE
                claim[name] = (len(order), distance)
                order.append(name)
                return True
        return False

    def walk(self, partition: int) -> Iterator[str]:
        """Distinct members clockwise from the partition's point."""
        i = 0
        while i < len(self._order[partition]) or self._extend(partition):
            yield self._order[partition][i]
            i += 1

    def claim(self, partition: int, member: str) -> tuple[int, int, int]:
        """Smaller is stronger: preference rank, ring distance, partition id."""
        rank, distance = self._claim[partition][member]
        return (rank, distance, partition)


def load_caps(
    members: tuple[tuple[str, int], ...], total: int, load_factor: float, limit: int
) -> dict[str, int]:
    """The most replicas each member may hold out of `total`: the bounded-load guarantee.

    Shares follow weight, except that nobody can hold more than `limit` (one
    replica per partition): a heavy member's excess is handed to the others
    (water-filling), or a light member's cap would be unreachable when the
    replica count forces it to hold every partition.
    """
    shares: dict[str, float] = {}
    remaining = dict(members)
    left = float(total)
    while remaining:
        weight_sum = sum(remaining.values())
        over = [m for m, w in remaining.items() if left * w / weight_sum > limit]
        if not over:
            shares.update((m, left * w / weight_sum) for m, w in remaining.items())
            break
        for m in over:
            shares[m] = limit
            left -= limit
            del remaining[m]
    return {
        m: min(limit, max(math.ceil(share), math.floor(load_factor * share)))
        for m, share in shares.items()
    }


def _assign_rank(
    prefs: _Preferences, lists: list[list[str]], caps: dict[str, int]
) -> dict[int, str]:
    """Deferred acceptance for one rank; returns partition -> member."""
    partition_count = len(lists)
    held: dict[str, list[tuple[tuple[int, int, int], int]]] = {m: [] for m in caps}
    walks = [prefs.walk(p) for p in range(partition_count)]
    pending = list(range(partition_count - 1, -1, -1))
    unplaced: list[int] = []
    while pending:
        p = pending.pop()
        for member in walks[p]:
            if member in lists[p] or caps[member] == 0:
                continue
            claim = prefs.claim(p, member)
            weakest_first = (tuple(-c for c in claim), p)  # max-heap on claim via negation
            heap = held[member]
            if len(heap) < caps[member]:
                heapq.heappush(heap, weakest_first)
                break
            if weakest_first > heap[0]:
                rejected = heapq.heapreplace(heap, weakest_first)[1]
                pending.append(rejected)
                break
        else:
            unplaced.append(p)
    owner = {p: m for m, heap in held.items() for _, p in heap}
    for p in sorted(unplaced):
        owner[p] = _repair(prefs, lists, caps, owner, p)
    return owner


def _repair(
    prefs: _Preferences,
    lists: list[list[str]],
    caps: dict[str, int],
    owner: dict[int, str],
    partition: int,
) -> str:
    """Place a partition that every eligible member rejected (see module comment).

    Shortest augmenting path, breadth first in sorted order so it is
    deterministic: the partition takes a full member's slot, that member's
    partition moves to another member, ... until one with room is reached.
    """
    load: dict[str, int] = dict.fromkeys(caps, 0)
    held: dict[str, list[int]] = {m: [] for m in caps}
    for p, m in sorted(owner.items()):
        load[m] += 1
        held[m].append(p)
    eligible = [m for m in prefs.walk(partition) if m not in lists[partition]]
    came_from: dict[str, tuple[str, int] | None] = dict.fromkeys(eligible)
    queue = list(eligible)
    for member in queue:  # grows while iterating: breadth-first
        if load[member] < caps[member]:
            while (step := came_from[member]) is not None:
                previous, moved = step
                owner[moved] = member
                member = previous
            return member
        for moved in held[member]:
            for other in sorted(caps):
                if other not in came_from and other not in lists[moved] and caps[other] > 0:
                    came_from[other] = (member, moved)
                    queue.append(other)
    # No augmenting path within this rank: every member with room already holds the
    # partition at an earlier rank. Swap that earlier slot with another partition's
    # holder at the same rank (both keep their per-rank loads, so no prefix bound
    # moves), which frees the member with room to take this rank. Deterministic:
    # members and partitions are tried in sorted order.
    for x in sorted(m for m in caps if load[m] < caps[m] and m in lists[partition]):
        j = lists[partition].index(x)
        for q in sorted(owner):
            z = lists[q][j] if j < len(lists[q]) else None
            if z is None or x in lists[q] or owner[q] == x or z in lists[partition]:
                continue
            lists[partition][j], lists[q][j] = z, x
            return x
    # Nothing to swap either (seen with skewed weights): overflow onto the eligible
    # member furthest below its cap.
    return min(eligible, key=lambda m: load[m] - caps[m])


def place(members: Members, config: PlacementConfig | None = None) -> Layout:
    """Replica lists for every partition; identical for identical (member set, config)."""
    config = config or PlacementConfig()
    normalized = normalize_members(members)
    ring = HashRing(
        nodes={
            name: {"weight": weight, "vnodes": config.virtual_nodes} for name, weight in normalized
        }
    )
    prefs = _Preferences(ring, config.partition_count, len(normalized))
    replica_count = min(config.replica_count, len(normalized))
    lists: list[list[str]] = [[] for _ in range(config.partition_count)]
    load = dict.fromkeys((name for name, _ in normalized), 0)
    for rank in range(replica_count):
        # Cumulative caps: ranks 0..rank together hold (rank + 1) * P replicas.
        total = (rank + 1) * config.partition_count
        cumulative = load_caps(normalized, total, config.load_factor, config.partition_count)
        caps = {m: max(0, cumulative[m] - load[m]) for m in load}
        owner = _assign_rank(prefs, lists, caps)
        for p, member in owner.items():
            lists[p].append(member)
            load[member] += 1
    return tuple(tuple(replicas) for replicas in lists)


def place_plain(members: Members, config: PlacementConfig | None = None) -> Layout:
    """Plain consistent hashing (no load bound): the baseline the bench compares against."""
    config = config or PlacementConfig()
    normalized = normalize_members(members)
    ring = HashRing(
        nodes={
            name: {"weight": weight, "vnodes": config.virtual_nodes} for name, weight in normalized
        }
    )
    prefs = _Preferences(ring, config.partition_count, len(normalized))
    replica_count = min(config.replica_count, len(normalized))
    return tuple(
        tuple(m for _, m in zip(range(replica_count), prefs.walk(p), strict=False))
        for p in range(config.partition_count)
    )
