"""The follower side of partition streams, carried out over data-plane follow streams.

replication/follower.py decides what to follow, what each message from a
primary means and what to apply; this module runs it: one follow stream (link.py)
per primary (an `Upstream`, grid/member/replicas/replica.py is the other end), reconnects
with backoff, acknowledgements, the store lock around each applied message
and the durability journal after it (so a backup's copy is on its disk too),
futures for fills the coordinator waits on, and the dropping of copies with
no role (after handing back what their primary lacks).

When a stream breaks, the upstream reconnects with backoff and subscribes
again with what it has, `(term, seq)` per partition; the primary answers with
the missing changes, or a snapshot if it no longer has them.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from grid import logs
from grid.errors import Unavailable
from grid.member.placement.routing import Routing
from grid.member.replicas.link import EOF, FramePipe, PipeClosed
from grid.member.replicas.replica import Replicator, unpack_records
from grid.store import Store
from proto import grid_pb2 as pb
from replication.follower import ACK_EVERY_S, FILL_LINGER_S, AckPacer, Follower
from replication.stream import FollowerLog

if TYPE_CHECKING:
    from grid.member.replicas.positions import FollowPositions

log = logs.get("grid.member.replicas.follower")

RETRY_BASE_S, RETRY_CAP_S = 0.05, 2.0
DROP_RETRY_S = 5.0  # a copy kept because its primary was unreachable is tried again
REFUSED_RETRY_S = 0.2  # a refused subscription is tried again this soon, while still wanted


class Upstream:
    """One Follow stream to one primary."""

    def __init__(self, owner: Followers, source: str, address: str) -> None:
        self.owner = owner
        self.source = source
        self.address = address
        # messages to the primary; None stands for "the acknowledgements gathered so far"
        self.out: asyncio.Queue[pb.FollowMessage | None] = asyncio.Queue()
        self._acks: dict[int, int] = {}
        self._taken: list[int] = []
        self._ack_queued = False
        self._pacer = AckPacer(owner.ack_every)
        self._ack_timer: asyncio.TimerHandle | None = None
        self.task = asyncio.create_task(self._run(), name=f"grid-follow-{source}")

    @property
    def partitions(self) -> set[int]:
        return self.owner.core.upstreams.get(self.source, set())

    def subscribe(self, partitions: Iterable[int]) -> None:
        msg = pb.FollowMessage()
        self._ask(msg, partitions)
        self.out.put_nowait(msg)

    def _ask(self, msg: pb.FollowMessage, partitions: Iterable[int]) -> None:
        """Subscribe `msg` to these partitions from what this member has of each."""
        for sub in self.owner.core.subscriptions(partitions):
            msg.subscribe.add(
                partition=sub.partition,
                have_term=sub.have_term,
                have_seq=sub.have_seq,
                all_maps=sub.all_maps,
            )

    def unsubscribe(self, partitions: list[int]) -> None:
        self.out.put_nowait(pb.FollowMessage(unsubscribe=partitions))

    async def _run(self) -> None:
        attempt = 0
        while self.partitions or attempt == 0:
            hello = pb.FollowMessage(follower=self.owner.me)
            self._ask(hello, sorted(self.partitions))
            # anything queued before is covered by the hello's subscriptions
            while not self.out.empty():
                self.out.get_nowait()
            self._acks.clear()
            self._taken.clear()
            self._ack_queued = False
            self._cancel_ack_timer()
            pipe: FramePipe | None = None
            writer: asyncio.Task[None] | None = None
            apply = self.owner.apply
            parse = pb.ReplicaBatch.FromString
            try:
                pipe = await self.owner.connect(self.address)
                writer = asyncio.create_task(self._write(pipe, hello))
                while (data := await pipe.read()) is not EOF:
                    attempt = 0
                    acks, taken = apply(self, parse(data), len(data))
                    if acks or taken:
                        self._ack(acks, taken)
                log.debug("follow stream ended", source=self.source, why=pipe.why)
            except asyncio.CancelledError:
                if writer is not None:
                    writer.cancel()
                if pipe is not None:
                    pipe.closed("follower stopping")
                raise
            except (OSError, TimeoutError, PipeClosed, Unavailable) as e:
                log.debug("follow stream broke", source=self.source, error=str(e))
            except Exception:
                log.exception("follow stream failed", source=self.source)
            if writer is not None:
                writer.cancel()
            if pipe is not None:
                pipe.closed("follow stream broke")
            self.owner.stream_lost(self)
            attempt += 1
            delay = min(RETRY_CAP_S, RETRY_BASE_S * 2**attempt) * (0.5 + random.random() / 2)
            await asyncio.sleep(delay)

    async def _write(self, pipe: FramePipe, hello: pb.FollowMessage) -> None:
        try:
            await pipe.write(hello.SerializeToString())
            while True:
                msg = await self.out.get()
                await pipe.write((self._take_acks() if msg is None else msg).SerializeToString())
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the stream is broken; the reader sees it and reconnects
            log.info("follow stream: cannot send", source=self.source, error=repr(e))
            pipe.closed(f"cannot send: {e!r}")

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
            now = loop.time()
            due = self._pacer.due(now, bool(taken))
            if due > now:
                self._ack_timer = loop.call_later(due - now, self._ack_due)
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
        self._pacer.sent(asyncio.get_running_loop().time())
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
        connect: Callable[[str], Awaitable[FramePipe]],
        after_apply: Callable[[], object],
    ) -> None:
        self.me = me
        self.store = store
        self.routing = routing
        self.replicator = replicator
        self.connect = connect
        """Opens a follow stream to a primary, by its gRPC address (Peers.follow)."""
        self.after_apply = after_apply  # the durability journal's flush
        max_value = store.max_value

        def decode(chunk: Any) -> Any:
            return unpack_records(
                chunk.records, chunk.count, max_value, f"partition {chunk.partition}"
            )

        self.core = Follower(
            me, replicator.core, store.apply, decode, routing.owner, routing.take_over
        )
        self.state: dict[int, FollowerLog] = self.core.state
        self.upstreams: dict[str, Upstream] = {}
        self._ready: dict[int, list[asyncio.Future[bool]]] = {}
        self.bytes_received = 0
        self.takeovers: dict[int, asyncio.Event] = {}  # partitions whose take-over someone awaits
        self._retry: asyncio.TimerHandle | None = None
        self._dropper: asyncio.Task[None] | None = None
        self._drop_again = False
        self._closed = False
        config = store.config
        no_sync = not (config.sync_backups or any(config.sync_backups_by_map().values()))
        self.ack_every = ACK_EVERY_S if no_sync else 0.0  # see ACK_EVERY_S
        # set by the runtime: merge a copy into its primary before it is dropped
        self.hand_back: Callable[[int], Awaitable[bool]] | None = None
        # set by the runtime when the member has a data dir (grid/member/replicas/positions.py)
        self.positions: FollowPositions | None = None

    @property
    def resumed(self) -> int:
        return self.core.resumed

    @property
    def fills_done(self) -> int:
        return self.core.fills_done

    # ---- what to follow ------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Make subscriptions match the table and the fills; drop copies with no role."""
        if self._closed:
            return  # a timer that fired after the member stopped
        with self.store.lock:
            plan = self.core.reconcile(self.routing.table, time.monotonic())
            for p, rank in plan.drop_maps:
                if self.store.drop_maps(p, self.core.map_backups.held(rank) or _every_map):
                    self.after_apply()
        for src, parts in plan.unsubscribe.items():
            up = self.upstreams.get(src)
            if up is not None:
                up.unsubscribe(parts)
        for src, parts in plan.subscribe.items():
            address = self.routing.address_of(src)
            if not address:
                log.warning("no address for primary", member=src, partitions=len(parts))
                self.core.unreachable(src, parts)
                continue
            up = self.upstreams.get(src)
            if up is None or up.address != address or up.task.done():
                if up is not None:
                    up.close()
                up = self.upstreams[src] = Upstream(self, src, address)
            up.subscribe(parts)
        for src in plan.idle:
            up = self.upstreams.pop(src, None)
            if up is not None:
                up.close()
        self._drop_again = True
        if self._dropper is None or self._dropper.done():
            self._dropper = asyncio.get_running_loop().create_task(self._drop_unheld())

    def holds(self, p: int, map_name: str) -> bool:
        """Whether this member keeps this map of p as it follows it (map_backups)."""
        return self.core.holds(p, map_name)

    def readable(self, p: int, map_name: str) -> bool:
        """Whether a read may be answered from this member's copy (caller holds the lock)."""
        return self.core.readable(p, map_name, self.routing.table)

    def held_copies(self) -> list[int]:
        """The partitions this member holds a copy of, whatever its role."""
        with self.store.lock:
            held = self.store.holds_copy
            return [p for p in range(self.store.partitions) if held(p)]

    def unheld(self, p: int) -> bool:
        """Whether this member has no role for p (caller holds the lock)."""
        return self.core.unheld(p, self.routing.table)

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
                        self.core.dropped(p)
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
        futures: dict[int, asyncio.Future[bool]] = {}
        loop = asyncio.get_running_loop()
        # a fill the table never adopts lingers FILL_LINGER_S; look again then, or nothing
        # would drop it before the next table
        loop.call_later(FILL_LINGER_S + 1, self.reconcile)
        for p in partitions:
            fut = loop.create_future()
            self._ready.setdefault(p, []).append(fut)
            futures[p] = fut
        with self.store.lock:
            ready = self.core.fill(partitions, source, time.monotonic())
        for p in ready:
            self._resolve(p, True)
        self.reconcile()
        done, failed = [], []
        for p, fut in futures.items():
            try:
                ok = await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                ok = False
            (done if ok else failed).append(p)
        return done, failed

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
        store = self.store
        with store.lock:
            got = self.core.receive(up.source, batch.chunks, store.clock())
            self.after_apply()
        for p, ok in got.filled:
            self._resolve(p, ok)
        if any(ok for _, ok in got.filled):
            gc.freeze()  # a filled copy is long-lived: see grid/member/member.py
        taken = [p for p, _ in got.taken]
        for p in taken:
            ev = self.takeovers.pop(p, None)
            if ev is not None:
                ev.set()
        if got.resync:
            up.subscribe(got.resync)
        if got.refused:
            # The primary may just not have installed the table that makes it primary
            # yet: look again shortly (subscribes what is still wanted, from its owner).
            self._retry_later()
        return got.acks, taken

    def _retry_later(self) -> None:
        if self._retry is None:
            loop = asyncio.get_running_loop()
            self._retry = loop.call_later(REFUSED_RETRY_S, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self.reconcile()

    def stream_lost(self, up: Upstream) -> None:
        with self.store.lock:
            failed = self.core.stream_lost(up.source)
        for p in failed:
            self._resolve(p, False)

    def wait_takeover(self, partition: int) -> asyncio.Event | None:
        """An event set when the partition is handed to us, if we are following it."""
        if partition not in self.core.source_of:
            return None
        return self.takeovers.setdefault(partition, asyncio.Event())

    def in_flight(self) -> int:
        return self.core.in_flight()

    def close(self) -> None:
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
        if self._dropper is not None:
            self._dropper.cancel()
        for up in self.upstreams.values():
            up.close()
        self.upstreams.clear()


def _every_map(name: str) -> bool:
    return True
