"""One simulated member's replication: a small, faithful model of grid/replica.py,
grid/follower.py and anti-entropy, driven by the pure cores.

Who does what comes from this member's own membership view: its alive (and
suspected) members go through `partitioning.build_table`, the same placement the
real coordinator publishes. In the simulation every member computes its table
itself instead of waiting for the coordinator's, which makes the model AP in the
way Dynamo is: during a split, or while views disagree, two members may both
believe they are primary of a partition and both take writes; the LWW rule and
anti-entropy merge those histories afterwards. That is a superset of what the real
runtime can do (its coordinator publishes one table per side), so convergence
here is the stronger claim.

The protocol, as modelled:

- **Primary.** On becoming primary of p it starts a `PrimaryLog` with a fresh term
  (`new_term`), continuing the seq of its follower position if it had one
  (grid/replica.py's `on_table`). A client write gets an HLC stamp, is applied to
  the store (LWW), appended to the log, and queued to every subscribed follower; a
  flush 2 ms later sends each follower one STREAM message (batches first).
- **Follower.** For every partition its table names it a backup of, it subscribes
  to the primary with what it has, `(term, seq)`; the primary answers `since()`'s
  missing changes or a snapshot, then streams. `FollowerLog` verdicts decide what
  is applied; a gap means subscribe again from (0, 0) (a snapshot), like
  grid/follower.py.
- **Streams** are the model's gRPC Follow streams: FIFO and never silently lossy.
  A message that the network would lose (link loss), or cannot deliver (a
  partition, a crashed peer), *breaks* the stream instead: the epoch moves on,
  anything in flight on the old one is discarded, the primary forgets the
  follower's subscriptions, and the follower reconnects with backoff and
  resubscribes everything from that primary. A follower sends a keepalive every
  second, so an idle stream across a cut breaks too.
- **Snapshots merge** into the copy (LWW) instead of replacing it, by default:
  with tombstones a merge loses nothing a replace would keep, and a replace would
  throw away what this member took as primary on its side of a split before
  anti-entropy could carry it over. `snapshot_drops=True` models grid/follower.py's
  replace, for comparison.
- **Anti-entropy** every 10 s from each primary to each backup, with
  replication/digest.py: roots (at a cut 2 s in the past), bucket digests of the
  partitions whose roots differ, then the records of the differing buckets both
  ways, merged by LWW. These datagram exchanges are simply lost on loss or a cut;
  the next round repeats them.
- **Copies with no role** (this member's table names it neither primary nor
  backup, and it follows nothing for the partition) are pushed to the primary
  and dropped once it acknowledged them unchanged: a hand-off that never loses a
  version, where grid/follower.py would drop the copy.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from xxhash import xxh32_intdigest

from partitioning.keys import partition_of
from partitioning.table import PartitionTable
from replication.digest import differing, unpack_buckets
from replication.hlc import HybridClock
from replication.stream import FollowerLog, Phase, PrimaryLog, Verdict, new_term
from simulation import wire
from simulation.store import Store

if TYPE_CHECKING:
    from simulation.world import World

FLUSH_DELAY = 0.002
"""Writes of the next 2 ms share a STREAM message per follower."""
TABLE_DEBOUNCE = 0.5
"""A burst of membership events (a join's push-pull brings dozens, a split kills half
the members over a few seconds) makes one table, as a coordinator batches them."""
TICK = 1.0
"""Follower keepalives, retried subscriptions."""
SNAPSHOT_CHUNK = 256
AE_CUT_LAG_MS = 2000
STUCK_AFTER = 3.0
RETRY_BASE, RETRY_CAP = 0.05, 2.0


def member_id(name: str) -> int:
    """The 32-bit member id of a version (xxh32 of the name, as the real store)."""
    return xxh32_intdigest(name.encode())


class Replica:
    """The replication state of one member incarnation (a restart makes a new one)."""

    def __init__(self, world: World, name: str, store: Store, incarnation: int) -> None:
        self.w = world
        self.name = name
        self.addr = world.raddr(name)
        self.store = store
        self.inv = world.inv
        self.rng = random.Random(f"replica:{world.cfg.seed}:{name}:{incarnation}")
        self.skew_ms = self.rng.randint(-25, 25)
        self.clock = HybridClock(member_id(name), self._now_ms)
        self.alive = True
        self.table: PartitionTable | None = None
        self.table_due = False
        # primary side
        self.logs: dict[int, PrimaryLog] = {}
        self.subs: dict[int, dict[str, None]] = {}
        self.outbox: dict[str, list[list[Any]]] = {}
        self.flush_due = False
        # follower side
        self.positions: dict[int, FollowerLog] = {}
        self.source_of: dict[int, str] = {}
        self.asked_at: dict[int, float] = {}
        self.retry: dict[str, int] = {}
        self.reconnecting: dict[str, None] = {}
        # anti-entropy and hand-off of copies without a role
        self.ae_round = 0
        self.pushed: dict[int, int] = {}

    # ---- time ---------------------------------------------------------------------------
    def _now_ms(self) -> int:
        return 1_000_000_000_000 + int(self.w.loop.now * 1000) + self.skew_ms

    def later(self, delay: float, fn: Any, *args: Any) -> None:
        """A timer of this process: dropped if it crashes, deferred while it is paused."""
        self.w.net.call_at(self.addr, self.w.loop.now + delay, self._timer, fn, args)

    def _timer(self, _now: float, fn: Any, args: tuple[Any, ...]) -> None:
        if self.alive:
            fn(*args)

    def start(self) -> None:
        self.recompute_table()
        self.later(self.rng.random() * TICK, self.tick)
        self.later(self.rng.random() * self.w.cfg.ae_period, self.ae_tick)

    def stop(self) -> None:
        self.alive = False

    # ---- table and roles ------------------------------------------------------------------
    def view_changed(self) -> None:
        if not self.table_due:
            self.table_due = True
            self.later(TABLE_DEBOUNCE, self.recompute_table)

    def recompute_table(self) -> None:
        self.table_due = False
        table = self.w.table_for(self.w.view_of(self.name))
        if table is self.table:
            return
        self.table = table
        me = self.name
        leave: dict[str, list[int]] = {}
        for p in range(table.partition_count):
            owner = table.owner(p)
            if owner == me and p not in self.logs:
                pos = self.positions.pop(p, None)
                src = self.source_of.pop(p, None)
                if src is not None:
                    leave.setdefault(src, []).append(p)
                self.inv.shadow.pop((me, p), None)
                plog = PrimaryLog(new_term(self.rng), pos.seq if pos is not None else 0)
                self.logs[p] = plog
                self.inv.became_primary(me, p, plog.term, plog.seq)
                self.w.stats.promotions += 1
            elif owner != me and p in self.logs:
                plog = self.logs.pop(p)
                self.inv.stopped_primary(me, p)
                self.positions[p] = FollowerLog(plog.term, plog.seq, Phase.LIVE)
                self.inv.position(me, p, plog.term, plog.seq)
                for f in self.subs.pop(p, {}):
                    self.enqueue(f, [wire.REFUSED, p])
        for src, parts in leave.items():
            self.follow_send(src, [], parts)
        self.reconcile()

    def roles(self, p: int) -> bool:
        """Whether this member has any role for p (primary, backup, following)."""
        return (
            p in self.logs
            or p in self.source_of
            or (self.table is not None and self.name in self.table.replicas(p))
        )

    def reconcile(self) -> None:
        """Follow the primary of every partition the table makes us a backup of."""
        table = self.table
        if table is None:
            return
        want: dict[int, str] = {}
        for p in table.partitions_of(self.name).backup:
            want[p] = table.owner(p)
        stop: dict[str, list[int]] = {}
        for p, src in list(self.source_of.items()):
            if want.get(p) != src:
                stop.setdefault(src, []).append(p)
                del self.source_of[p]
        start: dict[str, list[int]] = {}
        for p, src in want.items():
            if self.source_of.get(p) != src:
                self.source_of[p] = src
                start.setdefault(src, []).append(p)
        for src, parts in stop.items():
            self.follow_send(src, [], parts)
        for src, parts in start.items():
            self.follow_send(src, [self.subscription(p) for p in parts], [])

    def position(self, p: int) -> FollowerLog:
        st = self.positions.get(p)
        if st is None:
            st = self.positions[p] = FollowerLog()
            self.inv.position(self.name, p, 0, 0)
        return st

    def subscription(self, p: int) -> list[int]:
        st = self.position(p)
        if st.phase is Phase.SNAPSHOT:  # a half-received snapshot is worth nothing
            st.term, st.seq = 0, 0
            self.inv.position(self.name, p, 0, 0)
        st.resubscribe()
        self.asked_at[p] = self.w.loop.now
        return [p, st.term, st.seq]

    def tick(self) -> None:
        """Keepalives to every primary we follow; subscriptions refused or stuck again."""
        now = self.w.loop.now
        self.reconcile()
        stuck: dict[str, list[list[int]]] = {}
        for p, src in self.source_of.items():
            st = self.positions.get(p)
            if (
                st is not None
                and st.phase is not Phase.LIVE
                and now - self.asked_at.get(p, now) > STUCK_AFTER
            ):
                stuck.setdefault(src, []).append(self.subscription(p))
                self.w.stats.stuck_resubscribes += 1
        for src in sorted(set(self.source_of.values())):
            if src not in self.reconnecting:
                self.follow_send(src, stuck.get(src, []), [])
        self.later(TICK, self.tick)

    # ---- streams ---------------------------------------------------------------------------
    def follow_send(
        self,
        primary: str,
        subscribe: list[list[int]],
        unsubscribe: list[int],
        acks: list[list[int]] | None = None,
    ) -> None:
        epoch = self.w.stream_epoch(self.name, primary)
        msg = [wire.F, epoch, subscribe, unsubscribe, acks or []]
        self.w.stream_send(self.name, primary, self.name, primary, wire.pack(msg))

    def enqueue(self, follower: str, chunk: list[Any]) -> None:
        self.outbox.setdefault(follower, []).append(chunk)
        self.schedule_flush()

    def enqueue_mut(self, follower: str, p: int, seq: int, term: int, rec: list[Any]) -> None:
        box = self.outbox.setdefault(follower, [])
        last = box[-1] if box else None
        if (
            last is not None
            and last[0] == wire.MUT
            and last[1] == p
            and last[3] == term
            and last[2] + len(last[4]) == seq
        ):
            last[4].append(rec)
        else:
            box.append([wire.MUT, p, seq, term, [rec]])
        self.schedule_flush()

    def schedule_flush(self) -> None:
        if not self.flush_due:
            self.flush_due = True
            self.later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        self.flush_due = False
        outbox, self.outbox = self.outbox, {}
        for f, chunks in outbox.items():
            epoch = self.w.stream_epoch(f, self.name)
            self.w.stream_send(self.name, f, f, self.name, wire.pack([wire.S, epoch, chunks]))

    def stream_broken_primary_side(self, follower: str) -> None:
        """The Follow stream of `follower` ended: its session and queue go (grid/replica.py)."""
        for subs in self.subs.values():
            subs.pop(follower, None)
        self.outbox.pop(follower, None)

    def stream_broken_follower_side(self, primary: str) -> None:
        """Reconnect with backoff, then resubscribe everything followed from there."""
        if primary in self.reconnecting:
            return  # one reconnect loop per primary, as one Upstream task in grid/follower.py
        self.reconnecting[primary] = None
        attempt = min(self.retry.get(primary, 0) + 1, 10)
        self.retry[primary] = attempt
        delay = min(RETRY_CAP, RETRY_BASE * 2**attempt) * (0.5 + self.rng.random() / 2)
        self.later(delay, self.reconnect, primary)

    def reconnect(self, primary: str) -> None:
        del self.reconnecting[primary]
        parts = [p for p, src in self.source_of.items() if src == primary]
        if parts:
            self.follow_send(primary, [self.subscription(p) for p in parts], [])

    # ---- receiving -------------------------------------------------------------------------
    def receive(self, now: float, src_addr: str, payload: bytes, reliable: bool) -> None:
        if not self.alive:
            return
        msg = wire.unpack(payload)
        kind = msg[0]
        src = self.w.member_of(src_addr)
        if kind == wire.S:
            self.on_stream(src, msg[1], msg[2])
        elif kind == wire.F:
            self.on_follow(src, msg[1], msg[2], msg[3], msg[4])
        elif kind == wire.W:
            self.on_write(src_addr, msg[1], msg[2], msg[3], msg[4])
        elif kind == wire.AR:
            self.on_ae_roots(src, msg[1], msg[2], msg[3])
        elif kind == wire.AB:
            self.on_ae_buckets(src, msg[1], msg[2], msg[3])
        elif kind == wire.AX:
            self.on_ae_records(src, msg[1], msg[2], msg[3])
        elif kind == wire.P:
            self.on_push(src, msg[1], msg[2], msg[3])
        elif kind == wire.PA:
            self.on_push_ack(msg[1], msg[2])

    # ---- primary side ----------------------------------------------------------------------
    def on_write(self, client: str, req: int, key: bytes, value: bytes | None, hops: int) -> None:
        table = self.table
        p = partition_of(key, self.w.cfg.partitions)
        plog = self.logs.get(p)
        if table is None or plog is None or table.owner(p) != self.name:
            hint = table.owner(p) if table is not None else ""
            reply = [wire.WR, req, wire.NOT_OWNER, 0, 0, hint]
        else:
            old = self.store.get(p, key)
            v = self.clock.tick()
            self.inv.stamped(self.name, p, key, value, v, old)
            self.store.apply(p, key, value, v.ts, v.member)
            rec = [key, value, v.ts, v.member]
            seq = plog.append(rec, self.w.loop.now)
            self.inv.appended(self.name, p, plog.term, seq)
            for f in self.subs.get(p, {}):
                self.enqueue_mut(f, p, seq, plog.term, rec)
            reply = [wire.WR, req, wire.OK, v.ts, v.member, ""]
        self.w.net.send(self.addr, client, wire.pack(reply), False)

    def on_follow(
        self,
        follower: str,
        epoch: int,
        subscribe: list[list[int]],
        unsubscribe: list[int],
        acks: list[list[int]],
    ) -> None:
        if epoch != self.w.stream_epoch(follower, self.name):
            return  # sent on a stream that has broken since
        for p in unsubscribe:
            subs = self.subs.get(p)
            if subs is not None:
                subs.pop(follower, None)
        for p, term, seq in subscribe:
            self.subscribe(follower, p, term, seq)

    def subscribe(self, f: str, p: int, term: int, seq: int) -> None:
        """Queue what the follower lacks, then follow live changes (grid/replica.py)."""
        plog = self.logs.get(p)
        if plog is None:
            self.enqueue(f, [wire.REFUSED, p])
            return
        missing = plog.since(term, seq)
        if missing is not None:
            self.enqueue(f, [wire.END, p, plog.term, seq])
            for s, rec in missing:
                self.enqueue_mut(f, p, s, plog.term, rec)
            self.w.stats.catchups += 1
        else:
            recs = self.store.records(p)
            self.enqueue(f, [wire.BEGIN, p])
            for i in range(0, len(recs), SNAPSHOT_CHUNK):
                self.enqueue(f, [wire.SNAP, p, recs[i : i + SNAPSHOT_CHUNK]])
            self.enqueue(f, [wire.END, p, plog.term, plog.seq])
            self.w.stats.snapshots += 1
        self.subs.setdefault(p, {})[f] = None

    # ---- follower side ---------------------------------------------------------------------
    def on_stream(self, src: str, epoch: int, chunks: list[list[Any]]) -> None:
        if epoch != self.w.stream_epoch(self.name, src):
            return
        self.retry.pop(src, None)
        inv, me, store = self.inv, self.name, self.store
        acks: dict[int, int] = {}
        resync: dict[int, None] = {}
        for chunk in chunks:
            ck, p = chunk[0], chunk[1]
            if self.source_of.get(p) != src:
                continue  # unsubscribed meanwhile
            st = self.position(p)
            if ck == wire.MUT:
                first, term, recs = chunk[2], chunk[3], chunk[4]
                verdict, skip = st.mutations(first, len(recs))
                if verdict is Verdict.RESYNC:
                    resync[p] = None
                    continue
                if verdict is Verdict.APPLY:
                    inv.mutations(me, p, term, first + skip, first + len(recs) - 1)
                    self.merge(p, recs[skip:])
                acks[p] = st.seq
            elif ck == wire.BEGIN:
                st.snapshot_begin()
                inv.snapshot_begin(me, p)
                if self.w.cfg.snapshot_drops:
                    store.drop(p)
            elif ck == wire.SNAP:
                if st.snapshot_records() is Verdict.RESYNC:
                    resync[p] = None
                    continue
                self.merge(p, chunk[2])
            elif ck == wire.END:
                was_snapshot = st.phase is Phase.SNAPSHOT
                if st.snapshot_end(chunk[2], chunk[3]) is Verdict.RESYNC:
                    resync[p] = None
                    continue
                inv.live(me, p, st.term, st.seq, was_snapshot)
                acks[p] = st.seq
            elif ck == wire.REFUSED:
                del self.source_of[p]  # tick() asks again while the table still wants it
        for p in resync:
            st = self.positions[p]
            st.term, st.seq = 0, 0  # ask for a snapshot, as grid/follower.py does
            inv.position(me, p, 0, 0)
            self.w.stats.resyncs += 1
        subscribe = [self.subscription(p) for p in resync]
        if subscribe or acks:
            self.follow_send(src, subscribe, [], [[p, s] for p, s in acks.items()])

    def merge(self, p: int, recs: list[list[Any]]) -> int:
        """LWW-apply records from another member, moving our clock past them."""
        n = 0
        observe, apply = self.clock.observe, self.store.apply
        for key, value, ts, member in recs:
            observe(ts)
            n += apply(p, key, value, ts, member)
        return n

    # ---- anti-entropy ----------------------------------------------------------------------
    def ae_tick(self) -> None:
        self.later(self.w.cfg.ae_period, self.ae_tick)
        table = self.table
        if table is None:
            return
        self.ae_round += 1
        cut = (self._now_ms() - AE_CUT_LAG_MS) << 16
        roots: dict[str, list[list[int]]] = {}
        for p in self.logs:
            for b in table.replicas(p)[1:]:
                roots.setdefault(b, []).append([p, self.store.digest(p, cut).root])
        for b, rs in roots.items():
            self.send(b, [wire.AR, self.ae_round, cut, rs])
            self.w.stats.ae_rounds += 1
        for p in self.store.held():
            if not self.roles(p):
                recs = self.store.records(p)
                root = self.store.digest(p).root
                self.pushed[p] = root
                self.send(table.owner(p), [wire.P, p, recs, root])
                self.w.stats.pushes += 1

    def send(self, member: str, msg: list[Any]) -> None:
        self.w.net.send(self.addr, self.w.raddr(member), wire.pack(msg), False)

    def on_ae_roots(self, src: str, rnd: int, cut: int, roots: list[list[int]]) -> None:
        diffs = []
        for p, root in roots:
            mine = self.store.digest(p, cut)
            if mine.root != root:
                diffs.append([p, mine.pack()])
        if diffs:
            self.send(src, [wire.AB, rnd, cut, diffs])

    def on_ae_buckets(self, src: str, rnd: int, cut: int, diffs: list[list[Any]]) -> None:
        out = []
        for p, packed in diffs:
            mine = self.store.digest(p, cut).buckets
            buckets = differing(mine, unpack_buckets(packed))
            out.append([p, buckets, self.store.records(p, set(buckets))])
        if out:
            self.send(src, [wire.AX, rnd, out, 1])

    def on_ae_records(self, src: str, rnd: int, items: list[list[Any]], reply: int) -> None:
        back = []
        for p, buckets, recs in items:
            if reply:
                back.append([p, buckets, self.store.records(p, set(buckets))])
            self.w.stats.ae_repaired += self.merge(p, recs)
        if back:
            self.send(src, [wire.AX, rnd, back, 0])

    def on_push(self, src: str, p: int, recs: list[list[Any]], root: int) -> None:
        self.w.stats.ae_repaired += self.merge(p, recs)
        self.send(src, [wire.PA, p, root])

    def on_push_ack(self, p: int, root: int) -> None:
        if not self.roles(p) and self.pushed.get(p) == root == self.store.digest(p).root:
            self.store.drop(p)
            self.positions.pop(p, None)
            self.inv.shadow.pop((self.name, p), None)
            del self.pushed[p]
            self.w.stats.handed_off_copies += 1
