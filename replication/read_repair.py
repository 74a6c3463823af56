"""Read repair as a core with no IO: which keys read from a backup to check, and how.

Replicas can differ for longer than the replication lag: after a healed split,
a member's return, a primary that died with changes in its send queue.
Anti-entropy (replication/antientropy.py) finds every difference within its
interval; read repair fixes the keys that are read before it gets there, as
Cassandra and Riak do:

1. a share (`chance`) of the reads a backup answers from its copy queues the
   key (`served`); the queue is bounded (`MAX_QUEUED` keys; more are not
   checked), so a burst of reads cannot grow it without limit;
2. the runtime takes the queue a moment later (`take`) and sends each key's
   primary a probe per key (`probes`): the version of the newest thing the
   copy knows of the key (live entry, tombstone, or the map's clear marker;
   (0, 0) for nothing), for copies still readable (caught up, holding the map);
3. the primary (`on_probes`) answers its own record of each key whose version
   is newer, leaving out versions younger than the `cut` (they may still be on
   their way down the stream, which will bring them), and names the keys whose
   version at the backup is newer than its own;
4. the backup (`on_answer`) merges the primary's records (only maps its copy
   holds, only while it still has a role for the partition) and returns its
   records of the keys the primary named, which the primary merges: a record it
   takes is a change of its partition like any other, and goes down the stream
   to every other backup.

The read that queued a key was answered already (with the copy's value):
repair is in the background, so a read costs what it did.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from replication import lww

MAX_QUEUED = 65_536  # keys waiting to be checked; more are not checked (see the docstring)
MAX_PROBES = 4096  # keys per ReadRepair call

Record = tuple[Any, ...]
"""(op, map, key, value, ts, member, expire_at, max_idle), the store's change shape."""


class Probe(NamedTuple):
    """What a copy knows of one key: its newest version, (0, 0) for nothing."""

    map_name: str
    key: bytes
    ts: int
    member: int


class Answer(NamedTuple):
    """A primary's answer for one partition: its newer records, and the keys it wants."""

    newer: list[Record]
    wanted: list[Probe]


class Checker:
    """One member's read repair, as backup (it checks) and as primary (it answers)."""

    def __init__(
        self,
        me: str,
        chance: float,
        key_record: Callable[[int, str, bytes], Record | None],
        rng: random.Random | None = None,
    ) -> None:
        self.me = me
        self.chance = chance
        self.key_record = key_record  # the copy's newest record of a key, or None
        self.rng = rng or random.Random()
        self.queue: dict[int, set[tuple[str, bytes]]] = {}
        self.queued = 0
        self.served_count = 0  # reads answered from a backup copy
        self.checked = 0  # keys checked against their primary
        self.fixed = 0  # records merged, here or at the primary, because copies differed

    # ---- the backup's side ----------------------------------------------------------------
    def served(self, p: int, map_name: str, key: bytes) -> bool:
        """A read was answered from this member's copy; True if the key was queued."""
        self.served_count += 1
        chance = self.chance
        if not chance or (chance < 1.0 and self.rng.random() >= chance):
            return False
        if self.queued >= MAX_QUEUED:
            return False
        keys = self.queue.get(p)
        if keys is None:
            keys = self.queue[p] = set()
        item = (map_name, key)
        if item in keys:
            return False
        keys.add(item)
        self.queued += 1
        return True

    def take(self) -> dict[int, set[tuple[str, bytes]]]:
        queue, self.queue = self.queue, {}
        self.queued = 0
        return queue

    def by_primary(
        self, queue: Mapping[int, Iterable[Any]], owner: Callable[[int], str | None]
    ) -> dict[str, list[int]]:
        """The queued partitions grouped by their primary (none of this member's own)."""
        out: dict[str, list[int]] = {}
        for p in sorted(queue):
            o = owner(p)
            if o is not None and o != self.me:
                out.setdefault(o, []).append(p)
        return out

    def probes(
        self,
        items: Iterable[tuple[int, str, bytes]],
        readable: Callable[[int, str], bool],
    ) -> dict[int, list[Probe]]:
        """Probes per partition for these keys, of copies still readable here."""
        out: dict[int, list[Probe]] = {}
        for p, name, key in items:
            if not readable(p, name):
                continue  # no longer a caught-up copy here: nothing to compare
            rec = self.key_record(p, name, key)
            ts, member = (rec[4], rec[5]) if rec is not None else (0, 0)
            out.setdefault(p, []).append(Probe(name, key, ts, member))
        return out

    def on_answer(
        self,
        p: int,
        theirs: Sequence[Record],
        wanted: Sequence[Probe],
        holds: Callable[[str], bool],
        merge: Callable[[int, list[Record]], int],
    ) -> tuple[int, list[Record]]:
        """Merge the primary's records of maps this copy holds; returns (how many won,
        this copy's records of the keys the primary wants)."""
        fixed = 0
        if theirs:
            kept = [r for r in theirs if isinstance(r, tuple) and len(r) == 8 and holds(r[1])]
            fixed = merge(p, kept)
        mine = [r for pr in wanted if (r := self.key_record(p, pr.map_name, pr.key))]
        return fixed, mine

    # ---- the primary's side ---------------------------------------------------------------
    def on_probes(self, p: int, probes: Iterable[Probe], cut: int) -> Answer:
        """Compare a backup's probes with this copy."""
        newer: list[Record] = []
        wanted: list[Probe] = []
        for pr in probes:
            mine = self.key_record(p, pr.map_name, pr.key)
            version = (mine[4], mine[5]) if mine is not None else lww.ZERO
            theirs = (pr.ts, pr.member)
            if lww.newer(version, theirs):
                if mine is not None and version[0] <= cut:  # younger: still on the stream
                    newer.append(mine)
            elif lww.newer(theirs, version):
                wanted.append(Probe(pr.map_name, pr.key, 0, 0))
        return Answer(newer, wanted)
