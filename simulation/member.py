"""One simulated member: the production cores over the real store.

Nothing here models the protocol. A member is `grid.store.Store` (the same
class a real member serves from) with `replication.primary.Primary` and
`replication.follower.Follower` (the cores grid/member/replicas/replica.py and
grid/member/replicas/follower.py carry out), `partitioning.ownership.Ownership` (what
grid/member/placement/routing.py keeps) and a `partitioning.Rebalancer` with its shell
(simulation/coordinator.py, as grid/member/placement/coordinator.py); this module is their
runtime in the simulated world, as grid/ is theirs on gRPC:

- **Tables** come from the coordinator, as in grid: every member runs the
  rebalancer, and the one that coordinates publishes; a member installs a
  table newer than its own (`Ownership.install`), which starts the streams it
  asks for (`Primary.on_table`, `Follower.reconcile`). `store.owned` is
  `Ownership.owned()`, kept as grid/member/placement/routing.py keeps it. A member's installed
  table and its unsettled hand-offs (`Ownership.moved`) survive a crash with its
  store (persist mode: `table.json`, `Saved`).
- **Start and restart** as grid/member/runtime.py: wait (bounded) to be
  admitted by the gossip, restore the saved table (`Ownership.restarted`,
  `Rebalancer.restarted`), start the coordinator loop, then `first_table`:
  ask the live members for their tables and, if the saved one is still the
  newest, start its streams (`Ownership.start_saved`); a member with no table
  waits for one.
- **Peer calls** (simulation/rpc.py): TABLE and PUBLISH answer the version
  held; FILL follows the partitions from the source (`Follower.fill`) and
  answers when each is live, failed (a refusal, a lost stream) or timed out;
  HANDOFF runs `Primary.handoff` (ownership moves at once) and answers when
  the new owner says `taken_over`, or fails at the deadline or when the
  stream closes: it takes the partition back only if HANDOFF never left
  (`Primary.handoff_failed`), else it serves nothing of it until the table of
  the hand-off's epoch. A PUBLISH answer also carries `Ownership.unsettled`
  and `Ownership.lacking`; a TABLE request tells the rebalancer who asked
  (`Rebalancer.asked`); LEAVE is the coordinator's.
- **Streams** are gRPC Follow streams: FIFO and never silently lossy. A
  message the network would lose, or cannot deliver, *breaks* the stream
  instead (`World.stream_send`): the epoch moves on, what was in flight on the
  old one is discarded, the primary closes the follower's `Downstream` when a
  message of a newer epoch arrives (as a reconnect's `serve_follow` does), and
  the follower reconnects with backoff and subscribes everything again from
  what it has. A follower sends a keepalive every second, so an idle stream
  across a cut breaks too. A refused subscription is looked at again 0.2 s
  later, as grid/member/replicas/follower.py does.
- **Sending.** Changes queue in the core; a sender drains each ready follower
  `FLUSH_DELAY` later (the real sender's linger), a message per `drain`.
- **Anti-entropy** every `ae_period` from each primary to each backup with the
  store's digests (grid/store/copies.py): roots at a cut 2 s in the past,
  bucket digests of partitions whose roots differ, then the records of the
  differing buckets both ways, merged by `Store.apply`. These exchanges are
  datagrams, lost on loss or a cut; the next round repeats them.
- **Copies with no role** (`Follower.unheld`) are handed back before they go:
  their records are pushed to the primary, and the copy is dropped once the
  primary acknowledged exactly that copy (grid/member/replicas/follower.py hands back through
  anti-entropy, then drops).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from xxhash import xxh32_intdigest

from grid.config import Config
from grid.store.copies import StoreCopies, digest, snapshot_records
from grid.store.recordmap import ZERO
from grid.store.store import DELETE, DROPPED, INCR, Store
from membership.state import MemberState
from partitioning.keys import partition_of
from partitioning.leave import Departed
from partitioning.ownership import Moved, Ownership
from partitioning.rebalancer import Rebalancer
from partitioning.table import PartitionTable
from replication.antientropy import Compared, Differing, Reconciler, Repaired
from replication.digest import Digest
from replication.follower import FILL_LINGER_S, Follower
from replication.map_backups import MapBackups
from replication.primary import Chunk, Primary, known_members
from simulation import wire
from simulation.coordinator import (
    CONFIRM_TABLE_S,
    FILL_TIMEOUT_S,
    PULSE_S,
    STALL_FENCE_S,
    SimCoordinator,
)
from simulation.disk import Disks
from simulation.invariants import CLEAR_KEY
from simulation.rpc import Result, Rpc
from simulation.tasks import Future, Task, gather, spawn

if TYPE_CHECKING:
    from simulation.world import World

MAP = "m"
"""The plain clients' map: every write asynchronous to the backups."""
SYNC_MAP = "s"
"""The map written with sync backups (`map_sync_backups`, SimConfig.sync_backups): keys
b"s<i>" and the counters b"c<i>"; the plain map's keys are b"k<i>", so a key names its
map and the checks can keep one namespace."""
SYNC_TIMEOUT_S = 5.0
"""grid's `sync_backup_timeout_s` default: past it a sync write is answered UNCONFIRMED."""
SYNC_POLL_S, SYNC_IDLE_S = 0.1, 0.05
"""As grid/member/replicas/replica.py's wait_backups: look again at most this long after
a wait began (the table may have changed), or this long when nobody could be waited for."""
FLUSH_DELAY = 0.002
"""A follower's sender drains its queue this long after the first change: the linger."""
TICK = 1.0
"""Follower keepalives."""
REFUSED_RETRY_S = 0.2
"""A refused subscription is tried again this soon, while still wanted
(grid/member/replicas/follower.py)."""
HANDOFF_ACK_TIMEOUT_S = 10.0
"""How long a primary waits for the new owner's `taken_over` (grid/member/replicas/replica.py)."""
JOIN_WAIT_S = 3.0
"""How long a starting member waits to be admitted by the gossip (grid/member/gossip/runtime.py)."""
FIRST_TABLE_TIMEOUT_S = 30.0
"""How long a starting member waits for its first table (grid/member/runtime.py)."""
WAVE_SIZE = 2
"""Partitions moved at once: grid's `migration_max_parallel` default."""
RESTART_WAIT_S = 30.0
"""grid's `restart_wait_s` default."""
AE_CUT_LAG_MS = 2000
RETRY_BASE, RETRY_CAP = 0.05, 2.0
EPOCH_MS = 1_000_000_000_000
"""Wall ms at virtual time 0 (a date in 2001): HLC timestamps look like real ones."""


