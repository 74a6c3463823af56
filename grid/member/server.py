"""The gRPC face of a member: the Grid service on grpc.aio, plus standard health.

Handlers take and return raw bytes and parse the protobuf themselves, so that
a malformed message is answered with INVALID_ARGUMENT and a precise message
(grpc's own deserializer would answer INTERNAL) and the member carries on.
Message size limits are enforced by grpc itself (max_message_bytes), which
answers RESOURCE_EXHAUSTED before a byte of an oversized message is parsed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from grid import __version__, logs
from grid.config import Config
from grid.errors import Unavailable
from grid.member.executor import WRITES, BatchExecutor, fail_writes
from grid.member.guard import exposure_warning
from grid.member.latency import BUCKETS_S, Latencies, op_name
from grid.store import Store, copies
from grid.wire.frames import PROTOCOL
from partitioning import partition_of
from persistence import PersistenceError
from proto import grid_pb2 as pb

if TYPE_CHECKING:
    from grid.frontends.ops import KeyPlan

log = logs.get("grid.member.server")
Sync = tuple[dict[int, tuple[int, int]], tuple[tuple[int, int], ...]]
"""What a batch's reply waits for among backups (GridService._sync_for): each touched
partition's (term, seq) here, and the (n, ranks) asked for."""
SERVICE = "grid.v1.Grid"
NO_DATA_DIR = "this member keeps no data on disk (no data_dir)"
SYNC_NOT_CONFIRMED = (
    "applied on the primary but not confirmed by its sync backups in time "
    "(sync_backup_timeout_s): it may not survive the loss of the primary"
)


