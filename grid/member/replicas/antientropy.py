"""Anti-entropy, carried out: rounds on a timer, Compare and Repair calls over gRPC.

replication/antientropy.py decides what is compared with whom and what each
side sends and keeps (the algorithm is described there); this module runs it:
a jittered round every `anti_entropy_interval_s` (10 s) from this member as
primary, brought forward after a table whose member set changed, paced over
half the interval so a big member's digests are not one burst of CPU; the
gRPC calls; the store lock around each partition's digest, records and merge,
with the event loop yielding in between; the journal flush after a merge; the
hand-back of a copy before it is dropped; and the collection of tombstones
older than `tombstone_grace_s`.

Cost: a digest hashes each item of a copy twice (its key for the bucket, and
its identity and version), about 1 µs per item, taken one partition at a time
under the store lock.
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
from grid.member.peers import PEER, Peers
from grid.member.placement.routing import Routing
from grid.member.replicas.map_backups import map_backups
from grid.member.replicas.replica import unpack_records
from grid.store import Store, copies
from proto import grid_pb2 as pb
from replication.antientropy import (
    COMPARE_BATCH,
    Compared,
    Differing,
    Reconciler,
    Record,
    Refused,
    Repaired,
)
from replication.digest import Digest

log = logs.get("grid.member.replicas.antientropy")


PACE_SHARE = 0.5
"""A periodic round spreads its comparisons over this share of the interval: digests cost
about 0.7 us an item, and a round of a member holding a million copies done at once is a
burst of CPU that clients of every member on the machine feel (measured: p99 of gets
3.6 -> 11 ms with rounds every 2 s, unpaced). A round brought forward (a heal) is not
paced: converging soon is its point."""
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
        has_role: Callable[[int], bool],
    ) -> None:
        self.me = me
        self.config = config
        self.store = store
        self.routing = routing
        self.peers = peers
        self.copies = copies.StoreCopies(store, after_apply, store.lock)
        # a comparison or repair of a copy this member should not hold is refused, or the
        # repair would bring back a copy just dropped, with nothing left to drop it again
        self.core = Reconciler(me, store.partitions, map_backups(config), self.copies, has_role)
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
        return self.core.cut(self.store.clock(), int(self.config.anti_entropy_settle_s * 1000))

    async def round(self, paced: bool = False) -> int:
        """Compare every partition this member is primary of with each of its backups.
        Returns the records that won somewhere (here or there)."""
        started = time.monotonic()
        table = self.routing.table
        if table is None:
            return 0
        cut = self.cut()
        peers = self.core.peers(self.routing.serves, table.replicas)
        repaired = 0
        calls = sum(-(-len(peer.partitions) // COMPARE_BATCH) for peer in peers)
        pace = PACE_SHARE * self.config.anti_entropy_interval_s / calls if paced and calls else 0
        for peer in peers:
            address = self.routing.address_of(peer.member)
            if not address:
                continue
            try:
                repaired += await self.compare_with(
                    address, peer.partitions, cut, rank=peer.rank, pace=pace
                )
            except grpc.aio.AioRpcError as e:
                log.info("anti-entropy: backup unreachable", member=peer.member,
                         code=e.code().name)  # fmt: skip
            except (ValueError, TypeError, msgpack.UnpackException) as e:
                # a malformed answer from one backup must not stop the others' comparison
                log.warning("anti-entropy: bad answer", member=peer.member, error=repr(e))
        self.core.rounds += 1
        self.last_round_s = time.monotonic() - started
        if repaired:
            log.info(
                "anti-entropy repaired replicas",
                records=repaired,
                backups=len(peers),
                seconds=round(self.last_round_s, 3),
            )
        return repaired

    async def compare_with(
        self,
        address: str,
        parts: Sequence[int],
        cut: int,
        keep_theirs: bool = True,
        rank: int = 0,
        pace: float = 0.0,
    ) -> int:
        """Compare these partitions with one replica (of this backup rank: the maps it
        holds) and repair what differs; `pace`: seconds to rest between calls."""
        core = self.core
        repaired = 0
        # as a primary (a round), only partitions still served: one handed off while the
        # round rests would otherwise be filled again from the backup, with no role here
        serving = self.routing.serves if keep_theirs else None
        for i, batch in enumerate(core.batches(parts)):
            if pace and i:
                await asyncio.sleep(pace)
            mine: dict[int, Digest] = {}
            for p in batch:
                mine.update(core.digests([p], cut, rank, serving))
                await asyncio.sleep(0)  # one partition at a time: clients get the loop
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
            answer = Compared(
                list(reply.refused), [Differing(d.partition, d.buckets) for d in reply.differing]
            )
            for p, buckets in core.to_repair(mine, answer, keep_theirs):
                repaired += await self._repair(address, p, buckets, cut, keep_theirs, rank)
        return repaired

    async def _repair(
        self, address: str, p: int, buckets: list[int], cut: int, keep_theirs: bool, rank: int
    ) -> int:
        records = self.core.repair_records(p, buckets, cut, rank)
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
        theirs: list[Record] = []
        if keep_theirs and reply.count and not reply.refused:
            theirs = unpack_records(reply.records, reply.count, self.store.max_value, "repair")
        answer = Repaired(reply.refused, theirs, int(reply.applied))
        return self.core.repaired_by(
            p, len(records), answer, keep_theirs, self.routing.serves if keep_theirs else None
        )

    def apply(self, p: int, records: Sequence[Any], only: Callable[[int], bool] | None) -> int:
        """Merge a replica's records into this copy (read repair's merges; it counts its
        own): last writer wins, only while `only(p)` holds."""
        return self.copies.merge(p, records, only)

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
            await self.compare_with(address, [p], cut, keep_theirs=False)
        except (grpc.aio.AioRpcError, ValueError, Refused) as e:
            # kept, and tried again later: the only copy of a healed split's writes may be
            # this one, and a primary that moved on cannot vouch for it
            log.info("hand-back before drop failed", partition=p, owner=owner, error=str(e))
            return False
        return True

    # ---- the other side of a round -------------------------------------------------------------
    async def on_compare(self, request: pb.CompareRequest) -> pb.CompareReply:
        reply = pb.CompareReply()
        core = self.core
        for pd in request.partitions:
            answer = core.on_compare(request.cut, request.rank, [(pd.partition, pd.root)])
            reply.refused.extend(answer.refused)
            for d in answer.differing:
                reply.differing.add(partition=d.partition, buckets=d.buckets)
            await asyncio.sleep(0)
        return reply

    def on_repair(self, request: pb.RepairRequest) -> pb.RepairReply:
        if not 0 <= request.partition < self.store.partitions:
            raise ValueError(f"partition {request.partition} is out of range")
        theirs = unpack_records(request.records, request.count, self.store.max_value, "repair")
        answer = self.core.on_repair(
            request.partition, list(request.buckets), request.cut, request.rank, theirs
        )
        if answer.refused:
            return pb.RepairReply(refused=True)
        return pb.RepairReply(
            records=msgpack.packb(answer.records), count=len(answer.records), applied=answer.applied
        )

    def stats(self) -> pb.AntiEntropyStats:
        return pb.AntiEntropyStats(
            rounds=self.core.rounds,
            partitions_compared=self.core.compared,
            partitions_differing=self.core.differing,
            keys_repaired=self.core.repaired,
            keys_sent=self.core.sent,
            last_round_s=self.last_round_s,
            tombstones=copies.tombstone_count(self.store),
            tombstones_collected=self.collected,
        )
