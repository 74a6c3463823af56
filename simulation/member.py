"""One simulated member: the production replication cores over the real store.

Nothing here models the protocol. A member is `grid.store.Store` (the same
class a real member serves from) with `replication.primary.Primary` and
`replication.follower.Follower` (the same cores grid/replica.py and
grid/follower.py carry out), and this module is their runtime in the
simulated world, as grid/ is theirs on gRPC:

- **Tables.** Each member computes its table from its own membership view
  (`partitioning.build_table` over its alive and suspected members, debounced
  like a coordinator's round). That is a superset of what the real runtime
  allows (its coordinator publishes one table per side of a split), so two
  members may both believe they are primary of a partition and both take
  writes; last writer wins and anti-entropy merge those histories. The store's
  `owned` is the table's primaries for this member, as grid/routing.py keeps it.
- **Streams** are gRPC Follow streams: FIFO and never silently lossy. A
  message the network would lose, or cannot deliver, *breaks* the stream
  instead (`World.stream_send`): the epoch moves on, what was in flight on the
  old one is discarded, the primary closes the follower's `Downstream` when a
  message of a newer epoch arrives (as a reconnect's `serve_follow` does), and
  the follower reconnects with backoff and subscribes everything again from
  what it has. A follower sends a keepalive every second, so an idle stream
  across a cut breaks too.
- **Sending.** Changes queue in the core; a sender drains each ready follower
  `FLUSH_DELAY` later (the real sender's linger), a message per `drain`.
- **Anti-entropy** every `ae_period` from each primary to each backup with the
  store's digests (grid/store/copies.py): roots at a cut 2 s in the past,
  bucket digests of partitions whose roots differ, then the records of the
  differing buckets both ways, merged by `Store.apply`. These exchanges are
  datagrams, lost on loss or a cut; the next round repeats them.
- **Copies with no role** (`Follower.unheld`) are handed back before they go:
  their records are pushed to the primary, and the copy is dropped once the
  primary acknowledged exactly that copy (grid/follower.py hands back through
  anti-entropy, then drops).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from xxhash import xxh32_intdigest

from grid.config import Config
from grid.store.copies import digest, records_in, snapshot_records
from grid.store.store import DELETE, DROPPED, Store
from partitioning.keys import partition_of
from partitioning.table import PartitionTable
from replication.digest import differing, unpack_buckets
from replication.follower import Follower
from replication.map_backups import MapBackups
from replication.primary import Chunk, Primary
from simulation import wire

if TYPE_CHECKING:
    from simulation.world import World

MAP = "m"
"""One map per simulated cluster."""
FLUSH_DELAY = 0.002
"""A follower's sender drains its queue this long after the first change: the linger."""
TABLE_DEBOUNCE = 0.5
"""A burst of membership events (a join's push-pull brings dozens, a split kills half
the members over a few seconds) makes one table, as a coordinator batches them."""
TICK = 1.0
"""Follower keepalives, and subscriptions the table still wants after a refusal."""
AE_CUT_LAG_MS = 2000
RETRY_BASE, RETRY_CAP = 0.05, 2.0
EPOCH_MS = 1_000_000_000_000
"""Wall ms at virtual time 0 (a date in 2001): HLC timestamps look like real ones."""


def member_id(name: str) -> int:
    """The 32-bit member id of a version (xxh32 of the name, as grid/member.py)."""
    return xxh32_intdigest(name.encode())


class SimChunk(NamedTuple):
    """A chunk as the follower core reads it (proto's Chunk has the same fields)."""

    kind: int
    partition: int
    seq: int
    records: tuple[Any, ...]
    term: int
    epoch: int
    error: str
    count: int


def encode_chunk(c: Chunk) -> list[Any]:
    return [int(c.kind), c.partition, c.seq, c.records or [], c.term, c.epoch, c.error]


def decode_chunk(raw: Sequence[Any]) -> SimChunk:
    kind, p, seq, records, term, epoch, error = raw
    recs = tuple(tuple(r) for r in records)
    return SimChunk(kind, p, seq, recs, term, epoch, error, len(recs))


def new_store(world: World, name: str) -> Store:
    config = Config(
        partitions=world.cfg.partitions,
        backups=world.cfg.backups,
        tombstone_grace_s=1e6,  # longer than any run: a final check compares every delete
    )
    skew = world.skew_ms[name]
    loop = world.loop

    def now_ms() -> int:
        return EPOCH_MS + int(loop.now * 1000) + skew

    return Store(config, member_id(name), clock=now_ms, rng=random.Random(f"store:{name}"))