class GridService:
    def __init__(self, store: Store, config: Config, name: str, address: str) -> None:
        self.store = store
        self.config = config
        self.name = name
        self.address = address
        self.data_address = ""
        self.peer_calls: dict[str, Callable[[bytes], Awaitable[bytes]]] = {}
        """The Peer methods by name, for CALL frames (grid/member/peer.py fills it)."""
        """host:port of this member's data plane (grid/member/dataplane.py), once it listens."""
        self.executor = BatchExecutor(store, config)
        self.latency = Latencies(config.slow_log_ms)
        self.started = time.monotonic()
        self.membership: Any = None
        """The member's GossipRuntime (grid/member/gossip/runtime.py), set once it runs."""
        self.cluster: Any = None
        """The member's ClusterRuntime (grid/member/runtime.py): routing, forwarding."""
        self._idle_streams: set[asyncio.Task[Any] | None] = set()
        self._stopping = False
        self._sync_default = config.sync_backups
        self._sync_maps = config.sync_backups_by_map()
        self._sync_any = bool(config.sync_backups or any(self._sync_maps.values()))

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Execute": grpc.unary_unary_rpc_method_handler(self.execute),
                "Stream": grpc.stream_stream_rpc_method_handler(self.stream),
                "Stats": grpc.unary_unary_rpc_method_handler(self.stats),
                "Members": grpc.unary_unary_rpc_method_handler(self.members),
                "Backup": grpc.unary_unary_rpc_method_handler(self.backup),
                "Snapshot": grpc.unary_unary_rpc_method_handler(self.snapshot),
                "Table": grpc.unary_unary_rpc_method_handler(self.table),
                "WatchTable": grpc.unary_stream_rpc_method_handler(self.watch_table),
                "LocalKeys": grpc.unary_unary_rpc_method_handler(self.local_keys),
                "Digests": grpc.unary_unary_rpc_method_handler(self.digests),
                "Endpoints": grpc.unary_unary_rpc_method_handler(self.endpoints),
            },
        )

    def _parse(self, data: bytes) -> pb.BatchRequest | None:
        try:
            return pb.BatchRequest.FromString(data)
        except DecodeError:
            self.executor.rejected += 1
            return None

    async def execute(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request = self._parse(data)
        if request is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"malformed BatchRequest ({len(data)} bytes)"
            )
        reply, later = self.run(request)
        if later is not None:
            await later()
        return reply.SerializeToString()

    def _sync_for(self, request: pb.BatchRequest) -> Sync:
        """(partitions this batch changed -> seq, and what must confirm them: one
        (backups, among how many first backups) pair per kind of map written; with
        per-map backups only a map's first N backups hold it). The pairs are kept apart,
        not merged into one: a batch mixing maps (the client coalesces callers) must
        meet every map's requirement."""
        if not self._sync_any or self.cluster is None:
            return {}, ()
        return self._sync_of({op.map for op in request.ops if op.code in WRITES})

    def _sync_of(self, written: set[str]) -> Sync:
        """`_sync_for`, from the names of the maps the batch wrote."""
        needs: set[tuple[int, int]] = set()
        of = self.cluster.replicator.map_backups.of
        for name in written:
            want = self._sync_maps.get(name, self._sync_default)
            if want:
                held = of(name)
                if min(want, held):
                    needs.add((min(want, held), held))
        if not needs:
            return {}, ()
        touched = self.cluster.replicator.take_touched()
        return (touched, tuple(sorted(needs))) if touched else ({}, ())

    async def _finish(
        self,
        reply: pb.BatchReply,
        request: pb.BatchRequest,
        token: int,
        sync: Sync,
        elsewhere: bool,
    ) -> None:
        """What a reply may wait for: its fsync, its sync backups, its forwarded ops.
        (Everything about the batch is passed in: by the time this runs the executor may
        have served other batches.)"""
        executor = self.executor
        if token and executor.durability is not None:
            await self._durable(reply, request, token)
        touched, needs = sync
        if needs:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.config.sync_backup_timeout_s
            for n, ranks in needs:
                left = max(0.0, deadline - loop.time())
                if not await self.cluster.replicator.wait_backups(touched, n, left, ranks):
                    fail_writes(request.ops, reply.results, SYNC_NOT_CONFIRMED)
                    break
        if elsewhere and self.cluster is not None:
            await self.cluster.forwarder.complete(request, reply)

    async def _durable(self, reply: pb.BatchReply, request: pb.BatchRequest, token: int) -> None:
        """Hold a reply until its writes are on disk (fsync=always); fail them if they
        cannot be."""
        assert self.executor.durability is not None
        try:
            await self.executor.durability.wait_durable(token)
        except Unavailable as e:
            fail_writes(request.ops, reply.results, e.message)

    async def stream(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> None:
        """Answers each batch as it arrives; the ids let a client pipeline many batches.

        Under fsync=always a batch with writes is answered once its fsync is done, while
        later batches are read and answered meanwhile (so they join the next group
        commit): replies can then come out of order, which the ids make harmless.

        While waiting for the next batch the stream is marked idle, so a shutdown can end
        it at once instead of waiting out the grace period for a client that has nothing
        more to send (a connected SDK keeps its stream open for its whole life).
        """
        task = asyncio.current_task()
        idle = self._idle_streams
        held: set[asyncio.Task[None]] = set()  # replies waiting (fsync, backups, owners)
        write_lock = asyncio.Lock()  # held replies are written from other tasks
        while not self._stopping:
            idle.add(task)
            try:
                data = await context.read()
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
                break  # our own shutdown cancelled the wait: end the RPC properly below
            finally:
                idle.discard(task)
            if data is grpc.aio.EOF:
                break  # the client is done sending; still answer what waits for an fsync
            request = self._parse(data)
            if request is None:
                log.warning("malformed batch on stream", peer=context.peer(), size=len(data))
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"malformed BatchRequest ({len(data)} bytes)"
                )
            reply, later = self.run(request)
            if later is not None:
                # Answer once its fsync / sync backups / forwarded ops are done; meanwhile
                # read on (the next batches join the same group commit), and the ids make
                # out-of-order replies harmless.
                t = asyncio.create_task(self._write_later(context, write_lock, reply, later))
                held.add(t)
                t.add_done_callback(held.discard)
                continue
            async with write_lock:
                await context.write(reply.SerializeToString())
        if held:
            await asyncio.gather(*held, return_exceptions=True)
        if self._stopping:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "member shutting down")

    async def _write_later(
        self,
        context: grpc.aio.ServicerContext,
        write_lock: asyncio.Lock,
        reply: pb.BatchReply,
        later: Callable[[], Awaitable[None]],
    ) -> None:
        await later()
        async with write_lock:
            await context.write(reply.SerializeToString())

    def run(
        self, request: pb.BatchRequest
    ) -> tuple[pb.BatchReply, Callable[[], Awaitable[None]] | None]:
        """Execute a batch: its reply, and what must finish before the reply is sent (its
        fsync, its sync backups, its forwarded operations), or None when it can go now.
        The gRPC stream and the data plane (grid/member/dataplane.py) both serve through
        this, so they cannot differ in what a reply waits for, and the latency histogram
        and slow log (grid/member/latency.py) see every batch, waits included."""
        started = time.perf_counter()
        reply, later = self._run(request)
        if later is None:
            self.latency.observe(request, time.perf_counter() - started)
            return reply, None

        async def timed() -> None:
            try:
                await later()
            finally:
                self.latency.observe(request, time.perf_counter() - started)

        return reply, timed

    def _run(
        self, request: pb.BatchRequest
    ) -> tuple[pb.BatchReply, Callable[[], Awaitable[None]] | None]:
        executor = self.executor
        if self.cluster is not None:
            self.cluster.coordinator.stalled()  # a member back from a pause fences first
            if self._sync_any:
                self.cluster.replicator.take_touched()  # only this batch's changes count
        reply = executor.execute(request)
        token = executor.last_token
        sync = self._sync_for(request)
        elsewhere = bool(executor.misrouted or executor.fanout) and self.cluster is not None
        durable = token and executor.durability is not None and executor.durability.holds_replies
        if elsewhere or durable or sync[1]:
            return reply, functools.partial(self._finish, reply, request, token, sync, elsewhere)
        return reply, None

    def run_keys(self, map_name: str, plans: list[KeyPlan]) -> Callable[[], Awaitable[None]] | None:
        """`run` for the front ends' one-key GETs and PUTs (grid/frontends/ops.py
        KeyPlan), with their results written into the plans: the same executor checks,
        waits, forwarding and latency series, and no protobuf message unless the batch
        must wait (then it is made once, for `_finish`, and its results copied back)."""
        started = time.perf_counter()
        executor = self.executor
        cluster = self.cluster
        if cluster is not None:
            cluster.coordinator.stalled()  # a member back from a pause fences first
            if self._sync_any:
                cluster.replicator.take_touched()  # only this batch's changes count
        executor.run_keys(map_name, plans)
        token = executor.last_token
        sync: Sync = ({}, ())
        if self._sync_any and cluster is not None and any(p.code == pb.PUT for p in plans):
            sync = self._sync_of({map_name})
        elsewhere = bool(executor.misrouted) and cluster is not None
        durable = token and executor.durability is not None and executor.durability.holds_replies
        if not (elsewhere or durable or sync[1]):
            seconds = time.perf_counter() - started
            self._observe_keys(map_name, plans, seconds)
            return None
        # Only forwarding to wait for: the message needs only the ops to forward (the
        # forwarder looks at nothing else); a wait on the log or backups (which _finish
        # makes whenever the batch has a token) may fail any write, so it takes them all.
        if sync[1] or (token and executor.durability is not None):
            waits = plans
        else:
            waits = [p for p in plans if p.status == pb.NOT_OWNER]
        request = pb.BatchRequest()
        reply = pb.BatchReply()
        ops, results = request.ops, reply.results
        for plan in waits:
            plan.fill(ops.add(), results.add(), map_name)
        if cluster is not None:
            reply.table_version = cluster.routing.version

        async def timed() -> None:
            try:
                await self._finish(reply, request, token, sync, elsewhere)
            finally:
                self._observe_keys(map_name, plans, time.perf_counter() - started)
            for plan, r in zip(waits, results, strict=True):
                plan.take(r)

        return timed

    def _observe_keys(self, map_name: str, plans: list[KeyPlan], seconds: float) -> None:
        """`latency.observe` for a batch of KeyPlans."""
        if plans and self.latency.count(plans[0].code, map_name, seconds):
            self.latency.slow(plans[0].code, map_name, plans[0].key, len(plans), seconds)

    def end_idle_streams(self) -> None:
        """For shutdown: streams waiting for input end now; busy ones after their reply."""
        self._stopping = True
        for task in list(self._idle_streams):
            task.cancel()
        if self.cluster is not None:
            self.cluster.routing.end_watches()

    async def stats(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return self.stats_reply().SerializeToString()

    async def members(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """This member's membership view; its gossip counters ride in trailing metadata."""
        from grid.members_view import counters_metadata, members_reply

        gossip = self.membership
        if gossip is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "membership is not running")
        context.set_trailing_metadata(counters_metadata(gossip.counters()))
        return members_reply(self.name, gossip.members()).SerializeToString()

    async def table(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """The partition table this member routes by (version 0: none yet). A member that
        asks names itself: it is sent the table again, and its answer says what it lacks."""
        if self.cluster is None:
            return pb.PartitionTable().SerializeToString()
        try:
            caller = pb.TableRequest.FromString(data).caller
        except DecodeError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed TableRequest")
        if caller:
            self.cluster.coordinator.asked(caller)
        return self.cluster.routing.to_proto().SerializeToString()

    async def endpoints(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Where this member's data plane listens: how an SDK finds it from the gRPC address
        it was given (docs/api.md)."""
        return pb.EndpointsReply(
            name=self.name,
            data_address=self.data_address,
            data_advertised=bool(self.config.data_advertise),
            protocol=PROTOCOL,
            cluster=self.config.cluster_name,
        ).SerializeToString()

    async def watch_table(
        self, data: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """The table now if newer than the caller's, then every newer one as installed."""
        try:
            request = pb.TableRequest.FromString(data)
        except DecodeError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed TableRequest")
        if self.cluster is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "this member has no table yet")
        routing = self.cluster.routing
        queue = routing.watch()
        try:
            known = request.known_version
            if routing.version and routing.version != known:
                known = routing.version
                yield routing.to_proto().SerializeToString()
            while not self._stopping:
                msg = await queue.get()
                if not msg.version:
                    break  # the member is stopping
                if msg.version != known:
                    known = msg.version
                    yield msg.SerializeToString()
        finally:
            routing.unwatch(queue)

    async def local_keys(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Admin/debug: which of these keys this member holds itself, and in which role."""
        try:
            request = pb.LocalKeysRequest.FromString(data)
        except DecodeError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed LocalKeysRequest")
        store = self.store
        roles = []
        with store.lock:
            rmap = store.maps.get(request.map)
            for key in request.keys:
                p = partition_of(key, store.partitions)
                if rmap is None or key not in rmap.parts[p]:
                    roles.append(0)
                elif self.cluster is None:
                    roles.append(1)
                else:
                    roles.append(self.cluster.routing.role(p))
        return pb.LocalKeysReply(roles=roles).SerializeToString()

    async def digests(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Admin/debug: the digest of each partition copy held here (all versions), so an
        operator or a test can see whether replicas agree. Every partition this member
        is a replica of is listed, an empty copy with root 0: a partition nobody wrote to
        must compare equal on its replicas, not look absent on all of them."""
        try:
            request = pb.DigestsRequest.FromString(data)
        except DecodeError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed DigestsRequest")
        store = self.store
        wanted = [p for p in request.partitions if 0 <= p < store.partitions] or range(
            store.partitions
        )
        only = frozenset(request.maps)
        holds = (lambda name: name in only) if only else None
        reply = pb.DigestsReply()
        for p in wanted:
            with store.lock:
                role = self.cluster.routing.role(p) if self.cluster is not None else 1
                if role == 3 and not store.holds_copy(p) and not request.partitions:
                    continue  # neither a replica nor holding anything of it
                d = copies.digest(store, p, store.hlc.last, store.clock(), holds)
                seq = self.cluster.replicator.position(p) if self.cluster is not None else 0
            reply.digests.add(partition=p, root=d.root, role=role, seq=seq)
            await asyncio.sleep(0)
        return reply.SerializeToString()

    async def snapshot(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        durability = self.executor.durability
        if durability is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, NO_DATA_DIR)
        started = time.monotonic()
        try:
            partitions, records = await durability.snapshot_all()
        except (PersistenceError, OSError) as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"snapshot failed: {e}")
        return pb.SnapshotReply(
            partitions=partitions, records=records, seconds=time.monotonic() - started
        ).SerializeToString()

    async def backup(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            request = pb.BackupRequest.FromString(data)
        except DecodeError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed BackupRequest")
        durability = self.executor.durability
        if durability is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this member keeps no data on disk (no data_dir)",
            )
        if not request.dir:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "backup needs a directory")
        try:
            manifest = await durability.backup(request.dir)
        except (PersistenceError, OSError) as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"backup failed: {e}")
        files = manifest["files"]
        log.info("backup written", dir=request.dir, files=len(files))
        return pb.BackupReply(
            manifest=json.dumps(manifest),
            files=len(files),
            bytes=sum(f["size"] for f in files),
        ).SerializeToString()

    def warnings(self) -> list[str]:
        """What `grid status` shows in red: the start's exposure warning stays true for as
        long as the member runs, and a full disk until space returns."""
        out = []
        if exposure := exposure_warning(self.config):
            out.append("OPEN TO THE NETWORK: " + exposure)
        durability = self.executor.durability
        if durability is not None and durability.disk_full:
            out.append("DISK FULL: writes are refused until space returns")
        return out

    def stats_reply(self) -> pb.StatsReply:
        store = self.store
        ex = self.executor
        with store.lock:
            maps = [_map_stats(name, rmap.stats) for name, rmap in sorted(store.maps.items())]
            total = _map_stats("", store.totals())
        return pb.StatsReply(
            warnings=self.warnings(),
            member=self.name,
            address=self.address,
            version=__version__,
            partitions=store.partitions,
            uptime_s=time.monotonic() - self.started,
            max_memory=store.max_memory,
            eviction_policy=store.evictor.policy,
            total=total,
            maps=maps,
            requests=ex.requests,
            operations=ex.operations,
            rejected=ex.rejected,
            persistence=pb.PersistenceStats(**ex.durability.stats())
            if ex.durability is not None
            else None,
            migration=self.cluster.stats() if self.cluster is not None else None,
            anti_entropy=self.cluster.anti_entropy_stats() if self.cluster is not None else None,
            latency=[
                pb.BatchLatency(
                    op=op_name(code),
                    map=name,
                    counts=counts,
                    sum_s=self.latency.sums.get((code, name), 0.0),
                )
                for (code, name), counts in self.latency.counts.items()
            ],
            latency_bounds_s=BUCKETS_S,
        )


def _map_stats(name: str, s: object) -> pb.MapStats:
    return pb.MapStats(
        name=name,
        **{
            f: getattr(s, f)
            for f in (
                "entries",
                "bytes",
                "hits",
                "misses",
                "puts",
                "deletes",
                "evictions",
                "expirations",
            )
        },
    )


def server_options(config: Config) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),  # two members must never share a port by accident
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def add_health(server: grpc.aio.Server) -> health.aio.HealthServicer:
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
