"""The primary side of partition streams, carried out over gRPC Follow streams.

replication/primary.py decides everything (sequence numbers, what a
subscriber gets, hand-offs, flow control, which backups a sync write waits
for); this module runs it: one `Follow` stream per follower, a sender task
per stream that drains the follower's queue into `ReplicaBatch` messages,
futures for writes waiting on acknowledgements and for hand-offs waiting on
the new owner's word, a byte-rate throttle for snapshot chunks
(`migration_max_bytes_per_s`; live changes never wait for it), and the
routing change of a hand-off in the same store-lock hold as the core's.

Changes reach followers through the store's sink, under the store lock and in
the order they were applied (`record`). A sender lingers up to
`replication_linger_ms` while the core allows it, so a burst of writes
becomes a few messages, not one per write.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc
import msgpack

from grid import logs
from grid.member.placement.routing import Routing
from grid.member.replicas.link import EOF, Pipe, PipeClosed
from grid.member.replicas.map_backups import map_backups as configured_map_backups
from grid.store import Store
from grid.store.copies import snapshot_records
from proto import grid_pb2 as pb
from replication.map_backups import Holds, MapBackups
from replication.primary import Chunk, Downstream, Kind, Lag, Mark, Primary, Record
from replication.stream import DEFAULT_KEEP, FollowerLog, PrimaryLog
from replication.watch import Watch, Watchers

log = logs.get("grid.member.replicas.replica")
_monotonic = time.monotonic

HANDOFF_ACK_TIMEOUT_S = 10.0

_pack = msgpack.Packer().pack
"""msgpack.packb makes a Packer per call; the senders (all on the event loop) share one."""
_MUTATIONS, _SNAPSHOT = Kind.MUTATIONS, Kind.SNAPSHOT


def encode(chunks: list[Chunk]) -> bytes:
    """A message of the core's chunks (see Chunk.records in proto/grid.proto)."""
    batch = pb.ReplicaBatch()
    add = batch.chunks.add
    for c in chunks:
        kind = c.kind
        if kind is _MUTATIONS or kind is _SNAPSHOT:
            chunk = add(partition=c.partition, kind=kind, seq=c.seq)
            if c.records:
                chunk.records = _pack(c.records)
                chunk.count = len(c.records)
        else:
            add(partition=c.partition, kind=kind, seq=c.seq, term=c.term, epoch=c.epoch,
                error=c.error)  # fmt: skip
    return batch.SerializeToString()


def unpack_records(data: bytes, count: int, max_value: int, what: str) -> list[Any]:
    """Records packed by `encode` (or a repair); bounded like every decoder, and checked to
    be what the count says (a peer is a member, but a damaged message must not be applied
    half-way)."""
    records = msgpack.unpackb(
        data,
        use_list=False,
        max_bin_len=max_value + (1 << 16),
        max_str_len=1 << 16,
        max_array_len=max(count, 8),
        max_map_len=0,
        max_ext_len=0,
    )
    if not isinstance(records, tuple) or len(records) != count:
        raise ValueError(f"{what}: malformed records")
    return records  # type: ignore[return-value]


def _no_sight() -> tuple[int, int]:
    return 0, 0  # no membership wired: the table alone decides


def _wake_watch(w: Watch) -> None:
    w.owner.wake()  # grid/member/watches.py's ClientWatches


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _fail(fut: asyncio.Future[None], why: str) -> None:
    if not fut.done():
        fut.set_exception(ConnectionError(why))


