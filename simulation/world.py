"""The world: membership simulator + simulated members (store, replication cores,
rebalancer) + clients + faults + invariants, on one virtual clock and one seeded
network.

    from simulation.world import SimConfig, World
    result = World(SimConfig(seed=7, members=50, minutes=10)).run()
    assert result.ok, result.error
    print(result.trace)          # equal for equal configs, byte for byte

Phases: the members start already acquainted (`Cluster.bootstrap`, a settled
gossip) with no table: the smallest name builds the first one and publishes it,
as a new grid cluster does. Clients write and faults strike for `minutes`; then
the faults stop, every split heals, every link is clean again and every crashed
or departed member restarts; the run goes on until it is quiet (every member
holds the coordinator's last publish, which is the placement of the running
members; every replica of every partition identical, no copy without a role,
every backup live, no hand-off unsettled) or `quiet_timeout` passes; then
`final_checks`. Invariants are checked at every step meanwhile
(`simulation/invariants.py`).

Determinism: one seed feeds every `random.Random` (network, membership nodes,
replicas, clients, faults), nothing iterates a set of strings, nothing reads a
wall clock; the trace hash covers every message sent, every fault and the final
state, so a replay that differs anywhere shows up in it.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NamedTuple

from grid.store.copies import digest
from grid.store.store import DELETE, INCR, PUT, Store, decode_counter
from membership.actions import MemberEvent
from membership.sim import Cluster
from membership.simnet import Link
from partitioning.config import PlacementConfig
from partitioning.decisions import Decision
from partitioning.keys import partition_of
from partitioning.leave import Departed
from partitioning.table import PartitionTable, build_table
from replication.lww import ZERO, cleared_by
from replication.stream import Phase
from simulation import wire
from simulation.disk import Disks
from simulation.faults import Faults
from simulation.invariants import CLEAR_KEY, Invariants, InvariantViolation
from simulation.member import MAP, SYNC_TIMEOUT_S, Saved, SimMember, copy_of, map_of, new_store

CLIENTS = "clients"
"""The clients' host: in no split group, so it reaches both sides of a split (the
case that makes both sides take writes)."""
STORM_PER_MEMBER = 1000
"""Messages a member may cause per simulated second before the run calls it a livelock:
about 100x the busiest second of a healthy run (a join's snapshots and push-pulls)."""
CLIENT_TIMEOUT = 2.0
SYNC_CLIENT_TIMEOUT = SYNC_TIMEOUT_S + CLIENT_TIMEOUT
"""A sync write may wait `SYNC_TIMEOUT_S` for its backups before it is answered."""
COUNTER_SPAN_S = 30.0
"""Sync clients increment fresh counters every this long (`c<generation>.<i>`): a fork
(see simulation/invariants.py) takes only the counters of its moment out of the claim."""
COUNTERS = 3
"""Counters per generation."""
MAX_HOPS = 3
SKEWED_SHARE = 0.1
"""Members whose wall clock is 10-60 s off (the rest: within 25 ms): the HLC must
still order every key's versions (LWW), and stamps must still increase."""
LOGLESS_S = 2.0
"""How long a member may serve a partition as primary without its log (see
`World._check_logs_every`): about twice the check's period."""
LEAVE_LINGER_S = 0.5
"""A member that left the gossip stops this long after (it spreads its leave first)."""


@dataclass(frozen=True)
class SimConfig:
    seed: int = 0
    members: int = 50
    minutes: float = 10.0
    partitions: int = 61
    backups: int = 1
    keys: int = 600
    write_rate: float = 20.0
    """Client writes per simulated second (exponential gaps)."""
    max_writes: int = 20_000
    delete_ratio: float = 0.1
    persist: bool = True
    """A crashed member restarts with its store (as from its data dir, fsync=always)
    and the last table it installed (table.json), but no logs, terms, follower
    positions or hand-offs; False: it restarts empty, with no table."""
    fault_mean_gap: float = 6.0
    max_down: int = 3
    splits: bool = True
    """False: no splits, one-way cuts or flaps (simulation/faults.py SPLITS); with them
    every counter of the sync clients forks and is out of the counters' claim
    (simulation/invariants.py), so `--no-splits` runs are the ones that check it."""
    ae_period: float = 10.0
    quiet_timeout: float = 600.0
    sync_rate: float = 5.0
    """Client operations per simulated second on the sync-backup map: puts (half),
    incrs of the current counters (four in ten) and deletes; 0: none, the run of the
    plain map alone (its trace as before sync clients existed)."""
    sync_backups: int = 1
    """The sync map's `map_sync_backups`."""
    sync_keys: int = 50
    clear_rate: float = 1 / 90
    """Clears of the plain map per simulated second (exponential gaps, their own random
    stream); 0: none."""
    strict_primaries: bool = False
    """Count a hand-off in flight beside another member's table claim under the same
    table as two primaries (simulation/invariants.py, `Invariants.serving`): shows the
    overlaps grid has today."""

    def replay(self, plant: str | None = None) -> str:
        """The command that runs this config again (with the bug planted, if any)."""
        args = [f"--plant {plant}"] if plant else []
        args.append(f"--seed {self.seed}")
        default = SimConfig()
        for f in fields(self):
            if f.name == "seed":
                continue
            v = getattr(self, f.name)
            if v != getattr(default, f.name):
                flag = "--" + f.name.replace("_", "-")
                if isinstance(v, bool):
                    args.append(flag if v else f"--no-{f.name.replace('_', '-')}")
                else:
                    args.append(f"{flag} {v}")
        return "python -m simulation.run " + " ".join(args)


@dataclass
class Stats:
    writes_sent: int = 0
    writes_acked: int = 0
    writes_not_owner: int = 0
    writes_failed: int = 0
    writes_timed_out: int = 0
    crashes: int = 0
    restarts: int = 0
    splits: int = 0
    pauses: int = 0
    promotions: int = 0
    subscriptions: int = 0
    snapshots: int = 0
    catchups: int = 0
    resyncs: int = 0
    stream_breaks: int = 0
    ae_rounds: int = 0
    ae_repaired: int = 0
    pushes: int = 0
    handed_off_copies: int = 0
    publishes: int = 0
    fills: int = 0
    handoffs: int = 0
    leaves: int = 0
    quick_restarts: int = 0
    coordinator_crashes: int = 0
    one_way_cuts: int = 0
    flaps: int = 0
    slow: int = 0
    clears: int = 0
    sync_sent: int = 0
    sync_acked: int = 0
    sync_unconfirmed: int = 0
    sync_not_owner: int = 0
    sync_failed: int = 0
    sync_moved: int = 0
    sync_unlogged: int = 0
    sync_timed_out: int = 0
    incrs_acked: int = 0
    sync_all_lost: int = 0
    counters: int = 0
    counters_forked: int = 0


@dataclass
class Result:
    config: SimConfig
    ok: bool
    error: str
    trace: str
    stats: Stats
    faults_end: float
    quiet_at: float | None
    wall_seconds: float
    messages: int
    keys_final: int
    log: list[str] = field(repr=False, default_factory=list)

    def summary(self, plant: str | None = None) -> str:
        s = asdict(self.stats)
        lines = [
            f"seed {self.config.seed}: {'OK' if self.ok else 'FAILED'}"
            f"  members={self.config.members} minutes={self.config.minutes}"
            f" persist={self.config.persist}",
            f"trace {self.trace}",
            f"virtual: faults until {self.faults_end:.0f}s, quiet at "
            + (f"{self.quiet_at:.1f}s" if self.quiet_at is not None else "never")
            + f"; wall {self.wall_seconds:.1f}s; {self.messages} messages;"
            f" {self.keys_final} keys at the end",
            "stats " + " ".join(f"{k}={v}" for k, v in s.items()),
        ]
        if not self.ok:
            lines.append(f"error: {self.error}")
            lines.append(f"replay: {self.config.replay(plant)}")
        return "\n".join(lines)


def one_of(rng: random.Random, names: list[str]) -> str:
    """A random element that costs one draw whatever the list's length (`choice` draws
    more for some lengths): a client's random stream then does not depend on how many
    members run, so a seed's plain writes are the same with the sync clients or
    without them (tests/simulation)."""
    return names[int(rng.random() * len(names))]


class SyncOp(NamedTuple):
    """A sync-map operation in flight: the store's op (PUT, DELETE, INCR), its key, its
    argument (the value, None, the delta) and the NOT_OWNER hops taken."""

    op: int
    key: bytes
    arg: Any
    hops: int


class Clients:
    """Simulated smart clients: each write goes to the primary named by the table of
    a member the client talks to (a random running member), and follows NOT_OWNER
    hints a few hops. The plain map's writes and the sync map's operations each have
    their own random stream and timer, so a seed's plain writes are the same with or
    without the sync ones."""

    def __init__(self, world: World) -> None:
        self.w = world
        self.rng = random.Random(f"clients:{world.cfg.seed}")
        self.pending: dict[int, tuple[bytes, bytes | None, int]] = {}
        self.req = 0
        self.sync_rng = random.Random(f"sync-clients:{world.cfg.seed}")
        self.sync_pending: dict[int, SyncOp] = {}
        self.sync_req = 0
        self.clear_rng = random.Random(f"clear-clients:{world.cfg.seed}")
        self.stopped = False
        world.net.add_host(CLIENTS, self.receive)

    def start(self) -> None:
        self._next()
        if self.w.cfg.sync_rate > 0:
            self._next_sync()
        if self.w.cfg.clear_rate > 0:
            self._next_clear()

    def _next_clear(self) -> None:
        gap = self.clear_rng.expovariate(self.w.cfg.clear_rate)
        self.w.loop.call_later(gap, self.clear)

    def clear(self) -> None:
        """A client clears the plain map: every running member clears what it serves."""
        w = self.w
        if self.stopped:
            return
        self._next_clear()
        w.stats.clears += 1
        msg = wire.pack([wire.CL])
        for name in sorted(w.cluster.running()):
            w.net.send(CLIENTS, w.raddr(name), msg, False)

    def _next_sync(self) -> None:
        gap = self.sync_rng.expovariate(self.w.cfg.sync_rate)
        self.w.loop.call_later(gap, self.sync_write)

    def sync_write(self) -> None:
        w = self.w
        if self.stopped:
            return
        self._next_sync()
        rng = self.sync_rng
        r = rng.random()
        if r < 0.4:
            gen = int(w.loop.now // COUNTER_SPAN_S)
            op, key, arg = INCR, f"c{gen}.{rng.randrange(COUNTERS)}".encode(), 1
        elif r < 0.5:
            op, key, arg = DELETE, f"s{rng.randrange(w.cfg.sync_keys)}".encode(), None
        else:
            key = f"s{rng.randrange(w.cfg.sync_keys)}".encode()
            op, arg = PUT, f"s{self.sync_req}".encode()
        entry = one_of(rng, sorted(w.cluster.running()))
        table = w.replicas[entry].table
        target = table.owner(partition_of(key, w.cfg.partitions)) if table else entry
        self.sync_req += 1
        w.stats.sync_sent += 1
        self.sync_pending[self.sync_req] = SyncOp(op, key, arg, 0)
        self._send_sync(self.sync_req, target)

    def _send_sync(self, req: int, target: str) -> None:
        op, key, arg, hops = self.sync_pending[req]
        msg = wire.pack([wire.SW, req, op, key, arg])
        self.w.net.send(CLIENTS, self.w.raddr(target), msg, False)
        self.w.loop.call_later(SYNC_CLIENT_TIMEOUT, self._sync_timeout, req, hops)

    def _sync_timeout(self, req: int, hops: int) -> None:
        got = self.sync_pending.get(req)
        if got is not None and got.hops == hops:
            del self.sync_pending[req]
            self.w.stats.sync_timed_out += 1  # outcome unknown: maybe applied
            if got.op == INCR:
                self.w.inv.incr_answered(got.key, None)

    def sync_reply(self, req: int, status: int, hint: str, result: int) -> None:
        got = self.sync_pending.get(req)
        if got is None:
            return
        stats = self.w.stats
        del self.sync_pending[req]
        if status == wire.OK:
            stats.sync_acked += 1
            if got.op == INCR:
                stats.incrs_acked += 1
                self.w.inv.incr_answered(got.key, result)
        elif status == wire.UNCONFIRMED:  # applied on the primary, maybe no further
            stats.sync_unconfirmed += 1
            if got.op == INCR:
                self.w.inv.incr_answered(got.key, None)
        elif hint and got.hops < MAX_HOPS and hint in self.w.replicas:
            stats.sync_not_owner += 1
            self.sync_pending[req] = got._replace(hops=got.hops + 1)
            self._send_sync(req, hint)
        else:
            stats.sync_failed += 1

    def _next(self) -> None:
        self.w.loop.call_later(self.rng.expovariate(self.w.cfg.write_rate), self.write)

    def write(self) -> None:
        w = self.w
        if self.stopped or w.stats.writes_sent >= w.cfg.max_writes:
            return
        self._next()
        key = f"k{self.rng.randrange(w.cfg.keys)}".encode()
        value = None if self.rng.random() < w.cfg.delete_ratio else f"v{self.req}".encode()
        entry = one_of(self.rng, sorted(w.cluster.running()))
        table = w.replicas[entry].table  # a smart client's table: one member's
        target = table.owner(partition_of(key, w.cfg.partitions)) if table else entry
        self.req += 1
        w.stats.writes_sent += 1
        self.pending[self.req] = (key, value, 0)
        self._send(self.req, target)

    def _send(self, req: int, target: str) -> None:
        key, value, hops = self.pending[req]
        msg = wire.pack([wire.W, req, key, value, hops])
        self.w.net.send(CLIENTS, self.w.raddr(target), msg, False)
        self.w.loop.call_later(CLIENT_TIMEOUT, self._timeout, req, hops)

    def _timeout(self, req: int, hops: int) -> None:
        got = self.pending.get(req)
        if got is not None and got[2] == hops:
            del self.pending[req]
            self.w.stats.writes_timed_out += 1  # outcome unknown: maybe applied

    def receive(self, now: float, src: str, payload: bytes, reliable: bool) -> None:
        msg = wire.unpack(payload)
        if msg[0] == wire.SWR:
            self.sync_reply(msg[1], msg[2], msg[5], msg[6])
            return
        _, req, status, ts, member, hint = msg
        got = self.pending.get(req)
        if got is None:
            return
        key, value, hops = got
        if status == wire.OK:
            del self.pending[req]
            self.w.stats.writes_acked += 1
            self.w.inv.acknowledged(key, ts, member)
        elif hint and hops < MAX_HOPS and hint in self.w.replicas:
            self.w.stats.writes_not_owner += 1
            self.pending[req] = (key, value, hops + 1)
            self._send(req, hint)
        else:
            del self.pending[req]
            self.w.stats.writes_failed += 1


class World:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.cluster = Cluster(
            seed=cfg.seed, partitions=cfg.partitions, trace=True, record_events=False
        )
        self.loop = self.cluster.loop
        self.net = self.cluster.net
        self.rng = random.Random(f"world:{cfg.seed}")
        self.inv = Invariants(lambda: self.loop.now, strict=cfg.strict_primaries, map_of=map_of)
        self.placement = PlacementConfig(partition_count=cfg.partitions, backups=cfg.backups)
        self.tables: dict[int, PartitionTable] = {}
        """Every table published, by version: what a PUBLISH or TABLE answer names."""
        self.saved: dict[str, Saved] = {}
        """Each member's last installed table and unsettled hand-offs, kept with its store
        (table.json)."""
        self.publisher: dict[int, str] = {}  # table version -> who published it
        self.stats = Stats()
        self.log: list[str] = []
        self.epochs: dict[tuple[str, str], int] = {}
        self.loss: dict[tuple[str, str], float] = {}
        self.degraded = False  # some member's links are lossy or slow
        self.default_loss = 0.0
        self.split: tuple[list[str], list[str]] | None = None
        self.departed_names: set[str] = set()
        """Members that left gracefully and have not started again: the others are the
        cluster, alive or not (`Invariants.confirmed`)."""
        self.names = self.cluster.bootstrap(cfg.members)
        skews = random.Random(f"skew:{cfg.seed}")
        self.skew_ms = {n: skews.randint(-25, 25) for n in self.names}
        for n in self.names:  # a tenth of the members with a clock tens of seconds off
            if skews.random() < SKEWED_SHARE:
                self.skew_ms[n] = skews.randint(10_000, 60_000) * skews.choice((-1, 1))
        self.disks = Disks() if cfg.persist else None
        self.stores: dict[str, Store] = {n: new_store(self, n) for n in self.names}
        self.replicas: dict[str, SimMember] = {}
        self.incarnations = dict.fromkeys(self.names, 0)
        for n in self.names:
            self._start_replica(n, None)
        self.cluster.hooks.append(self._on_member_event)
        self.clients = Clients(self)
        self.faults = Faults(self)
        self.quiet_at: float | None = None

    # ---- plumbing used by replicas --------------------------------------------------------
    @staticmethod
    def raddr(name: str) -> str:
        """The replication endpoint of a member (its gRPC port, next to its gossip one)."""
        return name + "/r"

    @staticmethod
    def member_of(addr: str) -> str:
        return addr[:-2] if addr.endswith("/r") else addr

    def note(self, what: str) -> None:
        self.log.append(f"{self.loop.now:.6f} {what}")

    def published(self, coordinator: str, table: PartitionTable) -> None:
        """A coordinator publishes `table`: members can be told its version from now on."""
        self.tables[table.version] = table
        self.publisher[table.version] = coordinator
        self.stats.publishes += 1

    def settled_table(self, coordinator: str, table: PartitionTable) -> bool:
        """Whether `table` can be the end: the coordinator published it, and no table of a
        higher epoch was published (a side of a split may publish after it, below it:
        its members take the higher one when the coordinator sends it again) that a
        member still holds, in memory or saved with its store. A table every holder of
        which lost its memory (crashes without data dirs) cannot come back."""
        if self.publisher.get(table.version) != coordinator:
            return False
        held = {r.table.version for r in self.replicas.values() if r.alive and r.table}
        held.update(s.table.version for s in self.saved.values())
        return all(v >> 32 <= table.epoch for v in self.tables if v in held)

    def decided(self, member: SimMember, decision: Decision) -> None:
        """A rebalancer decided something (the faults may crash its member in the middle)."""
        self.faults.decided(member, decision)

    def stream_epoch(self, follower: str, primary: str) -> int:
        return self.epochs.get((follower, primary), 0)

    def stream_send(self, src: str, dst: str, follower: str, primary: str, payload: bytes) -> None:
        """Send on the Follow stream between follower and primary. What the network would
        lose or cannot deliver breaks the stream instead (see simulation/replica.py)."""
        a, b = self.raddr(src), self.raddr(dst)
        loss = self.loss.get((src, dst), self.default_loss)
        if (
            not self.net.is_up(b)
            or not self.net.reachable(a, b)
            or (loss and self.rng.random() < loss)
        ):
            self.break_stream(follower, primary)
            return
        self.net.send(a, b, payload, True)

    def refuses(self, src: str, dst: str) -> bool:
        """Whether `dst`'s machine resets a connection from `src` at once: its process is
        down (not paused) and the path works both ways (a cut path just times out)."""
        a, b = self.raddr(src), self.raddr(dst)
        return not self.net.is_up(b) and self.net.reachable(a, b) and self.net.reachable(b, a)

    def break_stream(self, follower: str, primary: str, notify: bool = True) -> None:
        key = (follower, primary)
        self.epochs[key] = self.epochs.get(key, 0) + 1
        self.stats.stream_breaks += 1
        rep = self.replicas.get(follower)
        if notify and rep is not None and rep.alive:
            rep.stream_broken_follower_side(primary)

    def _start_replica(self, name: str, saved: Saved | None) -> None:
        rep = SimMember(self, name, self.stores[name], self.incarnations[name], saved)
        self.replicas[name] = rep
        self.net.add_host(self.raddr(name), rep.receive)
        rep.start()

    def _on_member_event(self, observer: str, ev: MemberEvent) -> None:
        rep = self.replicas.get(observer)
        if rep is not None and rep.alive:
            rep.on_member(ev.kind.value, ev.member.name)

    # ---- faults ---------------------------------------------------------------------------
    def crash(self, name: str) -> None:
        if not self.cluster.up[name]:
            return
        self.note(f"crash {name}")
        self.stats.crashes += 1
        self.cluster.crash(name)
        self._stop_process(name)

    def _stop_process(self, name: str) -> None:
        """The member's process is gone: its endpoint, its cores, its streams."""
        self.net.crash(self.raddr(name))
        self.replicas[name].stop()
        self.inv.member_gone(name)
        if not self.cfg.persist:
            self.inv.store_lost(name)  # its memory goes with the process (its copies too)
        for rep in self.replicas.values():
            if rep.alive:
                rep.rpc.callee_died(name)
        for f, p in sorted({(name, o) for o in self.names} | {(o, name) for o in self.names}):
            if name in (f, p):
                self.break_stream(f, p, notify=f != name)

    def restart(self, name: str) -> None:
        if self.cluster.up[name]:
            return
        if self.replicas[name].alive:  # left the gossip, its process not ended yet
            self._stop_process(name)
        self.note(f"restart {name}")
        self.departed_names.discard(name)
        self.stats.restarts += 1
        self.cluster.restart(name)
        self.incarnations[name] += 1
        saved = self.saved.get(name)
        self.stores[name] = new_store(self, name)  # persist: recovered from its journal
        if not self.cfg.persist:
            self.inv.store_lost(name)
            saved = None  # no data dir: no table.json either
            self.saved.pop(name, None)
        self._start_replica(name, saved)
        if self.cfg.persist:
            store = self.stores[name]
            self.inv.recovered(name, {p: copy_of(store, p) for p in range(self.cfg.partitions)})

    def leave(self, name: str) -> None:
        """A graceful leave (SIGTERM): the member has the coordinator move everything off
        it, then leaves the gossip and stops (`departed`)."""
        rep = self.replicas[name]
        if not self.cluster.up[name] or rep.leaving or not rep.started:
            return
        self.note(f"leave {name}")
        self.stats.leaves += 1
        rep.leave()

    def departed(self, name: str, how: Departed) -> None:
        """The leaving member's conversation with the coordinator ended: it leaves the
        gossip now and its process ends a moment later (grid/member/member.py's stop)."""
        self.note(f"departed {name} {how.end.value} {how.error}")
        self.departed_names.add(name)
        self.cluster.leave(name)
        self.loop.call_later(LEAVE_LINGER_S, self._left, name, self.incarnations[name])

    def _left(self, name: str, incarnation: int) -> None:
        rep = self.replicas[name]
        if self.incarnations[name] != incarnation or not rep.alive:
            return
        self.cluster.crash(name)
        self._stop_process(name)
        if self.faults.stopped:  # the faults ended while it was leaving: it comes back
            self.restart(name)
        else:
            self.faults.left(name)

    def _groups(self, names: list[str]) -> list[str]:
        return names + [self.raddr(n) for n in names]

    def partition(self, a: list[str], b: list[str]) -> None:
        self.note(f"split {len(a)}|{len(b)} {','.join(a)}")
        self.stats.splits += 1
        self.split = (a, b)
        self.inv.split()
        self.net.partition(self._groups(a), self._groups(b))

    def one_way(self, src: list[str], dst: list[str]) -> None:
        """`src` cannot send to `dst`; `dst` still reaches `src`."""
        self.note(f"one-way cut {','.join(src)} -> the other {len(dst)}")
        self.stats.one_way_cuts += 1
        self.split = (src, dst)
        self.inv.split()
        self.net.cut_one_way(self._groups(src), self._groups(dst))

    def heal(self) -> None:
        if self.split is not None:
            self.note("heal")
            self.split = None
            self.net.heal()
            self.inv.healed()

    def set_links(self, lossy: dict[str, float], slow: dict[str, float]) -> None:
        """Every link of each member in `lossy` drops that share of messages; every link
        of each member in `slow` takes that many seconds more."""
        self.note(
            "links lossy "
            + ",".join(f"{m}={v}" for m, v in lossy.items())
            + " slow "
            + ",".join(f"{m}={v}" for m, v in slow.items())
        )
        self.net.clear_links()
        self.loss.clear()
        self.degraded = bool(lossy or slow)
        for m in sorted(lossy.keys() | slow.keys()):
            loss = lossy.get(m, 0.0)
            delay = slow.get(m, 0.0)
            for o in self.names:
                if o == m:
                    continue
                both = max(loss, lossy.get(o, 0.0))
                extra = delay + slow.get(o, 0.0)
                link = Link(loss=both, delay=Link().delay + extra)
                if both:
                    self.loss[(m, o)] = self.loss[(o, m)] = both
                self.net.set_link(m, o, link)
                self.net.set_link(self.raddr(m), self.raddr(o), link)

    def jump_clock(self, name: str, step_ms: int) -> None:
        """The member's wall clock steps (an NTP correction); the HLC must cope."""
        self.note(f"clock {name} {step_ms:+d} ms")
        self.skew_ms[name] += step_ms

    def set_default_loss(self, loss: float) -> None:
        self.note(f"network loss {loss}")
        self.default_loss = loss
        self.net.default_link = Link(loss=loss)

    def pause(self, name: str, duration: float) -> None:
        self.note(f"pause {name} {duration}")
        self.stats.pauses += 1
        self.cluster.pause(name, duration)
        self.net.pause(self.raddr(name), duration)

    def end_faults(self) -> None:
        """Stop faults and writes; heal, clean every link, restart every crashed member."""
        self.note("faults end")
        self.faults.stop()
        self.clients.stopped = True
        self.heal()
        if self.degraded:
            self.set_links({}, {})
        if self.default_loss:
            self.set_default_loss(0.0)
        for n in self.names:
            if not self.cluster.up[n]:
                self.restart(n)
        self.inv.mark(
            (p, copy_of(self.stores[n], p)) for n in self.names for p in range(self.cfg.partitions)
        )

    # ---- running --------------------------------------------------------------------------
    def run(self) -> Result:
        t0 = time.perf_counter()
        error = ""
        faults_end = self.cfg.minutes * 60.0
        try:
            self.clients.start()
            self.faults.start()
            self._watch_message_rate(self.net.stats.sent)
            self._check_logs_every(1.0, {})
            self.loop.run_until(until=faults_end)
            self.end_faults()
            self._check_quiet_every(1.0)
            quiet = self.loop.run_until(
                until=faults_end + self.cfg.quiet_timeout,
                predicate=lambda: self.quiet_at is not None,
            )
            if not quiet:
                raise InvariantViolation(
                    f"not quiet {self.cfg.quiet_timeout:.0f}s after the faults ended: "
                    + self.why_not_quiet()
                )
            self.final_checks()
        except InvariantViolation as e:
            error = str(e)
        for rep in self.replicas.values():
            rep.stop()
        if self.disks is not None:
            self.disks.remove()
        self.note(f"end {error}")
        return Result(
            config=self.cfg,
            ok=not error,
            error=error,
            trace=self.trace(),
            stats=self.stats,
            faults_end=faults_end,
            quiet_at=self.quiet_at,
            wall_seconds=time.perf_counter() - t0,
            messages=self.net.stats.sent,
            keys_final=len(self.final_values()) if not error else 0,
            log=self.log,
        )

    def _watch_message_rate(self, sent_before: int) -> None:
        """A storm of messages is a livelock (two members bouncing a subscription, a
        resync loop): it would never get quiet, and would take hours of wall time to
        say so. Stop at the first simulated second past the bound."""
        sent = self.net.stats.sent
        if sent - sent_before > STORM_PER_MEMBER * self.cfg.members:
            raise InvariantViolation(
                f"t={self.loop.now:.1f}s: message storm: {sent - sent_before} messages in "
                f"one simulated second (more than {STORM_PER_MEMBER} a member): a livelock"
            )
        self.loop.call_later(1.0, self._watch_message_rate, sent)

    def _check_logs_every(self, period: float, since: dict[tuple[str, int], float]) -> None:
        """Liveness of the streams: a started member that serves a partition as primary
        has its log, so its changes reach the backups; and it has subscribed to what
        its table makes it a backup of (`Follower.reconcile` ran with that table). A
        member whose streams never started takes writes nobody follows and follows
        nothing. Only a moment may pass between a
        table and its streams (an install starts them in the same step; a refused
        subscription is tried again 0.2 s later); `LOGLESS_S` is the bound."""
        now = self.loop.now
        still: dict[tuple[str, int], float] = {}

        def lacking(key: tuple[str, int], what: str) -> None:
            first = since.get(key, now)
            if now - first >= LOGLESS_S:
                self.inv.fail(f"{what} for {now - first:.1f}s: its streams never started")
            still[key] = first

        for name in sorted(self.cluster.running()):
            rep = self.replicas[name]
            table = rep.table
            if not rep.alive or not rep.started or table is None:
                continue
            _, serving = self.inv.serves.get(name, (0, frozenset()))
            for p in sorted(serving):
                if p not in rep.primary.logs:
                    lacking((name, p), f"{name} serves p{p} as primary with no log")
            if rep.followed != table.version:
                lacking((name, -1), f"{name} follows no copy by its table {table.version:#x}")
        self.loop.call_later(period, self._check_logs_every, period, still)

    def _check_quiet_every(self, period: float) -> None:
        if self.quiet_at is None:
            if not self.why_not_quiet():
                self.quiet_at = self.loop.now
            else:
                self.loop.call_later(period, self._check_quiet_every, period)

    def coordinator(self) -> SimMember:
        """The member that coordinates by the ground truth: the smallest running name."""
        return self.replicas[min(self.cluster.running())]

    def final_table(self) -> PartitionTable:
        """The coordinator's table: the one every member must end with."""
        table = self.coordinator().table
        if table is None:
            raise InvariantViolation("the coordinator has no table at the end")
        return table

    def why_not_quiet(self) -> str:
        """'' when quiet; else the first reason it is not (for the report)."""
        c = self.cluster
        if not c.converged():
            return "membership has not converged"
        running = sorted(c.running())
        coordinator = self.replicas[running[0]]
        table = coordinator.table
        if table is None:
            return f"the coordinator {coordinator.name} has no table"
        if not self.settled_table(coordinator.name, table):
            return (
                f"the coordinator {coordinator.name} holds a table it did not publish, or "
                "one of a lower epoch than another published"
            )
        for n in running:
            rep = self.replicas[n]
            if not rep.started:
                return f"{n} has not started"
            if rep.ownership.version != table.version:
                return f"{n} has another table than the coordinator's last publish"
            if rep.ownership.moved or rep.ownership.early:
                return f"{n} has hand-offs no table settled"
        target = build_table(running, table.epoch, self.placement)
        if target.replica_lists != table.replica_lists:
            moving = sum(
                a != b for a, b in zip(target.replica_lists, table.replica_lists, strict=True)
            )
            return f"the table is not the placement of the running members ({moving} differ)"
        for p in range(self.cfg.partitions):
            reps = table.replicas(p)
            roots = {self.root(m, p) for m in reps}
            if len(roots) > 1:
                return f"partition {p}: replicas {reps} differ"
            plog = self.replicas[reps[0]].primary.logs.get(p)
            if plog is None:
                return f"partition {p}: {reps[0]} has no log"
            for b in reps[1:]:
                st = self.replicas[b].follower.state.get(p)
                if (
                    st is None
                    or st.phase is not Phase.LIVE
                    or (st.term, st.seq) != (plog.term, plog.seq)
                ):
                    return f"partition {p}: backup {b} is not live at the primary's position"
        for n in self.names:
            for p in self.held(n):
                if n not in table.replicas(p):
                    return f"{n} still holds a copy of partition {p}"
        if self.clients.pending or self.clients.sync_pending:
            return "client writes pending"
        return ""

    def root(self, member: str, p: int) -> int:
        """The digest root of a member's copy of p, over everything it holds."""
        store = self.stores[member]
        return digest(store, p, 1 << 63, store.clock()).root

    def held(self, member: str) -> list[int]:
        """Partitions the member's store holds anything of."""
        store = self.stores[member]
        return [p for p in range(self.cfg.partitions) if store.holds_copy(p)]

    def final_values(self) -> dict[bytes, tuple[bytes | None, int, int]]:
        """Every key's final (value, ts, member) at its primary; the clear markers apart
        (`final_markers`)."""
        table = self.final_table()
        out: dict[bytes, tuple[bytes | None, int, int]] = {}
        for p in range(self.cfg.partitions):
            out.update(copy_of(self.stores[table.owner(p)], p))
        out.pop(CLEAR_KEY, None)
        return out

    def final_markers(self) -> dict[int, tuple[int, int]]:
        """Each partition's final clear marker at its primary."""
        table = self.final_table()
        out = {}
        for p in range(self.cfg.partitions):
            got = copy_of(self.stores[table.owner(p)], p).get(CLEAR_KEY)
            if got is not None:
                out[p] = (got[1], got[2])
        return out

    def final_checks(self) -> None:
        """The end-of-run guarantees (simulation/invariants.py lists them)."""
        inv = self.inv
        table = self.final_table()
        if not self.settled_table(self.coordinator().name, table):
            inv.fail("the coordinator's table is not its own publish of the highest epoch")
        for n in sorted(self.cluster.running()):
            if self.replicas[n].ownership.version != table.version:
                inv.fail(f"{n} did not install the coordinator's last publish")
        for p in range(self.cfg.partitions):
            reps = table.replicas(p)
            first = copy_of(self.stores[reps[0]], p)
            for m in reps[1:]:
                if copy_of(self.stores[m], p) != first:
                    inv.fail(f"partition {p}: {m}'s copy differs from {reps[0]}'s")
            if len({self.root(m, p) for m in reps}) != 1:
                inv.fail(f"partition {p}: equal copies with different digest roots")
            for key in first:
                if key != CLEAR_KEY and partition_of(key, self.cfg.partitions) != p:
                    inv.fail(f"{key!r} stored in partition {p}")
        final = self.final_values()
        markers = self.final_markers()
        parts = self.cfg.partitions
        want_markers = inv.cleared_ever if self.cfg.persist else inv.cleared_since
        for p in range(parts):
            if markers.get(p) != want_markers.get(p):
                inv.fail(f"partition {p}: final clear marker {markers.get(p)} is not the "
                         f"newest clear {want_markers.get(p)}")  # fmt: skip
        expected = inv.ever if self.cfg.persist else inv.since_mark

        def clear_of(key: bytes) -> tuple[int, int]:
            """The final clear marker over `key` (the clients clear the plain map only)."""
            return markers.get(partition_of(key, parts), ZERO) if map_of(key) == MAP else ZERO

        for key, v in sorted(expected.items()):
            got = final.get(key)
            if cleared_by(v, clear_of(key)):
                if got is not None:  # a clear never comes back: nothing older survives it
                    inv.fail(f"{key!r}: {got[1:]} survived the clear {clear_of(key)}")
            elif got is None or (got[1], got[2]) != v:
                inv.fail(f"{key!r}: final {got and got[1:]} is not the LWW winner {v}")
        for key in final:
            if key not in expected:
                inv.fail(f"{key!r}: final value from nowhere")
        if self.cfg.persist:
            for key, v in sorted(inv.acked.items()):
                got = final.get(key)
                if cleared_by(v, clear_of(key)):
                    continue  # superseded by a clear
                if got is None or (got[1], got[2]) < v:
                    inv.fail(f"{key!r}: acknowledged write {v} lost (final {got})")
        self.stats.sync_all_lost = len(inv.all_lost)
        for key, v in sorted(inv.sync_acked.items()):
            if inv.all_lost.get(key) == v:
                continue  # every copy was lost at once: more failures than backups
            got = final.get(key)
            if got is None or (got[1], got[2]) < v:
                inv.fail(f"{key!r}: write {v} confirmed under sync backups lost (final {got})")
        for key in sorted(inv.counters):
            got = final.get(key)
            value = decode_counter(got[0]) if got and got[0] is not None else 0
            inv.counter_final(key, partition_of(key, self.cfg.partitions), value)
        self.stats.counters = len(inv.counters)
        self.stats.counters_forked = sum(not c.claimed for c in inv.counters.values())

    def trace(self) -> str:
        """Hash of every message sent, the fault log and the final state."""
        h = hashlib.blake2b(digest_size=16)
        h.update(self.net.digest().encode())
        h.update("\n".join(self.log).encode())
        for n in self.names:
            for p in self.held(n):
                h.update(f"{n}:{p}:{self.root(n, p)}".encode())
        return h.hexdigest()
