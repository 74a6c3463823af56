"""Reads from backup copies, and read repair.

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

Replicas can differ for longer than the lag: after a healed split, a member's
return, a primary that died with changes in its send queue. Anti-entropy
(grid/antientropy.py) finds every difference within `anti_entropy_interval_s`;
read repair fixes the keys that are read before it gets there, as Cassandra
and Riak do. A share of the reads a backup answers (`read_repair_chance`,
0.1) puts the key in a queue; after `LINGER_S` the queue goes to the keys'
primaries, one `Peer.ReadRepair` call per primary:

1. the backup sends a probe per key: the version of the newest thing its
   copy knows of the key (live entry, tombstone, or the map's clear marker;
   0 for nothing);
2. the primary answers its own record of each key whose version is newer,
   and names the keys whose version at the backup is newer than its own;
3. the backup merges the primary's records (last writer wins) and sends the
   records the primary named, which the primary merges: a record it takes
   is a change of its partition like any other, and goes down the stream to
   every other backup.

The primary leaves out versions younger than `anti_entropy_settle_s`: they
may still be on their way down the stream, and the stream will bring them.
The read that triggered a repair has been answered already (with the copy's
value): repair is in the background, so a read costs what it did, and the
next read of the key sees the merged value. The queue is bounded
(`MAX_QUEUED` keys; more are not checked) so that a burst of reads cannot
grow it without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import grpc
import msgpack

from grid import logs
from grid.antientropy import AntiEntropy
from grid.config import Config
from grid.follower import Followers
from grid.peers import PEER, Peers
from grid.replica import unpack_records
from grid.routing import Routing
from grid.store import Store, copies
from proto import grid_pb2 as pb
from replication import lww

log = logs.get("grid.read_repair")

LINGER_S = 0.05
"""How long checks gather before they are sent: one call per primary for a burst."""
MAX_QUEUED = 65_536
"""Keys waiting to be checked, at most; reads past it are answered and not checked."""
MAX_PROBES = 4096
"""Keys per ReadRepair call."""
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
        self.chance = config.read_repair_chance
        self.store = store
        self.routing = routing
        self.followers = followers
        self.peers = peers
        self.anti_entropy = anti_entropy
        self.rng = random.Random()
        self._queue: dict[int, set[tuple[str, bytes]]] = {}
        self._queued = 0
        self._armed = False  # a wake-up is on its way to the loop
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.served_count = 0  # reads answered from a backup copy
        self.checked = 0  # keys checked against their primary
        self.fixed = 0  # records merged, here or at the primary, because copies differed
        # the store's hook (BackupReads.readable), called on every backup read
        self.readable = followers.readable

    # ---- the store's hook (under the store lock, any thread) ----------------------------------
    def served(self, partition: int, map_name: str, key: bytes) -> None:
        self.served_count += 1
        chance = self.chance
        if not chance or (chance < 1.0 and self.rng.random() >= chance):
            return
        if self._queued >= MAX_QUEUED:
            return
        keys = self._queue.get(partition)
        if keys is None:
            keys = self._queue[partition] = set()
        item = (map_name, key)
        if item in keys:
            return
        keys.add(item)
        self._queued += 1
        if not self._armed and self._loop is not None:
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
                queue, self._queue = self._queue, {}
                self._queued = 0
                self._armed = False
            try:
                await self.check(queue)
            except Exception:  # a bug must not end read repair for the member's lifetime
                log.exception("read repair failed")

    async def check(self, queue: dict[int, set[tuple[str, bytes]]]) -> int:
        """Check these keys of this member's copies with their primaries; returns the
        records merged on either side."""
        by_owner: dict[str, list[int]] = {}
        for p in queue:
            owner = self.routing.owner(p)
            if owner is not None and owner != self.me:
                by_owner.setdefault(owner, []).append(p)
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
        fixed = 0
        items = [(p, name, key) for p in parts for name, key in queue[p]]
        for i in range(0, len(items), MAX_PROBES):
            request = pb.ReadRepairRequest(backup=self.me)
            with self.store.lock:
                now = self.store.clock()
                probes: dict[int, list[tuple[str, bytes, int, int]]] = {}
                for p, name, key in items[i : i + MAX_PROBES]:
                    if not self.followers.readable(p, name):
                        continue  # no longer a caught-up copy here: nothing to compare
                    rec = copies.key_record(self.store, p, name, key, now)
                    ts, member = (rec[4], rec[5]) if rec is not None else (0, 0)
                    probes.setdefault(p, []).append((name, key, ts, member))
            for p, ps in probes.items():
                request.partitions.add(partition=p, probes=msgpack.packb(ps), probe_count=len(ps))
            if not request.partitions:
                continue
            reply = await self._call(address, request)
            self.checked += sum(len(ps) for ps in probes.values())
            push = pb.ReadRepairRequest(backup=self.me)
            for part in reply.partitions:
                p = part.partition
                if p not in probes:
                    raise ValueError(f"answer for partition {p}, which was not asked about")
                if part.count:
                    theirs = unpack_records(
                        part.records, part.count, self.store.max_value, "read repair"
                    )
                    # only maps this copy holds (per-map backups: its rank may have risen)
                    theirs = [
                        r for r in theirs
                        if isinstance(r, tuple) and len(r) == 8 and self.followers.holds(p, r[1])
                    ]  # fmt: skip
                    fixed += self.anti_entropy.apply(p, theirs, only=self._has_role, count=False)
                if part.probe_count:
                    wanted = self._unpack_probes(part.probes, part.probe_count)
                    with self.store.lock:
                        now = self.store.clock()
                        mine = [
                            r
                            for name, key, _, _ in wanted
                            if (r := copies.key_record(self.store, p, name, key, now))
                        ]
                    if mine:
                        push.partitions.add(
                            partition=p, records=msgpack.packb(mine), count=len(mine)
                        )
            if push.partitions:
                fixed += int((await self._call(address, push)).applied)
        self.fixed += fixed
        if fixed:
            log.info("read repair merged differing copies", records=fixed, primary=address)
        return fixed

    def _has_role(self, p: int) -> bool:
        return not self.followers.unheld(p)

    async def _call(self, address: str, request: pb.ReadRepairRequest) -> pb.ReadRepairReply:
        data = await self.peers.unary(address, PEER + "ReadRepair", request, RPC_TIMEOUT_S)
        return pb.ReadRepairReply.FromString(data)

    def _unpack_probes(self, data: bytes, count: int) -> list[tuple[str, bytes, int, int]]:
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
        return list(probes)

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
                reply.applied += self.anti_entropy.apply(
                    p, theirs, only=self.routing.serves, count=False
                )
            if not part.probe_count:
                continue
            probes = self._unpack_probes(part.probes, part.probe_count)
            newer: list[Any] = []
            wanted: list[tuple[str, bytes, int, int]] = []
            with self.store.lock:
                now = self.store.clock()
                for name, key, ts, member in probes:
                    mine = copies.key_record(self.store, p, name, key, now)
                    version = (mine[4], mine[5]) if mine is not None else lww.ZERO
                    if lww.newer(version, (ts, member)):
                        if version[0] <= cut:  # younger: still on its way down the stream
                            newer.append(mine)
                    elif lww.newer((ts, member), version):
                        wanted.append((name, key, 0, 0))
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
        stats.backup_reads = self.served_count
        stats.read_repair_checked = self.checked
        stats.read_repair_fixed = self.fixed