class Throttle:
    """A token bucket over bytes per second (0 = unlimited), shared by all senders."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._tokens = float(rate)
        self._at = time.monotonic()

    async def take(self, n: int) -> None:
        if not self.rate:
            return
        while True:
            now = time.monotonic()
            self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= n or self._tokens >= self.rate:  # big chunks pass when full
                self._tokens -= n
                return
            await asyncio.sleep(min(0.1, (n - self._tokens) / self.rate))


class Stream:
    """The runtime's half of one follower's stream: its sender's wake-up and linger, and
    the hand-offs waiting for the follower's word."""

    def __init__(self, follower: Downstream) -> None:
        self.follower = follower
        self.event = asyncio.Event()
        self.takeovers: dict[int, asyncio.Future[None]] = {}
        self.ended = False  # the follower went, or its messages could not be read
        self._linger: asyncio.Future[None] | None = None  # the sender's linger, while it lasts

    def hurry(self) -> None:
        """Someone waits for this follower (a sync write, a hand-off): no lingering."""
        fut = self._linger
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def linger(self, seconds: float) -> None:
        """Wait `seconds`, or until `hurry` (one future and one timer: cheaper than
        `wait_for` on an event, which costs a task and a cancellation per message)."""
        loop = asyncio.get_running_loop()
        fut = self._linger = loop.create_future()
        timer = loop.call_later(seconds, _resolve, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._linger = None


class Replicator:
    def __init__(
        self,
        me: str,
        store: Store,
        routing: Routing,
        rate: int,
        linger_s: float = 0.0,
        map_backups: MapBackups | None = None,
        log_changes: int = DEFAULT_KEEP,
    ) -> None:
        self.me = me
        self.store = store
        self.routing = routing
        self.linger_s = linger_s

        def snapshot(p: int, held: Holds) -> list[Record]:
            return snapshot_records(store, p, store.clock(), held)

        self.core = Primary(
            me,
            store.partitions,
            routing.serves,
            snapshot,
            map_backups or configured_map_backups(store.config),
            keep=log_changes,
            clock=_monotonic,
            on_ready=self._wake,
        )
        self.record = self.core.record
        self.watchers = Watchers(self.core.logs, on_ready=_wake_watch)
        """Client watches of the partitions this member is primary of (replication/watch.py;
        grid/member/watches.py sends them); fed by the store's sink after `record`."""
        """The store's sink for changes of partitions this member is primary of: the
        core's own method, with no wrapper (it runs for every write and every apply)."""
        self.streams: dict[str, Stream] = {}
        self.throttle = Throttle(rate)
        self.bytes_sent = 0
        self.sync_timeouts = 0
        self.sight: Callable[[], tuple[int, int]] = _no_sight
        """(live, known) members of this member's membership (the coordinator's
        `sight`): a sync write's room on a side that sees no majority."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    # the core's state, as the rest of the member reads it
    @property
    def logs(self) -> dict[int, PrimaryLog]:
        return self.core.logs

    @property
    def positions(self) -> dict[int, FollowerLog]:
        return self.core.positions

    @property
    def map_backups(self) -> MapBackups:
        return self.core.map_backups

    @property
    def caught_up(self) -> int:
        return self.core.caught_up

    @property
    def snapshots_sent(self) -> int:
        return self.core.snapshots_sent

    @property
    def handoffs(self) -> int:
        return self.core.handoffs

    def position(self, partition: int) -> int:
        return self.core.position(partition)

    def take_touched(self) -> dict[int, Mark]:
        return self.core.take_touched()

    def mark(self, partition: int) -> Mark:
        return self.core.mark(partition)

    def bind_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def _wake(self) -> None:
        """Wake the senders of followers that have something to send (or must stop): the
        core's on_ready, called with the store lock held (the ready list is shared with
        embedded callers' threads)."""
        core = self.core
        woken = core.take_ready() + [f for f, _ in core.take_closing()]
        if threading.get_ident() == self._loop_thread or self._loop is None:
            self._set(woken)
        else:  # an embedded caller's thread
            self._loop.call_soon_threadsafe(self._set, woken)

    def _set(self, followers: list[Downstream]) -> None:
        for f in followers:
            stream = self.streams.get(f.name)
            if stream is not None and stream.follower is f:
                if f.closed:
                    log.warning("follower cut off: its queue is too long", follower=f.name)
                stream.event.set()

    # ---- roles follow the table ------------------------------------------------------------
    def on_table(self) -> None:
        """Logs follow what this member serves (replication/primary.py)."""
        table = self.routing.table
        with self.store.lock:  # the core's on_ready wakes the senders, under the lock
            self.core.on_table(table.replicas if table is not None else None)
            self.watchers.revalidate()

    # ---- the Follow stream (server side) ---------------------------------------------------
    async def serve_follow(self, pipe: Pipe) -> None:
        """Serve one follower over a pipe: the data plane's (link.FramePipe) or gRPC's
        Follow stream (link.GrpcPipe). Raises DecodeError on a malformed first message."""
        first = await pipe.read()
        if first is EOF:
            return
        msg = pb.FollowMessage.FromString(first)
        if not msg.follower:
            await pipe.fail("Follow: first message names no follower")
            return
        old = self.streams.get(msg.follower)
        if old is not None:
            self._end(old)
        with self.store.lock:
            stream = Stream(self.core.open_stream(msg.follower))
        self.streams[msg.follower] = stream
        self._handle(stream, msg)
        reader = asyncio.create_task(self._read(stream, pipe))
        try:
            await self._send(stream, pipe)
        except (PipeClosed, ConnectionError, grpc.aio.AioRpcError, grpc.aio.UsageError):
            pass  # the follower went; it reconnects and subscribes again
        finally:
            reader.cancel()
            self._end(stream)

    async def _read(self, stream: Stream, pipe: Pipe) -> None:
        try:
            while True:
                data = await pipe.read()
                if data is EOF:
                    break
                self._handle(stream, pb.FollowMessage.FromString(data))
        except (asyncio.CancelledError, grpc.aio.AioRpcError, grpc.aio.UsageError, PipeClosed):
            pass  # the stream ended (the follower went, or this server is stopping)
        except Exception as e:
            if type(e).__name__ == "_ServerStoppedError":  # grpc's, not exported
                pass
            else:
                log.exception("follow stream: bad message", follower=stream.follower.name)
        stream.ended = True
        stream.event.set()

    def _handle(self, stream: Stream, msg: pb.FollowMessage) -> None:
        core = self.core
        f = stream.follower
        for p, seq in zip(msg.ack_partitions, msg.ack_seqs, strict=False):
            for fut in core.ack(f, p, seq):
                _resolve(fut)
        for p in msg.taken_over:
            core.taken_over(f, p)
            fut = stream.takeovers.pop(p, None)
            if fut is not None:
                _resolve(fut)
        if msg.unsubscribe or msg.subscribe:
            with self.store.lock:
                core.unsubscribe(f, msg.unsubscribe)
                for sub in msg.subscribe:
                    core.subscribe(f, sub.partition, sub.have_term, sub.have_seq, sub.all_maps)

    async def _send(self, stream: Stream, pipe: Pipe) -> None:
        core = self.core
        f = stream.follower
        lock = self.store.lock
        linger = self.linger_s
        while not (f.closed or stream.ended):
            await stream.event.wait()
            if linger and core.lingers(f):
                # let a burst of writes share one message; a write waiting for this
                # backup's acknowledgement (sync backups) cuts the wait short
                await stream.linger(linger)
            stream.event.clear()
            core.sending(f)
            while f.queue and not (f.closed or stream.ended):
                with lock:
                    chunks, snap_bytes = core.drain(f)
                if snap_bytes:
                    await self.throttle.take(snap_bytes)
                data = encode(chunks)
                self.bytes_sent += len(data)
                await pipe.write(data)

    def _end(self, stream: Stream) -> None:
        f = stream.follower
        with self.store.lock:
            tokens = self.core.close_stream(f)
        why = f"{f.name} stream closed"
        for fut in tokens:
            _fail(fut, why)
        for fut in stream.takeovers.values():
            _fail(fut, why)
        stream.takeovers.clear()
        stream.event.set()
        if self.streams.get(f.name) is stream:
            del self.streams[f.name]

    # ---- hand-off ------------------------------------------------------------------------------
    async def handoff(
        self, partitions: Iterable[int], to: str, epoch: int
    ) -> tuple[list[int], list[int]]:
        """Hand these partitions to follower `to`; returns (done, failed). `epoch`: the
        first table epoch that will show the hand-off (see grid/member/placement/routing.py)."""
        stream = self.streams.get(to)
        waits: list[tuple[int, asyncio.Future[None]]] = []
        loop = asyncio.get_running_loop()
        with self.store.lock:
            handing, failed = self.core.handoff(partitions, to, epoch)
            self.watchers.revalidate()
            for p in handing:
                self.routing.handed_off(p, to, epoch)  # the server forwards p from now on
                assert stream is not None
                fut = stream.takeovers[p] = loop.create_future()
                waits.append((p, fut))
        if handing:  # before HANDOFF can leave (no await since): a restart must not serve them
            self.routing.save()
        if stream is not None and handing:
            stream.hurry()
        done: list[int] = []
        if waits:  # one deadline for all: a silent follower costs 10 s, not 10 s a partition
            await asyncio.wait([f for _, f in waits], timeout=HANDOFF_ACK_TIMEOUT_S)
        for p, fut in waits:
            try:
                if not fut.done():
                    fut.cancel()
                    raise TimeoutError
                fut.result()
                done.append(p)
            except (TimeoutError, ConnectionError, asyncio.CancelledError) as e:
                failed.append(p)
                why = str(e) or type(e).__name__
                with self.store.lock:
                    back = self.core.handoff_failed(p)
                    if back:  # HANDOFF never left: nobody took p over, serve it again
                        self.routing.take_back(p)
                        self.core.resume(p)
                        self.watchers.revalidate()
                if not back:  # `to` may serve p: the table of `epoch` settles it
                    log.warning("hand-off not confirmed; serving nothing of it until the "
                                "table of its epoch", partition=p, to=to, epoch=epoch,
                                error=why)  # fmt: skip
                    continue
                self.routing.save()
                log.warning("hand-off never sent; serving again", partition=p, to=to,
                            error=why)  # fmt: skip
        return done, failed

    # ---- sync backups ------------------------------------------------------------------------
    async def wait_backups(
        self, touched: dict[int, Mark], n: int, timeout: float, ranks: int = 1 << 30
    ) -> bool:
        """Until, for every partition, min(n, its backups in the table) backups have
        applied its changes up to the seq given; False at the timeout. The table is
        read again as it changes: a backup that died and left the table stops counting,
        but the write still needs as many as its table asked for (`Primary.unconfirmed`'s
        floor): a replacement that fills, or UNAVAILABLE at the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        core = self.core
        floor: dict[int, int] | None = None  # what the write's table asked for
        while True:
            table = self.routing.table
            if table is None:
                return True
            if self.routing.fenced:  # back from a stall: this member may be failed over
                self.sync_timeouts += 1
                return False
            if core.lost(touched):  # a new term here since: those writes' fate is unknown
                self.sync_timeouts += 1
                return False
            if floor is None:
                live, known = self.sight()
                floor = core.needs(
                    touched, n, table.replicas, ranks, len(table.members), live, known
                )
            missing = core.unconfirmed(touched, n, table.replicas, ranks, floor)
            if not missing:
                return True
            left = deadline - loop.time()
            if left <= 0:
                self.sync_timeouts += 1
                return False
            futs: list[asyncio.Future[None]] = []
            for p, seq in missing:
                for f in core.waited_for(p, table.replicas(p), ranks):
                    fut: asyncio.Future[None] = loop.create_future()
                    if core.wait_ack(f, p, seq, fut):
                        stream = self.streams.get(f.name)
                        if stream is not None:
                            stream.hurry()
                        futs.append(fut)
                    # else: that backup has it; the others (or a table change) decide
            if futs:
                await asyncio.wait(
                    futs, timeout=min(left, 0.1), return_when=asyncio.FIRST_COMPLETED
                )
                for fut in futs:
                    if not fut.done():
                        fut.cancel()
                    elif not fut.cancelled():
                        fut.exception()  # retrieve it: a closed stream is just "not yet"
            else:
                await asyncio.sleep(min(left, 0.05))

    def lag(self) -> Lag:
        """(worst partition's unacknowledged changes, their sum, oldest one's age in s,
        the partitions most behind as (partition, backup, changes, seconds))."""
        table = self.routing.table
        if table is None:
            return Lag(0, 0, 0.0, [])
        with self.store.lock:
            return self.core.lag(table.replicas, time.monotonic())