def member_id(name: str) -> int:
    """The 32-bit member id of a version (xxh32 of the name, as grid/member/member.py)."""
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


def map_of(key: bytes) -> str:
    """The map a client key belongs to (see SYNC_MAP)."""
    return SYNC_MAP if key[:1] in (b"s", b"c") else MAP


def store_config(world: World, name: str) -> Config:
    """A simulated member's configuration: with a data dir in persist mode."""
    disks = world.disks
    return Config(
        partitions=world.cfg.partitions,
        backups=world.cfg.backups,
        map_sync_backups=f"{SYNC_MAP}={world.cfg.sync_backups}",
        tombstone_grace_s=1e6,  # longer than any run: a final check compares every delete
        data_dir=disks.data_dir(name) if disks is not None else "",
        fsync="never",  # see simulation/disk.py
    )


def new_store(world: World, name: str) -> Store:
    config = store_config(world, name)
    skews = world.skew_ms  # read at every call: a clock may jump (faults.clock_jump)
    loop = world.loop

    def now_ms() -> int:
        return EPOCH_MS + int(loop.now * 1000) + skews[name]

    return Store(config, member_id(name), clock=now_ms, rng=random.Random(f"store:{name}"))


def copy_of(store: Store, p: int) -> dict[bytes, tuple[bytes | None, int, int]]:
    """The partition as the checks compare it: key -> (value or None, ts, member) of
    both maps (their keys differ: `map_of`), tombstones and the plain map's clear marker
    included."""
    out: dict[bytes, tuple[bytes | None, int, int]] = {}
    for name in (MAP, SYNC_MAP):
        rmap = store.maps.get(name)
        if rmap is None:
            continue
        for k, (ts, m) in rmap.tombs[p].items():
            out[k] = (None, ts, m)
        for k, e in rmap.parts[p].items():
            out[k] = (e.value, e.ts, e.member)
        cleared = rmap.cleared[p]
        if name == MAP and cleared != ZERO:  # the clear marker, as the empty key
            out[b""] = (None, cleared[0], cleared[1])
    return out


class Saved(NamedTuple):
    """What a member keeps with its store (grid's table.json): the table it installed
    last, and the hand-offs it made that no table has settled yet."""

    table: PartitionTable
    moved: dict[int, Moved]
    known: tuple[str, ...] = ()  # the members known, not departed (`sight`)


class Terms(NamedTuple):
    """The primary logs of a member before a step: partition -> term."""

    by_partition: dict[int, int]


