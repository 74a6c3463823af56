"""Entry listeners: a map's changes delivered to a callback, in order per key.

A listener is a `Watcher` (watch.py) whose consumer queues events for the user's
callback. The callback never runs on the client's event loop: the AsyncClient's on
a task of its own (awaited if it is a coroutine function), the blocking Client's
on a thread of its own, so a slow callback delays only its own listener.

Guarantees (docs/patterns.md, "Entry listeners"): every change to the map made
after `add_listener` returned is delivered at least once, in order per key (per
partition, in fact); across a failover or a dropped stream the listener resumes
from its position, so it may see an event again; when changes cannot be recovered
(the member no longer keeps them, or a failover lost changes the listener had seen)
`on_gap(partition, why)` is called before the events that follow. A callback that
raises is logged and the next event is delivered.

The queue between the watcher and the callback is bounded (`MAX_PENDING`): a
callback that falls that far behind loses events, reported as a gap of each
partition concerned.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple

from grid.client.codec import Codec
from grid.client.keys import Key, decode_key
from grid.client.router import Router
from grid.client.watch import Watcher
from grid.errors import GridError
from proto import grid_pb2 as pb
from replication.hlc import Version
from replication.watch import KIND_NAMES, kinds_mask

log = logging.getLogger("grid.client")

MAX_PENDING = 100_000
"""Events waiting for a listener's callback before it loses some (reported as gaps)."""
READY_TIMEOUT = 10.0
"""Seconds add_listener waits for every partition to be subscribed."""
DEFAULT_KINDS = frozenset({"added", "updated", "removed", "expired", "evicted"})


class EntryEvent(NamedTuple):
    """One change of a map. `value` is the new value of added/updated entries when the
    listener asked for values (None otherwise); `version` feeds compare_and_set."""

    kind: str  # added, updated, removed, expired, evicted, cleared
    key: Key | None  # None for "cleared" (every key of the partition's map)
    value: Any
    version: Version
    partition: int
    seq: int


class Gap(NamedTuple):
    partition: int
    why: str


Callback = Callable[[EntryEvent], Any]
GapCallback = Callable[[int, str], Any]


def _log_gap(partition: int, why: str) -> None:
    log.warning("entry listener missed changes of partition %d: %s", partition, why)


class Feed:
    """The consumer a Watcher tells (on the event loop): events become EntryEvents in a
    bounded queue; `wake` tells whoever runs the callback."""

    def __init__(self, codec: Codec, raw_keys: bool, wake: Callable[[], None]) -> None:
        self.codec = codec
        self.raw_keys = raw_keys
        self.wake = wake
        self.items: deque[EntryEvent | Gap] = deque()
        self.overflowed: set[int] = set()

    def events(self, partition: int, events: Sequence[pb.WatchEvent]) -> None:
        if len(self.items) + len(events) > MAX_PENDING:
            self.overflowed.add(partition)
            return
        decode = self.codec.decode
        raw = self.raw_keys
        for e in events:
            kind = KIND_NAMES.get(e.kind, str(e.kind))
            self.items.append(EntryEvent(
                kind,
                decode_key(e.key, raw) if kind != "cleared" else None,
                decode(e.value) if e.value else None,
                Version(e.version_ts, e.version_member),
                partition,
                e.seq,
            ))  # fmt: skip
        self.wake()

    def gap(self, partition: int, why: str) -> None:
        self.items.append(Gap(partition, why))
        self.wake()

    def start(self, partitions: int) -> None:
        pass

    def live(self, partition: int) -> None:
        pass

    def stale(self, partition: int) -> None:
        pass  # it resumes from its position: a loss is reported as a gap

    def take(self) -> list[EntryEvent | Gap]:
        out: list[EntryEvent | Gap] = []
        for p in sorted(self.overflowed):
            out.append(Gap(p, f"the listener fell more than {MAX_PENDING} events behind"))
        self.overflowed.clear()
        while self.items:
            out.append(self.items.popleft())
        return out


