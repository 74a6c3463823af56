"""The partition stream: how a copy of a partition is made and kept current.

DESIGN.md asks for one mechanism for three jobs: migrating a partition to a
new owner, filling a new backup, and catching up a backup that fell behind.
All three are the same conversation between a *follower* and the partition's
*primary*:

1. The follower subscribes, saying what it already has: `(term, seq)`.
2. If the primary still holds every change after that point (`PrimaryLog`
   keeps the most recent ones), it sends just those. Otherwise it sends a
   snapshot: SNAPSHOT_BEGIN (the follower drops its copy), the entries as of
   sequence number `seq`, SNAPSHOT_END.
3. Then it streams every change as it is applied, in sequence order.
4. A migration ends with HANDOFF: the primary stops serving the partition
   and the follower becomes primary, continuing the same `(term, seq)`.

Sequence numbers count changes of one partition; `term` names the lineage
they count in. A hand-off keeps the term (the new primary has exactly the
old one's state), while a promotion after a crash starts a new term: the
promoted backup may lack the dead primary's last changes, so "seq 812" of the
old term and of the new one are different states, and a follower that had
the old term must take a snapshot.

This module is pure (no IO, no clock): `grid/member/replicas/replica.py` runs it on gRPC
streams, and tests drive it directly.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

STAMP_S = 0.01
"""How finely a primary's log remembers when its changes were appended (PrimaryLog): the
lag report's ages are this much too old at worst, and a partition written all the time
adds at most 100 stamps a second (at 1 ms, a busy member stamped nearly every write)."""
DEFAULT_KEEP = 256
"""Changes a primary keeps per partition for catch-up without a snapshot. They hold
references to values the store may already have replaced, so this is memory outside the
store's accounting: 271 x 256 changes of 100 B values is about 17 MB. It covers a
hand-off (the old primary follows the new one from the hand-off point) and a stream
that reconnects after a short blip; a longer gap costs a snapshot of one partition
(1/271 of the data), which is cheap."""


def new_term(rng: random.Random | None = None) -> int:
    """A fresh lineage id (nonzero, fits int64 and protobuf uint64)."""
    return (rng or random).getrandbits(62) + 1


class PrimaryLog:
    """Primary side of one partition: the next sequence number and the recent changes.

    `recent` holds the last `keep` records alone: their seqs are consecutive and end at
    `seq`, so a record's seq is its position, and a write appends one object, not a
    (seq, record, time) tuple (this is every client write's path: the tuple's
    allocation and, once pushed out, its deallocation were 10% of a member's CPU under a
    bulk load). When changes were appended is kept coarser, in `stamps`: (first seq,
    time) whenever the clock has moved STAMP_S since the last stamp, which is all the
    lag report needs ("how old is the oldest change a backup lacks").

    `before` and `prev` serve client watches only (replication/watch.py): the tail of
    changes this member applied as a follower before its log began, and the (term, seq)
    of that lineage where it began. A watcher positioned in the lineage before a
    promotion or a hand-off resumes from them instead of losing what it had not yet
    been sent. `since` never looks at them: a follower's catch-up stays in one term."""

    __slots__ = ("_last_stamp", "before", "prev", "recent", "seq", "stamps", "term")

    def __init__(self, term: int, seq: int = 0, keep: int = DEFAULT_KEEP) -> None:
        self.term = term
        self.seq = seq
        self.recent: deque[Any] = deque(maxlen=keep)
        self.stamps: deque[tuple[int, float]] = deque(maxlen=keep)
        self._last_stamp = -STAMP_S
        self.before: list[tuple[int, Any]] = []
        self.prev: tuple[int, int] = (0, 0)

    def append(self, record: Any, at: float = 0.0) -> int:
        """Give a change the next seq; `at` (any clock, seconds) is kept for lag."""
        self.seq += 1
        self.recent.append(record)
        if at - self._last_stamp >= STAMP_S:
            self._last_stamp = at
            self.stamps.append((self.seq, at))
        return self.seq

    @property
    def first(self) -> int:
        """The seq of the oldest change kept (seq + 1 when none is)."""
        return self.seq - len(self.recent) + 1

    def applied_at(self, seq: int) -> float | None:
        """When change `seq` was appended (within STAMP_S), if it is still kept."""
        if not self.first <= seq <= self.seq:
            return None
        for first, at in reversed(self.stamps):
            if first <= seq:
                return at
        return None  # older than the oldest stamp kept

    def kept(self) -> list[tuple[int, Any]]:
        """The changes kept, as (seq, record), oldest first."""
        return list(zip(range(self.first, self.seq + 1), self.recent, strict=True))

    def since(self, term: int, seq: int) -> list[tuple[int, Any]] | None:
        """The changes after (term, seq), or None when a snapshot is needed."""
        if term != self.term or seq > self.seq:
            return None
        if seq == self.seq:
            return []
        first = self.first
        if first > seq + 1:
            return None  # the gap reaches back further than what is kept
        tail = list(self.recent)[seq + 1 - first :]
        return list(zip(range(seq + 1, self.seq + 1), tail, strict=True))

    def lineage(self, term: int, seq: int) -> tuple[int, list[tuple[int, Any]], bool] | None:
        """For a client watch at (term, seq): (fork, the changes after fork, forked), or
        None when they are not all kept here. `fork` is where the watcher's history and
        this log's agree: its seq, or where this lineage began if the watcher saw
        changes of the old one past it (`forked`: a failover lost those changes)."""
        if term == self.term and seq <= self.seq:
            fork, forked = seq, False
        elif self.prev[0] and term == self.prev[0]:
            fork, forked = min(seq, self.prev[1]), seq > self.prev[1]
        else:
            return None
        if fork == self.seq:
            return fork, [], forked
        kept = self.kept()
        before = self.before
        if before and (not kept or kept[0][0] == before[-1][0] + 1):
            kept = [*before, *kept]  # contiguous: the copy's tail, then this log's
        if not kept or kept[0][0] > fork + 1:
            return None
        return fork, [(s, rec) for s, rec in kept if s > fork], forked


