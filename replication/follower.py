"""The follower side of partition streams, as a state machine with no IO.

A member follows a partition when the table names it a backup, or while the
coordinator has it fill the partition before a hand-off. Per primary there
is one upstream (a stream in the runtime) carrying every partition followed
there; subscribing to one more is a message on it, not a new stream.

Inputs, each called under the caller's store lock:

- `reconcile(table, now)`: what to follow follows the table and the fills.
  It returns the subscriptions to open and close per primary, the upstreams
  with nothing left to follow, and the maps to drop where this member's
  backup rank rose (per-map backups). A rank that fell needs maps it never
  had: its position is forgotten, so the next subscription takes a snapshot
  (merged into the copy).
- `subscriptions(ps)`: what to tell a primary for each partition: the
  `(term, seq)` this member has, and whether it wants every map (a fill).
- `receive(source, chunks, now)`: a message from a primary. Each chunk gets a
  verdict from its partition's `FollowerLog` (replication/stream.py); the
  records of applicable chunks go to the store's `apply` (last writer wins,
  so a duplicate or late change is harmless). The result says what to
  acknowledge, which partitions were handed over (the runtime routes them
  here in the same lock hold), which must be subscribed again from nothing
  (a gap: a snapshot follows), which fills are done, and whether a
  subscription was refused (look again shortly: the primary may not have the
  table that makes it primary yet).
- `stream_lost(source)`: a half-received snapshot is worth nothing, and a
  fill that was not live yet has failed.
- `fill(ps, source, now)`: follow these partitions from `source` to take them
  over; those already followed there and live are ready at once.

A snapshot is merged into the copy, never a replacement: what the copy has
that the primary lacks (writes on the other side of a healed split) stays
for anti-entropy to merge back. Copies with no role (`unheld`) are dropped by
the runtime, one at a time, after handing back what the primary lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, Protocol

from partitioning import PartitionTable
from replication.map_backups import Holds, MapBackups
from replication.primary import Kind, Primary
from replication.stream import FollowerLog, Phase, Verdict

FILL_LINGER_S = 60.0  # a filled copy the table never adopted is dropped after this
_MUTATIONS, _SNAPSHOT = Kind.MUTATIONS, Kind.SNAPSHOT
_RESYNC = Verdict.RESYNC


class ChunkIn(Protocol):
    """A chunk as received (proto/grid.proto's Chunk has these fields)."""

    partition: int
    kind: int
    seq: int
    count: int
    term: int
    epoch: int
    error: str
    records: Any


class Subscription(NamedTuple):
    partition: int
    have_term: int
    have_seq: int
    all_maps: bool


class Plan(NamedTuple):
    """What `reconcile` asks the runtime to do."""

    subscribe: dict[str, list[int]]  # primary -> partitions to subscribe there
    unsubscribe: dict[str, list[int]]  # primary -> partitions to stop following there
    idle: list[str]  # primaries with nothing left to follow: close their upstreams
    drop_maps: list[tuple[int, int]]  # (partition, new rank): drop the maps it lost


class Received(NamedTuple):
    """What `receive` asks the runtime to do."""

    acks: dict[int, int]  # partition -> seq applied
    taken: list[tuple[int, int]]  # (partition, epoch) handed over to this member
    resync: list[int]  # partitions to subscribe again from nothing (a snapshot)
    filled: list[tuple[int, bool]]  # fills that ended: (partition, live?)
    refused: bool  # some subscription was refused: reconcile again shortly


class Follower:
    """Every partition this member copies from another member."""

    def __init__(
        self,
        me: str,
        primary: Primary,
        apply: Callable[..., Any],
        decode: Callable[[ChunkIn], Sequence[Any]],
        owner: Callable[[int], str | None],
        accept_takeover: Callable[[int, int, str], bool] = lambda p, epoch, source: True,
    ) -> None:
        self.me = me
        self.accept_takeover = accept_takeover
        """The runtime's routing takes p over at a HANDOFF of this table epoch from this
        source (and starts serving it), or refuses: a table in use already settled the
        hand-off without this member, or names another primary than the source
        (partitioning.Ownership.take_over)."""
        self.primary = primary
        self.apply = apply  # the store's apply(p, op, map, key, value, ts, member, ..., now)
        self.decode = decode  # a chunk's records, bounded (raises ValueError if malformed)
        self.owner = owner  # who serves p as far as this member knows (hand-offs included)
        self.map_backups: MapBackups = primary.map_backups
        self.state: dict[int, FollowerLog] = primary.positions
        self.source_of: dict[int, str] = {}
        self.upstreams: dict[str, set[int]] = {}  # primary -> partitions followed there
        self.fills: dict[int, tuple[str, float]] = {}  # partition -> (source, since)
        self.refused_fills: set[int] = set()  # fills refused since they were ordered
        self.ranks: dict[int, int] = {}  # partition -> this member's backup rank
        self.resumed = 0  # subscriptions answered from the primary's log, not a snapshot
        self.fills_done = 0

    # ---- what to follow ------------------------------------------------------------------------
    def wanted(self, table: PartitionTable | None, now: float) -> dict[int, str]:
        """Partition -> the primary to follow it from: backups by the table, and fills."""
        want: dict[int, str] = {}
        me = self.me
        serves = self.primary.serves
        if table is not None:
            for p in table.partitions_of(me).backup:
                owner = self.owner(p)
                if owner and owner != me:
                    want[p] = owner
        for p, (source, since) in list(self.fills.items()):
            if p in want or serves(p):
                del self.fills[p]  # the table adopted the copy (or we own it now)
                self.refused_fills.discard(p)
            elif now - since > FILL_LINGER_S:
                del self.fills[p]
                self.refused_fills.discard(p)
            else:
                want[p] = source
        return want

    def reconcile(self, table: PartitionTable | None, now: float) -> Plan:
        """Make subscriptions match the table and the fills."""
        want = self.wanted(table, now)
        drop_maps = [] if self.map_backups.uniform else self._follow_ranks(table, want)
        subscribe: dict[str, list[int]] = {}
        unsubscribe: dict[str, list[int]] = {}
        for p, src in list(self.source_of.items()):
            if want.get(p) != src:
                unsubscribe.setdefault(src, []).append(p)
                del self.source_of[p]
                self.upstreams.get(src, set()).discard(p)
        for p, src in want.items():
            if self.source_of.get(p) != src:
                subscribe.setdefault(src, []).append(p)
                self.source_of[p] = src
                self.upstreams.setdefault(src, set()).add(p)
        idle = [s for s, parts in self.upstreams.items() if not parts and s not in subscribe]
        for s in idle:
            del self.upstreams[s]
        return Plan(subscribe, unsubscribe, idle, drop_maps)

    def unreachable(self, source: str, partitions: Iterable[int]) -> None:
        """The runtime has no address for `source`: these are not followed (a later
        reconcile tries again)."""
        for p in partitions:
            if self.source_of.get(p) == source:
                del self.source_of[p]
            self.upstreams.get(source, set()).discard(p)

    def subscriptions(self, partitions: Iterable[int]) -> list[Subscription]:
        """What to tell the primary of each partition (a new subscription: its answer
        decides the phase)."""
        out = []
        fills = self.fills
        for p in partitions:
            st = self.state.get(p)
            if st is None:
                st = self.state[p] = FollowerLog()
            st.resubscribe()
            out.append(Subscription(p, st.term, st.seq, p in fills))
        return out

    def _follow_ranks(
        self, table: PartitionTable | None, want: dict[int, str]
    ) -> list[tuple[int, int]]:
        """Per-map backups: a backup at rank r holds the maps with r or more backups. When
        its rank drops (a backup before it left) it needs maps it never had: a snapshot
        (merged into the copy). When its rank rises it drops the maps it no longer holds."""
        if table is None:
            return []
        ranks: dict[int, int] = {}
        drops: list[tuple[int, int]] = []
        for p in want:
            replicas = table.replicas(p)
            if self.me not in replicas:
                continue  # a fill: every map
            rank = replicas.index(self.me)
            ranks[p] = rank
            old = self.ranks.get(p)
            if old is not None and rank < old and self.source_of.get(p) == want[p]:
                self._forget(p)
                del self.source_of[p]  # subscribed again: a snapshot
            if old is None or rank > old:
                drops.append((p, rank))
        self.ranks = ranks
        return drops

    def _forget(self, p: int) -> None:
        """Ask for a snapshot at the next subscription of p."""
        st = self.state.get(p)
        if st is not None:
            st.term, st.seq = 0, 0

    def held(self, p: int) -> Holds:
        """Which maps this member keeps of p as it follows it (None: all): a backup at rank
        r keeps the maps with r or more backups, whatever a primary on an older table
        still sends; a fill keeps everything."""
        if self.map_backups.uniform or p in self.fills:
            return None
        return self.map_backups.held(self.ranks.get(p, 0))

    def holds(self, p: int, map_name: str) -> bool:
        held = self.held(p)
        return held is None or held(map_name)

    def readable(self, p: int, map_name: str, table: PartitionTable | None) -> bool:
        """Whether a read of this map in p may be answered from this member's copy
        (read_from_backup): it is a backup of p in the table, follows p's primary and has
        caught up with it (not mid-snapshot), and holds the map."""
        if p not in self.source_of or p in self.fills or table is None:
            return False
        st = self.state.get(p)
        if st is None or st.phase is not Phase.LIVE:
            return False
        replicas = table.replicas(p)
        if replicas[0] == self.me or self.me not in replicas:
            return False
        return self.holds(p, map_name)

    def unheld(self, p: int, table: PartitionTable | None) -> bool:
        """Whether this member has no role for p: not its primary, not a backup in the
        table, not following or filling it."""
        return not (
            table is None
            or p in self.source_of
            or p in self.fills
            or self.primary.serves(p)
            or p in self.primary.logs
            or self.me in table.replicas(p)
        )

    # ---- fills ---------------------------------------------------------------------------------
    def fill(self, partitions: Iterable[int], source: str, now: float) -> list[int]:
        """Follow these partitions from `source` to take them over; returns those ready
        already (followed there and live). A backup that holds only some maps subscribes
        again for every map (a snapshot merged into its copy)."""
        ready = []
        for p in partitions:
            self.fills[p] = (source, now)
            self.refused_fills.discard(p)
            st = self.state.get(p)
            if self.source_of.get(p) == source and st is not None and st.phase is Phase.LIVE:
                if self.map_backups.uniform or not self.ranks.get(p):
                    ready.append(p)
                else:
                    self._forget(p)
                    del self.source_of[p]
        return ready

    def in_flight(self) -> int:
        """Fills not live yet."""
        return sum(
            1
            for p in self.fills
            if p not in self.refused_fills
            and ((st := self.state.get(p)) is None or st.phase is not Phase.LIVE)
        )

    # ---- receiving -----------------------------------------------------------------------------
    def receive(self, source: str, chunks: Iterable[ChunkIn], now: int) -> Received:
        """Apply one message from `source` (see the module's docstring)."""
        acks: dict[int, int] = {}
        taken: list[tuple[int, int]] = []
        resync: set[int] = set()  # (a partition can fail twice in one message)
        filled: list[tuple[int, bool]] = []
        refused = False
        state = self.state
        subscribed = self.upstreams.get(source, set())
        apply = self.apply
        decode = self.decode
        uniform = self.map_backups.uniform
        for chunk in chunks:
            p = chunk.partition
            if p not in subscribed:
                continue  # unsubscribed meanwhile
            st = state.get(p)
            if st is None:
                st = state[p] = FollowerLog()
            kind = chunk.kind
            if kind == _MUTATIONS:
                count = chunk.count
                verdict, skip = st.mutations(chunk.seq, count)
                if verdict is _RESYNC:
                    resync.add(p)
                    continue
                records = decode(chunk)
                if skip:
                    records = records[skip:]
                held = None if uniform else self.held(p)
                if held is None:
                    for r in records:
                        if r[0]:  # (op 0: a map this backup does not hold)
                            apply(p, *r, now)  # (op, map, key, value, ts, member, ...)
                else:
                    for r in records:
                        if r[0] and held(r[1]):
                            apply(p, *r, now)
                st.keep(chunk.seq + skip, records)  # for client watches after a promotion
                acks[p] = st.seq
            elif kind == _SNAPSHOT:
                if st.snapshot_records() is _RESYNC:
                    resync.add(p)
                    continue
                held = self.held(p)
                for r in decode(chunk):
                    if held is None or held(r[1]):
                        apply(p, *r, now)
            elif kind == Kind.SNAPSHOT_BEGIN:
                st.snapshot_begin()  # merged into: see the module's docstring
            elif kind == Kind.SNAPSHOT_END:
                whole = st.phase is Phase.SNAPSHOT  # else: the log had what we lacked
                if st.snapshot_end(chunk.term, chunk.seq) is _RESYNC:
                    resync.add(p)
                    continue
                if not whole:
                    self.resumed += 1
                acks[p] = st.seq
                if p in self.fills:
                    self.fills_done += 1
                filled.append((p, True))
            elif kind == Kind.HANDOFF:
                # everything before it is applied: the partition is ours from here on,
                # unless the table in use settled it or names another primary (then it
                # is not confirmed, and a table of its epoch says who serves p)
                if not self.accept_takeover(p, chunk.epoch, source):
                    # the primary let go of p on this stream all the same: follow it
                    # again, from whoever serves it (reconcile, shortly)
                    subscribed.discard(p)
                    if self.source_of.get(p) == source:
                        del self.source_of[p]
                    refused = True
                    continue
                self.primary.start_log(p, chunk.term, chunk.seq)
                subscribed.discard(p)
                self.source_of.pop(p, None)
                self.fills.pop(p, None)
                self.refused_fills.discard(p)
                acks[p] = chunk.seq
                taken.append((p, chunk.epoch))
            elif kind == Kind.REFUSED:
                subscribed.discard(p)
                if self.source_of.get(p) == source:
                    del self.source_of[p]
                if p in self.fills:
                    # the fill failed (its coordinator hears so now, and orders it again in
                    # a later round): it is not in flight any more, though this member
                    # follows on while the fill lingers (the refusal may be a table away)
                    self.refused_fills.add(p)
                filled.append((p, False))
                refused = True
        for p in resync:
            self._forget(p)
        return Received(acks, taken, sorted(resync), filled, refused)

    def stream_lost(self, source: str) -> list[int]:
        """The upstream to `source` broke (it reconnects and subscribes everything again);
        returns the fills that failed with it."""
        failed = []
        for p in self.upstreams.get(source, ()):
            st = self.state.get(p)
            if st is not None and st.phase is Phase.SNAPSHOT:
                st.term, st.seq = 0, 0  # a half-received snapshot is worth nothing
            if p in self.fills and (st is None or st.phase is not Phase.LIVE):
                failed.append(p)  # the coordinator learns now, not at its timeout
        return failed

    def dropped(self, p: int) -> None:
        """The runtime dropped the copy of p (it had no role): its position goes too."""
        self.state.pop(p, None)


ACK_EVERY_S = 0.05
"""With no sync backups configured (`sync_backups` 0 and no map above 0), nobody waits for
an acknowledgement: they only feed the primary's lag figures. Then a stream sends at most
one per ACK_EVERY_S (the first after a quiet spell at once), not one per message applied:
an acknowledgement costs a message at both ends, about as much as the change message
itself. Hand-offs (`taken_over`) are never held back."""


class AckPacer:
    """When a stream's gathered acknowledgements go out: now, or at a time."""

    __slots__ = ("every", "sent_at")

    def __init__(self, every: float) -> None:
        self.every = every  # 0: at once, always (sync backups wait for them)
        self.sent_at = -1e18

    def due(self, now: float, taken_over: bool) -> float:
        """The time to send what was gathered (<= now: at once); a take-over goes at once."""
        if taken_over or not self.every:
            return now
        return max(now, self.sent_at + self.every)

    def sent(self, now: float) -> None:
        self.sent_at = now
