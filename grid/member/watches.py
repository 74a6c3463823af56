"""A client connection's watches, carried out: WATCH frames in, EVENTS frames out.

replication/watch.py decides everything (positions, replay, what a slow watch loses);
this module runs it on one data-plane connection: it parses each WatchRequest and
steps the core under the store lock, and sends what the core's queues hold as
EVENTS frames from the event loop, at once (no linger: a near cache's staleness is
this delay). Changes reach the queues through the store's sink, possibly from an
embedded caller's thread, which wakes the loop.

Flow control: chunks are drained only while the transport accepts writes; while a
client does not read, its events stay in the core's bounded queues, and a queue
past its bound drops that partition's subscription (the client is told and
subscribes again), so the member's memory never grows with a slow client.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from grid.store import Store
from grid.wire import frames
from proto import grid_pb2 as pb
from replication.watch import Watch, Watchers

MAX_WATCHES = 1024
"""Watches one connection may hold (a client has one per listener or near cache)."""


def encode(chunks: list[Any]) -> bytes:
    """The core's chunks as a WatchEvents message."""
    msg = pb.WatchEvents()
    add = msg.chunks.add
    for c in chunks:
        chunk = add(partition=c.partition, kind=int(c.kind), term=c.term, prev=c.prev,
                    seq=c.seq, forked=c.forked)  # fmt: skip
        if c.events:
            ev = chunk.events.add
            for e in c.events:
                ev(kind=e.kind, key=e.key, value=e.value or b"", seq=e.seq, version_ts=e.ts,
                   version_member=e.member, expire_at_ms=e.expire_at)  # fmt: skip
    return msg.SerializeToString()


class ClientWatches:
    """The watches of one data-plane connection."""

    def __init__(
        self,
        store: Store,
        core: Watchers,
        write: Callable[[int, int, bytes], None],
        partitions: int,
    ) -> None:
        self.store = store
        self.core = core
        self.write = write  # (kind, id, body): the connection's frame writer
        self.partitions = partitions
        self.watches: dict[int, Watch] = {}
        self.paused = False
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._scheduled = False

    def request(self, watch_id: int, body: bytes) -> str:
        """One WATCH frame; returns why it is refused ("" if not). Raises DecodeError."""
        req = pb.WatchRequest.FromString(body)
        bad = [s.partition for s in req.subscribe if s.partition >= self.partitions]
        bad += [p for p in req.unsubscribe if p >= self.partitions]
        if bad:
            return f"WATCH names partition {bad[0]}; there are {self.partitions}"
        with self.store.lock:
            w = self.watches.get(watch_id)
            if req.close:
                if w is not None:
                    self.core.close(w)
                    del self.watches[watch_id]
                return ""
            if w is None:
                if len(self.watches) >= MAX_WATCHES:
                    return f"more than {MAX_WATCHES} watches on one connection"
                w = self.watches[watch_id] = self.core.open(
                    watch_id, req.map, req.prefix, req.kinds, req.values, self
                )
            self.core.unsubscribe(w, req.unsubscribe)
            for s in req.subscribe:
                self.core.subscribe(w, s.partition, s.term, s.seq)
            if req.probe:
                self.core.probe(w)
        return ""

    def wake(self) -> None:
        """The core's on_ready (under the store lock, any thread): send soon."""
        if self._scheduled or self.closed:
            return
        self._scheduled = True
        if threading.get_ident() == self._loop_thread:
            self._loop.call_soon(self.flush)
        else:
            self._loop.call_soon_threadsafe(self.flush)

    def flush(self) -> None:
        """Send what the watches hold while the transport takes it."""
        self._scheduled = False
        if self.closed or self.paused:
            return
        lock = self.store.lock
        for w in list(self.watches.values()):
            while w.ready and not self.paused and not self.closed:
                with lock:
                    chunks = self.core.drain(w)
                if chunks:
                    self.write(frames.EVENTS, w.id, encode(chunks))

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.wake()

    def close(self) -> None:
        self.closed = True
        with self.store.lock:
            for w in self.watches.values():
                self.core.close(w)
        self.watches.clear()
