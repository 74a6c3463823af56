"""The blocking client: `grid.Client`, with its own sockets, over AsyncClient's logic.

A map call runs in the caller's thread on a pooled blocking socket to the key's
owner (blocking.py): no thread hop on the data path. The async router on a private
loop thread keeps the partition table current (its watch) and takes what the fast
path hands it: retries after a lost member, stale tables, splitting, reads from
backups. The map methods are AsyncMap's, run inline (blocking.run_inline), so the
two clients cannot drift apart in what a call means.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from grid.client import patterns
from grid.client.aio import (
    LOCK_MAP,
    RATE_LIMIT_MAP,
    AsyncClient,
    AsyncMap,
    EntryView,
    _seconds,
    encode_value,
)
from grid.client.blocking import BlockingRouter, run_inline
from grid.client.codec import Codec
from grid.client.connection import ConnectionOptions
from grid.client.keys import Duration, Key, encode_key
from grid.client.listeners import EntryEvent, Listener
from grid.client.nearcache import MISSING, NearCache, NearCacheStore
from grid.client.router import parse_seeds
from grid.client.topics import Topic
from grid.client.watch import Watcher
from grid.errors import InvalidArgument, Unavailable
from grid.members_view import ClusterMember
from grid.wire.security import PLAIN, Security
from partitioning import PartitionTable
from replication.hlc import Version

T = TypeVar("T")


def _quiet_grpc_teardown(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop thread's exception handler: everything goes to asyncio's default handler
    but one known gRPC teardown race. grpc.aio polls its completion queue from the first
    loop that used it (often this one) and hands each event to its call's own loop; when
    a script's `asyncio.run` has closed that loop with an AsyncClient left open, the
    hand-off raises "Event loop is closed" here and asyncio would print a traceback at the
    script's exit, about nothing the script did wrong (issue 12: exiting without closing
    a client is silent)."""
    error = context.get("exception")
    handle = context.get("handle")
    if (
        isinstance(error, RuntimeError)
        and str(error) == "Event loop is closed"
        and "PollerCompletionQueue" in repr(handle)
    ):
        return
    loop.default_exception_handler(context)