class Phase(Enum):
    IDLE = "idle"  # subscribed, nothing received yet
    SNAPSHOT = "snapshot"  # receiving a snapshot
    LIVE = "live"  # caught up; applying changes as they come


class Verdict(Enum):
    APPLY = "apply"  # apply the chunk's records
    RESYNC = "resync"  # a change is missing: subscribe again (a snapshot will follow)
    IGNORE = "ignore"  # stale or duplicate


@dataclass
class FollowerLog:
    """Follower side of one partition: what it has applied, and whether a chunk fits."""

    term: int = 0
    seq: int = 0
    phase: Phase = Phase.IDLE
    recent: deque[tuple[int, Any]] | None = field(default=None, compare=False, repr=False)
    """The last changes applied live, as (first seq, records) per chunk: a promoted or
    handed-over copy's log begins with them, so client watches resume across the change
    of primary (PrimaryLog.lineage). Cleared by a snapshot (what came before is not
    contiguous). A chunk a tuple: this is the backups' hot path (about 2 ns a record)."""
    kept: int = field(default=0, compare=False, repr=False)

    def keep(self, first_seq: int, records: Any) -> None:
        """Remember changes first_seq.. just applied (about DEFAULT_KEEP of them)."""
        recent = self.recent
        if recent is None:
            recent = self.recent = deque()
        recent.append((first_seq, records))
        self.kept += len(records)
        while self.kept - len(recent[0][1]) >= DEFAULT_KEEP:
            self.kept -= len(recent.popleft()[1])

    def tail(self) -> list[tuple[int, Any]]:
        """The changes kept, as (seq, record), oldest first."""
        out: list[tuple[int, Any]] = []
        for first, records in self.recent or ():
            out.extend(zip(range(first, first + len(records)), records, strict=True))
        return out

    def snapshot_begin(self) -> Verdict:
        self.phase = Phase.SNAPSHOT
        self.recent, self.kept = None, 0
        return Verdict.APPLY

    def snapshot_records(self) -> Verdict:
        return Verdict.APPLY if self.phase is Phase.SNAPSHOT else Verdict.RESYNC

    def resubscribe(self) -> None:
        """A new subscription (new stream or new primary): wait for its first answer."""
        self.phase = Phase.IDLE

    def snapshot_end(self, term: int, seq: int) -> Verdict:
        """End of a snapshot, or (with no snapshot before it) the primary's word that it
        has every change after our (term, seq) and will stream them from there."""
        if self.phase is Phase.SNAPSHOT:
            self.term, self.seq, self.phase = term, seq, Phase.LIVE
            return Verdict.APPLY
        if self.phase is Phase.IDLE and term == self.term and seq == self.seq:
            self.phase = Phase.LIVE
            return Verdict.APPLY
        return Verdict.RESYNC

    def mutations(self, first_seq: int, count: int) -> tuple[Verdict, int]:
        """For changes first_seq .. first_seq+count-1: the verdict, and how many of them
        to skip (already applied)."""
        if self.phase is not Phase.LIVE:
            return Verdict.RESYNC, 0
        last = first_seq + count - 1
        if last <= self.seq:
            return Verdict.IGNORE, count
        if first_seq > self.seq + 1:
            return Verdict.RESYNC, 0  # a gap: something was lost on the way
        skip = self.seq + 1 - first_seq
        self.seq = last
        return Verdict.APPLY, skip
