"""A client's change stream of one map: subscriptions on every partition's primary.

Entry listeners (listeners.py) and near caches (nearcache.py) are both a `Watcher`:
it subscribes, per partition, to the primary's change stream (replication/watch.py
on the member; docs/api.md, "Watches", has the frames), keeps each partition's
position (term, seq), and tells its consumer four things: events in order, a
partition live (subscribed and current), a partition stale (its stream broke, it
fell behind, its primary changed: the consumer drops what it cached), and a gap
(changes were missed, or seen from a lineage a failover lost).

`Cursors` is the decision part, with no IO (tests/client/test_watch_cursors.py):
what a chunk means for a partition, and what to subscribe where. `Watcher` carries
it out on the router's connections: a task subscribes idle partitions at their
owners (from their last position, so the member replays what it still keeps), and
every `reconcile_interval` asks each member for its partitions' positions (a probe)
and compares them; a member that does not answer a probe within the interval is
taken as lost. A broken connection makes its partitions stale at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple, Protocol

from grid.client.router import Router
from grid.errors import GridError
from proto import grid_pb2 as pb

log = logging.getLogger("grid.client")

EVENTS, SYNCED, RESET, DROPPED, NOT_PRIMARY = (
    pb.WATCH_EVENTS, pb.WATCH_SYNCED, pb.WATCH_RESET, pb.WATCH_DROPPED, pb.WATCH_NOT_PRIMARY,
)  # fmt: skip
PENDING_TIMEOUT = 3.0
"""Seconds a subscription may wait for its first answer before it is sent again."""
SEND_TIMEOUT = 2.0
"""Seconds a WatchRequest may wait for its member's connection."""
MIN_ROUND_S = 0.02
"""Subscription rounds are at least this far apart."""
RETRY_S = 0.05
"""How soon idle partitions are subscribed again after a failure (doubling to 1 s)."""

_ids = itertools.count(1)


class Phase(Enum):
    IDLE = "idle"  # to subscribe (from its position, if any)
    PENDING = "pending"  # subscribed, waiting for SYNCED or RESET
    LIVE = "live"  # current: events apply


@dataclass
class Position:
    term: int = 0
    seq: int = 0
    phase: Phase = Phase.IDLE
    address: str = ""  # where it is subscribed
    since: float = 0.0  # when it was subscribed (PENDING)


class Outcome(NamedTuple):
    """What one chunk means: events to deliver, and how the partition's state changed."""

    events: Sequence[pb.WatchEvent] = ()
    live: bool = False  # the partition became live
    stale: bool = False  # the partition stopped being live
    gap: str = ""  # changes were missed (why)


NOTHING = Outcome()


class Cursors:
    """Each partition's position and phase; every method is a decision, no IO."""

    def __init__(self, partitions: int) -> None:
        self.pos = [Position() for _ in range(partitions)]

    def idle(self) -> list[int]:
        return [p for p, pos in enumerate(self.pos) if pos.phase is Phase.IDLE]

    def subscribe(self, owners: Callable[[int], str], now: float) -> dict[str, list[int]]:
        """Idle partitions (and ones pending too long) to subscribe, by owner address."""
        out: dict[str, list[int]] = {}
        for p, pos in enumerate(self.pos):
            if pos.phase is Phase.PENDING and now - pos.since > PENDING_TIMEOUT:
                pos.phase = Phase.IDLE
            if pos.phase is not Phase.IDLE:
                continue
            address = owners(p)
            if not address:
                continue
            pos.phase, pos.address, pos.since = Phase.PENDING, address, now
            out.setdefault(address, []).append(p)
        return out

    def failed(self, partitions: Sequence[int]) -> None:
        """A subscribe could not be sent: idle again."""
        for p in partitions:
            self.pos[p].phase = Phase.IDLE

    def lost(self, address: str) -> list[int]:
        """The connection to `address` broke: its partitions go idle (they resume from
        their positions elsewhere); returns the ones that were live (now stale)."""
        stale = []
        for p, pos in enumerate(self.pos):
            if pos.address == address and pos.phase is not Phase.IDLE:
                if pos.phase is Phase.LIVE:
                    stale.append(p)
                pos.phase = Phase.IDLE
        return stale

    def at(self, address: str) -> list[int]:
        return [p for p, pos in enumerate(self.pos) if pos.address == address and
                pos.phase is not Phase.IDLE]  # fmt: skip

    def chunk(self, address: str, c: pb.WatchChunk) -> Outcome:
        p = c.partition
        if p >= len(self.pos):
            return NOTHING
        pos = self.pos[p]
        if pos.address != address:
            return NOTHING  # from a member this partition left
        kind = c.kind
        was_live = pos.phase is Phase.LIVE
        if kind == EVENTS:
            if not was_live:
                return NOTHING  # before the answer to a new subscription: superseded
            if c.term == pos.term and c.prev == pos.seq:
                pos.seq = c.seq
                return Outcome(c.events) if c.events else NOTHING
            if c.term == pos.term and c.seq <= pos.seq:
                return NOTHING  # a duplicate
            pos.phase = Phase.IDLE  # a gap: subscribe again from the position
            return Outcome(stale=True)
        if kind in (SYNCED, RESET):
            if pos.phase is not Phase.PENDING:
                return NOTHING
            had = pos.term != 0
            pos.term, pos.seq, pos.phase = c.term, c.seq, Phase.LIVE
            if kind == RESET and had:
                return Outcome(live=True, gap="the member no longer keeps the changes missed")
            if c.forked:
                return Outcome(live=True, gap="changes seen before a failover were lost by it")
            return Outcome(live=True)
        if kind in (DROPPED, NOT_PRIMARY):
            pos.phase = Phase.IDLE
            return Outcome(stale=was_live)
        return NOTHING