class SimMember:
    """The runtime of one member incarnation (a restart makes a new one)."""

    def __init__(
        self,
        world: World,
        name: str,
        store: Store,
        incarnation: int,
        saved: Saved | None,
    ) -> None:
        self.w = world
        self.name = name
        self.addr = world.raddr(name)
        self.store = store
        self.inv = world.inv
        self.rng = random.Random(f"member:{world.cfg.seed}:{name}:{incarnation}")
        self.alive = True
        self.started = False  # first_table is done
        self.leaving = False  # a graceful leave is under way
        self.saved = saved  # the table saved before the crash (persist mode)
        partitions = world.cfg.partitions
        self.ownership = Ownership(name, partitions, restored=saved is not None)
        self.handed_by: dict[int, str] = {}  # who handed each `early` partition over (invariants)
        store.owned = bytearray(partitions)
        backups = world.cfg.backups
        self.primary = Primary(
            name,
            partitions,
            self.serves,
            lambda p, held: snapshot_records(store, p, store.clock(), held),
            MapBackups(backups, {}, backups),
            rng=self.rng,
        )
        self.follower = Follower(
            name, self.primary, self._apply, self._decode, self.owner, self.take_over
        )
        self.rebalancer = Rebalancer(
            name,
            world.placement,
            wave_size=WAVE_SIZE,
            narrowest=backups,
            restart_wait_s=RESTART_WAIT_S,
            started=world.loop.now,
        )
        self.coordinator = SimCoordinator(self, self.rebalancer)
        self.rpc = Rpc(self, self.handle)
        # persist mode: the store is the one its journal recovers (simulation/disk.py)
        self.journal = world.disks.open(store.config, store) if world.disks else None
        self._journal = store.sink  # the journal's own sink (None without a data dir)
        store.sink = self._sink
        self.stream_epochs: dict[str, int] = {}  # follower -> epoch of its Downstream here
        self.flush_due = False
        self.retry: dict[str, int] = {}
        self.reconnecting: dict[str, None] = {}
        self.refused_due = False
        self.followed = 0  # the table version of the last reconcile
        self.fill_waits: dict[int, list[Future[bool]]] = {}
        self.takeovers: dict[str, dict[int, Future[bool]]] = {}  # follower -> p -> its word
        self.reconciler = Reconciler(
            name,
            partitions,
            self.primary.map_backups,
            StoreCopies(store),
            lambda p: not self.follower.unheld(p, self.table),
        )
        self.ae_round = 0
        self.ae_mine: dict[str, dict[int, Digest]] = {}
        self.pushed: dict[int, int] = {}
        self.draining: dict[int, int] = {}  # a leaver's hand-backs not acknowledged (root)
        self._live: dict[str, str] | None = None
        self._sight: tuple[int, tuple[str, ...]] | None = None
        self.pulse_at: float | None = None  # the last pulse (None: not started)
        self.fences = 0
        self.fencing = False
        self._writing = False

    # ---- time and timers ----------------------------------------------------------------
    def later(self, delay: float, fn: Any, *args: Any) -> None:
        """A timer of this process: dropped if it crashes, deferred while it is paused."""
        self.w.net.call_at(self.addr, self.w.loop.now + delay, self._timer, fn, args)

    def _timer(self, _now: float, fn: Any, args: tuple[Any, ...]) -> None:
        if self.alive:
            fn(*args)
            self.flush_journal()

    def flush_journal(self) -> None:
        """The end of a simulated event: what the store changed goes to the log files,
        as grid/store/durability.py flushes at the end of every batch."""
        if self.journal is not None:
            self.journal.flush()

    def sleep(self, seconds: float) -> Future[None]:
        fut: Future[None] = Future()
        self.later(seconds, fut.resolve, None)
        return fut

    def is_alive(self) -> bool:
        return self.alive

    def start(self) -> None:
        self.later(self.rng.random() * TICK, self.tick)
        self.later(self.rng.random() * self.w.cfg.ae_period, self.ae_tick)
        spawn(self._boot(), self.is_alive)

    def stop(self) -> None:
        """The process ends (a crash, a leave, or the run's end): its cores' counters
        are summed."""
        if self.alive:
            self.alive = False
            if self.journal is not None:
                self.journal.flush()
                Disks.crash(self.journal)
            stats = self.w.stats
            stats.snapshots += self.primary.snapshots_sent
            stats.catchups += self.primary.caught_up
            stats.fills += self.follower.fills_done
            stats.handoffs += self.primary.handoffs

    def _boot(self) -> Task[None]:
        """grid/member/member.py's start: gossip (admitted, bounded), then the cluster runtime."""
        node = self.w.cluster.node(self.name)
        waited = 0.0
        while node.num_alive() <= 1 and waited < JOIN_WAIT_S:
            yield self.sleep(0.05)
            waited += 0.05
        self.restore_saved()
        self.coordinator.start()
        self._pulse()
        yield from self.first_table()
        self.started = True

    # ---- a stalled member fences itself (grid/member/placement/coordinator.py) -------------
    def _pulse(self) -> None:
        self.stalled()
        self.pulse_at = self.w.loop.now
        self.later(PULSE_S, self._pulse)

    def stalled(self) -> bool:
        """Whether this process stood still (a pause) longer than failure detection since
        its last pulse; if so it fences itself: serves nothing until it has asked the
        live members for their tables. Called by the pulse, by the coordinator's rounds
        and before every client write, as grid's `stalled`: the timers and messages held
        by a pause all run at its end, and none may act on a table the others moved past."""
        if self.pulse_at is None:
            return False
        gap = self.w.loop.now - self.pulse_at
        if gap <= STALL_FENCE_S or self.fencing:
            return self.fencing
        self.w.note(f"{self.name} warning: stood still {gap:.3f}s: fenced until confirmed")
        self.pulse_at = self.w.loop.now
        self.fences += 1
        self.fencing = True
        self.ownership.fenced = True
        self.set_owned()
        spawn(self._confirm_table(), self.is_alive)
        return True

    def _confirm_table(self) -> Task[None]:
        """grid's `_confirm_table`: adopt the newest table the live members have, then
        serve by it; after CONFIRM_TABLE_S without every answer, serve by what it has."""
        started = self.w.loop.now
        version = self.ownership.version
        while True:
            everyone = yield from self.coordinator.adopt(self.live())
            if everyone or self.ownership.version != version:
                break
            if self.w.loop.now - started > CONFIRM_TABLE_S:
                break
            yield self.sleep(0.2)
        self.ownership.fenced = False
        self.fencing = False
        self.set_owned()
        self.follow_table()  # an install while fenced ended every primary log
        self.coordinator.wake()

    def restore_saved(self) -> None:
        """Start from the table saved before a restart, waiting for the members it names
        (grid/member/placement/coordinator.py's restore_saved): it is in use at once, its streams
        wait."""
        saved = self.saved
        if saved is None:
            return
        if self.ownership.restarted(saved.table, saved.moved):
            self.rebalancer.installed(saved.table)
            self.set_owned()
        self.rebalancer.restarted(saved.table)

    def first_table(self) -> Task[None]:
        """Until this member has a table. A restart with a saved table first asks the live
        members for theirs; if none is newer, the saved table's streams start now."""
        if self.ownership.table is not None:
            yield from self.coordinator.adopt(self.live())
            if self.ownership.start_saved():
                self.follow_table()
        deadline = self.w.loop.now + FIRST_TABLE_TIMEOUT_S
        while self.ownership.table is None and self.w.loop.now < deadline:
            self.coordinator.wake()
            yield self.sleep(0.02)

    # ---- membership -----------------------------------------------------------------------
    def live(self) -> dict[str, str]:
        """The live members (alive or suspect) and their addresses, this one first."""
        if self._live is None:
            node = self.w.cluster.node(self.name)
            others = sorted(m.name for m in node.alive_members() if m.name != self.name)
            raddr = self.w.raddr
            self._live = {self.name: self.addr, **{n: raddr(n) for n in others}}
        self.rebalancer.observe(self._live)
        return self._live

    def sight(self) -> tuple[int, int]:
        """(members seen alive, members known and never departed), this one included:
        grid/member/placement/coordinator.py's `sight`."""
        live, known = self._sight_of()
        return live, len(known)

    def _sight_of(self) -> tuple[int, tuple[str, ...]]:
        """(members alive or suspect, the names `known_members` counts), cached until
        the next membership event."""
        if self._sight is None:
            members = self.w.cluster.node(self.name).members()
            live = sum(1 for m in members if m.state <= MemberState.SUSPECT)
            known = [m.name for m in members if m.state != MemberState.LEFT]
            saved = self.saved.known if self.saved is not None else ()
            seeds = self.w.cluster.node(self.name).seeds
            names = known_members(self.name, known, saved, seeds)
            self._sight = (live, tuple(sorted(names)))
        return self._sight

    def on_member(self, kind: str, member: str) -> None:
        """A membership event of this member's node."""
        self._live = None
        self._sight = None
        self.coordinator.on_member(kind, member)

    # ---- routing, as grid/member/placement/routing.py keeps it ----------------------------
    @property
    def table(self) -> PartitionTable | None:
        return self.ownership.table

    def take_over(self, p: int, epoch: int, source: str) -> bool:
        """A HANDOFF of p from `source`: served here from now on, unless the table in use
        settled it or names another primary (grid/member/placement/routing.py's take_over)."""
        if not self.ownership.take_over(p, epoch, source):
            return False
        self.handed_by[p] = source
        owned = self.store.owned
        assert owned is not None
        owned[p] = 1
        return True

    def hand_back_all(self, only: Iterable[int] | None = None) -> list[int]:
        """A leaver's last step: push every copy it holds (or those of `only`) to its
        primary, whatever its own role (grid/member/placement/coordinator.py's `_drain`);
        the partitions pushed, whose acknowledgements `draining` waits for."""
        table = self.table
        if table is None:
            return []
        store = self.store
        now = store.clock()
        parts = range(table.partition_count) if only is None else only
        for p in parts:
            owner = self.owner(p)
            if not store.holds_copy(p) or owner in (None, self.name):
                self.draining.pop(p, None)
                continue
            root = digest(store, p, 1 << 63, now).root
            self.draining[p] = root
            self.send(owner, [wire.P, p, snapshot_records(store, p, now), root])
            self.w.stats.pushes += 1
        return sorted(self.draining)

    def serves(self, p: int) -> bool:
        return bool(self.store.owned[p])  # type: ignore[index]

    def owner(self, p: int) -> str | None:
        return self.ownership.owner(p)

    def set_owned(self) -> None:
        """store.owned from the ownership core (grid/member/placement/routing.py's install and
        take-back)."""
        self.store.owned = self.ownership.owned()
        self.report_serving()

    def report_serving(self) -> None:
        """What this member serves as primary, and why, to the invariants."""
        early = self.ownership.early
        sources = {p: self.handed_by.get(p, "") for p in early}
        self.inv.serving(self.name, self.ownership.version, self.store.owned, early, sources)

    def install(self, table: PartitionTable) -> bool:
        """A table newer than ours: use it and start the streams it asks for
        (grid/member/placement/coordinator.py's install); it is saved with the store
        (table.json)."""
        if not self.ownership.install(table):
            return False
        self.rebalancer.installed(table)
        self.save_table()
        self.set_owned()
        self.follow_table()
        return True

    def save_table(self) -> None:
        """table.json: the table in use and the hand-offs no table settled yet."""
        table = self.ownership.table
        if table is not None:
            _, known = self._sight_of()
            self.w.saved[self.name] = Saved(table, dict(self.ownership.moved), known)

    def follow_table(self) -> None:
        """Streams by the table in use: primaries get a log, backups subscribe."""
        table = self.ownership.table
        before = self.terms()
        self.primary.on_table(table.replicas if table is not None else None)
        self.roles_changed(before)
        self.reconcile()
        self.send_ready()

    def terms(self) -> Terms:
        return Terms({p: plog.term for p, plog in self.primary.logs.items()})

    def roles_changed(self, before: Terms, taken: Sequence[int] = ()) -> None:
        """Tell the invariants which primary logs ended, began or continued a hand-off."""
        logs = self.primary.logs
        was = before.by_partition
        for p in sorted(was.keys() - logs.keys()):
            self.inv.stopped_primary(self.name, p)
        for p in sorted(logs):
            plog = logs[p]
            if was.get(p) == plog.term:
                continue
            if p in was:
                self.inv.stopped_primary(self.name, p)
            if p in taken:
                self.inv.took_over(self.name, p, plog.term, plog.seq)
            else:
                self.inv.became_primary(
                    self.name, p, plog.term, plog.seq, self.inv.copy(self.name, p)
                )
                self.w.stats.promotions += 1

    def reconcile(self) -> None:
        """Follow what the table wants (replication/follower.py decides)."""
        plan = self.follower.reconcile(self.table, self.w.loop.now)
        self.followed = self.ownership.version
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
        """Keepalives to every primary followed."""
        for src in sorted(self.follower.upstreams):
            if src not in self.reconnecting:
                self.follow_send(src, [], [])
        self.later(TICK, self.tick)

    def _retry_refused(self) -> None:
        self.refused_due = False
        self.reconcile()

    # ---- peer calls (grid/member/peer.py) -------------------------------------------------
    def handle(self, caller: str, method: int, args: list[Any]) -> Result | Future[Result]:
        if method == wire.TABLE:
            self.ownership.born()  # with no table: asked before a first table
            if self.rebalancer.asked(caller):  # it may lack copies: ask it (a publish)
                self.coordinator.wake()
            return [self.ownership.version]
        if method == wire.PUBLISH:
            self.install(self.w.tables[args[0]])
            o = self.ownership
            return [o.version, o.unsettled(), sorted(o.lacking)]
        if method == wire.FILL:
            return self.fill(args[0], args[1])
        if method == wire.HANDOFF:
            out: Future[Result] = Future()
            self.handoff(args[0], args[1], args[2]).then(lambda failed: out.resolve([failed]))
            return out
        if method == wire.LEAVE:
            return self.coordinator.leave(args[0])
        raise ValueError(f"unknown method {method}")

    def fill(self, parts: list[int], source: str) -> Future[Result]:
        """Follow these partitions from `source` until each is live; answers [failed]
        (grid/member/replicas/follower.py's fill)."""
        self.later(FILL_LINGER_S + 1, self.reconcile)  # a fill the table never adopts goes
        futures = []
        for p in parts:
            fut: Future[bool] = Future()
            self.fill_waits.setdefault(p, []).append(fut)
            futures.append(fut)
        for p in self.follower.fill(parts, source, self.w.loop.now):
            self._filled(p, True)
        self.reconcile()
        self.later(FILL_TIMEOUT_S, self._expire, futures)
        out: Future[Result] = Future()
        gather(futures).then(
            lambda oks: out.resolve([[p for p, ok in zip(parts, oks, strict=True) if not ok]])
        )
        return out

    @staticmethod
    def _expire(futures: list[Future[bool]]) -> None:
        """A deadline: every wait not over yet has failed."""
        for fut in futures:
            fut.resolve(False)

    def _filled(self, p: int, ok: bool) -> None:
        for fut in self.fill_waits.pop(p, []):
            fut.resolve(ok)

    def handoff(self, parts: list[int], to: str, epoch: int) -> Future[list[int]]:
        """Hand these partitions to follower `to`; resolves with those that failed
        (grid/member/replicas/replica.py's handoff): routing moves at once; a partition whose new
        owner does not confirm before the deadline, or whose stream closes, is taken back."""
        before = self.terms()
        handing, failed = self.primary.handoff(parts, to, epoch)
        owned = self.store.owned
        assert owned is not None
        for p in handing:
            self.ownership.handed_off(p, to, epoch)
            owned[p] = 0
        if handing:
            self.save_table()  # before HANDOFF can leave: a restart must not serve them
        self.report_serving()
        self.roles_changed(before)
        waits = self.takeovers.setdefault(to, {})
        futures = []
        for p in handing:
            fut: Future[bool] = Future()
            waits[p] = fut
            futures.append(fut)
        self.send_ready()
        result: Future[list[int]] = Future()
        if not futures:
            result.resolve(failed)
            return result
        self.later(HANDOFF_ACK_TIMEOUT_S, self._expire, futures)

        def settled(oks: list[bool]) -> None:
            for p, fut, ok in zip(handing, futures, oks, strict=True):
                if waits.get(p) is fut:
                    del waits[p]
                if ok:
                    continue
                failed.append(p)
                if not self.primary.handoff_failed(p):
                    # HANDOFF left: `to` may serve p; the table of `epoch` settles it
                    self.w.note(f"{self.name} hand-off of p{p} to {to} not confirmed")
                    continue
                self.w.note(f"{self.name} hand-off of p{p} to {to} never sent: serving again")
                before = self.terms()
                if self.ownership.take_back(p):
                    self.set_owned()
                    self.save_table()
                self.primary.resume(p)
                self.roles_changed(before)
            self.send_ready()
            result.resolve(failed)

        gather(futures).then(settled)
        return result

    def _takeovers_failed(self, follower: str) -> None:
        """The follower's stream closed: its pending hand-offs fail."""
        for fut in list(self.takeovers.pop(follower, {}).values()):
            fut.resolve(False)

    # ---- graceful leave ---------------------------------------------------------------------
    def leave(self) -> None:
        """Leave gracefully: have the coordinator move everything off this member, then
        leave the gossip (the world stops the process)."""
        self.leaving = True
        spawn(self._leave(), self.is_alive)

    def _leave(self) -> Task[None]:
        step: Departed = yield from self.coordinator.leave_cluster()
        self.w.departed(self.name, step)

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
        if self._journal is not None:
            self._journal(p, op, map_name, key, value, ts, member, expire_at, max_idle)
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
            self._filled(p, False)  # the coordinator learns now, not at its timeout
        if primary in self.reconnecting:
            # one reconnect loop per primary, as one Upstream in grid/member/replicas/follower.py
            return
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
        self._receive(src_addr, payload)
        self.flush_journal()

    def _receive(self, src_addr: str, payload: bytes) -> None:
        msg = wire.unpack(payload)
        kind = msg[0]
        src = self.w.member_of(src_addr)
        if kind == wire.S:
            self.on_stream(src, msg[1], msg[2])
        elif kind == wire.F:
            self.on_follow(src, msg[1], msg[2], msg[3], msg[4], msg[5])
        elif kind == wire.W:
            self.stalled()
            self.on_write(src_addr, msg[1], msg[2], msg[3], msg[4])
        elif kind == wire.SW:
            self.stalled()
            self.on_sync_write(src_addr, msg[1], msg[2], msg[3], msg[4])
        elif kind == wire.CL:
            self.stalled()
            self.on_clear()
        elif kind == wire.AR:
            self.on_ae_roots(src, msg[1], msg[2], msg[3], msg[4])
        elif kind == wire.AB:
            self.on_ae_buckets(src, msg[1], msg[2], msg[3], msg[4], msg[5])
        elif kind == wire.AX:
            self.on_ae_records(src, msg[1], msg[2], msg[3])
        elif kind == wire.P:
            self.on_push(src, msg[1], msg[2], msg[3])
        elif kind == wire.PA:
            self.on_push_ack(msg[1], msg[2])
        elif kind == wire.RQ:
            self.rpc.on_request(src, msg[1], msg[2], msg[3])
        elif kind == wire.RS:
            self.rpc.on_response(msg[1], msg[2])

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

    def on_clear(self) -> None:
        """A client's clear of the plain map: `Store.clear` removes the entries of the
        partitions this member serves and leaves each one's marker (the sink reports it
        under the empty key), which replicates like a write."""
        store = self.store
        self._writing = True
        try:
            store.clear(store.map(MAP))
        finally:
            self._writing = False

    def on_sync_write(self, client: str, req: int, op: int, key: bytes, arg: Any) -> None:
        """A write to the sync-backup map (a put, a delete or an incr by `arg`), answered
        once its sync backups applied it, as grid/member/server.py's `_sync_for` and
        `_finish` do with the replication core's acknowledgements."""
        p = partition_of(key, self.w.cfg.partitions)
        if not self.serves(p):
            self.reply_sync(client, req, wire.NOT_OWNER, 0, 0, self.owner(p) or "", 0)
            return
        store = self.store
        rmap = store.map(SYNC_MAP)
        now = store.clock()
        result = 0
        self._writing = True
        try:
            if op == DELETE:
                store.delete(rmap, key, now)
                ts, member = rmap.tombs[p][key]
            elif op == INCR:
                result = store.incr(rmap, key, arg, 0, now)
                e = rmap.parts[p][key]
                ts, member = e.ts, e.member
            else:
                e = store.put(rmap, key, arg, now)
                ts, member = e.ts, e.member
        finally:
            self._writing = False
        if op == INCR:
            self.inv.incremented(self.name, p, key, result)
        # _sync_for: how many backups, among how many first ones, for this map
        config = store.config
        want = config.sync_backups_by_map().get(SYNC_MAP, config.sync_backups)
        held = self.primary.map_backups.of(SYNC_MAP)
        n = min(want, held)
        touched = self.primary.take_touched() if n else {}

        def done(confirmed: bool) -> None:
            if confirmed and n and p not in touched:
                # served with no log yet (a quick restart before its streams start):
                # nothing reaches a backup, and `_sync_for` has nothing to wait for
                self.w.stats.sync_unlogged += 1
                self.inv.confirmed_unchecked(key, (ts, member))
            elif confirmed and n and (not self.serves(p) or p not in self.primary.logs):
                # `Primary.unconfirmed` leaves a partition no longer served to its new
                # primary (a hand-off, a fail-over). Not checked at the answer.
                self.w.stats.sync_moved += 1
                self.inv.confirmed_unchecked(key, (ts, member))
            elif confirmed and n:
                table = self.table
                replicas = table.replicas(p) if table is not None else (self.name,)
                cluster = len(self.w.names) - len(self.w.departed_names)
                self.inv.confirmed(self.name, p, key, (ts, member), replicas, n, held, cluster)
            status = wire.OK if confirmed else wire.UNCONFIRMED
            self.reply_sync(client, req, status, ts, member, "", result)

        if not touched:
            done(True)
            return
        spawn(self.wait_backups(touched, n, SYNC_TIMEOUT_S, held), self.is_alive).then(done)

    def reply_sync(
        self, client: str, req: int, status: int, ts: int, member: int, hint: str, result: int
    ) -> None:
        msg = [wire.SWR, req, status, ts, member, hint, result]
        self.w.net.send(self.addr, client, wire.pack(msg), False)

    def wait_backups(
        self, touched: dict[int, tuple[int, int]], n: int, timeout: float, ranks: int
    ) -> Task[bool]:
        """grid/member/replicas/replica.py's wait_backups on the simulated clock: until,
        for every partition touched, min(n, its backups in the table) backups have
        acknowledged its changes up to the seq given, and as many as the write's table
        asked for (`Primary.unconfirmed`'s floor); False at the timeout. The table is
        read again at every look."""
        loop = self.w.loop
        deadline = loop.now + timeout
        core = self.primary
        floor: dict[int, int] | None = None
        while True:
            table = self.ownership.table
            if table is None:
                return True
            if self.ownership.fenced or core.lost(touched):
                return False
            if floor is None:
                live, known = self.sight()
                floor = core.needs(
                    touched, n, table.replicas, ranks, len(table.members), live, known
                )
            missing = core.unconfirmed(touched, n, table.replicas, ranks, floor)
            if not missing:
                return True
            left = deadline - loop.now
            if left <= 0:
                return False
            woken: Future[None] = Future()  # an acknowledgement or the poll, whichever first
            waiting = False
            for p, seq in missing:
                for f in core.waited_for(p, table.replicas(p), ranks):
                    if core.wait_ack(f, p, seq, woken):
                        waiting = True
            if waiting:
                self.send_ready()  # a wait makes the sender hurry
            self.later(min(left, SYNC_POLL_S if waiting else SYNC_IDLE_S), woken.resolve, None)
            yield woken

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
                self._takeovers_failed(follower)
            f = core.open_stream(follower)
            self.stream_epochs[follower] = epoch
        for p, seq in acks:
            for token in core.ack(f, p, seq):
                token.resolve(None)  # a sync write's wait (`wait_backups`)
        waits = self.takeovers.get(follower, {})
        for p in taken:
            core.taken_over(f, p)
            fut = waits.pop(p, None)
            if fut is not None:
                fut.resolve(True)
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
        before = self.terms()
        got = self.follower.receive(src, chunks, self.store.clock())
        if got.taken:  # handed over and taken over (`take_over`): served here from now on
            self.report_serving()
            self.roles_changed(before, [p for p, _ in got.taken])
            self.send_ready()
        self.inv.received(
            self.name, subscribed, chunks, self.follower.state, self.version_of, got.resync
        )
        for p, ok in got.filled:
            self._filled(p, ok)
        self.w.stats.resyncs += len(got.resync)
        subscribe = self.subscriptions(got.resync) if got.resync else []
        acks = [[p, s] for p, s in sorted(got.acks.items())]
        if subscribe or acks:
            self.follow_send(src, subscribe, [], acks, [p for p, _ in got.taken])
        if got.refused and not self.refused_due:
            # the primary may just not have installed the table that makes it primary
            # yet: look again shortly (subscribes what is still wanted, from its owner)
            self.refused_due = True
            self.later(REFUSED_RETRY_S, self._retry_refused)

    def version_of(self, p: int, key: bytes) -> tuple[int, int] | None:
        """The version of `key` this member's store holds: its entry's or tombstone's (the
        empty key: the plain map's clear marker)."""
        rmap = self.store.maps.get(map_of(key))
        if rmap is None:
            return None
        if key == CLEAR_KEY:
            marker = rmap.cleared[p]
            return (marker[0], marker[1]) if marker != ZERO else None
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
        ae = self.reconciler
        cut = ae.cut(now, AE_CUT_LAG_MS)
        self.ae_mine = {}  # this round's digests per backup (an older round's answers: ignored)
        for peer in sorted(ae.peers(self.serves, table.replicas)):
            mine = ae.digests(peer.partitions, cut, peer.rank, None)
            self.ae_mine[peer.member] = mine
            roots = [[p, d.root] for p, d in sorted(mine.items())]
            self.send(peer.member, [wire.AR, self.ae_round, cut, peer.rank, roots])
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

    def on_ae_roots(self, src: str, rnd: int, cut: int, rank: int, roots: list[Any]) -> None:
        """A backup's side of a comparison (replication/antientropy.py decides)."""
        answer = self.reconciler.on_compare(cut, rank, [(p, root) for p, root in roots])
        if answer.refused or answer.differing:
            diffs = [[d.partition, d.buckets] for d in answer.differing]
            self.send(src, [wire.AB, rnd, cut, rank, answer.refused, diffs])

    def on_ae_buckets(
        self, src: str, rnd: int, cut: int, rank: int, refused: list[int], diffs: list[Any]
    ) -> None:
        """The primary: repair what the backup's bucket digests show to differ."""
        mine = self.ae_mine.get(src)
        if rnd != self.ae_round or mine is None:
            return  # an answer to an older round
        ae = self.reconciler
        answer = Compared(list(refused), [Differing(p, bytes(b)) for p, b in diffs])
        for p, buckets in ae.to_repair(mine, answer, keep_theirs=True):
            recs = ae.repair_records(p, buckets, cut, rank)
            self.send(src, [wire.AX, rnd, 1, [p, buckets, cut, rank, recs]])

    def on_ae_records(self, src: str, rnd: int, request: int, body: list[Any]) -> None:
        ae = self.reconciler
        if request:  # the backup: merge the primary's records, answer its own
            p, buckets, cut, rank, recs = body
            sent = [tuple(r) for r in recs]
            answer = ae.on_repair(p, buckets, cut, rank, sent)
            self.w.stats.ae_repaired += answer.applied
            back = [p, answer.refused, answer.records, answer.applied, len(sent)]
            self.send(src, [wire.AX, rnd, 0, back])
        else:  # the primary: merge the backup's answer, into partitions it still serves
            p, refused, recs, applied, sent = body
            answer = Repaired(bool(refused), [tuple(r) for r in recs], applied)
            won = ae.repaired_by(p, sent, answer, True, self.serves)
            self.w.stats.ae_repaired += won - applied

    def merge(self, p: int, recs: Sequence[Sequence[Any]]) -> int:
        now = self.store.clock()
        return sum(bool(self.store.apply(p, *r, now)) for r in recs)

    def on_push(self, src: str, p: int, recs: list[list[Any]], root: int) -> None:
        self.w.stats.ae_repaired += self.merge(p, recs)
        self.send(src, [wire.PA, p, root])

    def on_push_ack(self, p: int, root: int) -> None:
        if self.draining.get(p) == root:
            del self.draining[p]
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
