"""Client watches: a partition primary's changes streamed to clients, with no IO.

Entry listeners and near-cache invalidation are one mechanism: a client watches a
map (optionally a key prefix and some kinds of change) on every partition's
primary, like a follower that wants keys and kinds, and values only when asked.
The primary already numbers every change of a partition (`PrimaryLog`: term, seq);
a watch reuses that numbering, so the client can tell a gap or a new lineage and
repair (re-read, drop its cached entries, report the gap to a listener).

Per (watch, partition) the primary keeps a subscription: the log it follows, a
bounded queue of events, and `sent`, the position the client will hold once it
has read everything drained so far. A drained chunk says where it continues from
(`prev`: the client's position, or a gap) and where it leaves the client (`seq`:
when the queue emptied, the log's seq itself, since every change up to it was
queued or filtered out). So positions advance over changes a filter skipped, and
an idle watch is still current.

Subscribing from (term, seq): term 0 starts from now (SYNCED at the log's seq).
Otherwise `PrimaryLog.lineage` replays what the log still keeps after it (SYNCED
at the position, then the events), across a hand-off or a promotion too (the new
primary's log begins with its copy's tail); `forked` says the client saw changes
of a lineage this one lost (an async failover). When the log does not reach back,
RESET: the client is placed at the log's seq and knows it missed changes.

Chunks and what the client does:

- EVENTS (prev, seq, events): continue if prev is its position; else a gap (it
  subscribes again from its position). No events: a reconciliation probe's answer.
- SYNCED (term, seq, forked): the subscription starts at (term, seq).
- RESET (term, seq): the subscription starts there, changes before it were missed.
- DROPPED: this watch fell behind: past `max_events` queued for the partition, or
  `max_bytes` for the watch, the subscription is dropped (the queue freed) and the
  client subscribes again from its position (replayed if the log still has it).
  Never blocks the primary, never grows without bound (Redis cuts a slow replica
  the same way).
- NOT_PRIMARY: the partition's log here ended (a hand-off, a failover, a table):
  the client subscribes at the new primary from its position.

Inputs, each called under the store lock: `open`/`close` (a watch), `subscribe`,
`unsubscribe`, `probe`, `record` (the store's sink, after the replicator gave the
change its seq), `revalidate` (the member's logs changed). Outputs: `drain` (the
next chunks of a watch) and `ready` (watches with something to send).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from enum import IntEnum
from typing import Any, NamedTuple

from replication.stream import PrimaryLog

# kinds of change, as bits of a watch's filter (proto/grid.proto's WatchEvent.kind)
ADDED, UPDATED, REMOVED, EXPIRED, EVICTED, CLEARED = 1, 2, 4, 8, 16, 32
ALL_KINDS = ADDED | UPDATED | REMOVED | EXPIRED | EVICTED | CLEARED
KIND_NAMES = {ADDED: "added", UPDATED: "updated", REMOVED: "removed", EXPIRED: "expired",
              EVICTED: "evicted", CLEARED: "cleared"}  # fmt: skip

# the store's change ops (grid/store/store.py; replication must not import grid)
_PUT, _DELETE, _EXPIRED, _INCR, _EVICTED, _CLEAR = 1, 2, 3, 4, 5, 6

MAX_EVENTS = 4096
"""Events queued for one subscription (one partition of one watch) before it is dropped:
about a second of one partition's writes at a member's full rate, far past what a
client reading its socket falls behind by."""
MAX_BYTES = 16 << 20
"""Bytes of events queued for one watch (all its partitions) before the subscription
that grew it is dropped."""
EVENT_OVERHEAD = 48


class Notice(IntEnum):
    """What a chunk carries (proto/grid.proto's WatchChunkKind)."""

    EVENTS = 0
    SYNCED = 1
    RESET = 2
    DROPPED = 3
    NOT_PRIMARY = 4


class Event(NamedTuple):
    """One change as a watch sees it; `value` only when the watch asked for values."""

    kind: int
    key: bytes
    value: bytes | None
    seq: int
    ts: int
    member: int
    expire_at: int


class WatchChunk(NamedTuple):
    kind: Notice
    partition: int
    term: int = 0
    prev: int = 0  # EVENTS: the position it continues from
    seq: int = 0  # EVENTS: the position after it; SYNCED, RESET: the start
    events: list[Event] | None = None
    forked: bool = False  # SYNCED: the client saw changes this lineage lost


def kind_of(op: int, existed: bool) -> int:
    """The watch kind of a store change (0: none a watcher sees)."""
    if op in (_PUT, _INCR):
        return UPDATED if existed else ADDED
    if op == _DELETE:
        return REMOVED if existed else 0  # a tombstone for a key that was not here
    if op == _EXPIRED:
        return EXPIRED
    if op == _EVICTED:
        return EVICTED
    if op == _CLEAR:
        return CLEARED
    return 0


class Sub:
    """One watch's subscription of one partition."""

    __slots__ = ("items", "log", "partition", "probe", "queued", "sent", "watch")

    def __init__(self, watch: Watch, partition: int, log: PrimaryLog) -> None:
        self.watch = watch
        self.partition = partition
        self.log = log
        self.items: deque[Event | WatchChunk] = deque()
        self.queued = 0  # events in items
        self.sent = 0  # the client's position after everything drained
        self.probe = False


class Watch:
    """A client's watch of one map on this member: its filter and subscriptions."""

    __slots__ = ("bytes", "closed", "id", "kinds", "map", "owner", "prefix", "ready", "subs",
                 "values")  # fmt: skip

    def __init__(
        self, watch_id: int, map_name: str, prefix: bytes, kinds: int, values: bool, owner: Any
    ) -> None:
        self.id = watch_id
        self.owner = owner  # the runtime's: whoever sends this watch's chunks
        self.map = map_name
        self.prefix = prefix
        self.kinds = kinds or ALL_KINDS
        self.values = values
        self.subs: dict[int, Sub] = {}
        self.ready: dict[int, None] = {}  # partitions with something to send, in order
        self.bytes = 0
        self.closed = False


class Watchers:
    """Every client watch on this member, over the primary's logs."""

    def __init__(
        self,
        logs: Mapping[int, PrimaryLog],
        *,
        max_events: int = MAX_EVENTS,
        max_bytes: int = MAX_BYTES,
        on_ready: Callable[[Watch], None] = lambda w: None,
    ) -> None:
        self.logs = logs  # the primary core's: p -> log, for partitions served here
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.on_ready = on_ready  # a watch went from nothing to send to something
        self.by_partition: dict[int, list[Sub]] = {}
        self.dropped = 0  # subscriptions dropped for falling behind
        self.resets = 0  # subscriptions that could not resume
        self.queued = 0  # events queued since the start

    # ---- watches and subscriptions -------------------------------------------------------------
    def open(
        self, watch_id: int, map_name: str, prefix: bytes, kinds: int, values: bool,
        owner: Any = None,
    ) -> Watch:  # fmt: skip
        return Watch(watch_id, map_name, prefix, kinds, values, owner)

    def close(self, w: Watch) -> None:
        w.closed = True
        self.unsubscribe(w, list(w.subs))
        w.ready.clear()

    def subscribe(self, w: Watch, p: int, term: int, seq: int) -> None:
        """Follow p from (term, seq) (term 0: from now); see the module's docstring."""
        self.unsubscribe(w, (p,))
        plog = self.logs.get(p)
        if plog is None:
            self._notice(w, p, WatchChunk(Notice.NOT_PRIMARY, p))
            return
        sub = Sub(w, p, plog)
        w.subs[p] = sub
        self.by_partition.setdefault(p, []).append(sub)
        found = plog.lineage(term, seq) if term else None
        if found is None:
            if term:
                self.resets += 1
            sub.sent = plog.seq
            self._push(sub, WatchChunk(Notice.RESET if term else Notice.SYNCED, p,
                                       plog.term, 0, plog.seq))  # fmt: skip
            return
        fork, missing, forked = found
        sub.sent = fork
        self._push(sub, WatchChunk(Notice.SYNCED, p, plog.term, 0, fork, forked=forked))
        for s, rec in missing:
            op, map_name, key, value, ts, member, expire_at, _ = rec
            if op and map_name == w.map:
                kind = kind_of(op, True)
                if kind == UPDATED and not w.kinds & UPDATED:
                    # whether a replayed put's key existed is not kept: "updated", or
                    # "added" for a watch of adds only, so that it still hears of it
                    kind = ADDED
                if w.kinds & kind and (not w.prefix or kind == CLEARED
                                       or key.startswith(w.prefix)):  # fmt: skip
                    self._event(sub, kind, key, value, s, ts, member, expire_at)

    def unsubscribe(self, w: Watch, partitions: Iterable[int]) -> None:
        for p in partitions:
            sub = w.subs.pop(p, None)
            if sub is None:
                continue
            w.bytes -= sum(len(e.key) + len(e.value or b"") + EVENT_OVERHEAD
                           for e in sub.items if isinstance(e, Event))  # fmt: skip
            subs = self.by_partition.get(p)
            if subs is not None:
                subs.remove(sub)
                if not subs:
                    del self.by_partition[p]
            w.ready.pop(p, None)

    def subscriptions(self) -> int:
        return sum(len(subs) for subs in self.by_partition.values())

    def probe(self, w: Watch) -> None:
        """Reconciliation: every subscribed partition answers its position (EVENTS with no
        events, or with what is queued), so the client compares sequence numbers."""
        for p, sub in w.subs.items():
            sub.probe = True
            self._mark(w, p)

    def revalidate(self) -> None:
        """The member's logs changed (a table, a hand-off): subscriptions whose log ended
        are told NOT_PRIMARY."""
        logs = self.logs
        for p, subs in list(self.by_partition.items()):
            plog = logs.get(p)
            for sub in list(subs):
                if sub.log is not plog:
                    w = sub.watch
                    self.unsubscribe(w, (p,))
                    self._notice(w, p, WatchChunk(Notice.NOT_PRIMARY, p))

    # ---- the sink ------------------------------------------------------------------------------
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
        existed: bool,
    ) -> None:
        """A change of a partition this member is primary of, after the replicator gave it
        its seq (the log's seq now)."""
        subs = self.by_partition.get(partition)
        if not subs:
            return
        kind = kind_of(op, existed)
        if not kind:
            return
        plog = self.logs.get(partition)
        for sub in subs:
            w = sub.watch
            if (
                w.map != map_name
                or not w.kinds & kind
                or (w.prefix and kind != CLEARED and not key.startswith(w.prefix))
                or sub.log is not plog
            ):
                continue
            self._event(sub, kind, key, value, plog.seq, ts, member, expire_at)  # type: ignore[union-attr]

    def _event(
        self,
        sub: Sub,
        kind: int,
        key: bytes,
        value: bytes | None,
        seq: int,
        ts: int,
        member: int,
        expire_at: int,
    ) -> None:
        w = sub.watch
        if not w.values:
            value = None
        sub.items.append(Event(kind, key, value, seq, ts, member, expire_at))
        sub.queued += 1
        self.queued += 1
        w.bytes += len(key) + len(value or b"") + EVENT_OVERHEAD
        if sub.queued > self.max_events or w.bytes > self.max_bytes:
            self.dropped += 1
            p = sub.partition
            self.unsubscribe(w, (p,))
            self._notice(w, p, WatchChunk(Notice.DROPPED, p))
            return
        self._mark(w, sub.partition)

    def _push(self, sub: Sub, chunk: WatchChunk) -> None:
        sub.items.append(chunk)
        self._mark(sub.watch, sub.partition)

    def _notice(self, w: Watch, p: int, chunk: WatchChunk) -> None:
        """A notice for a partition the watch no longer follows: a queue of its own."""
        if w.closed:
            return
        holder = w.subs.get(-1 - p)  # (negative: not a subscription; drained once)
        if holder is None:
            holder = w.subs[-1 - p] = Sub(w, p, PrimaryLog(0))
        holder.items.append(chunk)
        self._mark(w, -1 - p)

    def _mark(self, w: Watch, p: int) -> None:
        if w.closed:
            return
        was_idle = not w.ready
        w.ready[p] = None
        if was_idle:
            self.on_ready(w)

    # ---- sending -------------------------------------------------------------------------------
    def drain(self, w: Watch, max_events: int = 1024) -> list[WatchChunk]:
        """The next chunks for the watch (about `max_events` events at most)."""
        out: list[WatchChunk] = []
        budget = max_events
        while w.ready and budget > 0:
            p = next(iter(w.ready))
            sub = w.subs.get(p)
            if sub is None:
                del w.ready[p]
                continue
            items = sub.items
            events: list[Event] = []
            while items and budget > 0:
                item = items[0]
                if isinstance(item, Event):
                    items.popleft()
                    events.append(item)
                    sub.queued -= 1
                    w.bytes -= len(item.key) + len(item.value or b"") + EVENT_OVERHEAD
                    budget -= 1
                    continue
                if events:
                    break  # the events before a notice go first
                items.popleft()
                if item.kind is Notice.SYNCED or item.kind is Notice.RESET:
                    sub.sent = item.seq
                out.append(item)
            if events or (sub.probe and not items and p >= 0):
                upto = sub.log.seq if not items else events[-1].seq
                out.append(WatchChunk(Notice.EVENTS, p, sub.log.term, sub.sent, upto, events))
                sub.sent = upto
                sub.probe = False
            if not items:
                del w.ready[p]
                if p < 0:
                    del w.subs[p]
        return out


def kinds_mask(names: Iterable[str]) -> int:
    """{"added", "removed"} -> the bits; ValueError for a name that is not a kind."""
    by_name = {v: k for k, v in KIND_NAMES.items()}
    mask = 0
    for n in names:
        if n not in by_name:
            raise ValueError(f"{n!r} is not a kind of change ({', '.join(by_name)})")
        mask |= by_name[n]
    return mask
