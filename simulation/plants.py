"""Planted bugs: test-only switches that put a known bug back into the production code.

A simulator that never fails proves little. Each plant here swaps one method of
the production cores (or the store, or the journal) for a copy with a bug of a
kind this project has had or could have, for the length of a `with planted(...)`
block, and restores it after. `python -m simulation.run --plant NAME --seeds 1-20`
must then fail, naming the violated invariant and the command that replays it;
without a plant every soak seed passes. The production code carries no switch:
a plant is a patch applied from here, so what runs unplanted is exactly what
members run.

    python -m simulation.run --plant list
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from grid.store.durability import Durability
from grid.store.recordmap import ZERO
from grid.store.store import PUT, Store
from partitioning.ownership import Ownership
from persistence import Op
from replication import follower as follower_core
from replication import primary as primary_core
from replication.stream import PrimaryLog

BARE_CLEAR = int(Op.CLEAR)  # the journal's record of a dropped copy: no marker
MARKED_CLEAR = int(Op.CLEARED)  # a client's clear: the entries go, its marker stays


class Plant(NamedTuple):
    name: str
    description: str
    install: Callable[[], Callable[[], None]]  # patches; returns what undoes the patch
    members: int = 0
    """The cluster size that shows the bug in a short run (0: any): a member alone on
    its side of a split fails the others over within seconds among 3 members, and
    rarely before the heal among 12 or 50."""


def _patch(owner: Any, attr: str, value: Any) -> Callable[[], None]:
    old = owner.__dict__[attr]
    setattr(owner, attr, value)
    return lambda: setattr(owner, attr, old)


def _skip_tenth() -> Callable[[], None]:
    """The follower counts every change but leaves every tenth one out of its store."""
    real = follower_core.Follower.receive
    seen = [0]

    def receive(self: Any, source: str, chunks: Any, now: int) -> Any:
        apply = self.apply

        def lossy(p: int, *record: Any) -> Any:
            seen[0] += 1
            if seen[0] % 10 == 0:
                return False
            return apply(p, *record)

        self.apply = lossy
        try:
            return real(self, source, chunks, now)
        finally:
            self.apply = apply

    return _patch(follower_core.Follower, "receive", receive)


def _since_ignores_term() -> Callable[[], None]:
    """The primary answers a catch-up without checking the follower's lineage: a backup
    that followed the dead primary is told it is current at its seq, though the promoted
    primary's state at that seq is another one."""
    real = PrimaryLog.since

    def since(self: PrimaryLog, term: int, seq: int) -> list[tuple[int, Any]] | None:
        return real(self, self.term, seq)

    return _patch(PrimaryLog, "since", since)


def _old_term() -> Callable[[], None]:
    """A promoted primary continues the lineage of the copy it had instead of starting a
    new term: its 'seq 812' and the dead primary's are different states, and a follower
    of the old lineage catches up from the wrong point."""
    real = primary_core.Primary.start_log

    def start_log(self: Any, p: int, term: int | None = None, seq: int | None = None) -> Any:
        pos = self.positions.get(p)
        if term is None and pos is not None and pos.term:
            term, seq = pos.term, pos.seq
        return real(self, p, term, seq)

    return _patch(primary_core.Primary, "start_log", start_log)


def _replace_on_snapshot() -> Callable[[], None]:
    """A follower drops its copy when a snapshot begins (what grid/member/replicas/follower.py did
    before snapshots were merged): writes its copy took as primary on its side of a split are
    gone before anti-entropy can carry them over."""
    real = follower_core.Follower.receive

    def receive(self: Any, source: str, chunks: Any, now: int) -> Any:
        member = self.apply.__self__  # the simulated member whose store this core applies to
        followed = self.upstreams.get(source, ())
        for c in chunks:
            if c.kind == primary_core.Kind.SNAPSHOT_BEGIN and c.partition in followed:
                member.store.drop_partition(c.partition)
        return real(self, source, chunks, now)

    return _patch(follower_core.Follower, "receive", receive)


def _lww_reversed() -> Callable[[], None]:
    """The store takes a replicated put whose version is older than the entry it holds
    (a comparison the wrong way round): a late or repeated change undoes a newer one."""
    real = Store.apply

    def apply(self: Store, partition: int, op: int, map_name: str, key: bytes, *rest: Any) -> Any:
        if op == PUT:
            rmap = self.maps.get(map_name)
            e = rmap.parts[partition].get(key) if rmap is not None else None
            if e is not None and (e.ts, e.member) > (rest[1], rest[2]):
                e.ts, e.member = 0, 0  # the older change now wins
        return real(self, partition, op, map_name, key, *rest)

    return _patch(Store, "apply", apply)


