"""The primary side of partition streams: sequence numbers, followers, hand-offs.

Every member is the primary of some partitions. For each of them it keeps a
`replication.PrimaryLog` (term, next seq, recent changes) and the set of
followers: backups, and members being filled before they take the partition
over (replication/stream.py explains the conversation).

Changes reach followers through the store's sink, under the store lock and in
the order they were applied: the sink gives the change its sequence number
and appends it to each follower's queue. One sender per follower stream
drains its queue into `ReplicaBatch` messages, so a burst of writes becomes a
few messages, not one per write. Snapshot chunks pass a byte-rate throttle
(`migration_max_bytes_per_s`); live changes never wait for it.

A hand-off (grid/coordinator.py asks for it once the new owner is live):
under the store lock this member stops serving the partition
(`Routing.handed_off`: the server forwards from then on) and queues HANDOFF
behind the last change; the follower applies everything before it, takes the
partition with the same term and seq, and acknowledges. No change is applied
by both, none by neither.
"""

from __future__ import annotations

import asyncio
import heapq
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import grpc
import msgpack

from grid import logs
from grid.map_backups import MapBackups
from grid.routing import Routing
from grid.store import Store
from grid.store.copies import snapshot_records
from proto import grid_pb2 as pb
from replication.stream import DEFAULT_KEEP, FollowerLog, Phase, PrimaryLog, new_term

log = logs.get("grid.replica")
_monotonic = time.monotonic

SNAPSHOT_CHUNK_RECORDS = 512
BATCH_MAX_BYTES = 128 * 1024
"""One ReplicaBatch message, roughly: about 1,000 records of 100 B, which a follower
applies in about 5 ms under its store lock. Bigger messages would hold its event loop
(and its clients) for longer at a time."""
HANDOFF_ACK_TIMEOUT_S = 10.0
LINGER_UNTIL = 512
"""A queue this long is sent at once, without lingering: it fills a message already."""

NOOP = (0, "", b"", None, 0, 0, 0, 0)
"""A record a follower only counts (per-map backups: a map this backup does not hold)."""
LAGGING_SHOWN = 8  # partitions most behind listed in Stats (all of them are summed)

# queue items: (kind, partition, a, b); kinds below
_MUT, _BEGIN, _SNAP, _END, _HANDOFF, _REFUSED = range(6)


_pack = msgpack.Packer().pack
"""msgpack.packb makes a Packer per call; the senders (all on the event loop) share one."""


def _seal(chunk: pb.Chunk, records: list[Any]) -> None:
    """Pack a chunk's records (see Chunk.records in proto/grid.proto)."""
    if records:
        chunk.records = _pack(records)
        chunk.count = len(records)


