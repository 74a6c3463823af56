"""The follower side of partition streams: backups, and members being filled.

A member follows a partition when the table names it a backup, or while the
coordinator has it filling the partition before a hand-off (`fill`). Per
primary it keeps one `Follow` stream (grid/replica.py is the other end)
carrying every partition it follows there; subscribing to one more is a
message on the open stream, not a new call.

What it wants follows the table: on every new table `reconcile` subscribes to
the primary of each partition it backs up (moving the subscription when the
primary changed), unsubscribes the rest, and drops its copy of partitions in
which it has no role any more. Applying is `Store.apply` under the store lock
(last writer wins, so a duplicate or a late change is harmless) and then the
durability journal, so a backup's copy is on its disk too.

When a stream breaks, the follower reconnects with backoff and subscribes
again with what it has, `(term, seq)` per partition; the primary answers with
the missing changes, or a snapshot if it no longer has them.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import grpc

from grid import logs
from grid.replica import Replicator, unpack_records
from grid.routing import Routing
from grid.store import Store
from proto import grid_pb2 as pb
from replication.stream import FollowerLog, Phase, Verdict

if TYPE_CHECKING:
    from grid.positions import FollowPositions

log = logs.get("grid.follower")
_MUTATIONS = pb.MUTATIONS
_RESYNC = Verdict.RESYNC

FOLLOW_METHOD = "/grid.v1.Peer/Follow"
FILL_LINGER_S = 60.0  # a filled copy the table never adopted is dropped after this
RETRY_BASE_S, RETRY_CAP_S = 0.05, 2.0
DROP_RETRY_S = 5.0  # a copy kept because its primary was unreachable is tried again
REFUSED_RETRY_S = 0.2  # a refused subscription is tried again this soon, while still wanted
ACK_EVERY_S = 0.05
"""With no sync backups configured (`sync_backups` 0 and no map above 0), nobody waits for
an acknowledgement: they only feed the primary's lag figures. Then a stream sends at most
one per ACK_EVERY_S (the first after a quiet spell at once), not one per message applied:
an acknowledgement costs a gRPC message at both ends, about as much as the change message
itself. Hand-offs (`taken_over`) are never held back."""


class Upstream:
    """One Follow stream to one primary."""

    def __init__(self, owner: Followers, source: str, address: str) -> None:
        self.owner = owner
        self.source = source
        self.address = address
        self.partitions: set[int] = set()
        # messages to the primary; None stands for "the acknowledgements gathered so far"
        self.out: asyncio.Queue[pb.FollowMessage | None] = asyncio.Queue()
        self._acks: dict[int, int] = {}
        self._taken: list[int] = []
        self._ack_queued = False
        self._ack_every = owner.ack_every
        self._acked_at = -1e9  # loop time of the last acknowledgement sent
        self._ack_timer: asyncio.TimerHandle | None = None
        self.task = asyncio.create_task(self._run(), name=f"grid-follow-{source}")

    def subscribe(self, partitions: list[int]) -> None:
        self.partitions.update(partitions)
        msg = pb.FollowMessage()
        self._ask(msg, partitions)
        self.out.put_nowait(msg)

    def _ask(self, msg: pb.FollowMessage, partitions: Iterable[int]) -> None:
        """Subscribe `msg` to these partitions from what this member has of each."""
        owner = self.owner
        for p in partitions:
            st = owner.state.setdefault(p, FollowerLog())
            st.resubscribe()
            msg.subscribe.add(
                partition=p, have_term=st.term, have_seq=st.seq, all_maps=p in owner.fills
            )

    def unsubscribe(self, partitions: list[int]) -> None:
        for p in partitions:
            self.partitions.discard(p)
        self.out.put_nowait(pb.FollowMessage(unsubscribe=partitions))

    async def _run(self) -> None:
        attempt = 0
        while self.partitions or attempt == 0:
            channel = self.owner.channel(self.address)
            call = channel.stream_stream(
                FOLLOW_METHOD, request_serializer=pb.FollowMessage.SerializeToString
            )()
            hello = pb.FollowMessage(follower=self.owner.me)
            self._ask(hello, sorted(self.partitions))
            # anything queued before is covered by the hello's subscriptions
            while not self.out.empty():
                self.out.get_nowait()
            self._acks.clear()
            self._taken.clear()
            self._ack_queued = False
            self._cancel_ack_timer()
            writer = asyncio.create_task(self._write(call, hello))
            apply = self.owner.apply
            parse = pb.ReplicaBatch.FromString
            try:
                async for data in call:
                    attempt = 0
                    acks, taken = apply(self, parse(data), len(data))
                    if acks or taken:
                        self._ack(acks, taken)
            except asyncio.CancelledError:
                writer.cancel()
                call.cancel()
                raise
            except grpc.aio.AioRpcError as e:
                log.debug("follow stream broke", source=self.source, error=e.code().name)
            except Exception:
                log.exception("follow stream failed", source=self.source)
            writer.cancel()
            call.cancel()
            self.owner.stream_lost(self)
            attempt += 1
            delay = min(RETRY_CAP_S, RETRY_BASE_S * 2**attempt) * (0.5 + random.random() / 2)
            await asyncio.sleep(delay)

    async def _write(self, call: grpc.aio.StreamStreamCall, hello: pb.FollowMessage) -> None:
        try:
            await call.write(hello)
            while True:
                msg = await self.out.get()
                await call.write(self._take_acks() if msg is None else msg)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the stream is broken; the reader sees it and reconnects
            log.info("follow stream: cannot send", source=self.source, error=repr(e))
            call.cancel()

    def _ack(self, acks: dict[int, int], taken: list[int]) -> None:
        """Acknowledgements wait in one place until the writer sends them: the batches
        applied meanwhile share one message (a message costs about as much as the apply
        of a small batch)."""
        self._acks.update(acks)  # seqs only grow: the latest is the one to send
        self._taken.extend(taken)
        if taken and self._ack_timer is not None:
            self._cancel_ack_timer()  # a hand-off is confirmed now, not at the timer
            self._ack_queued = False
        if not self._ack_queued:
            self._ack_queued = True
            loop = asyncio.get_running_loop()
            wait = self._acked_at + self._ack_every - loop.time() if self._ack_every else 0.0
            if wait > 0 and not taken:
                self._ack_timer = loop.call_later(wait, self._ack_due)
            else:
                self.out.put_nowait(None)

    def _ack_due(self) -> None:
        self._ack_timer = None
        self.out.put_nowait(None)

    def _cancel_ack_timer(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None

    def _take_acks(self) -> pb.FollowMessage:
        acks, taken = self._acks, self._taken
        self._acks, self._taken, self._ack_queued = {}, [], False
        if self._ack_every:
            self._acked_at = asyncio.get_running_loop().time()
        return pb.FollowMessage(
            ack_partitions=list(acks), ack_seqs=list(acks.values()), taken_over=taken
        )

    def close(self) -> None:
        self._cancel_ack_timer()
        self.task.cancel()


class Followers:
    def __init__(
        self,
        me: str,
        store: Store,
        routing: Routing,
        replicator: Replicator,
        channel: Callable[[str], grpc.aio.Channel],
        after_apply: Callable[[], object],
    ) -> None:
        self.me = me
        self.store = store
        self.routing = routing
        self.replicator = replicator
        self.channel = channel
        self.after_apply = after_apply  # the durability journal's flush
        self.state: dict[int, FollowerLog] = replicator.positions
        self.upstreams: dict[str, Upstream] = {}
        self.source_of: dict[int, str] = {}
        self.fills: dict[int, tuple[str, float]] = {}  # partition -> (source, since)
        self._ready: dict[int, list[asyncio.Future[bool]]] = {}
        self.bytes_received = 0
        self.fills_done = 0
        self.handed_over: dict[int, asyncio.Event] = {}
        self._retry: asyncio.TimerHandle | None = None
        self._dropper: asyncio.Task[None] | None = None
        self._drop_again = False
        self.ranks: dict[int, int] = {}  # partition -> this member's backup rank
        self._closed = False
        config = store.config
        no_sync = not (config.sync_backups or any(config.sync_backups_by_map().values()))
        self.ack_every = ACK_EVERY_S if no_sync else 0.0  # see ACK_EVERY_S
        # set by the runtime: merge a copy into its primary before it is dropped
        self.hand_back: Callable[[int], Awaitable[bool]] | None = None
        # set by the runtime when the member has a data dir (grid/positions.py)
        self.positions: FollowPositions | None = None
        self.resumed = 0  # subscriptions answered from the primary's log, not a snapshot

    # ---- what to follow ------------------------------------------------------------------------
    def wanted(self) -> dict[int, str]:
        table = self.routing.table
        want: dict[int, str] = {}
        if table is not None:
            me = self.me
            for p in table.partitions_of(me).backup:
                owner = self.routing.owner(p)
                if owner and owner != me:
                    want[p] = owner
        now = time.monotonic()
        for p, (source, since) in list(self.fills.items()):
            if p in want or self.routing.serves(p):
                del self.fills[p]  # the table adopted the copy (or we own it now)
            elif now - since > FILL_LINGER_S:
                del self.fills[p]
            else:
                want[p] = source
        return want

    def reconcile(self) -> None:
        """Make subscriptions match the table and the fills; drop copies with no role."""
        if self._closed:
            return  # a timer that fired after the member stopped
        want = self.wanted()
        if not self.replicator.map_backups.uniform:
            self._follow_ranks(want)
        by_source: dict[str, list[int]] = {}
        stop: dict[str, list[int]] = {}
        for p, src in list(self.source_of.items()):
            if want.get(p) != src:
                stop.setdefault(src, []).append(p)
                del self.source_of[p]
        for p, src in want.items():
            if self.source_of.get(p) != src:
                by_source.setdefault(src, []).append(p)
                self.source_of[p] = src
        for src, parts in stop.items():
            up = self.upstreams.get(src)
            if up is not None:
                up.unsubscribe(parts)
        for src, parts in by_source.items():
            address = self.routing.address_of(src)
            if not address:
                log.warning("no address for primary", member=src, partitions=len(parts))
                for p in parts:
                    self.source_of.pop(p, None)
                continue
            up = self.upstreams.get(src)
            if up is None or up.address != address or up.task.done():
                if up is not None:
                    up.close()
                up = self.upstreams[src] = Upstream(self, src, address)
            up.subscribe(parts)
        for src, up in list(self.upstreams.items()):
            if not up.partitions and src not in by_source:
                up.close()
                del self.upstreams[src]
        self._drop_again = True
        if self._dropper is None or self._dropper.done():
            self._dropper = asyncio.get_running_loop().create_task(self._drop_unheld())

    def _holds(self, p: int) -> Callable[[str], bool] | None:
        """Which maps this member keeps of p as it follows it (None: all): with per-map
        backups a backup at rank r keeps the maps with r or more backups, whatever a
        primary on an older table still sends; a fill keeps everything."""
        mb = self.replicator.map_backups
        rank = self.ranks.get(p, 0)
        if mb.uniform or rank == 0 or p in self.fills:
            return None
        return lambda name: mb.holds(name, rank)

    def _follow_ranks(self, want: dict[int, str]) -> None:
        """Per-map backups: a backup at rank r holds the maps with r or more backups. When
        its rank drops (a backup before it left) it needs maps it never had: a snapshot
        (merged into the copy). When its rank rises it drops the maps it no longer holds."""
        table = self.routing.table
        if table is None:
            return
        holds = self.replicator.map_backups.holds
        ranks: dict[int, int] = {}
        for p in want:
            replicas = table.replicas(p)
            if self.me not in replicas:
                continue  # a fill: every map
            rank = replicas.index(self.me)
            ranks[p] = rank
            old = self.ranks.get(p)
            if old is not None and rank < old and self.source_of.get(p) == want[p]:
                st = self.state.get(p)
                if st is not None:
                    st.term, st.seq = 0, 0
                del self.source_of[p]  # subscribed again below: a snapshot
            if old is None or rank > old:
                with self.store.lock:
                    if self.store.drop_maps(p, lambda name, r=rank: holds(name, r)):
                        self.after_apply()
        self.ranks = ranks

    def holds(self, p: int, map_name: str) -> bool:
        """Whether this member keeps this map of p as it follows it (map_backups)."""
        held = self._holds(p)
        return held is None or held(map_name)

    def readable(self, p: int, map_name: str) -> bool:
        """Whether a read of this map in p may be answered from this member's copy
        (read_from_backup): it is a backup of p in the table, follows p's primary and has
        caught up with it (not mid-snapshot), and holds the map (caller holds the lock)."""
        if p not in self.source_of or p in self.fills:
            return False
        st = self.state.get(p)
        if st is None or st.phase is not Phase.LIVE:
            return False
        table = self.routing.table
        if table is None:
            return False
        replicas = table.replicas(p)
        if replicas[0] == self.me or self.me not in replicas:
            return False
        return self.holds(p, map_name)

    def unheld(self, p: int) -> bool:
        """Whether this member has no role for p: not its primary, not a backup in the
        table, not following or filling it (caller holds the lock)."""
        table = self.routing.table
        return not (
            table is None
            or p in self.source_of
            or p in self.fills
            or self.routing.serves(p)
            or p in self.replicator.logs
            or self.me in table.replicas(p)
        )

    async def _drop_unheld(self) -> None:
        """Drop copies with no role, one partition at a time: a partition of a large map
        takes milliseconds to drop, and clients must not wait for all of them at once.
        Each is checked again under the lock just before it goes (a newer table may have
        given it a role meanwhile)."""
        dropped = kept = 0
        while self._drop_again:  # a table installed meanwhile: look over every partition again
            self._drop_again = False
            for p in range(self.store.partitions):
                with self.store.lock:
                    if not self.unheld(p):
                        continue
                    held = self.store.holds_copy(p)
                # what the copy has that the primary lacks goes there first (a healed split)
                if held and self.hand_back is not None:
                    try:
                        handed = await self.hand_back(p)
                    except Exception:  # never let one partition stop the dropping
                        log.exception("hand-back before drop failed", partition=p)
                        handed = False
                    if not handed:
                        kept += 1
                        continue
                try:
                    if self.positions is not None:  # a restart must not catch up a dropped copy
                        try:
                            await self.positions.forget(p)
                        except OSError as e:  # the file still names it: keep the copy
                            log.warning("cannot update follow positions", error=str(e))
                            kept += 1
                            continue
                    with self.store.lock:
                        if not self.unheld(p):
                            continue
                        self.state.pop(p, None)
                        if self.store.holds_copy(p):
                            dropped += self.store.drop_partition(p)
                            self.after_apply()
                finally:
                    if self.positions is not None:
                        self.positions.done(p)
                await asyncio.sleep(0)
        if dropped:
            log.info("dropped copies this member no longer holds", entries=dropped)
        if kept:  # their primary could not be reached: try again, not only at the next table
            asyncio.get_running_loop().call_later(DROP_RETRY_S, self.reconcile)

    async def fill(
        self, partitions: list[int], source: str, address: str, timeout: float
    ) -> tuple[list[int], list[int]]:
        """Follow these partitions from `source` until each is live; (ready, failed)."""
        if address:
            self.routing.set_address(source, address)
        now = time.monotonic()
        futures: dict[int, asyncio.Future[bool]] = {}
        loop = asyncio.get_running_loop()
        # a fill the table never adopts lingers FILL_LINGER_S; look again then, or nothing
        # would drop it before the next table
        loop.call_later(FILL_LINGER_S + 1, self.reconcile)
        for p in partitions:
            self.fills[p] = (source, now)
            fut = loop.create_future()
            self._ready.setdefault(p, []).append(fut)
            futures[p] = fut
        # a partition already followed from this source and live needs no new snapshot,
        # unless this member is a backup that holds only some maps (map_backups): then
        # it subscribes again for every map (a snapshot merged into its copy)
        uniform = self.replicator.map_backups.uniform
        for p in partitions:
            st = self.state.get(p)
            if self.source_of.get(p) == source and st is not None and st.phase is Phase.LIVE:
                if uniform or not self.ranks.get(p):
                    self._resolve(p, True)
                else:
                    st.term, st.seq = 0, 0
                    del self.source_of[p]
        self.reconcile()
        ready, failed = [], []
        for p, fut in futures.items():
            try:
                ok = await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                ok = False
            (ready if ok else failed).append(p)
        return ready, failed

    def _resolve(self, p: int, ok: bool) -> None:
        for fut in self._ready.pop(p, []):
            if not fut.done():
                fut.set_result(ok)

    # ---- applying ------------------------------------------------------------------------
    def apply(
        self, up: Upstream, batch: pb.ReplicaBatch, size: int = -1
    ) -> tuple[dict[int, int], list[int]]:
        """Apply one message from a primary (`size`: its bytes, when the caller has them);
        returns (acks: partition -> applied seq, partitions taken over by HANDOFF)."""
        self.bytes_received += size if size >= 0 else batch.ByteSize()
        acks: dict[int, int] = {}
        taken: list[int] = []
        resync: set[int] = set()  # (a partition can fail twice in one batch)
        refused = False
        store = self.store
        state = self.state
        subscribed = up.partitions
        uniform = self.replicator.map_backups.uniform
        with store.lock:
            now = store.clock()
            apply = store.apply
            unpack = unpack_records
            max_value = store.max_value
            for chunk in batch.chunks:
                p = chunk.partition
                if p not in subscribed:
                    continue  # unsubscribed meanwhile
                st = state.get(p)
                if st is None:
                    st = state[p] = FollowerLog()
                kind = chunk.kind
                if kind == _MUTATIONS:
                    count = chunk.count
                    verdict, skip = st.mutations(chunk.seq, count)
                    if verdict is _RESYNC:
                        resync.add(p)
                        continue
                    records = unpack(chunk.records, count, max_value, f"partition {p}")
                    if skip:
                        records = records[skip:]
                    held = None if uniform else self._holds(p)
                    if held is None:
                        for r in records:
                            if r[0]:  # (op 0: a map this backup does not hold)
                                apply(p, *r, now)  # (op, map, key, value, ts, member, ...)
                    else:
                        for r in records:
                            if r[0] and held(r[1]):
                                apply(p, *r, now)
                    acks[p] = st.seq
                elif kind == pb.SNAPSHOT:
                    if st.snapshot_records() is Verdict.RESYNC:
                        resync.add(p)
                        continue
                    held = self._holds(p)
                    for r in unpack(chunk.records, chunk.count, max_value, f"partition {p}"):
                        if held is None or held(r[1]):
                            apply(p, *r, now)
                elif kind == pb.SNAPSHOT_BEGIN:
                    # The copy already held is merged into, not dropped: what it has that
                    # the primary lacks (writes of the other side of a healed split) stays
                    # for anti-entropy to merge back (grid/antientropy.py).
                    st.snapshot_begin()
                elif kind == pb.SNAPSHOT_END:
                    whole = st.phase is Phase.SNAPSHOT  # else: the log had what we lacked
                    if st.snapshot_end(chunk.term, chunk.seq) is Verdict.RESYNC:
                        resync.add(p)
                        continue
                    if not whole:
                        self.resumed += 1
                    acks[p] = st.seq
                    if p in self.fills:
                        self.fills_done += 1
                    self._resolve(p, True)
                    gc.freeze()  # a filled copy is long-lived: see grid/member.py
                elif kind == pb.HANDOFF:
                    # everything before it is applied: the partition is ours from here on
                    self.routing.handed_over(p, chunk.epoch)
                    self.replicator.core.start_log(p, chunk.term, chunk.seq)
                    self.state.pop(p, None)
                    up.partitions.discard(p)
                    self.source_of.pop(p, None)
                    self.fills.pop(p, None)
                    acks[p] = chunk.seq
                    taken.append(p)
                    ev = self.handed_over.pop(p, None)
                    if ev is not None:
                        ev.set()
                elif kind == pb.REFUSED:
                    up.partitions.discard(p)
                    if self.source_of.get(p) == up.source:
                        del self.source_of[p]
                    self._resolve(p, False)
                    refused = True
                    log.debug("subscription refused", partition=p, source=up.source,
                              why=chunk.error)  # fmt: skip
            self.after_apply()
        if resync:
            for p in resync:
                st = self.state[p]
                st.term, st.seq = 0, 0  # ask for a snapshot
            up.subscribe(sorted(resync))
        if refused:
            # The primary may just not have installed the table that makes it primary
            # yet: look again shortly (subscribes what is still wanted, from its owner).
            self._retry_later()
        return acks, taken

    def _retry_later(self) -> None:
        if self._retry is None:
            loop = asyncio.get_running_loop()
            self._retry = loop.call_later(REFUSED_RETRY_S, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self.reconcile()

    def stream_lost(self, up: Upstream) -> None:
        for p in up.partitions:
            st = self.state.get(p)
            if st is not None and st.phase is Phase.SNAPSHOT:
                st.term, st.seq = 0, 0  # a half-received snapshot is worth nothing
            if p in self.fills and (st is None or st.phase is not Phase.LIVE):
                self._resolve(p, False)  # the coordinator learns now, not at its timeout

    def wait_handover(self, partition: int) -> asyncio.Event | None:
        """An event set when the partition is handed to us, if we are following it."""
        if partition not in self.source_of:
            return None
        return self.handed_over.setdefault(partition, asyncio.Event())

    def in_flight(self) -> int:
        return sum(
            1 for p in self.fills if (st := self.state.get(p)) is None or st.phase is not Phase.LIVE
        )

    def close(self) -> None:
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
        if self._dropper is not None:
            self._dropper.cancel()
        for up in self.upstreams.values():
            up.close()
        self.upstreams.clear()