class Consumer(Protocol):
    """What a Watcher tells (called on the event loop, in order per partition)."""

    def start(self, partitions: int) -> None: ...

    def events(self, partition: int, events: Sequence[pb.WatchEvent]) -> None: ...

    def live(self, partition: int) -> None: ...

    def stale(self, partition: int) -> None: ...

    def gap(self, partition: int, why: str) -> None: ...


class Watcher:
    """One watch of a map over the whole cluster (see the module's docstring)."""

    def __init__(
        self,
        router: Router,
        consumer: Consumer,
        map_name: str,
        *,
        prefix: bytes = b"",
        kinds: int = 0,
        values: bool = False,
        reconcile_interval: float = 1.0,
        on_closed: Callable[[], None] = lambda: None,
    ) -> None:
        self.router = router
        self.consumer = consumer
        self.on_closed = on_closed  # told at the end of close (its consumer stops too)
        self.watch_id = next(_ids)
        self.map = map_name
        self.prefix = prefix
        self.kinds = kinds
        self.values = values
        self.reconcile_interval = reconcile_interval
        self.cursors: Cursors | None = None
        self.closed = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._probed: dict[str, float] = {}  # address -> when a probe went unanswered since
        self.gaps = 0
        self.drops = 0  # partitions that became stale

    # ---- WatchHandler (the connection calls these) --------------------------------------------
    def events(self, address: str, body: bytes) -> None:
        cursors = self.cursors
        if cursors is None or self.closed:
            return
        try:
            msg = pb.WatchEvents.FromString(body)
        except Exception:  # a damaged frame: treat the member as lost
            self.lost(address, "malformed WatchEvents")
            return
        self._probed.pop(address, None)
        consumer = self.consumer
        for c in msg.chunks:
            out = cursors.chunk(address, c)
            if out is NOTHING:
                continue
            if out.stale:
                self.drops += 1
                consumer.stale(c.partition)
                self._wake.set()
            if out.gap:
                self.gaps += 1
                consumer.gap(c.partition, out.gap)
            if out.live:
                consumer.live(c.partition)
            if out.events:
                consumer.events(c.partition, out.events)

    def lost(self, address: str, why: str) -> None:
        if self.cursors is None or self.closed:
            return
        self._probed.pop(address, None)
        for p in self.cursors.lost(address):
            self.drops += 1
            self.consumer.stale(p)
        self._wake.set()

    # ---- running ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start on the running loop; without one (a map made outside async code), the
        first call made through the near cache starts it (`ensure_started`)."""
        try:
            self._task = asyncio.get_running_loop().create_task(self._run())
        except RuntimeError:
            self._task = None
            return
        self.router.watchers[self.watch_id] = self  # closed with the client

    def ensure_started(self) -> None:
        if self._task is None and not self.closed:
            self.start()  # (nothing without a running loop: the next call tries again)

    async def ready(self, timeout: float) -> bool:
        """Wait until every partition is live (True) or the timeout passes (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            c = self.cursors
            if c is not None and all(pos.phase is Phase.LIVE for pos in c.pos):
                return True
            await asyncio.sleep(0.01)
        return False

    async def _run(self) -> None:
        router = self.router
        delay = RETRY_S
        next_probe = time.monotonic() + self.reconcile_interval
        while not self.closed:
            try:
                await router.discover()
                table = router.table
                count = table.partition_count if table is not None else 0
                if self.cursors is None and count:
                    self.consumer.start(count)
                    self.cursors = Cursors(count)
                if self.cursors is not None:
                    await self._subscribe()
                    now = time.monotonic()
                    if now >= next_probe:
                        next_probe = now + self.reconcile_interval
                        await self._probe(now)
                delay = RETRY_S
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a member down, no table yet: try again shortly
                log.debug("watch of %s: %r", self.map, e)
                delay = min(1.0, delay * 2)
            cursors = self.cursors
            wait = self.reconcile_interval if cursors and not cursors.idle() else delay
            wait = min(wait, max(0.0, next_probe - time.monotonic()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            # rounds at least this far apart: a partition refused by a member the table
            # still names (a move in progress) is asked again once the table has moved
            await asyncio.sleep(MIN_ROUND_S)

    async def _subscribe(self) -> None:
        cursors = self.cursors
        route = self.router.route
        if cursors is None or route is None:
            if route is None and cursors is not None:
                self.router.refresh()
            return
        if any(pos.phase is Phase.IDLE for pos in cursors.pos):
            self.router.refresh()  # a primary may have changed: route by the newest table
            await asyncio.sleep(0)
            route = self.router.route or route
        owners = route.owners
        groups = cursors.subscribe(lambda p: owners[p], time.monotonic())
        pos = cursors.pos
        sends = []
        for address, parts in groups.items():
            subscribe = [pb.WatchFrom(partition=p, term=pos[p].term, seq=pos[p].seq)
                         for p in parts]  # fmt: skip
            sends.append(self._send(address, self._request(subscribe=subscribe)))
        failed: BaseException | None = None
        outcomes = await asyncio.gather(*sends, return_exceptions=True)
        for parts, outcome in zip(groups.values(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                cursors.failed(parts)  # idle again: the next round (after a backoff) retries
                failed = outcome
        if failed is not None:
            raise failed

    async def _send(self, address: str, req: pb.WatchRequest) -> None:
        """One WatchRequest to a member, waiting at most SEND_TIMEOUT for its connection
        (a member that stopped without closing it must not hold up the others)."""
        timeout = min(self.router.options.timeout, SEND_TIMEOUT)
        await self.router.connection(address).send_watch(self, req.SerializeToString(), timeout)

    def _request(self, **fields: Any) -> pb.WatchRequest:
        """A request carrying the filter (a member that lost the watch opens it anew)."""
        return pb.WatchRequest(map=self.map, prefix=self.prefix, kinds=self.kinds,
                               values=self.values, **fields)  # fmt: skip

    async def _probe(self, now: float) -> None:
        cursors = self.cursors
        assert cursors is not None
        addresses = {pos.address for pos in cursors.pos if pos.phase is Phase.LIVE}
        probes = []
        for address in addresses:
            unanswered = self._probed.get(address)
            if unanswered is not None and now - unanswered > self.reconcile_interval:
                self.lost(address, "no answer to a reconciliation probe")
                continue
            self._probed.setdefault(address, now)
            probes.append(self._send(address, self._request(probe=True)))
        await asyncio.gather(*probes, return_exceptions=True)  # (a failed send: lost soon)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.router.watchers.pop(self.watch_id, None)
        try:
            await self._close()
        finally:
            self.on_closed()

    async def _close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        cursors = self.cursors
        if cursors is None:
            return
        for address in {pos.address for pos in cursors.pos if pos.address}:
            conn = self.router.connection(address)
            conn.forget_watch(self.watch_id)
            if not conn.closed:
                with contextlib.suppress(GridError):
                    req = pb.WatchRequest(close=True).SerializeToString()
                    await conn.send_watch(self, req, 1.0)
                conn.forget_watch(self.watch_id)