def unpack_records(data: bytes, count: int, max_value: int, what: str) -> list[Any]:
    """Records packed by `_seal` (or a repair); bounded like every decoder, and checked to
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


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


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


class Session:
    """One follower's stream: its queue, its partitions, its acknowledgements."""

    def __init__(self, follower: str, wake: Callable[[Session], None]) -> None:
        self.follower = follower
        self.queue: deque[tuple[int, int, Any, Any]] = deque()
        self.event = asyncio.Event()
        self.urgent = False  # a sync write waits: send without lingering
        self._linger: asyncio.Future[None] | None = None  # the sender's linger, while it lasts
        self.scheduled = False
        self.partitions: set[int] = set()
        self.all_maps: set[int] = set()  # partitions it fills to take over (map_backups)
        self.acked: dict[int, int] = {}
        self._waiters: dict[int, list[tuple[int, asyncio.Future[None]]]] = {}
        self._takeovers: dict[int, asyncio.Future[None]] = {}
        self._wake = wake
        self.closed = False

    def push(self, item: tuple[int, int, Any, Any]) -> None:
        self.queue.append(item)
        if not self.scheduled:
            self.scheduled = True
            self._wake(self)

    def hurry(self) -> None:
        """Someone waits for this follower (a sync write, a hand-off): no lingering."""
        self.urgent = True
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

    def ack(self, partition: int, seq: int) -> None:
        if seq > self.acked.get(partition, 0):
            self.acked[partition] = seq
        waiters = self._waiters.get(partition)
        if waiters:
            keep = []
            for want, fut in waiters:
                if seq >= want:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    keep.append((want, fut))
            self._waiters[partition] = keep

    def wait_ack(self, partition: int, seq: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.acked.get(partition, 0) >= seq:
            fut.set_result(None)
        else:
            self._waiters.setdefault(partition, []).append((seq, fut))
            self.hurry()  # someone waits: no lingering
        return fut

    def wait_takeover(self, partition: int) -> asyncio.Future[None]:
        """Resolved when the follower says it applied HANDOFF and serves the partition
        (not by an ordinary ack: a caught-up follower has acked the same seq already)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._takeovers[partition] = fut
        return fut

    def taken_over(self, partition: int) -> None:
        fut = self._takeovers.pop(partition, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def close(self) -> None:
        self.closed = True
        for waiters in self._waiters.values():
            for _, fut in waiters:
                if not fut.done():
                    fut.set_exception(ConnectionError(f"{self.follower} stream closed"))
        self._waiters.clear()
        for fut in self._takeovers.values():
            if not fut.done():
                fut.set_exception(ConnectionError(f"{self.follower} stream closed"))
        self._takeovers.clear()


class Replicator:
    def __init__(
        self,
        me: str,
        store: Store,
        routing: Routing,
        rate: int,
        linger_s: float = 0.0,
        map_backups: MapBackups | None = None,
    ) -> None:
        self.me = me
        self.map_backups = map_backups or MapBackups(store.config)
        # per partition served: follower -> its backup rank (absent: filling, rank 0)
        self.ranks: dict[int, dict[str, int]] = {}
        self.linger_s = linger_s
        self.store = store
        self.routing = routing
        self.logs: dict[int, PrimaryLog] = {}
        self.followers: dict[int, set[Session]] = {}
        self.sessions: dict[str, Session] = {}
        self.positions: dict[int, FollowerLog] = {}  # where a former primary stands
        self.throttle = Throttle(rate)
        self.bytes_sent = 0
        self.handoffs = 0
        self.sync_timeouts = 0
        self.log_changes = DEFAULT_KEEP  # replication_log_changes: changes kept per partition
        self.caught_up = 0  # subscriptions answered from the log (no snapshot)
        self.snapshots_sent = 0  # subscriptions answered with a snapshot
        self._touched: dict[int, int] = {}  # partition -> last seq, since take_touched()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    def bind_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    # ---- the sink: every change of a partition this member is primary of --------------------
    def record(
        self,
        partition: int,
        op: int,
        map_name: str,
        key: bytes,
        value: bytes | None,
        ts: int,
        member: int,
        expire_at: int,
        max_idle: int,
    ) -> None:
        plog = self.logs.get(partition)
        if plog is None:
            return  # a backup's copy changing: not ours to stream
        rec = (op, map_name, key, value, ts, member, expire_at, max_idle)
        seq = plog.append(rec, _monotonic())
        self._touched[partition] = seq
        subs = self.followers.get(partition)
        if subs:
            if self.map_backups.uniform:
                item = (_MUT, partition, seq, rec)  # one tuple for every follower
                for s in subs:
                    s.queue.append(item)  # Session.push, inlined: this runs per write
                    if not s.scheduled:
                        s.scheduled = True
                        self._wake(s)
            else:
                self._push_ranked(partition, subs, seq, rec)

    def _push_ranked(self, p: int, subs: set[Session], seq: int, rec: tuple[Any, ...]) -> None:
        """Per-map backups: a backup whose rank is past the map's backups gets a no-op in
        the record's place (its seq must still advance, or it would see a gap)."""
        holds = self.map_backups.holds
        for s in subs:
            s.push((_MUT, p, seq, rec if holds(rec[1], self.rank_of(p, s)) else NOOP))

    def rank_of(self, p: int, session: Session) -> int:
        """The backup rank whose maps a follower gets (0: every map: it is filling)."""
        if p in session.all_maps:
            return 0
        return self.ranks.get(p, {}).get(session.follower, 0)

    def _wake(self, session: Session) -> None:
        if threading.get_ident() == self._loop_thread or self._loop is None:
            session.event.set()
        else:  # an embedded caller's thread
            self._loop.call_soon_threadsafe(session.event.set)

    def position(self, partition: int) -> int:
        """The partition stream's seq here: as its primary, or as a follower."""
        plog = self.logs.get(partition)
        if plog is not None:
            return plog.seq
        pos = self.positions.get(partition)
        return pos.seq if pos is not None else 0

    # ---- roles follow the table ------------------------------------------------------------
    def on_table(self) -> None:
        """Start a log for every partition this member now serves (a promotion or the first
        table: a new term), end the logs of partitions it no longer serves."""
        table = self.routing.table
        with self.store.lock:
            self.ranks = {}
            for p in range(self.store.partitions):
                serving = self.routing.serves(p)
                if serving and table is not None:
                    self.ranks[p] = {m: i for i, m in enumerate(table.replicas(p)) if i}
                if serving and p not in self.logs:
                    pos = self.positions.pop(p, None)
                    self.logs[p] = PrimaryLog(new_term(), pos.seq if pos else 0, self.log_changes)
                elif not serving and p in self.logs:
                    plog = self.logs.pop(p)
                    self.positions[p] = FollowerLog(plog.term, plog.seq, Phase.LIVE)
                    for s in self.followers.pop(p, set()):
                        s.partitions.discard(p)
                        s.push((_REFUSED, p, "no longer the primary", None))

    # ---- the Follow stream (server side) ---------------------------------------------------
    async def serve_follow(self, context: grpc.aio.ServicerContext) -> None:
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        msg = pb.FollowMessage.FromString(first)
        if not msg.follower:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "Follow: first message names no follower"
            )
        old = self.sessions.get(msg.follower)
        if old is not None:
            self._end(old)
        session = Session(msg.follower, self._wake)
        self.sessions[msg.follower] = session
        self._handle(session, msg)
        reader = asyncio.create_task(self._read(session, context))
        try:
            await self._send(session, context)
        finally:
            reader.cancel()
            self._end(session)

    async def _read(self, session: Session, context: grpc.aio.ServicerContext) -> None:
        try:
            while True:
                data = await context.read()
                if data is grpc.aio.EOF:
                    break
                self._handle(session, pb.FollowMessage.FromString(data))
        except (asyncio.CancelledError, grpc.aio.AioRpcError, grpc.aio.UsageError):
            pass  # the stream ended (the follower went, or this server is stopping)
        except Exception as e:
            if type(e).__name__ == "_ServerStoppedError":  # grpc's, not exported
                pass
            else:
                log.exception("follow stream: bad message", follower=session.follower)
        session.closed = True
        session.event.set()

    def _handle(self, session: Session, msg: pb.FollowMessage) -> None:
        for p, seq in zip(msg.ack_partitions, msg.ack_seqs, strict=False):
            session.ack(p, seq)
        for p in msg.taken_over:
            session.taken_over(p)
        if msg.unsubscribe:
            with self.store.lock:
                for p in msg.unsubscribe:
                    session.partitions.discard(p)
                    subs = self.followers.get(p)
                    if subs is not None:
                        subs.discard(session)
        if msg.subscribe:
            with self.store.lock:
                now = self.store.clock()
                for sub in msg.subscribe:
                    if sub.all_maps:
                        session.all_maps.add(sub.partition)
                    else:
                        session.all_maps.discard(sub.partition)
                    self._subscribe(session, sub.partition, sub.have_term, sub.have_seq, now)

    def _subscribe(self, session: Session, p: int, term: int, seq: int, now: int) -> None:
        """Under the store lock: queue what the follower lacks, then follow live changes."""
        if not 0 <= p < self.store.partitions:
            return
        plog = self.logs.get(p)
        if plog is None or not self.routing.serves(p):
            session.push((_REFUSED, p, f"{self.me} is not the primary of partition {p}", None))
            return
        missing = plog.since(term, seq)
        rank = self.rank_of(p, session)
        mb = self.map_backups
        if missing is not None:
            self.caught_up += 1
            session.push((_END, p, plog.term, seq))  # "you are current at (term, seq)"
            for s, rec in missing:
                session.push((_MUT, p, s, rec if mb.holds(rec[1], rank) else NOOP))
        else:
            held = None if mb.uniform or rank == 0 else (lambda name: mb.holds(name, rank))
            entries = snapshot_records(self.store, p, now, held)
            self.snapshots_sent += 1
            session.push((_BEGIN, p, None, None))
            for i in range(0, len(entries), SNAPSHOT_CHUNK_RECORDS):
                session.push((_SNAP, p, entries[i : i + SNAPSHOT_CHUNK_RECORDS], None))
            session.push((_END, p, plog.term, plog.seq))
        session.partitions.add(p)
        self.followers.setdefault(p, set()).add(session)

    async def _send(self, session: Session, context: grpc.aio.ServicerContext) -> None:
        queue = session.queue
        popleft = queue.popleft
        linger = self.linger_s
        mutations = pb.MUTATIONS
        while not session.closed:
            await session.event.wait()
            if (
                linger
                and len(queue) < LINGER_UNTIL
                and queue
                and queue[0][0] == _MUT  # snapshots and hand-offs go at once
                and not session.urgent
            ):
                # let a burst of writes share one message; a write waiting for this
                # backup's acknowledgement (sync backups) cuts the wait short
                await session.linger(linger)
            session.urgent = False
            session.event.clear()
            session.scheduled = False
            while queue and not session.closed:
                batch = pb.ReplicaBatch()
                size = 0
                snap_bytes = 0
                # One MUTATIONS chunk per partition per message, however the partitions'
                # changes interleave in the queue (a client batch touches many): a chunk
                # per run of one partition would mean a chunk, a pack and an unpack per
                # record. A control item of a partition closes its open chunk first, so
                # each partition's items stay in order.
                open_chunks: dict[int, tuple[pb.Chunk, list[Any]]] = {}
                add_chunk = batch.chunks.add
                while queue and size < BATCH_MAX_BYTES:
                    kind, p, a, b = popleft()
                    if kind == _MUT:
                        open_chunk = open_chunks.get(p)
                        if open_chunk is None:
                            chunk = add_chunk(partition=p, kind=mutations, seq=a)
                            open_chunk = open_chunks[p] = (chunk, [])
                        open_chunk[1].append(b)
                        size += len(b[2]) + len(b[3] or b"") + 32
                        continue
                    closing = open_chunks.pop(p, None)
                    if closing is not None:
                        _seal(*closing)
                    if kind == _SNAP:
                        n = sum(len(e[2]) + len(e[3] or b"") + 32 for e in a)
                        _seal(batch.chunks.add(partition=p, kind=pb.SNAPSHOT), a)
                        size += n
                        snap_bytes += n
                    elif kind == _BEGIN:
                        batch.chunks.add(partition=p, kind=pb.SNAPSHOT_BEGIN)
                    elif kind == _END:
                        batch.chunks.add(partition=p, kind=pb.SNAPSHOT_END, term=a, seq=b)
                    elif kind == _HANDOFF:
                        batch.chunks.add(partition=p, kind=pb.HANDOFF, term=a[0], epoch=a[1], seq=b)
                    elif kind == _REFUSED:
                        batch.chunks.add(partition=p, kind=pb.REFUSED, error=a)
                for closing in open_chunks.values():
                    _seal(*closing)
                if snap_bytes:
                    await self.throttle.take(snap_bytes)
                data = batch.SerializeToString()
                self.bytes_sent += len(data)
                await context.write(data)

    def _end(self, session: Session) -> None:
        session.close()
        session.event.set()
        if self.sessions.get(session.follower) is session:
            del self.sessions[session.follower]
        with self.store.lock:
            for p in session.partitions:
                subs = self.followers.get(p)
                if subs is not None:
                    subs.discard(session)
            session.partitions.clear()

    # ---- hand-off ------------------------------------------------------------------------------
    async def handoff(
        self, partitions: list[int], to: str, epoch: int
    ) -> tuple[list[int], list[int]]:
        """Hand these partitions to follower `to`; returns (done, failed). `epoch`: the
        first table epoch that will show the hand-off (see grid/routing.py)."""
        session = self.sessions.get(to)
        done: list[int] = []
        failed: list[int] = []
        waits: list[tuple[int, asyncio.Future[None]]] = []
        with self.store.lock:
            for p in partitions:
                plog = self.logs.get(p)
                if (
                    session is None
                    or session.closed
                    or plog is None
                    or p not in session.partitions
                    or not self.routing.serves(p)
                ):
                    failed.append(p)
                    continue
                self.routing.handed_off(p, to, epoch)
                session.push((_HANDOFF, p, (plog.term, epoch), plog.seq))
                session.hurry()  # clients of p wait for the hand-off: no lingering
                del self.logs[p]
                self.positions[p] = FollowerLog(plog.term, plog.seq, Phase.LIVE)
                for s in self.followers.pop(p, set()):
                    s.partitions.discard(p)
                    if s is not session:
                        s.push((_REFUSED, p, f"partition {p} moved to {to}", None))
                waits.append((p, session.wait_takeover(p)))
        if waits:  # one deadline for all: a silent follower costs 10 s, not 10 s a partition
            await asyncio.wait([f for _, f in waits], timeout=HANDOFF_ACK_TIMEOUT_S)
        for p, fut in waits:
            try:
                if not fut.done():
                    fut.cancel()
                    raise TimeoutError
                fut.result()
                done.append(p)
                self.handoffs += 1
            except (TimeoutError, ConnectionError, asyncio.CancelledError) as e:
                # The new owner did not confirm: serve the partition again rather than
                # leave it with nobody. (If it did take over and only the ack was lost,
                # the next table settles who serves it.)
                log.warning("hand-off not confirmed; serving again", partition=p, to=to,
                            error=str(e) or type(e).__name__)  # fmt: skip
                with self.store.lock:
                    pos = self.positions.pop(p, None)
                    self.routing.take_back(p)
                    if pos is not None and self.routing.serves(p):
                        self.logs[p] = PrimaryLog(new_term(), pos.seq, self.log_changes)
                failed.append(p)
        return done, failed

    # ---- sync backups ------------------------------------------------------------------------
    def take_touched(self) -> dict[int, int]:
        """Partitions changed (as primary) since the last call, with their last seq."""
        touched, self._touched = self._touched, {}
        return touched

    async def wait_backups(
        self, touched: dict[int, int], n: int, timeout: float, ranks: int = 1 << 30
    ) -> bool:
        """Until, for every partition, min(n, its backups in the table) backups have
        applied its changes up to the seq given; False at the timeout. The table is
        read again as it changes: a backup that died and left the table stops counting."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            missing = self._unconfirmed(touched, n, ranks)
            if not missing:
                return True
            left = deadline - loop.time()
            if left <= 0:
                self.sync_timeouts += 1
                return False
            futs = [
                s.wait_ack(p, seq) for p, seq in missing for s in self._backup_sessions(p, ranks)
            ]
            if futs:
                await asyncio.wait(
                    futs, timeout=min(left, 0.1), return_when=asyncio.FIRST_COMPLETED
                )
                for f in futs:
                    if not f.done():
                        f.cancel()
                    elif not f.cancelled():
                        f.exception()  # retrieve it: a closed stream is just "not yet"
            else:
                await asyncio.sleep(min(left, 0.05))

    def _backup_sessions(self, p: int, ranks: int = 1 << 30) -> list[Session]:
        table = self.routing.table
        if table is None:
            return []
        out = []
        for m in table.replicas(p)[1 : 1 + ranks]:
            s = self.sessions.get(m)
            if s is not None and not s.closed and p in s.partitions:
                out.append(s)
        return out

    def _unconfirmed(self, touched: dict[int, int], n: int, ranks: int) -> list[tuple[int, int]]:
        """Partitions not yet confirmed by n of their first `ranks` backups (the ones that
        hold the maps written: per-map backups)."""
        table = self.routing.table
        missing = []
        for p, seq in touched.items():
            if table is None or not self.routing.serves(p):
                continue  # handed off or failed over meanwhile: its new primary answers
            backups = table.replicas(p)[1 : 1 + ranks]
            need = min(n, len(backups))
            if need <= 0:
                continue
            acked = sum(
                1 for m in backups
                if (s := self.sessions.get(m)) is not None and s.acked.get(p, 0) >= seq
            )  # fmt: skip
            if acked < need:
                missing.append((p, seq))
        return missing

    def lag(self) -> tuple[int, int, float, list[tuple[int, str, int, float]]]:
        """(worst partition's unacknowledged changes, their sum, oldest one's age in s,
        the LAGGING_SHOWN most behind as (partition, backup, changes, seconds)) over the
        partitions this member is primary of and their backups in the table."""
        table = self.routing.table
        if table is None:
            return 0, 0, 0.0, []
        now = time.monotonic()
        worst = total = 0
        oldest = 0.0
        rows: list[tuple[int, float, int, str]] = []
        with self.store.lock:
            for p, plog in self.logs.items():
                for m in table.replicas(p)[1:]:
                    s = self.sessions.get(m)
                    acked = s.acked.get(p, 0) if s is not None and p in s.partitions else 0
                    behind = max(0, plog.seq - acked)
                    if not behind:
                        continue
                    worst = max(worst, behind)
                    total += behind
                    at = plog.applied_at(acked + 1)
                    age = now - at if at else 0.0
                    oldest = max(oldest, age)
                    rows.append((behind, age, p, m))
        top = heapq.nlargest(LAGGING_SHOWN, rows)
        return worst, total, oldest, [(p, m, behind, age) for behind, age, p, m in top]
