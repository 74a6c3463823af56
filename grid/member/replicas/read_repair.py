"""Reads from backup copies, and read repair carried out.

Reads from backups
==================

A client made with `read_from_backup=True` (or an embedded node configured
with it) lets a member answer GET, CONTAINS and TTL from a backup copy it
holds, as Hazelcast's `read-backup-data` and Redis Cluster's READONLY
replicas do. The smart client spreads such reads over each partition's
replicas; an embedded node reads its own copy without a network hop. The
price is staleness: a copy is behind its primary by the replication lag
(milliseconds, docs/benchmarks.md), so a read may miss a write acknowledged
a moment ago, also one made by the same client. A member answers from a copy
only while it is a backup of the partition in its table, follows the
partition's primary and has caught up with it (not in the middle of a
snapshot), and holds the map (per-map backups); otherwise the read goes to
the primary as usual (NOT_OWNER, then forwarding).

Read repair
===========

replication/read_repair.py decides which reads are checked and what each
side sends and keeps; this module carries it out: the queue is taken
`LINGER_S` after the first key, one `Peer.ReadRepair` call per primary
(`MAX_PROBES` keys each), the store lock around each look-up and merge, and
the bounded decoding of probes.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import msgpack

from grid import logs
from grid.config import Config
from grid.member.peers import PEER, Peers
from grid.member.placement.routing import Routing
from grid.member.replicas.antientropy import AntiEntropy
from grid.member.replicas.follower import Followers
from grid.member.replicas.replica import unpack_records
from grid.store import Store, copies
from proto import grid_pb2 as pb
from replication.read_repair import MAX_PROBES, Checker, Probe, Record

log = logs.get("grid.member.replicas.read_repair")

LINGER_S = 0.05
"""How long checks gather before they are sent: one call per primary for a burst."""
RPC_TIMEOUT_S = 5.0


class ReadRepair:
    """Both ends: the backup's queue of keys read from its copies, and the primary's
    answer. It is the store's `backup_reads` (grid/store/store.py)."""

    def __init__(
        self,
        name: str,
        config: Config,
        store: Store,
        routing: Routing,
        followers: Followers,
        peers: Peers,
        anti_entropy: AntiEntropy,
    ) -> None:
        self.me = name
        self.store = store
        self.routing = routing
        self.followers = followers
        self.peers = peers
        self.anti_entropy = anti_entropy

        def key_record(p: int, map_name: str, key: bytes) -> Record | None:
            return copies.key_record(store, p, map_name, key, store.clock())

        self.core = Checker(name, config.read_repair_chance, key_record)
        self._armed = False  # a wake-up is on its way to the loop
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        # the store's hook (BackupReads.readable), called on every backup read
        self.readable = followers.readable

    # ---- the store's hook (under the store lock, any thread) ----------------------------------
    def served(self, partition: int, map_name: str, key: bytes) -> None:
        if self.core.served(partition, map_name, key) and not self._armed and self._loop:
            self._armed = True
            self._loop.call_soon_threadsafe(self._wake.set)  # embedded reads: other threads

    # ---- the backup's side ---------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="grid-read-repair")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(LINGER_S)
            self._wake.clear()
            with self.store.lock:
                queue = self.core.take()
                self._armed = False
            try:
                await self.check(queue)
            except Exception:  # a bug must not end read repair for the member's lifetime
                log.exception("read repair failed")

    async def check(self, queue: dict[int, set[tuple[str, bytes]]]) -> int:
        """Check these keys of this member's copies with their primaries; returns the
        records merged on either side."""
        by_owner = self.core.by_primary(queue, self.routing.owner)
        fixed = 0
        for owner, parts in by_owner.items():
            address = self.routing.address_of(owner)
            if not address:
                continue
            try:
                fixed += await self._check_with(address, parts, queue)
            except grpc.aio.AioRpcError as e:
                log.info("read repair: primary unreachable", member=owner, code=e.code().name)
            except (ValueError, TypeError, msgpack.UnpackException) as e:
                log.warning("read repair: bad answer", member=owner, error=repr(e))
        return fixed

    async def _check_with(
        self, address: str, parts: list[int], queue: dict[int, set[tuple[str, bytes]]]
    ) -> int:
        core = self.core
        fixed = 0
        items = [(p, name, key) for p in parts for name, key in sorted(queue[p])]
        for i in range(0, len(items), MAX_PROBES):
            request = pb.ReadRepairRequest(backup=self.me)
            with self.store.lock:
                probes = core.probes(items[i : i + MAX_PROBES], self.followers.readable)
            for p, ps in probes.items():
                request.partitions.add(partition=p, probes=msgpack.packb(ps), probe_count=len(ps))
            if not request.partitions:
                continue
            reply = await self._call(address, request)
            core.checked += sum(len(ps) for ps in probes.values())
            push = pb.ReadRepairRequest(backup=self.me)
            for part in reply.partitions:
                p = part.partition
                if p not in probes:
                    raise ValueError(f"answer for partition {p}, which was not asked about")
                theirs: list[Record] = []
                if part.count:
                    theirs = unpack_records(
                        part.records, part.count, self.store.max_value, "read repair"
                    )
                wanted = (
                    self._unpack_probes(part.probes, part.probe_count) if part.probe_count else []
                )
                with self.store.lock:
                    won, mine = core.on_answer(
                        p,
                        theirs,
                        wanted,
                        lambda name, p=p: self.followers.holds(p, name),
                        self._merge,
                    )
                fixed += won
                if mine:
                    push.partitions.add(partition=p, records=msgpack.packb(mine), count=len(mine))
            if push.partitions:
                fixed += int((await self._call(address, push)).applied)
        core.fixed += fixed
        if fixed:
            log.info("read repair merged differing copies", records=fixed, primary=address)
        return fixed

    def _merge(self, p: int, records: list[Record]) -> int:
        """Merge into this copy while it still has a role (called under the store lock)."""
        if self.followers.unheld(p):
            return 0
        now = self.store.clock()
        won = sum(bool(self.store.apply(p, *r, now)) for r in records)
        if won:
            self.anti_entropy.copies.after_apply()
        return won

    async def _call(self, address: str, request: pb.ReadRepairRequest) -> pb.ReadRepairReply:
        data = await self.peers.unary(address, PEER + "ReadRepair", request, RPC_TIMEOUT_S)
        return pb.ReadRepairReply.FromString(data)

    def _unpack_probes(self, data: bytes, count: int) -> list[Probe]:
        """Probes as sent by `_check_with`, bounded like every decoder."""
        probes = msgpack.unpackb(
            data,
            use_list=False,
            max_bin_len=self.store.max_key + 1,
            max_str_len=1 << 16,
            max_array_len=max(count, 4),
            max_map_len=0,
            max_ext_len=0,
        )
        if not isinstance(probes, tuple) or len(probes) != count:
            raise ValueError("read repair: malformed probes")
        for pr in probes:
            if not (
                isinstance(pr, tuple)
                and len(pr) == 4
                and isinstance(pr[0], str)
                and isinstance(pr[1], bytes)
                and isinstance(pr[2], int)
                and isinstance(pr[3], int)
            ):
                raise ValueError("read repair: a probe is not [map, key, ts, member]")
        return [Probe(*pr) for pr in probes]

    # ---- the primary's side --------------------------------------------------------------------
    def on_read_repair(self, request: pb.ReadRepairRequest) -> pb.ReadRepairReply:
        reply = pb.ReadRepairReply()
        cut = self.anti_entropy.cut()
        for part in request.partitions:
            p = part.partition
            if not 0 <= p < self.store.partitions:
                raise ValueError(f"partition {p} is out of range")
            if not self.routing.serves(p):
                reply.refused.append(p)
                continue
            if part.count:
                theirs = unpack_records(
                    part.records, part.count, self.store.max_value, "read repair"
                )
                reply.applied += self.anti_entropy.apply(p, theirs, only=self.routing.serves)
            if not part.probe_count:
                continue
            probes = self._unpack_probes(part.probes, part.probe_count)
            with self.store.lock:
                newer, wanted = self.core.on_probes(p, probes, cut)
            if newer or wanted:
                reply.partitions.add(
                    partition=p,
                    records=msgpack.packb(newer),
                    count=len(newer),
                    probes=msgpack.packb(wanted),
                    probe_count=len(wanted),
                )
        return reply

    def fill_stats(self, stats: pb.AntiEntropyStats) -> None:
        stats.backup_reads = self.core.served_count
        stats.read_repair_checked = self.core.checked
        stats.read_repair_fixed = self.core.fixed
