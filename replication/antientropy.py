"""Anti-entropy as a core with no IO: which replicas to compare, and what to send each way.

The partition stream keeps backups equal to their primary while nothing goes
wrong. Anti-entropy repairs what it cannot: both sides of a healed split took
writes; a member came back with an old copy; a primary died with changes
still in its send queue; a bug. A round runs from each primary, for the
partitions it serves, against each backup:

1. Compare: the primary sends the roots of its partitions' digests
   (replication/digest.py). The backup answers the bucket digests of those
   whose roots differ from its own, and refuses partitions it has no role for.
2. Repair, per partition that differs and a few buckets at a time: the primary
   sends its records of the differing buckets; the backup merges them and
   answers its own records of the same buckets, less those it was just sent;
   the primary merges those. A record the primary takes becomes a change of
   its partition like any other, so it goes down the stream to the others.

Both sides digest only versions at or below the `cut` (`settle` ms in the
past), so a write still in flight on the stream is not a difference. The
merge is the store's last-writer-wins `apply`, tombstones and clear markers
included, so repairs commute and a replica never goes back.

A copy with no role is handed back before it is dropped: the same exchange
with the partition's primary, over every version (nothing reaches that copy
any more), in which the primary takes the copy's records but gives none back
(`keep_theirs=False` on the holder's side), and a refusal fails the hand-back.

Both sides apply only to partitions they still have a role for, checked when
the records arrive: a repair that raced a drop would otherwise bring back a
whole copy that nothing drops again.

The store is reached through `Copies`, which the runtime builds over the real
store (grid/member/replicas/antientropy.py, with its lock) and the simulator over its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol

from replication.digest import BUCKETS, Digest, differing, unpack_buckets
from replication.hlc import LOGICAL_BITS
from replication.map_backups import Holds, MapBackups

COMPARE_BATCH = 8  # partitions per Compare call: the receiver digests them in one go
REPAIR_BUCKETS = 8  # buckets per Repair call: keeps one message well under the limits
Record = tuple[Any, ...]
EVERYTHING = (1 << 63) - 1
"""A cut that covers every version (a hand-back)."""


class Copies(Protocol):
    """The store as anti-entropy reads and changes it (each call one partition)."""

    def digest(self, p: int, cut: int, holds: Holds) -> Digest: ...

    def records(self, p: int, buckets: Sequence[int], cut: int, holds: Holds) -> list[Record]: ...

    def merge(self, p: int, records: Sequence[Record]) -> int:
        """Apply by last writer wins; returns how many won."""
        ...


class Peer(NamedTuple):
    """One replica a round compares with: its name, its backup rank, the partitions."""

    member: str
    rank: int
    partitions: list[int]


class Differing(NamedTuple):
    """A partition whose roots differ, with the other side's bucket digests, packed."""

    partition: int
    buckets: bytes


class Compared(NamedTuple):
    """The answer to a comparison."""

    refused: list[int]
    differing: list[Differing]


class Repaired(NamedTuple):
    """The answer to a repair: refused, or this side's records and how many of the
    other side's won here."""

    refused: bool
    records: list[Record]
    applied: int


class Refused(Exception):
    """The replica has no role for the partition (its table moved on)."""