class _LoopThread:
    """An event loop running in a daemon thread, and a way to run coroutines on it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(_quiet_grpc_teardown)
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.loop.is_closed() or not self._thread.is_alive():
            coro.close()
            raise Unavailable("the client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        """Cancel and await what is left on the loop (grpc's own call tasks), then stop it."""

        async def drain() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(drain(), self.loop).result(timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class Map:
    """A named map on the grid, seen through a (blocking) Client. Same API as AsyncMap."""

    def __init__(self, amap: AsyncMap, run: Any, client: Client | None = None) -> None:
        self._m = amap
        self._run = run
        self._client = client
        self.name = amap.name

    def get(self, key: Key, default: Any = None, *, timeout: float | None = None) -> Any:
        near = self._m._near
        if near is not None:  # a hit answers here: no coroutine, no socket
            value = near.get(key.encode() if key.__class__ is str else encode_key(key))
            if value is not MISSING:
                return value
            return self._run(self._m.fetch(key, default, timeout))
        return self._run(self._m.get(key, default, timeout=timeout))

    def near_cache_stats(self) -> dict[str, int] | None:
        """The near cache's counters (grid/client/nearcache.py), None without one."""
        return self._m.near_cache_stats()

    def get_entry(self, key: Key, *, timeout: float | None = None) -> EntryView | None:
        return self._run(self._m.get_entry(key, timeout=timeout))

    def get_many(self, keys: Iterable[Key], *, timeout: float | None = None) -> dict[Key, Any]:
        return self._run(self._m.get_many(keys, timeout=timeout))

    def contains(self, key: Key, *, timeout: float | None = None) -> bool:
        return self._run(self._m.contains(key, timeout=timeout))

    def ttl(self, key: Key, *, timeout: float | None = None) -> float | None:
        return self._run(self._m.ttl(key, timeout=timeout))

    def size(self, *, timeout: float | None = None) -> int:
        return self._run(self._m.size(timeout=timeout))

    def scan_page(
        self, cursor: bytes = b"", count: int = 0, *, timeout: float | None = None
    ) -> tuple[list[Key], bytes]:
        return self._run(self._m.scan_page(cursor, count, timeout=timeout))

    def scan(self, count: int = 0) -> Iterator[Key]:
        cursor = b""
        while True:
            keys, cursor = self.scan_page(cursor, count)
            yield from keys
            if not cursor:
                return

    def put(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> Version:
        return self._run(self._m.put(key, value, ttl=ttl, max_idle=max_idle, timeout=timeout))

    def put_if_absent(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> bool:
        return self._run(
            self._m.put_if_absent(key, value, ttl=ttl, max_idle=max_idle, timeout=timeout)
        )

    def replace(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> bool:
        return self._run(self._m.replace(key, value, ttl=ttl, max_idle=max_idle, timeout=timeout))

    def compare_and_set(
        self,
        key: Key,
        expected: Version,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> bool:
        return self._run(
            self._m.compare_and_set(
                key, expected, value, ttl=ttl, max_idle=max_idle, timeout=timeout
            )
        )

    def put_many(
        self,
        items: Mapping[Key, Any] | Iterable[tuple[Key, Any]],
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> None:
        return self._run(self._m.put_many(items, ttl=ttl, max_idle=max_idle, timeout=timeout))

    def delete(self, key: Key, *, timeout: float | None = None) -> bool:
        return self._run(self._m.delete(key, timeout=timeout))

    def delete_many(self, keys: Iterable[Key], *, timeout: float | None = None) -> int:
        return self._run(self._m.delete_many(keys, timeout=timeout))

    def expire(self, key: Key, ttl: Duration, *, timeout: float | None = None) -> bool:
        return self._run(self._m.expire(key, ttl, timeout=timeout))

    def touch(self, key: Key, *, timeout: float | None = None) -> bool:
        return self._run(self._m.touch(key, timeout=timeout))

    def get_or_load(
        self,
        key: Key,
        loader: Callable[[Key], Any],
        *,
        ttl: Duration,
        lease_ttl: float = 10.0,
        beta: float = 1.0,
        timeout: float | None = None,
    ) -> Any:
        """See AsyncMap.get_or_load; `loader` is a plain function here."""
        m = self._m
        budget = m._conn.options.timeout if timeout is None else timeout
        pattern = patterns.get_or_load(
            m.name, key, _seconds(ttl), m.codec.decode,
            lambda v: encode_value(m.codec, v), time.monotonic() + budget, lease_ttl, beta,
        )  # fmt: skip
        return patterns.drive_sync(
            pattern, lambda ops: self._run(m._conn.call(ops, timeout)), loader
        )

    def incr(
        self, key: Key, delta: int = 1, *, ttl: Duration = None, timeout: float | None = None
    ) -> int:
        return self._run(self._m.incr(key, delta, ttl=ttl, timeout=timeout))

    def decr(
        self, key: Key, delta: int = 1, *, ttl: Duration = None, timeout: float | None = None
    ) -> int:
        return self._run(self._m.decr(key, delta, ttl=ttl, timeout=timeout))

    def clear(self, *, timeout: float | None = None) -> int:
        return self._run(self._m.clear(timeout=timeout))

    def add_listener(
        self,
        callback: Callable[[EntryEvent], Any],
        *,
        kinds: Iterable[str] | None = None,
        include_values: bool = False,
        prefix: Key = b"",
        on_gap: Callable[[int, str], Any] | None = None,
        reconcile_interval: float = 1.0,
    ) -> Listener:
        """See AsyncMap.add_listener; `callback` runs on a thread of the listener's own,
        one event at a time. `listener.close()`, or `with`, ends it."""
        client = self._client
        if client is None:
            raise Unavailable("this map has no client to listen through")
        if not client._aclient.router.smart:
            raise InvalidArgument(
                "listeners need a client with smart routing (they "
                "subscribe at each partition's primary)"
            )
        m = self._m
        return Listener(client._aclient.router, client._thread.run, m.name, m.codec,
                        m.raw_keys, callback, on_gap, kinds, include_values, prefix,
                        reconcile_interval)  # fmt: skip


class Client:
    """A client of a grid cluster for blocking code; safe to share between threads.

    with grid.Client("127.0.0.1:5701") as client:
        users = client.map("users")
        users.put("u1", {"name": "Ada"}, ttl=3600)

    `address` is one member or several seeds; operations go straight to the owner of
    each key (see AsyncClient, which this runs on a private event loop thread).
    """

    def __init__(
        self,
        address: str | Sequence[str] = "127.0.0.1:5701",
        *,
        timeout: float = 5.0,
        codec: str | Codec = "msgpack",
        options: ConnectionOptions | None = None,
        smart_routing: bool = True,
        read_from_backup: bool = False,
        tls: bool = False,
        tls_ca: str = "",
        tls_cert: str = "",
        tls_key: str = "",
        token: str = "",
        user: str = "",
        password: str = "",
    ) -> None:
        """tls_ca: trust the members' certificates signed by these CAs (TLS on); tls=True:
        TLS trusting the system's store; tls_cert/tls_key: this client's certificate, for
        members that require one (mutual TLS); token: the cluster's auth_token; user and
        password: a login of the members' `users`, instead of the token."""
        seeds = parse_seeds(address)
        self.address = seeds[0]
        """The seed member: `stats()` are its statistics."""
        self._thread = _LoopThread(f"grid-client-{self.address}")
        opts = options or ConnectionOptions(timeout=timeout)
        security = Security(
            cert=tls_cert, key=tls_key, ca=tls_ca, token=token, tls=tls, user=user,
            password=password,
        )  # fmt: skip
        if security != PLAIN:
            opts = replace(opts, security=security)

        async def make() -> AsyncClient:
            return AsyncClient(
                seeds,
                codec=codec,
                options=opts,
                smart_routing=smart_routing,
                read_from_backup=read_from_backup,
            )

        self._aclient = self._thread.run(make())
        self._blocking = BlockingRouter(self._aclient.router, self._thread.loop, self._thread.run)

    def map(
        self,
        name: str,
        *,
        codec: str | Codec | None = None,
        raw_keys: bool = False,
        near_cache: NearCache | None = None,
    ) -> Map:
        """See AsyncClient.map."""
        near = None
        if near_cache is not None:

            async def make() -> tuple[NearCacheStore, Watcher]:
                return self._aclient.near_cache(name, near_cache, codec)

            near = self._thread.run(make())
        amap = AsyncMap(self._blocking, name, codec or self._aclient.codec, raw_keys, near)
        return Map(amap, run_inline, self)

    def topic(self, name: str, *, retention: float = 60.0) -> Topic:
        """Publish/subscribe on `name` (grid/client/topics.py says what it guarantees)."""
        return Topic(self, name, retention)

    def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The seed member's statistics (each member counts only what it served)."""
        return self._thread.run(self._aclient.stats(timeout=timeout))

    @contextlib.contextmanager
    def lock(
        self,
        name: str,
        *,
        ttl: float = 10.0,
        timeout: float | None = None,
        map: str = LOCK_MAP,
    ) -> Iterator[int]:
        """`with client.lock("name", ttl=10) as token:` see AsyncClient.lock."""
        budget = self._aclient.router.options.timeout if timeout is None else timeout

        def call(ops: list[Any]) -> Any:
            return run_inline(self._blocking.call(ops, timeout, False))

        pattern = patterns.acquire(map, name, os.urandom(16), ttl, time.monotonic() + budget)
        token, held = patterns.drive_sync(pattern, call, None)
        try:
            yield token
        finally:
            patterns.drive_sync(patterns.release(map, name, held), call, None)

    def rate_limit(
        self,
        name: str,
        who: str,
        *,
        limit: int,
        window: float,
        sliding: bool = False,
        map: str = RATE_LIMIT_MAP,
        timeout: float | None = None,
    ) -> patterns.Decision:
        """See AsyncClient.rate_limit."""
        pattern = patterns.rate_limit(map, name, who, limit, window, sliding, time.time())
        decision: patterns.Decision = patterns.drive_sync(
            pattern,
            lambda ops: run_inline(self._blocking.call(ops, timeout, False)),
            None,
        )
        return decision

    def table(self, *, timeout: float | None = None) -> PartitionTable | None:
        """The partition table the client routes by (see AsyncClient.table)."""
        return self._thread.run(self._aclient.table(timeout=timeout))

    def addresses(self, *, timeout: float | None = None) -> dict[str, str]:
        """Member name -> gRPC address of every member in the table (see AsyncClient)."""
        return self._thread.run(self._aclient.addresses(timeout=timeout))

    def members(self, *, timeout: float | None = None) -> list[ClusterMember]:
        """The cluster as the seed member sees it (see AsyncClient.members)."""
        return self._thread.run(self._aclient.members(timeout=timeout))

    def membership_counters(self, *, timeout: float | None = None) -> dict[str, int]:
        """The member's gossip counters (see AsyncClient.membership_counters)."""
        return self._thread.run(self._aclient.membership_counters(timeout=timeout))

    def close(self) -> None:
        if self._thread.loop.is_closed():
            return
        self._blocking.close()
        self._thread.run(self._aclient.close())
        self._thread.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
