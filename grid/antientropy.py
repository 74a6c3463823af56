"""Anti-entropy: replicas of a partition compare digests and merge what differs.

The partition stream keeps backups equal to their primary while nothing goes
wrong. Anti-entropy repairs what it cannot: both sides of a healed split took
writes; a member came back with an old copy; a primary died with changes
still in its send queue; a bug. Every `anti_entropy_interval_s` (10 s) each
member, for the partitions it is primary of, runs a round against each
backup:

1. Compare: the roots of its partitions' digests (8 bytes each, 64
   partitions per call). The backup answers the 64 bucket digests of those
   whose roots differ from its own.
2. Repair, per partition that differs: the primary sends its records of the
   differing buckets; the backup applies them (last writer wins) and answers
   its own records of the same buckets, which the primary applies. A record
   the primary takes becomes a change of its partition like any other, so it
   also goes down the stream to every other backup.

Both sides digest only versions older than `anti_entropy_settle_s` (the
`cut`), so a write still in flight on the stream is not a difference. The
merge rule is the store's (`Store.apply`): last writer wins on (ts, member),
tombstones included, so repairs commute and a replica never goes back.

The same exchange runs once more when a member is about to drop a copy it
no longer has a role for (`hand_back`): before a copy goes, what it holds
that the partition's primary lacks (the writes of a minority side, after a
heal) is merged into the primary. In the normal case (a hand-off) the roots
are equal and only they are sent.

Cost: a digest hashes each item of a copy twice (its key for the bucket, and
its identity and version), about 1 µs per item, taken one partition at a time
under the store lock with the event loop yielding in between. Tombstones
older than `tombstone_grace_s` are collected at the end of each round.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import msgpack

from grid import logs
from grid.config import Config
from grid.map_backups import map_backups
from grid.peers import PEER, Peers
from grid.replica import unpack_records
from grid.routing import Routing
from grid.store import Store, copies
from proto import grid_pb2 as pb
from replication.digest import BUCKETS, Digest, differing, unpack_buckets
from replication.hlc import LOGICAL_BITS

log = logs.get("grid.antientropy")


class Refused(Exception):
    """The replica has no role for the partition (its table moved on)."""


COMPARE_BATCH = 8  # partitions per Compare call: the receiver digests them in one go
PACE_SHARE = 0.5
"""A periodic round spreads its comparisons over this share of the interval: digests cost
about 0.7 us an item, and a round of a member holding a million copies done at once is a
burst of CPU that clients of every member on the machine feel (measured: p99 of gets
3.6 -> 11 ms with rounds every 2 s, unpaced). A round brought forward (a heal) is not
paced: converging soon is its point."""
REPAIR_BUCKETS = 8  # buckets per Repair call: keeps one message well under the limits
RPC_TIMEOUT_S = 10.0
TOMBSTONE_SWEEP_S = 60.0  # tombstones outlive the grace period by at most this


class AntiEntropy:
    def __init__(
        self,
        me: str,
        config: Config,
        store: Store,
        routing: Routing,
        peers: Peers,
        after_apply: Callable[[], object],
    ) -> None:
        self.me = me
        self.config = config
        self.store = store
        self.routing = routing
        self.peers = peers
        self.after_apply = after_apply  # the durability journal's flush
        self.map_backups = map_backups(config)
        # whether this member holds a role for a partition (set by the runtime): a
        # comparison or repair of a copy it should not hold is refused, or the repair
        # would bring back a copy just dropped, with nothing left to drop it again
        self.has_role: Callable[[int], bool] = lambda p: True
        self.rounds = 0
        self.compared = 0
        self.differing = 0
        self.repaired = 0
        self.sent = 0
        self.collected = 0
        self.last_round_s = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._soon = asyncio.Event()
        self._due: asyncio.TimerHandle | None = None  # an early round, after the moves

    # ---- the periodic round (this member as primary) -----------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._collect_loop())]
        if self.config.anti_entropy_interval_s > 0:
            self._tasks += [loop.create_task(self._loop()), loop.create_task(self._watch())]

    async def _collect_loop(self) -> None:
        """Tombstones past the grace period go on their own timer, anti-entropy on or off."""
        while True:
            await asyncio.sleep(TOMBSTONE_SWEEP_S)
            try:
                await self._collect_tombstones()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("tombstone collection failed")

    async def stop(self) -> None:
        if self._due is not None:
            self._due.cancel()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _watch(self) -> None:
        """A table whose member set changed (a heal, a member back) brings the next round
        forward: that is when replicas are most likely to differ. Not at once: the moves
        that follow (a table per wave) come first, so the round is due `settle + 1` s after
        the last table of the moves, and changes younger than the settle time are not
        compared anyway."""
        q = self.routing.watch()
        table = self.routing.table
        members: set[str] = set(table.members) if table is not None else set()
        loop = asyncio.get_running_loop()
        try:
            while True:
                msg = await q.get()
                if not msg.version:
                    return  # shutdown
                now = {m.name for m in msg.members}
                if (members and now != members) or self._due is not None:
                    if self._due is not None:
                        self._due.cancel()  # moves still going: later
                    self._due = loop.call_later(self.config.anti_entropy_settle_s + 1, self._early)
                members = now
        finally:
            self.routing.unwatch(q)

    def _early(self) -> None:
        self._due = None
        self._soon.set()

    async def _loop(self) -> None:
        interval = self.config.anti_entropy_interval_s
        while True:
            # jittered, so members of a cluster started together do not all compare at once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._soon.wait(), interval * random.uniform(0.8, 1.2))
            early = self._soon.is_set()
            self._soon.clear()
            try:
                await self.round(paced=not early)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("anti-entropy round failed")

    def cut(self) -> int:
        """Versions at or below this are compared; younger ones may still be in flight."""
        settle_ms = int(self.config.anti_entropy_settle_s * 1000)
        return max(0, self.store.clock() - settle_ms) << LOGICAL_BITS

    async def round(self, paced: bool = False) -> int:
        """Compare every partition this member is primary of with each of its backups.
        Returns the records that won somewhere (here or there)."""
        started = time.monotonic()
        table = self.routing.table
        if table is None:
            return 0
        cut = self.cut()
        by_backup: dict[tuple[str, int], list[int]] = {}  # (member, its rank) -> partitions
        for p in range(self.store.partitions):
            if self.routing.serves(p):
                for rank, b in enumerate(table.replicas(p)):
                    if rank and b != self.me:
                        by_backup.setdefault((b, rank), []).append(p)
        repaired = 0
        calls = sum(-(-len(parts) // COMPARE_BATCH) for parts in by_backup.values())
        pace = PACE_SHARE * self.config.anti_entropy_interval_s / calls if paced and calls else 0
        for (member, rank), parts in by_backup.items():
            address = self.routing.address_of(member)
            if not address:
                continue
            try:
                repaired += await self.compare_with(address, parts, cut, rank=rank, pace=pace)
            except grpc.aio.AioRpcError as e:
                log.info("anti-entropy: backup unreachable", member=member, code=e.code().name)
            except (ValueError, TypeError, msgpack.UnpackException) as e:
                # a malformed answer from one backup must not stop the others' comparison
                log.warning("anti-entropy: bad answer", member=member, error=repr(e))
        self.rounds += 1
        self.last_round_s = time.monotonic() - started
        if repaired:
            log.info(
                "anti-entropy repaired replicas",
                records=repaired,
                backups=len(by_backup),
                seconds=round(self.last_round_s, 3),
            )
        return repaired

    def _holds(self, rank: int) -> copies.Holds:
        """The maps a replica of this rank holds (None: all; grid/map_backups.py)."""
        mb = self.map_backups
        return None if mb.uniform or rank == 0 else (lambda name: mb.holds(name, rank))

    async def compare_with(
        self,
        address: str,
        parts: Sequence[int],
        cut: int,
        apply_theirs: bool = True,
        rank: int = 0,
        pace: float = 0.0,
    ) -> int:
        """Compare these partitions with one replica (of this backup rank: the maps it
        holds) and repair what differs; `pace`: seconds to rest between calls."""
        repaired = 0
        holds = self._holds(rank)
        # as a primary (a round), only partitions still served: one handed off while the
        # round rests would otherwise be filled again from the backup, with no role here
        serving = self.routing.serves if apply_theirs else None
        for i in range(0, len(parts), COMPARE_BATCH):
            if pace and i:
                await asyncio.sleep(pace)
            mine = await self._digests(parts[i : i + COMPARE_BATCH], cut, holds, serving)
            if not mine:
                continue
            request = pb.CompareRequest(
                primary=self.me,
                cut=cut,
                partitions=[pb.PartitionDigest(partition=p, root=d.root) for p, d in mine.items()],
                rank=rank,
            )
            data = await self.peers.unary(address, PEER + "Compare", request, RPC_TIMEOUT_S)
            reply = pb.CompareReply.FromString(data)
            if reply.refused and not apply_theirs:
                raise Refused(f"{address} has no role for partitions {list(reply.refused)}")
            self.compared += len(mine) - len(reply.refused)
            for theirs in reply.differing:
                d = mine.get(theirs.partition)
                if d is None:
                    continue
                self.differing += 1
                buckets = differing(d.buckets, unpack_buckets(theirs.buckets))
                for j in range(0, len(buckets), REPAIR_BUCKETS):
                    repaired += await self._repair(
                        address, theirs.partition, buckets[j : j + REPAIR_BUCKETS], cut,
                        apply_theirs, rank,
                    )  # fmt: skip
        return repaired

    async def _digests(
        self,
        parts: Sequence[int],
        cut: int,
        holds: copies.Holds,
        only: Callable[[int], bool] | None = None,
    ) -> dict[int, Digest]:
        out = {}
        for p in parts:
            with self.store.lock:
                if only is not None and not only(p):
                    continue
                out[p] = copies.digest(self.store, p, cut, self.store.clock(), holds)
            await asyncio.sleep(0)  # one partition at a time: clients get the loop in between
        return out

    async def _repair(
        self, address: str, p: int, buckets: list[int], cut: int, apply_theirs: bool, rank: int
    ) -> int:
        with self.store.lock:
            records = copies.records_in(
                self.store, p, buckets, cut, self.store.clock(), self._holds(rank)
            )
        request = pb.RepairRequest(
            primary=self.me,
            cut=cut,
            partition=p,
            buckets=buckets,
            records=msgpack.packb(records),
            count=len(records),
            rank=rank,
        )
        data = await self.peers.unary(address, PEER + "Repair", request, RPC_TIMEOUT_S)
        reply = pb.RepairReply.FromString(data)
        if reply.refused:
            if not apply_theirs:
                raise Refused(f"{address} has no role for partition {p}")
            return 0
        self.sent += len(records)
        applied = int(reply.applied)
        if apply_theirs and reply.count:
            theirs = unpack_records(reply.records, reply.count, self.store.max_value, "repair")
            applied += self.apply(p, theirs, only=self.routing.serves)
        return applied

    def apply(
        self,
        p: int,
        records: Sequence[Any],
        only: Callable[[int], bool] | None = None,
        count: bool = True,
    ) -> int:
        """Merge a replica's records into this copy (last writer wins); returns winners.
        `only`: checked under the lock first (the role may have changed meanwhile);
        `count`: as anti-entropy's keys_repaired (read repair counts its own)."""
        won = 0
        store = self.store
        with store.lock:
            if only is not None and not only(p):
                return 0
            now = store.clock()
            for r in records:
                if not (isinstance(r, tuple) and len(r) == 8):
                    raise ValueError(f"partition {p}: a repair record is not an 8-field array")
                if store.apply(p, *r, now):
                    won += 1
            self.after_apply()
        if count:
            self.repaired += won
        return won

    async def _collect_tombstones(self) -> None:
        for p in range(self.store.partitions):
            with self.store.lock:
                self.collected += copies.collect_tombstones(self.store, p, self.store.clock())
            if p % 16 == 15:
                await asyncio.sleep(0)

    # ---- before dropping a copy with no role -------------------------------------------------
    async def hand_back(self, p: int) -> bool:
        """Merge into the partition's primary what this copy has and it lacks; False if
        the primary could not be reached (keep the copy and try at the next table)."""
        owner = self.routing.owner(p)
        if owner is None or owner == self.me:
            return True
        address = self.routing.address_of(owner)
        if not address:
            return False
        try:
            # everything, not only the settled past: nothing reaches this copy any more
            cut = self.store.hlc.last
            await self.compare_with(address, [p], cut, apply_theirs=False)
        except (grpc.aio.AioRpcError, ValueError, Refused) as e:
            # kept, and tried again later: the only copy of a healed split's writes may be
            # this one, and a primary that moved on cannot vouch for it
            log.info("hand-back before drop failed", partition=p, owner=owner, error=str(e))
            return False
        return True

    # ---- the other side of a round -------------------------------------------------------------
    async def on_compare(self, request: pb.CompareRequest) -> pb.CompareReply:
        reply = pb.CompareReply()
        holds = self._holds(request.rank)
        for pd in request.partitions:
            p = pd.partition
            if not 0 <= p < self.store.partitions:
                raise ValueError(f"partition {p} is out of range")
            with self.store.lock:
                if not self.has_role(p):
                    reply.refused.append(p)  # not ours (any more): nothing to compare
                    continue
                d = copies.digest(self.store, p, request.cut, self.store.clock(), holds)
            if d.root != pd.root:
                reply.differing.add(partition=p, buckets=d.pack())
            await asyncio.sleep(0)
        return reply

    def on_repair(self, request: pb.RepairRequest) -> pb.RepairReply:
        p = request.partition
        if not 0 <= p < self.store.partitions:
            raise ValueError(f"partition {p} is out of range")
        if any(b >= BUCKETS for b in request.buckets):
            raise ValueError(f"a bucket number is not below {BUCKETS}")
        theirs = unpack_records(request.records, request.count, self.store.max_value, "repair")
        with self.store.lock:
            if not self.has_role(p):
                return pb.RepairReply(refused=True)  # not ours (any more): keep nothing
        with self.store.lock:  # our side as it is before theirs is merged in
            mine = copies.records_in(
                self.store,
                p,
                request.buckets,
                request.cut,
                self.store.clock(),
                self._holds(request.rank),
            )
        same = {(r[1], r[2], r[4], r[5]) for r in theirs if isinstance(r, tuple) and len(r) == 8}
        mine = [r for r in mine if (r[1], r[2], r[4], r[5]) not in same]
        applied = self.apply(p, theirs)
        self.sent += len(mine)
        return pb.RepairReply(records=msgpack.packb(mine), count=len(mine), applied=applied)

    def stats(self) -> pb.AntiEntropyStats:
        return pb.AntiEntropyStats(
            rounds=self.rounds,
            partitions_compared=self.compared,
            partitions_differing=self.differing,
            keys_repaired=self.repaired,
            keys_sent=self.sent,
            last_round_s=self.last_round_s,
            tombstones=copies.tombstone_count(self.store),
            tombstones_collected=self.collected,
        )