def _watcher(
    router: Router,
    feed: Feed,
    map_name: str,
    kinds: Iterable[str] | None,
    include_values: bool,
    prefix: Key,
    reconcile_interval: float,
    on_closed: Callable[[], None],
) -> Watcher:
    return Watcher(
        router, feed, map_name,
        prefix=prefix.encode() if isinstance(prefix, str) else prefix,
        kinds=kinds_mask(DEFAULT_KINDS if kinds is None else kinds),
        values=include_values, reconcile_interval=reconcile_interval, on_closed=on_closed,
    )  # fmt: skip


class AsyncListener:
    """An AsyncMap's listener; `await close()` (or `async with`) ends it."""

    def __init__(
        self,
        router: Router,
        map_name: str,
        codec: Codec,
        raw_keys: bool,
        callback: Callback,
        on_gap: GapCallback | None,
        kinds: Iterable[str] | None,
        include_values: bool,
        prefix: Key,
        reconcile_interval: float,
    ) -> None:
        self._callback = callback
        self._on_gap = on_gap or _log_gap
        self._event = asyncio.Event()
        self.feed = Feed(codec, raw_keys, self._event.set)
        self._task: asyncio.Task[None] | None = None
        self.watcher = _watcher(router, self.feed, map_name, kinds, include_values, prefix,
                                reconcile_interval, self._stop)  # fmt: skip

    async def start(self) -> AsyncListener:
        self.watcher.start()
        self._task = asyncio.get_running_loop().create_task(self._deliver())
        if not await self.watcher.ready(READY_TIMEOUT):
            log.warning("listener of %s: not every partition subscribed yet", self.watcher.map)
        return self

    async def _deliver(self) -> None:
        while True:
            await self._event.wait()
            self._event.clear()
            for item in self.feed.take():
                try:
                    if isinstance(item, Gap):
                        result: Any = self._on_gap(item.partition, item.why)
                    else:
                        result = self._callback(item)
                    if inspect.isawaitable(result):
                        await result
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("entry listener callback failed")

    def _stop(self) -> None:
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    async def close(self) -> None:
        """End the listener (also done when its client closes). Events queued and not yet
        delivered are dropped."""
        await self.watcher.close()
        if self._task is not None and self._task is not asyncio.current_task():
            await asyncio.gather(self._task, return_exceptions=True)

    async def __aenter__(self) -> AsyncListener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Listener:
    """A blocking Client's listener: the callback runs on a thread of its own; `close()`
    (or `with`) ends it."""

    def __init__(
        self,
        router: Router,
        run: Callable[[Awaitable[Any]], Any],
        map_name: str,
        codec: Codec,
        raw_keys: bool,
        callback: Callback,
        on_gap: GapCallback | None,
        kinds: Iterable[str] | None,
        include_values: bool,
        prefix: Key,
        reconcile_interval: float,
    ) -> None:
        self._callback = callback
        self._on_gap = on_gap or _log_gap
        self._run = run
        self._cond = threading.Condition()
        self._closed = False
        self.feed = Feed(codec, raw_keys, self._notify)
        self.watcher = _watcher(router, self.feed, map_name, kinds, include_values, prefix,
                                reconcile_interval, self._stop)  # fmt: skip

        async def start() -> None:
            self.watcher.start()
            if not await self.watcher.ready(READY_TIMEOUT):
                log.warning("listener of %s: not every partition subscribed yet", map_name)

        self._thread = threading.Thread(
            target=self._deliver, name=f"grid-listener-{map_name}", daemon=True
        )
        self._thread.start()
        run(start())

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify()

    def _deliver(self) -> None:
        while True:
            with self._cond:
                while not self.feed.items and not self.feed.overflowed and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                items = self.feed.take()
            for item in items:
                try:
                    if isinstance(item, Gap):
                        self._on_gap(item.partition, item.why)
                    else:
                        self._callback(item)
                except Exception:
                    log.exception("entry listener callback failed")

    def _stop(self) -> None:
        """The watch ended (this close, or its client's): the thread stops."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def close(self) -> None:
        """End the listener (also done when its client closes)."""
        if not self._closed:
            with contextlib.suppress(GridError):  # the client closed meanwhile
                self._run(self.watcher.close())
            self._stop()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