def _clear_comes_back() -> Callable[[], None]:
    """The store takes a replicated put older than the partition's clear marker (the
    marker check left out): a copy that missed a clear (a backup behind, a hand-back, an
    anti-entropy repair) brings the cleared keys back."""
    real = Store.apply

    def apply(self: Store, partition: int, op: int, map_name: str, key: bytes, *rest: Any) -> Any:
        rmap = self.maps.get(map_name)
        if op != PUT or rmap is None or rmap.cleared[partition] == ZERO:
            return real(self, partition, op, map_name, key, *rest)
        marker, rmap.cleared[partition] = rmap.cleared[partition], ZERO
        try:
            return real(self, partition, op, map_name, key, *rest)
        finally:
            rmap.cleared[partition] = marker

    return _patch(Store, "apply", apply)


def _restart_no_streams() -> Callable[[], None]:
    """Last round's bug: a member restarted quicker than failure detection comes back with
    its saved table, which equals the cluster's, so nobody publishes it again; the
    decision to start the saved table's streams after asking the cluster (grid/
    coordinator.py's first_table, now `Ownership.start_saved`) is missing. The member
    serves its primaries with no log (their changes reach no backup) and follows none of
    the copies it backs up, until the next table change."""

    def start_saved(self: Ownership) -> bool:
        self.saved = 0
        return False

    return _patch(Ownership, "start_saved", start_saved)


def _drop_leaves_marker() -> Callable[[], None]:
    """Last round's bug: a copy dropped because its partition moved away is journaled as
    a client's clear (with its marker), so a member that restarts holds a clear newer
    than the primary's entries and hands it back: the primary, and every backup after
    it, lose the map's entries in that partition."""
    real = Durability.flush

    def flush(self: Durability) -> int:
        for changes in self._pending.values():
            for i, c in enumerate(changes):
                if c[1] == BARE_CLEAR:
                    changes[i] = (c[0], MARKED_CLEAR, *c[2:])
        return real(self)

    return _patch(Durability, "flush", flush)


def _sync_ack_early() -> Callable[[], None]:
    """The primary counts a sync write as confirmed before its backups acknowledged it
    (`Primary.unconfirmed` finds nothing missing): the write is answered OK while only
    the primary holds it, and a crash that loses its memory loses it."""

    def unconfirmed(self: Any, touched: Any, n: int, replicas: Any, *rest: Any) -> Any:
        return []

    return _patch(primary_core.Primary, "unconfirmed", unconfirmed)


def _alone_confirms() -> Callable[[], None]:
    """A sync write's need goes by the primary's table alone, not by its membership's
    sight: a member alone on its side of a split, whose table names only itself after
    failing the others over, confirms sync writes that no other member holds."""
    real = primary_core.Primary.needs

    def needs(self: Any, touched: Any, n: int, replicas: Any, ranks: int = 1 << 30,
              members: int = 0, live: int = 0, known: int = 0) -> Any:  # fmt: skip
        return real(self, touched, n, replicas, ranks, members)

    return _patch(primary_core.Primary, "needs", needs)


PLANTS: dict[str, Plant] = {
    p.name: p
    for p in (
        Plant("skip-tenth", "the follower counts every change but skips every tenth", _skip_tenth),
        Plant(
            "since-ignores-term",
            "the primary answers a catch-up from another lineage as if it were its own",
            _since_ignores_term,
        ),
        Plant(
            "old-term", "a promoted primary keeps the old lineage instead of a new term", _old_term
        ),
        Plant(
            "replace-on-snapshot",
            "a follower drops its copy at SNAPSHOT_BEGIN instead of merging the snapshot",
            _replace_on_snapshot,
        ),
        Plant(
            "lww-reversed",
            "the store lets an older replicated put replace a newer one",
            _lww_reversed,
        ),
        Plant(
            "clear-comes-back",
            "the store lets a replicated put older than the partition's clear marker in",
            _clear_comes_back,
        ),
        Plant(
            "drop-leaves-marker",
            "a dropped copy is journaled as a clear with its marker (last round's bug)",
            _drop_leaves_marker,
        ),
        Plant(
            "restart-no-streams",
            "a member restarted quicker than failure detection never starts its saved "
            "table's streams",
            _restart_no_streams,
        ),
        Plant(
            "sync-ack-early",
            "a primary answers a sync write before its backups acknowledged it",
            _sync_ack_early,
        ),
        Plant(
            "alone-confirms",
            "a member alone on its side of a split confirms sync writes no other holds "
            "(--members 3)",
            _alone_confirms,
            members=3,
        ),
    )
}


@contextlib.contextmanager
def planted(name: str | None) -> Iterator[None]:
    """Run the block with the named bug planted (None: nothing planted)."""
    if not name:
        yield
        return
    undo = PLANTS[name].install()
    try:
        yield
    finally:
        undo()


def listing() -> str:
    """One plant a line: its name, a space, what it breaks."""
    return "\n".join(f"{p.name} {p.description}" for p in PLANTS.values())