class Reconciler:
    """One member's side of every comparison, as primary and as replica."""

    def __init__(
        self,
        me: str,
        partitions: int,
        map_backups: MapBackups,
        copies: Copies,
        has_role: Callable[[int], bool],
    ) -> None:
        self.me = me
        self.partitions = partitions
        self.map_backups = map_backups
        self.copies = copies
        self.has_role = has_role
        """Whether this member holds a role for p: primary, backup, following or filling."""
        self.rounds = 0
        self.compared = 0
        self.differing = 0
        self.repaired = 0
        self.sent = 0

    @staticmethod
    def cut(now_ms: int, settle_ms: int) -> int:
        """Versions at or below this are compared; younger ones may still be in flight."""
        return max(0, now_ms - settle_ms) << LOGICAL_BITS

    def peers(
        self, serves: Callable[[int], bool], replicas: Callable[[int], tuple[str, ...]]
    ) -> list[Peer]:
        """Whom a round compares which partitions with: every backup of every partition
        this member serves, grouped per backup (and rank: the maps it holds)."""
        by_backup: dict[tuple[str, int], list[int]] = {}
        for p in range(self.partitions):
            if serves(p):
                for rank, b in enumerate(replicas(p)):
                    if rank and b != self.me:
                        by_backup.setdefault((b, rank), []).append(p)
        return [Peer(m, rank, parts) for (m, rank), parts in by_backup.items()]

    def batches(self, partitions: Sequence[int]) -> Iterable[Sequence[int]]:
        for i in range(0, len(partitions), COMPARE_BATCH):
            yield partitions[i : i + COMPARE_BATCH]

    # ---- the comparing side ----------------------------------------------------------------
    def digests(
        self, partitions: Iterable[int], cut: int, rank: int, only: Callable[[int], bool] | None
    ) -> dict[int, Digest]:
        """This copy's digests of these partitions, for a replica of `rank`; `only`: the
        partitions still to compare (a primary's round skips one handed off meanwhile,
        or it would be filled again from the backup)."""
        holds = self.map_backups.held(rank)
        return {p: self.copies.digest(p, cut, holds) for p in partitions if only is None or only(p)}

    def to_repair(
        self, mine: dict[int, Digest], answer: Compared, keep_theirs: bool
    ) -> list[tuple[int, list[int]]]:
        """From a comparison's answer: (partition, buckets) to repair, a few buckets a
        call. Raises Refused when handing back and the replica refused."""
        if answer.refused and not keep_theirs:
            raise Refused(f"no role for partitions {list(answer.refused)}")
        self.compared += len(mine) - len(answer.refused)
        out = []
        for theirs in answer.differing:
            d = mine.get(theirs.partition)
            if d is None:
                continue
            self.differing += 1
            buckets = differing(d.buckets, unpack_buckets(theirs.buckets))
            for j in range(0, len(buckets), REPAIR_BUCKETS):
                out.append((theirs.partition, buckets[j : j + REPAIR_BUCKETS]))
        return out

    def repair_records(self, p: int, buckets: Sequence[int], cut: int, rank: int) -> list[Record]:
        """This copy's records of these buckets, to send."""
        return self.copies.records(p, buckets, cut, self.map_backups.held(rank))

    def repaired_by(
        self,
        p: int,
        sent: int,
        answer: Repaired,
        keep_theirs: bool,
        serves: Callable[[int], bool] | None,
    ) -> int:
        """The replica's answer to a repair: merge its records (a primary's round, into a
        partition it still serves); returns the records that won on either side."""
        if answer.refused:
            if not keep_theirs:
                raise Refused(f"no role for partition {p}")
            return 0
        self.sent += sent
        won = answer.applied
        if keep_theirs and answer.records and (serves is None or serves(p)):
            here = self.copies.merge(p, answer.records)
            self.repaired += here
            won += here
        return won

    # ---- the replica's side ----------------------------------------------------------------
    def on_compare(self, cut: int, rank: int, roots: Iterable[tuple[int, int]]) -> Compared:
        refused: list[int] = []
        out: list[Differing] = []
        holds = self.map_backups.held(rank)
        for p, root in roots:
            if not 0 <= p < self.partitions:
                raise ValueError(f"partition {p} is out of range")
            if not self.has_role(p):
                refused.append(p)  # not ours (any more): nothing to compare
                continue
            d = self.copies.digest(p, cut, holds)
            if d.root != root:
                out.append(Differing(p, d.pack()))
        return Compared(refused, out)

    def on_repair(
        self, p: int, buckets: Sequence[int], cut: int, rank: int, theirs: Sequence[Record]
    ) -> Repaired:
        """Merge the primary's records, answer this copy's of the same buckets as they
        were before (less what the primary sent: it has those)."""
        if not 0 <= p < self.partitions:
            raise ValueError(f"partition {p} is out of range")
        if any(not 0 <= b < BUCKETS for b in buckets):
            raise ValueError(f"a bucket number is not below {BUCKETS}")
        for r in theirs:
            if not (isinstance(r, tuple) and len(r) == 8):
                raise ValueError(f"partition {p}: a repair record is not an 8-field array")
        if not self.has_role(p):
            return Repaired(True, [], 0)  # not ours (any more): keep nothing
        mine = self.copies.records(p, buckets, cut, self.map_backups.held(rank))
        same = {(r[1], r[2], r[4], r[5]) for r in theirs}
        mine = [r for r in mine if (r[1], r[2], r[4], r[5]) not in same]
        applied = self.copies.merge(p, theirs)
        self.repaired += applied
        self.sent += len(mine)
        return Repaired(False, mine, applied)
