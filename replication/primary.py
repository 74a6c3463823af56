"""The primary side of partition streams, as a state machine with no IO.

A member is the primary of some partitions. For each it keeps a
`PrimaryLog` (term, next seq, recent changes) and the followers subscribed to
it: backups, and members being filled before they take the partition over.
replication/stream.py describes the conversation; this module decides every
step of the primary's half of it, and the runtime (grid/member/replicas/replica.py) or the
simulator only carries the decisions out.

Inputs, each a method called under the caller's store lock:

- `on_table()`: the routing changed. A partition this member now serves gets
  a log with a fresh term (continuing the seq it stood at as a follower, if
  any); one it no longer serves ends its log (its position is kept, so a hand
  back or a promotion continues from it) and its followers are REFUSED.
- `record(...)`: the store's sink, once per change of a partition this member
  is primary of. The change gets the next seq and goes to each follower's
  queue. With per-map backups, a backup whose rank is past the map's backups
  gets a no-op in its place (its seq must still advance, or it sees a gap).
- `open_stream(f)` / `close_stream(f)`, then per message from the follower:
  `subscribe`, `unsubscribe`, `ack`, `taken_over`.
- `handoff(ps, to, epoch)`: hand partitions to a live follower (a migration
  or a graceful leave); `handoff_failed(p)` when it did not confirm, which
  says whether to take p back (then `resume(p)`).
- `drain(f)`: the next message for a follower, as `Chunk`s.

Outputs are the follower queues (drained into messages), `ready` (followers
whose queue went from empty to not: the runtime wakes their senders),
`closing` (followers whose stream must be cut), and the answers of the
methods. Sync backups ask `unconfirmed`; `grid status` asks `lag`.

Subscribing: the follower says what it has, `(term, seq)`. If the log still
keeps every change after it, the primary answers SNAPSHOT_END at that point
("you are current") followed by those changes; otherwise SNAPSHOT_BEGIN, the
partition's records in chunks, SNAPSHOT_END at the log's seq. Either way the
follower then gets every change as it is applied, in seq order.

Hand-off: this member stops serving the partition (the runtime's routing
stops at once, in the same lock hold), and HANDOFF is queued behind the last
change; the follower applies everything before it, continues the same term
and seq as primary, and says `taken_over`. No change is applied by both
members and none by neither. If the new owner does not confirm, what this
member does depends on whether HANDOFF left it: if it never did (still
queued, or dropped with a closed stream's queue), nobody took the partition
over and this member serves it again, in a new term; once sent, the follower
may have taken over and only its word was lost, so this member serves
nothing of it until a table of the hand-off's epoch says who does
(partitioning/ownership.py: the coordinator publishes that table, and
members report hand-offs no table settled yet). Taking it back then would
make two primaries under one table.

Flow control: the sender drains a queue one message at a time and waits for
the transport between messages, so a slow follower holds its queue, never the
writers. The queue of live changes is bounded in bytes (`max_queue_bytes`):
past the bound the follower is cut off (`closing`), as Redis cuts a replica
whose output buffer exceeds its limit; it reconnects and catches up from the
log, or from a snapshot, instead of growing the primary's memory without end.
Snapshot chunks are not counted: they refer to values the store holds anyway.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from enum import IntEnum
from typing import Any, NamedTuple

from replication.map_backups import Holds, MapBackups
from replication.stream import DEFAULT_KEEP, FollowerLog, Phase, PrimaryLog, new_term


class Kind(IntEnum):
    """What a chunk of a follower message carries (proto/grid.proto's ChunkKind)."""

    MUTATIONS = 0  # live changes, in seq order from `seq`
    SNAPSHOT_BEGIN = 1  # a snapshot of the partition follows
    SNAPSHOT = 2  # part of the partition's records
    SNAPSHOT_END = 3  # the follower is current at (term, seq); changes follow
    HANDOFF = 4  # the follower is primary from (term, seq) on
    REFUSED = 5  # this member is not the partition's primary (error says why)


Record = tuple[int, str, bytes, "bytes | None", int, int, int, int]
"""A change: (op, map, key, value, ts, member, expire_at, max_idle), the store's shape."""

NOOP: Record = (0, "", b"", None, 0, 0, 0, 0)
"""A record a follower only counts (per-map backups: a map this backup does not hold)."""


class Queued(NamedTuple):
    """One item of a follower's queue; `seq` and `data` mean what `Kind` says."""

    kind: Kind
    partition: int
    seq: int = 0  # MUTATIONS, SNAPSHOT_END, HANDOFF
    data: Any = None  # a Record; SNAPSHOT: a list of them; SNAPSHOT_END, HANDOFF: the term


class Chunk(NamedTuple):
    """A piece of a message to a follower, ready for the transport to encode."""

    kind: Kind
    partition: int
    seq: int = 0
    records: list[Record] | None = None
    term: int = 0
    epoch: int = 0
    error: str = ""


class Lag(NamedTuple):
    """Backups behind their primaries here: the worst, the sum, the oldest change's age."""

    worst: int
    total: int
    oldest_s: float
    lagging: list[tuple[int, str, int, float]]  # (partition, backup, changes, seconds)


_MUTATIONS = Kind.MUTATIONS
SNAPSHOT_CHUNK_RECORDS = 512
MESSAGE_MAX_BYTES = 128 * 1024
"""One message, roughly: about 1,000 records of 100 B, which a follower applies in about
5 ms under its store lock. Bigger messages would hold its event loop (and its clients)
for longer at a time."""
LINGER_UNTIL = 512
"""A queue this long is sent at once, without lingering: it fills a message already."""
MAX_QUEUE_BYTES = 256 << 20
"""Live changes queued for one follower before it is cut off: 256 MiB is about 10 s of
a member's full write rate, far past any lag a healthy backup shows (p99 under 0.1 s)."""
Mark = tuple[int, int]
"""A place in a partition's stream: (term, seq). A seq alone means nothing across terms."""
LAGGING_SHOWN = 8  # partitions most behind listed by `lag` (all of them are summed)
RECORD_OVERHEAD = 32  # bytes counted per record besides its key and value


def record_size(rec: Record) -> int:
    return len(rec[2]) + len(rec[3] or b"") + RECORD_OVERHEAD


class Downstream:
    """One follower's stream, as its primary sees it (the follower's end is an upstream)."""

    __slots__ = (
        "acked",
        "all_maps",
        "closed",
        "name",
        "partitions",
        "queue",
        "queued_bytes",
        "scheduled",
        "urgent",
        "waiting",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.queue: deque[Queued] = deque()
        self.queued_bytes = 0  # live changes in the queue (flow control)
        self.scheduled = False  # in `ready`, or its sender is running
        self.urgent = False  # someone waits for it (sync write, hand-off): no lingering
        self.partitions: set[int] = set()
        self.all_maps: set[int] = set()  # partitions it fills to take over (every map)
        self.acked: dict[int, int] = {}
        self.waiting: dict[int, list[tuple[int, Any]]] = {}
        """p -> (seq, token) of writes waiting for this follower to apply p's seq; tokens
        are the runtime's (futures) or the simulator's, and come back out of `ack`."""
        self.closed = False


def known_members(
    me: str, known: Iterable[str], saved: Iterable[str], seeds: Iterable[str] = ()
) -> set[str]:
    """The members a sync write's room counts on a side with no majority in sight
    (`Primary.needs`): those membership knows and that never departed (`known`), and,
    while it knows nobody else, those it knew when its table was last saved (`saved`),
    or else one for each address it was told to join through (`seeds`, not its own).
    A member restarted on its side of a split hears from nobody: counting itself a
    cluster of one, it would confirm sync writes no other member holds (the simulator,
    3 members: seed 14 with its data dir, and seed 2 without one, where it starts a
    new cluster alone). Once it hears from anyone, the gossip's full state (the dead
    and the departed with the living) is the word. A member given no seeds, or only
    its own address, is a cluster of one."""
    out = {me, *known}
    if len(out) == 1:
        out.update(saved)
    if len(out) == 1:
        out.update(f"seed {s}" for s in seeds)
    return out


class Primary:
    """Every partition this member is primary of, and their followers."""

    def __init__(
        self,
        me: str,
        partitions: int,
        serves: Callable[[int], bool],
        snapshot: Callable[[int, Holds], list[Record]],
        map_backups: MapBackups,
        *,
        keep: int = DEFAULT_KEEP,
        max_queue_bytes: int = MAX_QUEUE_BYTES,
        rng: random.Random | None = None,
        clock: Callable[[], float] = lambda: 0.0,
        on_ready: Callable[[], None] = lambda: None,
    ) -> None:
        self.me = me
        self.partitions = partitions
        self.serves = serves  # whether this member serves p as primary right now
        self.snapshot = snapshot  # p's records for a snapshot (the store's, under its lock)
        self.map_backups = map_backups
        self.keep = keep
        self.max_queue_bytes = max_queue_bytes
        self.rng = rng
        self.clock = clock  # any monotonic clock: the log keeps it per change, for lag
        self.on_ready = on_ready
        """Told when `ready` or `closing` gained a follower (at most once per follower per
        drain, not per write): the runtime wakes the senders then."""
        self.logs: dict[int, PrimaryLog] = {}
        self.positions: dict[int, FollowerLog] = {}
        """Where this member stands in partitions it is not primary of (a follower's
        copy, or a former primary's): shared with the follower side."""
        self.followers: dict[int, set[Downstream]] = {}
        self.streams: dict[str, Downstream] = {}
        self.ranks: dict[int, dict[str, int]] = {}  # p -> follower -> its backup rank
        self.ready: list[Downstream] = []
        self.closing: list[tuple[Downstream, str]] = []
        self.handing: dict[int, str] = {}  # partitions handed off, not yet taken over
        self.handoffs_sent: set[int] = set()  # of those, the ones whose HANDOFF was drained
        self.handed_at: dict[int, Mark] = {}
        """(term, seq) of each partition's hand-off, under way or taken over: the writes it
        carried reached the new primary (`lost`), until this member serves p again."""
        self.touched: dict[int, PrimaryLog] = {}  # partition -> log written, since take_touched()
        self.caught_up = 0  # subscriptions answered from the log (no snapshot)
        self.snapshots_sent = 0  # subscriptions answered with a snapshot
        self.handoffs = 0
        self.overflows = 0  # followers cut off for a queue past max_queue_bytes

    # ---- roles -------------------------------------------------------------------------------
    def on_table(self, replicas: Callable[[int], tuple[str, ...]] | None) -> None:
        """Logs follow what this member serves; `replicas(p)`: the table's list for p."""
        self.ranks = {}
        for p in range(self.partitions):
            serving = self.serves(p)
            if serving and replicas is not None:
                self.ranks[p] = {m: i for i, m in enumerate(replicas(p)) if i}
            if serving and p not in self.logs:
                self.start_log(p)
            elif not serving and p in self.logs:
                self.end_log(p, "no longer the primary")

    def start_log(self, p: int, term: int | None = None, seq: int | None = None) -> PrimaryLog:
        """Become p's primary: a new term continuing this member's position, or (a hand
        off) the old primary's (term, seq)."""
        pos = self.positions.pop(p, None)
        self.handed_at.pop(p, None)
        if term is None:
            term, seq = new_term(self.rng), (pos.seq if pos is not None else 0)
        plog = self.logs[p] = PrimaryLog(term, seq or 0, self.keep)
        if pos is not None and pos.term and pos.phase is not Phase.SNAPSHOT and pos.seq == plog.seq:
            # client watches resume across the change (the copy is whole at pos.seq; a
            # stream that broke left it IDLE, which is fine; a half snapshot is not)
            plog.prev = (pos.term, pos.seq)
            plog.before = pos.tail()
        return plog

    def end_log(self, p: int, why: str) -> None:
        plog = self.logs.pop(p)
        self.positions[p] = FollowerLog(plog.term, plog.seq, Phase.LIVE)
        for f in self.followers.pop(p, set()):
            f.partitions.discard(p)
            self._push(f, Queued(Kind.REFUSED, p, 0, why))

    def position(self, p: int) -> int:
        """The partition stream's seq here: as its primary, or as a follower."""
        plog = self.logs.get(p)
        if plog is not None:
            return plog.seq
        pos = self.positions.get(p)
        return pos.seq if pos is not None else 0

    def mark(self, p: int) -> Mark:
        """Where p's stream is here, term included: what a sync write waits for."""
        plog = self.logs.get(p)
        if plog is not None:
            return (plog.term, plog.seq)
        return (0, self.position(p))

    # ---- the sink: every change of a partition this member is primary of ---------------------
    def record(
        self,
        partition: int,
        op: int,
        map_name: str,
        key: bytes,
        value: bytes | None,
        ts: int,
        member: int,
        expire_at: int,
        max_idle: int,
    ) -> None:
        plog = self.logs.get(partition)
        if plog is None:
            return  # a backup's copy changing: not ours to stream
        rec = (op, map_name, key, value, ts, member, expire_at, max_idle)
        seq = plog.append(rec, self.clock())
        self.touched[partition] = plog  # no tuple a write: the mark is taken once a batch
        subs = self.followers.get(partition)
        if not subs:
            return
        size = len(key) + len(value or b"") + RECORD_OVERHEAD
        if self.map_backups.uniform:
            # one item for every follower; a plain tuple of Queued's shape (building the
            # NamedTuple costs 0.27 us a write, the tuple 0.05)
            item = (_MUTATIONS, partition, seq, rec)
            for f in subs:
                if f.closed:
                    continue  # cut off (overflow): the runtime ends its stream
                f.queue.append(item)  # type: ignore[arg-type]
                f.queued_bytes += size
                if not f.scheduled:
                    f.scheduled = True
                    self.ready.append(f)
                    self.on_ready()
                if f.queued_bytes > self.max_queue_bytes:
                    self._overflow(f)
        else:
            holds = self.map_backups.holds
            for f in subs:
                held = holds(map_name, self.rank_of(partition, f))
                self._push(f, Queued(Kind.MUTATIONS, partition, seq, rec if held else NOOP))
                f.queued_bytes += size if held else RECORD_OVERHEAD  # what drain takes off
                if f.queued_bytes > self.max_queue_bytes:
                    self._overflow(f)

    def rank_of(self, p: int, f: Downstream) -> int:
        """The backup rank whose maps a follower gets (0: every map: it is filling)."""
        if p in f.all_maps:
            return 0
        return self.ranks.get(p, {}).get(f.name, 0)

    def take_touched(self) -> dict[int, Mark]:
        """Partitions changed (as primary) since the last call, with their last (term, seq)."""
        touched, self.touched = self.touched, {}
        return {p: (plog.term, plog.seq) for p, plog in touched.items()}

    def take_ready(self) -> list[Downstream]:
        ready, self.ready = self.ready, []
        return ready

    def take_closing(self) -> list[tuple[Downstream, str]]:
        closing, self.closing = self.closing, []
        return closing

    def sending(self, f: Downstream) -> None:
        """The follower's sender is awake and drains its queue: a change queued from now
        on must wake it again, and nobody waits for what it is about to send."""
        f.scheduled = False
        f.urgent = False

    def _push(self, f: Downstream, item: Queued) -> None:
        if f.closed:
            return
        f.queue.append(item)
        if not f.scheduled:
            f.scheduled = True
            self.ready.append(f)
            self.on_ready()

    def _overflow(self, f: Downstream) -> None:
        """Cut a follower off (see Flow control); the runtime ends its stream, and
        `close_stream` then hands back its waiting tokens."""
        if f.closed:
            return
        self.overflows += 1
        self.closing.append((f, f"{f.queued_bytes} bytes queued, past max_queue_bytes"))
        f.closed = True
        f.queue.clear()
        f.queued_bytes = 0
        self.on_ready()

    # ---- a follower's stream -----------------------------------------------------------------
    def open_stream(self, name: str) -> Downstream:
        """A follower connected (the runtime closed any stream it had before: a
        follower reconnects after a break, and its old stream's queue is void)."""
        assert name not in self.streams, "close_stream the old stream first"
        f = self.streams[name] = Downstream(name)
        return f

    def close_stream(self, f: Downstream) -> list[Any]:
        """The stream ended; returns the tokens still waiting on it (their waits fail)."""
        f.closed = True
        f.queue.clear()
        f.queued_bytes = 0
        if self.streams.get(f.name) is f:
            del self.streams[f.name]
        for p in f.partitions:
            subs = self.followers.get(p)
            if subs is not None:
                subs.discard(f)
        f.partitions.clear()
        tokens = [t for waits in f.waiting.values() for _, t in waits]
        f.waiting.clear()
        return tokens

    def subscribe(
        self, f: Downstream, p: int, have_term: int, have_seq: int, all_maps: bool
    ) -> None:
        """Queue what the follower lacks of p, then follow p's live changes."""
        if f.closed or not 0 <= p < self.partitions:
            return
        f.acked.pop(p, None)  # acknowledgements count in the lineage they are answered in
        if all_maps:
            f.all_maps.add(p)
        else:
            f.all_maps.discard(p)
        plog = self.logs.get(p)
        if plog is None or not self.serves(p):
            why = f"{self.me} is not the primary of partition {p}"
            self._push(f, Queued(Kind.REFUSED, p, 0, why))
            return
        missing = plog.since(have_term, have_seq)
        rank = self.rank_of(p, f)
        mb = self.map_backups
        if missing is not None:
            self.caught_up += 1
            self._push(f, Queued(Kind.SNAPSHOT_END, p, have_seq, plog.term))
            for s, rec in missing:
                self._push(f, Queued(Kind.MUTATIONS, p, s, rec if mb.holds(rec[1], rank) else NOOP))
        else:
            entries = self.snapshot(p, mb.held(rank))
            self.snapshots_sent += 1
            self._push(f, Queued(Kind.SNAPSHOT_BEGIN, p))
            for i in range(0, len(entries), SNAPSHOT_CHUNK_RECORDS):
                self._push(f, Queued(Kind.SNAPSHOT, p, 0, entries[i : i + SNAPSHOT_CHUNK_RECORDS]))
            self._push(f, Queued(Kind.SNAPSHOT_END, p, plog.seq, plog.term))
        f.partitions.add(p)
        self.followers.setdefault(p, set()).add(f)

    def unsubscribe(self, f: Downstream, partitions: Iterable[int]) -> None:
        for p in partitions:
            f.partitions.discard(p)
            subs = self.followers.get(p)
            if subs is not None:
                subs.discard(f)

    def ack(self, f: Downstream, p: int, seq: int) -> list[Any]:
        """The follower applied p up to seq; returns the tokens whose wait is over."""
        if seq > f.acked.get(p, 0):
            f.acked[p] = seq
        waits = f.waiting.get(p)
        if not waits:
            return []
        done = [t for want, t in waits if seq >= want]
        if done:
            f.waiting[p] = [(want, t) for want, t in waits if seq < want]
        return done

    def wait_ack(self, f: Downstream, p: int, seq: int, token: Any) -> bool:
        """Keep `token` until the follower acknowledges p's seq; False if it has already
        (nothing is kept). A wait makes the sender hurry: no lingering."""
        if f.acked.get(p, 0) >= seq:
            return False
        f.waiting.setdefault(p, []).append((seq, token))
        f.urgent = True
        return True

    def taken_over(self, f: Downstream, p: int) -> bool:
        """The follower applied HANDOFF of p: True if this member was handing p to it."""
        if self.handing.get(p) != f.name:
            return False
        del self.handing[p]
        self.handoffs_sent.discard(p)
        self.handoffs += 1
        return True

    # ---- sending -----------------------------------------------------------------------------
    def lingers(self, f: Downstream) -> bool:
        """Whether the sender may wait a little for more changes to share the message:
        only live changes linger; snapshots, hand-offs and awaited changes go at once."""
        q = f.queue
        return bool(q) and len(q) < LINGER_UNTIL and q[0][0] is _MUTATIONS and not f.urgent

    def drain(self, f: Downstream, max_bytes: int = MESSAGE_MAX_BYTES) -> tuple[list[Chunk], int]:
        """The next message for the follower, and the snapshot bytes in it (for the rate
        limit). One MUTATIONS chunk per partition per message, however the partitions'
        changes interleave in the queue (a client batch touches many): a chunk per run of
        one partition would mean a chunk per record. A control item of a partition closes
        its open chunk first, so each partition's items stay in order."""
        queue = f.queue
        popleft = queue.popleft
        chunks: list[Chunk] = []
        open_chunks: dict[int, int] = {}  # partition -> index of its open MUTATIONS chunk
        size = snap_bytes = live_bytes = 0
        mutations = Kind.MUTATIONS
        while queue and size < max_bytes:
            kind, p, seq, data = popleft()
            if kind is mutations:
                at = open_chunks.get(p)
                if at is None:
                    open_chunks[p] = len(chunks)
                    chunks.append(Chunk(mutations, p, seq, [data]))
                else:
                    chunks[at].records.append(data)  # type: ignore[union-attr]
                n = len(data[2]) + len(data[3] or b"") + RECORD_OVERHEAD
                size += n
                live_bytes += n
                continue
            open_chunks.pop(p, None)
            if kind is Kind.SNAPSHOT:
                n = sum(len(e[2]) + len(e[3] or b"") + RECORD_OVERHEAD for e in data)
                chunks.append(Chunk(kind, p, 0, data))
                size += n
                snap_bytes += n
            elif kind is Kind.SNAPSHOT_END:
                chunks.append(Chunk(kind, p, seq, term=data))
            elif kind is Kind.HANDOFF:
                chunks.append(Chunk(kind, p, seq, term=data[0], epoch=data[1]))
                self.handoffs_sent.add(p)  # it may reach the follower from now on
            elif kind is Kind.REFUSED:
                chunks.append(Chunk(kind, p, error=data))
            else:
                chunks.append(Chunk(kind, p))
        f.queued_bytes = max(0, f.queued_bytes - live_bytes)
        return chunks, snap_bytes

    # ---- hand-off ----------------------------------------------------------------------------
    def handoff(
        self, partitions: Iterable[int], to: str, epoch: int
    ) -> tuple[list[int], list[int]]:
        """Queue HANDOFF of each partition to follower `to` and stop serving it (the caller
        stops routing to it in the same lock hold); returns (handing, refused). `epoch`:
        the first table epoch that will show the hand-off."""
        f = self.streams.get(to)
        handing: list[int] = []
        refused: list[int] = []
        for p in partitions:
            plog = self.logs.get(p)
            if f is None or f.closed or plog is None or p not in f.partitions or not self.serves(p):
                refused.append(p)
                continue
            self._push(f, Queued(Kind.HANDOFF, p, plog.seq, (plog.term, epoch)))
            f.urgent = True  # clients of p wait for the hand-off: no lingering
            del self.logs[p]
            self.positions[p] = FollowerLog(plog.term, plog.seq, Phase.LIVE)
            for other in self.followers.pop(p, set()):
                other.partitions.discard(p)
                if other is not f:
                    self._push(other, Queued(Kind.REFUSED, p, 0, f"partition {p} moved to {to}"))
            self.handing[p] = to
            self.handed_at[p] = (plog.term, plog.seq)
            handing.append(p)
        return handing, refused

    def handoff_failed(self, p: int) -> bool:
        """The new owner did not confirm (the deadline passed, or its stream closed). True
        if HANDOFF never left this member: nobody took p over, so the caller takes it back
        (`Ownership.take_back`) and calls `resume(p)`. False if it was sent: the follower
        may have taken over and only its word was lost, so this member serves nothing of
        p until a table of the hand-off's epoch settles who does."""
        to = self.handing.pop(p, None)
        sent = p in self.handoffs_sent
        self.handoffs_sent.discard(p)
        self.handed_at.pop(p, None)  # taken back, or its fate unknown: not a carrier
        if to is None or sent:
            return False
        f = self.streams.get(to)
        if f is not None and not f.closed:  # still queued: it must never leave now
            f.queue = deque(i for i in f.queue if not (i[0] is Kind.HANDOFF and i[1] == p))
        return True

    def resume(self, p: int) -> None:
        """Serve p again after a hand-off taken back: primary in a new term continuing
        this member's seq."""
        if p not in self.logs and self.serves(p):
            self.start_log(p)

    # ---- sync backups and lag ----------------------------------------------------------------
    def waited_for(
        self, p: int, replicas: tuple[str, ...], ranks: int = 1 << 30
    ) -> list[Downstream]:
        """The streams of p's backups (the first `ranks` of them) that count for a sync write."""
        out = []
        for m in replicas[1 : 1 + ranks]:
            f = self.streams.get(m)
            if f is not None and not f.closed and p in f.partitions:
                out.append(f)
        return out

    def needs(
        self,
        touched: Mapping[int, Mark],
        n: int,
        replicas: Callable[[int], tuple[str, ...]],
        ranks: int = 1 << 30,
        members: int = 0,
        live: int = 0,
        known: int = 0,
    ) -> dict[int, int]:
        """How many backups each touched partition's writes need, by the table of the
        write (`members`: how many members it names): `unconfirmed`'s floor while they
        wait. As many as the partition's list has, and, where the list lost backups to a
        failover the table's other members could fill, as many as they could hold: a
        failover made by this member's view of a split leaves a partition with no
        backup, and a sync write there must wait (or time out) rather than be confirmed
        by nobody.

        A member's own table cannot tell a split from a smaller cluster: alone on its
        side, it failed the others over and names itself only, as the last member of a
        cluster would. Its membership can (`known_members`): the members it took for
        dead never departed (`known`: alive, suspect or dead, not left; `live`: alive
        or suspect, itself included in both). A member that sees no majority of them
        may be the smaller side of a split, so there the dead count as room too, and
        its sync writes wait for copies it cannot make (UNAVAILABLE at the timeout)
        instead of being confirmed with none (the netns chaos run partition-halves). A
        side that sees a majority goes by its table and the members it sees: its
        failovers are the cluster's, and a crash of a minority of members does not
        stop sync writes; but members in sight that its table does not name yet (a
        heal, before the cluster's table reaches it; a joiner) are room a write waits
        for, not a cluster of one."""
        size = max(members, live if 2 * live > known else known)
        room = max(0, min(size - 1, ranks))
        return {p: max(min(n, len(replicas(p)[1 : 1 + ranks])), min(n, room)) for p in touched}

    def lost(self, touched: Mapping[int, Mark]) -> list[int]:
        """The partitions of `touched` whose log here is not the one the writes went to
        any more: this member lost and took back p since (a failover, a take-back), and
        began a new term whose seqs count from another start; or it lost p and serves it
        no more, other than by a hand-off that carried the writes to the new primary (a
        table made by others took p away: a member alone in a split adopting the
        majority's table at the heal, whose primary of p never had these writes). The
        backups' acks, if any come, say nothing of those writes: a sync write over them
        cannot be confirmed."""
        out = []
        for p, (term, seq) in touched.items():
            plog = self.logs.get(p)
            if plog is not None:
                if plog.term != term:
                    out.append(p)
                continue
            handed = self.handed_at.get(p)
            if handed is None or handed[0] != term or handed[1] < seq:
                out.append(p)
        return out

    def unconfirmed(
        self,
        touched: Mapping[int, Mark],
        n: int,
        replicas: Callable[[int], tuple[str, ...]],
        ranks: int = 1 << 30,
        floor: Mapping[int, int] | None = None,
    ) -> list[tuple[int, int]]:
        """The (partition, seq) of `touched` not yet applied by min(n, backups) of their
        first `ranks` backups (per-map backups: the ones holding the maps written), and
        by at least `floor[p]`: what the table asked for when the write was made. A
        table that drops a backup while the write waits (this member's view of a split:
        the backup is alive on the other side) must not confirm it with fewer copies. A
        partition this member handed off waits until the new primary has taken it over
        (then it has the writes); one moved away otherwise, or whose term changed here,
        is `lost`, which the caller asks first."""
        missing = []
        for p, (_, seq) in touched.items():
            if not self.serves(p):
                if p in self.handing:
                    missing.append((p, seq))
                continue
            backups = replicas(p)[1 : 1 + ranks]
            need = min(n, len(backups))
            if floor:
                need = max(need, floor.get(p, 0))
            if need <= 0:
                continue
            acked = 0
            for m in backups:
                f = self.streams.get(m)
                if f is not None and p in f.partitions and f.acked.get(p, 0) >= seq:
                    acked += 1
            if acked < need:
                missing.append((p, seq))
        return missing

    def lag(self, replicas: Callable[[int], tuple[str, ...]], now: float) -> Lag:
        """How far each partition's backups are behind this member, in changes and in the
        age of the oldest change they lack (the log's clock is `now`'s)."""
        worst = total = 0
        oldest = 0.0
        rows: list[tuple[int, float, int, str]] = []
        for p, plog in self.logs.items():
            for m in replicas(p)[1:]:
                f = self.streams.get(m)
                acked = f.acked.get(p, 0) if f is not None and p in f.partitions else 0
                behind = max(0, plog.seq - acked)
                if not behind:
                    continue
                worst = max(worst, behind)
                total += behind
                at = plog.applied_at(acked + 1)
                age = now - at if at else 0.0
                oldest = max(oldest, age)
                rows.append((behind, age, p, m))
        top = heapq.nlargest(LAGGING_SHOWN, rows)
        return Lag(worst, total, oldest, [(p, m, behind, age) for behind, age, p, m in top])
