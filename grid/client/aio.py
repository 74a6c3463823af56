"""The asyncio client: `grid.AsyncClient` and its maps.

Every method builds protobuf operations, hands them to the client's router
(router.py: it sends each op to the member that owns the key's partition, one
coalescing stream per member) and turns the results into Python values.
`get_many`/`put_many` are one batch per owning member, sent in parallel: one
round trip.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from grid.client import patterns
from grid.client.codec import Codec, resolve
from grid.client.connection import AsyncConnection, ConnectionOptions
from grid.client.keys import Duration, Key, decode_key, encode_key, from_ms, to_ms
from grid.client.listeners import AsyncListener, EntryEvent
from grid.client.nearcache import MISSING, NearCache, NearCachedCalls, NearCacheStore
from grid.client.patterns import check
from grid.client.router import Router, parse_seeds
from grid.client.topics import AsyncTopic
from grid.client.watch import Watcher
from grid.client.wireops import AnyOp, OpWriter, WireOp
from grid.errors import CasFailed, InvalidArgument, Status
from grid.members_view import ClusterMember, counters_from_metadata
from grid.wire.security import PLAIN, Security
from partitioning import PartitionTable
from proto import grid_pb2 as pb
from replication.hlc import Version

MEMBERS_METHOD = "/grid.v1.Grid/Members"

GET, PUT, DELETE, EXPIRE, TTL, CONTAINS, INCR, SIZE, SCAN, CLEAR, TOUCH = (
    pb.GET,
    pb.PUT,
    pb.DELETE,
    pb.EXPIRE,
    pb.TTL,
    pb.CONTAINS,
    pb.INCR,
    pb.SIZE,
    pb.SCAN,
    pb.CLEAR,
    pb.TOUCH,
)


class EntryView(NamedTuple):
    """A value with its version (for compare_and_set) and remaining TTL in seconds."""

    value: Any
    version: Version
    ttl: float | None


LOCK_MAP = "grid.locks"
"""Where locks and their fencing counters live unless told otherwise."""
RATE_LIMIT_MAP = "grid.ratelimits"
"""Where rate limiters keep their counters unless told otherwise."""


def _seconds(d: Duration) -> float:
    ms = to_ms(d)
    if ms <= 0:
        raise InvalidArgument("get_or_load needs a ttl: a loaded value must expire")
    return ms / 1000


def encode_value(codec: Codec, value: Any) -> bytes:
    if value is None:
        raise InvalidArgument("None cannot be stored; delete the key instead")
    return codec.encode(value)


class AsyncMap:
    """A named map on the grid, seen through an AsyncClient."""

    def __init__(
        self,
        conn: Router | AsyncConnection,
        name: str,
        codec: str | Codec = "msgpack",
        raw_keys: bool = False,
        near: tuple[NearCacheStore, Watcher] | None = None,
    ) -> None:
        self.codec = resolve(codec)
        self._near = near[0] if near is not None else None
        self._conn: Any = conn
        if near is not None:
            self._conn = NearCachedCalls(conn, near[0], near[1].ensure_started)
        self.name = name
        self.raw_keys = raw_keys
        self._ops = OpWriter(name)

    def near_cache_stats(self) -> dict[str, int] | None:
        """The near cache's counters (grid/client/nearcache.py), None without one."""
        return self._near.stats() if self._near is not None else None

    def _op(self, code: int, key: Key, **fields: Any) -> WireOp:
        return self._ops.op(code, encode_key(key), **fields)

    def _get_op(self, key: Key) -> WireOp:
        return self._ops.keyed(GET, key.encode() if key.__class__ is str else encode_key(key))

    async def _one(self, op: AnyOp, timeout: float | None, idempotent: bool = True) -> pb.Result:
        return check((await self._conn.call((op,), timeout, idempotent))[0])

    # ---- reads -------------------------------------------------------------------------------
    async def get(self, key: Key, default: Any = None, *, timeout: float | None = None) -> Any:
        near = self._near
        if near is not None:
            value = near.get(key.encode() if key.__class__ is str else encode_key(key))
            if value is not MISSING:
                return value
        return await self.fetch(key, default, timeout)

    async def fetch(self, key: Key, default: Any, timeout: float | None) -> Any:
        """`get` from the members (filling the near cache, if any, on the way back)."""
        (r,) = await self._conn.call((self._get_op(key),), timeout)
        status = r.status
        if status == Status.NOT_FOUND:
            return default
        if status:
            check(r)
        return self.codec.decode(r.value)

    async def get_entry(self, key: Key, *, timeout: float | None = None) -> EntryView | None:
        r = await self._one(self._op(GET, key), timeout)
        if r.status == Status.NOT_FOUND:
            return None
        return EntryView(
            self.codec.decode(r.value),
            Version(r.version_ts, r.version_member),
            from_ms(r.ttl_ms) if r.ttl_ms else None,
        )

    async def get_many(
        self, keys: Iterable[Key], *, timeout: float | None = None
    ) -> dict[Key, Any]:
        """The found keys and their values (missing keys are left out), in one round trip."""
        keys = list(keys)
        out: dict[Key, Any] = {}
        near = self._near
        if near is not None:  # the near cache's hits; the rest from the members
            missed = []
            for k in keys:
                value = near.get(encode_key(k))
                if value is MISSING:
                    missed.append(k)
                else:
                    out[k] = value
            keys = missed
            if not keys:
                return out
        encoded = [k.encode() if k.__class__ is str else encode_key(k) for k in keys]
        results = await self._conn.call(self._ops.keyed_many(GET, encoded), timeout)
        decode = self.codec.decode
        for k, r in zip(keys, results, strict=True):
            status = r.status
            if not status:
                out[k] = decode(r.value)
            elif status != Status.NOT_FOUND:
                check(r)
        return out

    async def contains(self, key: Key, *, timeout: float | None = None) -> bool:
        return bool((await self._one(self._op(CONTAINS, key), timeout)).count)

    async def ttl(self, key: Key, *, timeout: float | None = None) -> float | None:
        """Seconds left before the key expires; math.inf if it never does; None if absent."""
        r = await self._one(self._op(TTL, key), timeout)
        if r.status == Status.NOT_FOUND:
            return None
        return math.inf if r.count < 0 else from_ms(r.count)

    async def size(self, *, timeout: float | None = None) -> int:
        return (await self._one(pb.Op(code=SIZE, map=self.name), timeout)).count

    async def scan_page(
        self, cursor: bytes = b"", count: int = 0, *, timeout: float | None = None
    ) -> tuple[list[Key], bytes]:
        """One page of keys and the cursor for the next (b"" when the scan is complete)."""
        r = await self._one(pb.Op(code=SCAN, map=self.name, cursor=cursor, limit=count), timeout)
        return [decode_key(k, self.raw_keys) for k in r.keys], r.cursor

    async def scan(self, count: int = 0) -> AsyncIterator[Key]:
        """Every key, page by page; a key present for the whole scan is seen exactly once."""
        cursor = b""
        while True:
            keys, cursor = await self.scan_page(cursor, count)
            for k in keys:
                yield k
            if not cursor:
                return

    # ---- writes ------------------------------------------------------------------------------
    def _put_op(
        self,
        key: Key,
        value: Any,
        ttl: Duration,
        max_idle: Duration,
        condition: int = pb.ALWAYS,
        expected: Version | None = None,
    ) -> WireOp:
        ttl_ms, max_idle_ms = to_ms(ttl), to_ms(max_idle)
        if not ttl_ms and not max_idle_ms and not condition and expected is None:
            return self._ops.put(encode_key(key), encode_value(self.codec, value))
        ts, member = expected if expected is not None else (0, 0)
        return self._op(
            PUT,
            key,
            value=encode_value(self.codec, value),
            ttl_ms=ttl_ms,
            max_idle_ms=max_idle_ms,
            condition=condition,
            expected_ts=ts,
            expected_member=member,
        )

    async def put(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> Version:
        """Store a value; ttl and max_idle in seconds (None: never). Returns the new version."""
        r = await self._one(self._put_op(key, value, ttl, max_idle), timeout)
        return Version(r.version_ts, r.version_member)

    async def _conditional(self, op: pb.Op, timeout: float | None) -> bool:
        try:
            await self._one(op, timeout)
        except CasFailed:
            return False
        return True

    async def put_if_absent(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> bool:
        """Store only if the key is absent (Redis SET NX). True if stored."""
        return await self._conditional(
            self._put_op(key, value, ttl, max_idle, pb.IF_ABSENT), timeout
        )

    async def replace(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> bool:
        """Store only if the key exists (Redis SET XX). True if stored."""
        return await self._conditional(
            self._put_op(key, value, ttl, max_idle, pb.IF_PRESENT), timeout
        )

    async def compare_and_set(
        self,
        key: Key,
        expected: Version,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> bool:
        """Store only if the entry still has `expected` (from get_entry). True if stored."""
        return await self._conditional(
            self._put_op(key, value, ttl, max_idle, pb.IF_VERSION, expected), timeout
        )

    async def put_many(
        self,
        items: Mapping[Key, Any] | Iterable[tuple[Key, Any]],
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> None:
        """Store many values in one round trip."""
        pairs = items.items() if isinstance(items, Mapping) else items
        ttl_ms, max_idle_ms = to_ms(ttl), to_ms(max_idle)
        encode = self.codec.encode
        ops: list[WireOp]
        if ttl_ms or max_idle_ms:
            op = self._ops.op
            ops = [
                op(PUT, encode_key(k), encode_value(self.codec, v), ttl_ms, max_idle_ms)
                for k, v in pairs
            ]
        else:  # the bulk load: one call per key to the codec, one loop in the writer
            ops = self._ops.put_many(
                [
                    (
                        k.encode() if k.__class__ is str else encode_key(k),
                        encode(v) if v is not None else encode_value(self.codec, v),
                    )
                    for k, v in pairs
                ]
            )
        for r in await self._conn.call(ops, timeout):
            if r.status:
                check(r)

    async def delete(self, key: Key, *, timeout: float | None = None) -> bool:
        """Remove the key; True if it existed."""
        return bool((await self._one(self._op(DELETE, key), timeout)).count)

    async def delete_many(self, keys: Iterable[Key], *, timeout: float | None = None) -> int:
        encoded = [encode_key(k) for k in keys]
        results = await self._conn.call(self._ops.keyed_many(DELETE, encoded), timeout)
        return sum(check(r).count for r in results)

    async def expire(self, key: Key, ttl: Duration, *, timeout: float | None = None) -> bool:
        """Give the key a new TTL from now (None removes it). True if the key exists."""
        return bool((await self._one(self._op(EXPIRE, key, ttl_ms=to_ms(ttl)), timeout)).count)

    async def touch(self, key: Key, *, timeout: float | None = None) -> bool:
        """Count an access: restarts the max-idle clock (sliding expiry). True if it exists."""
        return bool((await self._one(self._op(TOUCH, key), timeout)).count)

    async def get_or_load(
        self,
        key: Key,
        loader: Callable[[Key], Any],
        *,
        ttl: Duration,
        lease_ttl: float = 10.0,
        beta: float = 1.0,
        timeout: float | None = None,
    ) -> Any:
        """The value of `key`; on a miss `loader(key)` (plain or async) is called by exactly
        one caller in the whole cluster and its value stored with `ttl`, the others waiting
        for it; near expiry one caller refreshes it early (XFetch, `beta`; 0: never) while
        the rest keep the current value. grid/client/patterns.py has the details. A loader
        that returns None caches nothing. `timeout` bounds the whole call, a wait for
        another caller's load included."""
        budget = self._conn.options.timeout if timeout is None else timeout
        pattern = patterns.get_or_load(
            self.name, key, _seconds(ttl), self.codec.decode,
            lambda v: encode_value(self.codec, v), time.monotonic() + budget, lease_ttl, beta,
        )  # fmt: skip

        async def call(ops: list[pb.Op]) -> list[pb.Result]:
            return await self._conn.call(ops, timeout)

        return await patterns.drive_async(pattern, call, loader)

    async def incr(
        self, key: Key, delta: int = 1, *, ttl: Duration = None, timeout: float | None = None
    ) -> int:
        """Add to a counter, creating it at `delta` with `ttl` if absent; returns the new value.

        Not retried once sent: a lost answer could otherwise count twice.
        """
        op = self._op(INCR, key, delta=delta, ttl_ms=to_ms(ttl))
        return (await self._one(op, timeout, idempotent=False)).count

    async def decr(
        self, key: Key, delta: int = 1, *, ttl: Duration = None, timeout: float | None = None
    ) -> int:
        return await self.incr(key, -delta, ttl=ttl, timeout=timeout)

    async def clear(self, *, timeout: float | None = None) -> int:
        """Remove every entry; returns how many."""
        return (await self._one(pb.Op(code=CLEAR, map=self.name), timeout)).count

    # ---- listeners -----------------------------------------------------------------------------
    async def add_listener(
        self,
        callback: Callable[[EntryEvent], Any],
        *,
        kinds: Iterable[str] | None = None,
        include_values: bool = False,
        prefix: Key = b"",
        on_gap: Callable[[int, str], Any] | None = None,
        reconcile_interval: float = 1.0,
    ) -> AsyncListener:
        """Call `callback(event)` (plain or async) for every change of this map: kinds of
        "added", "updated", "removed", "expired", "evicted" (the default: all five) and
        "cleared"; `include_values` puts the new value in added/updated events; `prefix`
        keeps keys starting with it. Returns once every partition is subscribed: a change
        made after it is delivered at least once, in order per key; `on_gap(partition,
        why)` says when changes could not be (docs/patterns.md, "Entry listeners").
        `await listener.close()`, or `async with`, ends it."""
        router = self._conn
        if isinstance(router, NearCachedCalls):
            router = router._inner
        if not isinstance(router, Router) or not router.smart:
            raise InvalidArgument(
                "listeners need a client with smart routing (they "
                "subscribe at each partition's primary)"
            )
        listener = AsyncListener(
            router, self.name, self.codec, self.raw_keys, callback, on_gap, kinds,
            include_values, prefix, reconcile_interval,
        )  # fmt: skip
        return await listener.start()


class AsyncClient:
    """A client of a grid cluster for asyncio code.

    async with grid.AsyncClient("127.0.0.1:5701") as client:
        users = client.map("users")
        await users.put("u1", {"name": "Ada"}, ttl=3600)

    `address` is one member ("host:port") or several seeds (a list, or comma-separated):
    the first seed that answers gives the partition table, which names every member, so
    one seed finds the whole cluster. Operations then go straight to the member that
    owns each key (smart routing; `smart_routing=False` sends everything to the seed,
    which forwards, for networks where the members' own addresses are not reachable).
    A member without a table (or an older one) is used exactly as a single member.
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
        self.codec = resolve(codec)
        options = options or ConnectionOptions(timeout=timeout)
        security = Security(
            cert=tls_cert, key=tls_key, ca=tls_ca, token=token, tls=tls, user=user,
            password=password,
        )  # fmt: skip
        if security != PLAIN:
            options = replace(options, security=security)
        if read_from_backup:
            options = replace(options, read_from_backup=True)
        self._conn = Router(seeds, options, smart=smart_routing)
        self._near: dict[str, tuple[NearCacheStore, Watcher]] = {}
        """Near caches by map name: one per map per client, shared by its map objects."""

    @property
    def router(self) -> Router:
        """What routes this client's calls (the blocking Client reads its table)."""
        return self._conn

    def map(
        self,
        name: str,
        *,
        codec: str | Codec | None = None,
        raw_keys: bool = False,
        near_cache: NearCache | None = None,
    ) -> AsyncMap:
        """The map `name`; `near_cache` keeps its values in this client too, invalidated by
        the members (grid/client/nearcache.py; the first configuration given for a map
        is the one its near cache keeps)."""
        near = self.near_cache(name, near_cache, codec) if near_cache is not None else None
        return AsyncMap(self._conn, name, codec or self.codec, raw_keys, near)

    def topic(self, name: str, *, retention: float = 60.0) -> AsyncTopic:
        """Publish/subscribe on `name` (grid/client/topics.py says what it guarantees)."""
        return AsyncTopic(self, name, retention)

    def near_cache(
        self, name: str, config: NearCache, codec: str | Codec | None = None
    ) -> tuple[NearCacheStore, Watcher]:
        """The near cache of map `name` in this client and its watch, made (and the watch
        started on the running loop) on first use. It needs smart routing: a client that
        sends everything to its seed (`smart_routing=False`) caches nothing."""
        held = self._near.get(name)
        if held is None:
            store = NearCacheStore(config, resolve(codec or self.codec))
            watcher = Watcher(self._conn, store, name,
                              reconcile_interval=config.reconcile_interval)  # fmt: skip
            held = self._near[name] = (store, watcher)
            watcher.start()
        return held

    async def rate_limit(
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
        """Count one call of `who` against `limit` calls per `window` seconds of limiter
        `name`: fixed windows, or sliding (an estimate from two windows). One round trip;
        grid/client/patterns.py says how it counts."""
        pattern = patterns.rate_limit(map, name, who, limit, window, sliding, time.time())

        async def call(ops: list[pb.Op]) -> list[pb.Result]:
            return await self._conn.call(ops, timeout, idempotent=False)

        decision: patterns.Decision = await patterns.drive_async(pattern, call, None)
        return decision

    @contextlib.asynccontextmanager
    async def lock(
        self,
        name: str,
        *,
        ttl: float = 10.0,
        timeout: float | None = None,
        map: str = LOCK_MAP,
    ) -> AsyncIterator[int]:
        """`async with client.lock("name", ttl=10) as token:` a lease lock: held until the
        block ends or `ttl` runs out, whichever is first; waits for it up to `timeout`.
        `token` is a fencing token: it grows with every acquisition of this lock, so a
        resource that refuses tokens lower than the highest it saw is safe from a holder
        whose lease ran out while it was paused. docs/patterns.md says what survives a
        failover (give the lock map sync backups)."""
        budget = self._conn.options.timeout if timeout is None else timeout
        owner = os.urandom(16)
        call = functools.partial(self._conn.call, timeout=timeout, idempotent=False)
        pattern = patterns.acquire(map, name, owner, ttl, time.monotonic() + budget)
        token, held = await patterns.drive_async(pattern, call, None)
        try:
            yield token
        finally:
            await patterns.drive_async(patterns.release(map, name, held), call, None)

    async def stats(self, *, timeout: float | None = None) -> dict[str, Any]:
        """The seed member's statistics (each member counts only what it served)."""
        from grid.client.stats_view import stats_dict

        return stats_dict(await self._conn.stats(timeout))

    async def table(self, *, timeout: float | None = None) -> PartitionTable | None:
        """The partition table the client routes by (fetched first if no call has yet),
        kept current by a watch on a member; None when the seed has no table, so
        everything goes to the seed."""
        await self._conn.discover(timeout)
        return self._conn.table

    async def addresses(self, *, timeout: float | None = None) -> dict[str, str]:
        """Member name -> gRPC address of every member in the partition table ({} without
        a table): the members this client sends operations to."""
        await self._conn.discover(timeout)
        return self._conn.addresses

    async def members(self, *, timeout: float | None = None) -> list[ClusterMember]:
        """The cluster as the seed member sees it (another member of the table if the seed
        is unreachable): itself first, then the others (dead and left members included
        until they are forgotten)."""
        reply, _ = await self._members(timeout)
        return [ClusterMember.from_proto(m) for m in reply.members]

    async def membership_counters(self, *, timeout: float | None = None) -> dict[str, int]:
        """The member's gossip counters: datagrams/streams in and out, and rejected
        messages in total (`rejected`) and by reason (`rejected_bad_mac`, ...)."""
        _, counters = await self._members(timeout)
        return counters

    async def _members(self, timeout: float | None) -> tuple[pb.MembersReply, dict[str, int]]:
        request = pb.MembersRequest().SerializeToString()
        data, trailing = await self._conn.unary(MEMBERS_METHOD, request, timeout)
        return pb.MembersReply.FromString(data), counters_from_metadata(trailing)

    async def close(self) -> None:
        await self._conn.close()  # (closes the listeners' and near caches' watches too)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