def copy_of(store: Store, p: int) -> dict[bytes, tuple[bytes | None, int, int]]:
    """The partition as the final checks compare it: key -> (value or None, ts, member)."""
    rmap = store.maps.get(MAP)
    if rmap is None:
        return {}
    out: dict[bytes, tuple[bytes | None, int, int]] = {
        k: (None, ts, m) for k, (ts, m) in rmap.tombs[p].items()
    }
    for k, e in rmap.parts[p].items():
        out[k] = (e.value, e.ts, e.member)
    return out


class SimMember:
    """The replication runtime of one member incarnation (a restart makes a new one)."""

    def __init__(self, world: World, name: str, store: Store, incarnation: int) -> None:
        self.w = world
        self.name = name
        self.addr = world.raddr(name)
        self.store = store
        self.inv = world.inv
        self.rng = random.Random(f"member:{world.cfg.seed}:{name}:{incarnation}")
        self.alive = True
        self.table: PartitionTable | None = None
        self.table_due = False
        store.owned = bytearray(world.cfg.partitions)
        backups = world.cfg.backups
        self.primary = Primary(
            name,
            world.cfg.partitions,
            self.serves,
            lambda p, held: snapshot_records(store, p, store.clock(), held),
            MapBackups(backups, {}, backups),
            rng=self.rng,
        )
        self.follower = Follower(name, self.primary, self._apply, self._decode, self.owner)
        store.sink = self._sink
        self.stream_epochs: dict[str, int] = {}  # follower -> epoch of its Downstream here
        self.flush_due = False
        self.retry: dict[str, int] = {}
        self.reconnecting: dict[str, None] = {}
        self.ae_round = 0
        self.pushed: dict[int, int] = {}
        self._writing = False

    # ---- time and timers ----------------------------------------------------------------
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
        """The process ends (a crash, or the run's end): its cores' counters are summed."""
        if self.alive:
            self.alive = False
            stats = self.w.stats
            stats.snapshots += self.primary.snapshots_sent
            stats.catchups += self.primary.caught_up

    # ---- routing, as grid/routing.py keeps it --------------------------------------------
    def serves(self, p: int) -> bool:
        return bool(self.store.owned[p])  # type: ignore[index]

    def owner(self, p: int) -> str | None:
        return self.table.owner(p) if self.table is not None else None

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
        owned = bytearray(table.partition_count)
        for p in table.partitions_of(self.name).primary:
            owned[p] = 1
        self.store.owned = owned
        before = {p: plog.term for p, plog in self.primary.logs.items()}
        self.primary.on_table(table.replicas)
        for p in before.keys() - self.primary.logs.keys():
            self.inv.stopped_primary(self.name, p)
        for p, plog in sorted(self.primary.logs.items()):
            if p not in before:
                base = self.inv.copy(self.name, p)
                self.inv.became_primary(self.name, p, plog.term, plog.seq, base)
                self.w.stats.promotions += 1
        self.reconcile()
        self.send_ready()

    def reconcile(self) -> None:
        """Follow what the table wants (replication/follower.py decides)."""
        plan = self.follower.reconcile(self.table, self.w.loop.now)
        for src, parts in sorted(plan.unsubscribe.items()):
            self.follow_send(src, [], parts)
        for src, parts in sorted(plan.subscribe.items()):
            self.follow_send(src, self.subscriptions(parts), [])

    def subscriptions(self, parts: Sequence[int]) -> list[list[int]]:
        out = []
        for sub in self.follower.subscriptions(parts):
            self.inv.position(self.name, sub.partition, sub.have_term, sub.have_seq)
            out.append([sub.partition, sub.have_term, sub.have_seq, int(sub.all_maps)])
        return out

    def tick(self) -> None:
        """Keepalives to every primary followed; what a refusal left unfollowed, again."""
        self.reconcile()
        for src in sorted(self.follower.upstreams):
            if src not in self.reconnecting:
                self.follow_send(src, [], [])
        self.later(TICK, self.tick)

    # ---- the store's sink: every change applied here -------------------------------------
    def _sink(
        self,
        p: int,
        op: int,
        map_name: str,
        key: bytes,
        value: bytes | None,
        ts: int,
        member: int,
        expire_at: int,
        max_idle: int,
    ) -> None:
        if op == DROPPED:
            self.inv.dropped(self.name, p)
            return
        if self._writing:  # a client's write stamped here
            self.inv.stamped(self.name, p, key, value, ts, member)
        self.inv.stored(self.name, p, key, value if op != DELETE else None, ts, member)
        plog = self.primary.logs.get(p)
        self.primary.record(p, op, map_name, key, value, ts, member, expire_at, max_idle)
        if plog is not None:
            self.inv.appended(self.name, p, plog.term, plog.seq, key, (ts, member))
        if self.primary.ready:
            self.schedule_flush()

    def _apply(self, p: int, *record: Any) -> bool:
        """A change from another member: last writer wins (`Store.apply`)."""
        return self.store.apply(p, *record)

    @staticmethod
    def _decode(chunk: SimChunk) -> tuple[Any, ...]:
        return chunk.records

    # ---- streams ---------------------------------------------------------------------------
    def follow_send(
        self,
        primary: str,
        subscribe: list[list[int]],
        unsubscribe: list[int],
        acks: list[list[int]] | None = None,
        taken: list[int] | None = None,
    ) -> None:
        epoch = self.w.stream_epoch(self.name, primary)
        msg = [wire.F, epoch, subscribe, unsubscribe, acks or [], taken or []]
        self.w.stream_send(self.name, primary, self.name, primary, wire.pack(msg))

    def schedule_flush(self) -> None:
        if not self.flush_due:
            self.flush_due = True
            self.later(FLUSH_DELAY, self.flush)

    def send_ready(self) -> None:
        if self.primary.ready or self.primary.closing:
            self.schedule_flush()

    def flush(self) -> None:
        """Each ready follower's sender: drain its queue into messages."""
        self.flush_due = False
        core = self.primary
        for f, why in core.take_closing():
            self.w.note(f"{self.name} cuts off {f.name}: {why}")
            self.w.break_stream(f.name, self.name)
        for f in sorted(core.take_ready(), key=lambda d: d.name):
            if f.closed or core.streams.get(f.name) is not f:
                continue
            core.sending(f)
            epoch = self.stream_epochs.get(f.name, 0)
            while f.queue and not f.closed:
                chunks, _ = core.drain(f)
                payload = wire.pack([wire.S, epoch, [encode_chunk(c) for c in chunks]])
                self.w.stream_send(self.name, f.name, f.name, self.name, payload)

    def stream_broken_follower_side(self, primary: str) -> None:
        """Reconnect with backoff, then subscribe everything followed from there."""
        for p in self.follower.stream_lost(primary):
            self.inv.position(self.name, p, 0, 0)
        if primary in self.reconnecting:
            return  # one reconnect loop per primary, as one Upstream task in grid/follower.py
        self.reconnecting[primary] = None
        attempt = min(self.retry.get(primary, 0) + 1, 10)
        self.retry[primary] = attempt
        delay = min(RETRY_CAP, RETRY_BASE * 2**attempt) * (0.5 + self.rng.random() / 2)
        self.later(delay, self.reconnect, primary)

    def reconnect(self, primary: str) -> None:
        del self.reconnecting[primary]
        parts = sorted(self.follower.upstreams.get(primary, ()))
        if parts:
            self.follow_send(primary, self.subscriptions(parts), [])

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
            self.on_follow(src, msg[1], msg[2], msg[3], msg[4], msg[5])
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
        store = self.store
        p = partition_of(key, self.w.cfg.partitions)
        if not self.serves(p):
            owner = self.owner(p)
            reply = [wire.WR, req, wire.NOT_OWNER, 0, 0, owner or ""]
        else:
            rmap = store.map(MAP)
            now = store.clock()
            self._writing = True
            try:
                if value is None:
                    store.delete(rmap, key, now)
                    ts, member = rmap.tombs[p][key]
                else:
                    e = store.put(rmap, key, value, now)
                    ts, member = e.ts, e.member
            finally:
                self._writing = False
            reply = [wire.WR, req, wire.OK, ts, member, ""]
        self.w.net.send(self.addr, client, wire.pack(reply), False)

    def on_follow(
        self,
        follower: str,
        epoch: int,
        subscribe: list[list[int]],
        unsubscribe: list[int],
        acks: list[list[int]],
        taken: list[int],
    ) -> None:
        if epoch != self.w.stream_epoch(follower, self.name):
            return  # sent on a stream that has broken since
        core = self.primary
        f = core.streams.get(follower)
        if f is None or self.stream_epochs.get(follower) != epoch:
            if f is not None:  # the follower reconnected: its old stream is over
                core.close_stream(f)
            f = core.open_stream(follower)
            self.stream_epochs[follower] = epoch
        for p, seq in acks:
            core.ack(f, p, seq)
        for p in taken:
            core.taken_over(f, p)
        core.unsubscribe(f, unsubscribe)
        for p, term, seq, all_maps in subscribe:
            core.subscribe(f, p, term, seq, bool(all_maps))
            self.w.stats.subscriptions += 1
        self.send_ready()

    # ---- follower side ---------------------------------------------------------------------
    def on_stream(self, src: str, epoch: int, raw: list[list[Any]]) -> None:
        if epoch != self.w.stream_epoch(self.name, src):
            return
        self.retry.pop(src, None)
        chunks = [decode_chunk(c) for c in raw]
        subscribed = set(self.follower.upstreams.get(src, ()))
        got = self.follower.receive(src, chunks, self.store.clock())
        self.inv.received(
            self.name, subscribed, chunks, self.follower.state, self.version_of, got.resync
        )
        self.w.stats.resyncs += len(got.resync)
        subscribe = self.subscriptions(got.resync) if got.resync else []
        acks = [[p, s] for p, s in sorted(got.acks.items())]
        if subscribe or acks:
            self.follow_send(src, subscribe, [], acks, [p for p, _ in got.taken])

    def version_of(self, p: int, key: bytes) -> tuple[int, int] | None:
        """The version of `key` this member's store holds: its entry's or tombstone's."""
        rmap = self.store.maps.get(MAP)
        if rmap is None:
            return None
        e = rmap.parts[p].get(key)
        if e is not None:
            return (e.ts, e.member)
        dead = rmap.tombs[p].get(key)
        return (dead[0], dead[1]) if dead is not None else None

    # ---- anti-entropy ----------------------------------------------------------------------
    def ae_tick(self) -> None:
        self.later(self.w.cfg.ae_period, self.ae_tick)
        table = self.table
        if table is None:
            return
        self.ae_round += 1
        store = self.store
        now = store.clock()
        cut = (now - AE_CUT_LAG_MS) << 16
        roots: dict[str, list[list[int]]] = {}
        for p in sorted(self.primary.logs):
            for b in table.replicas(p)[1:]:
                roots.setdefault(b, []).append([p, digest(store, p, cut, now).root])
        for b, rs in sorted(roots.items()):
            self.send(b, [wire.AR, self.ae_round, cut, rs])
            self.w.stats.ae_rounds += 1
        for p in range(table.partition_count):
            if store.holds_copy(p) and self.follower.unheld(p, table):
                recs = snapshot_records(store, p, now)
                root = digest(store, p, 1 << 63, now).root
                self.pushed[p] = root
                self.send(table.owner(p), [wire.P, p, recs, root])
                self.w.stats.pushes += 1

    def send(self, member: str, msg: list[Any]) -> None:
        self.w.net.send(self.addr, self.w.raddr(member), wire.pack(msg), False)

    def on_ae_roots(self, src: str, rnd: int, cut: int, roots: list[list[int]]) -> None:
        diffs = []
        now = self.store.clock()
        for p, root in roots:
            mine = digest(self.store, p, cut, now)
            if mine.root != root:
                diffs.append([p, mine.pack()])
        if diffs:
            self.send(src, [wire.AB, rnd, cut, diffs])

    def on_ae_buckets(self, src: str, rnd: int, cut: int, diffs: list[list[Any]]) -> None:
        out = []
        now = self.store.clock()
        for p, packed in diffs:
            mine = digest(self.store, p, cut, now).buckets
            buckets = differing(mine, unpack_buckets(packed))
            out.append([p, buckets, cut, records_in(self.store, p, buckets, cut, now)])
        if out:
            self.send(src, [wire.AX, rnd, out, 1])

    def on_ae_records(self, src: str, rnd: int, items: list[list[Any]], reply: int) -> None:
        back = []
        now = self.store.clock()
        for p, buckets, cut, recs in items:
            if reply:
                back.append([p, buckets, cut, records_in(self.store, p, buckets, cut, now)])
            self.w.stats.ae_repaired += self.merge(p, recs)
        if back:
            self.send(src, [wire.AX, rnd, back, 0])

    def merge(self, p: int, recs: Sequence[Sequence[Any]]) -> int:
        now = self.store.clock()
        return sum(bool(self.store.apply(p, *r, now)) for r in recs)

    def on_push(self, src: str, p: int, recs: list[list[Any]], root: int) -> None:
        self.w.stats.ae_repaired += self.merge(p, recs)
        self.send(src, [wire.PA, p, root])

    def on_push_ack(self, p: int, root: int) -> None:
        store = self.store
        if (
            self.pushed.get(p) == root
            and self.follower.unheld(p, self.table)
            and digest(store, p, 1 << 63, store.clock()).root == root
        ):
            store.drop_partition(p)
            self.follower.dropped(p)
            self.inv.position(self.name, p, 0, 0)
            del self.pushed[p]
            self.w.stats.handed_off_copies += 1
