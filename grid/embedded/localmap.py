"""Maps of an embedded node: the client's API, served straight from the local store.

No protobuf, no network, no thread hop: a `get` takes the store lock, looks
the key up and decodes the value in the caller's thread. This is what makes
an embedded member worth having, and why this file exists next to the remote
client instead of routing local calls through the gRPC adapter (which would
cost an order of magnitude more per call; see docs/benchmarks.md).

Semantics are the store's, so they match the remote client's exactly; the
test suite runs one scenario suite against all four map flavours.

In a cluster, a key whose partition another member serves raises NotOwner in
the store before anything is touched; the map then sends that call through
the node's own smart client (`remote`), which routes it to the owner like any
client. Map-wide calls (size, scan, clear) go through it whenever the cluster
has other members. So the local path costs nothing extra and the remote one
is exactly the client's.

A map with sync backups (`sync_backups`, `map_sync_backups`) is a SyncLocalMap
(SyncAsyncLocalMap): its writes return once the backups acknowledged them, as
a remote client's do, or raise Unavailable past `sync_backup_timeout_s`. The
node picks the class once per map, so maps without sync backups pay nothing.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from grid.client.aio import EntryView, encode_value
from grid.client.codec import Codec, resolve
from grid.client.keys import Duration, Key, decode_key, encode_key, from_ms, to_ms
from grid.errors import CasFailed, NotOwner
from grid.store import ALWAYS, IF_ABSENT, IF_PRESENT, IF_VERSION, Store
from grid.store.entry import HEAD, HEAD_SIZE, SLOT_AT, VHEAD_SIZE, value_of
from replication.hlc import Version


class LocalMap:
    """Blocking map API over the local store (embedded `grid.Node` in sync mode)."""

    def __init__(
        self,
        store: Store,
        name: str,
        codec: str | Codec = "msgpack",
        raw_keys: bool = False,
        remote: Callable[[], Any] | None = None,
        clustered: Callable[[], bool] = lambda: False,
        from_backup: bool = False,
    ) -> None:
        self._remote = remote  # the same map through the node's smart client (sync mode)
        # read_from_backup: reads of partitions this member backs up use its copy
        self._from_backup = from_backup
        self.clustered = clustered  # whether other members hold partitions
        self._store = store
        self._lock = store.guard
        self._clock = store.clock
        with store.lock:
            self._rmap = store.map(name)
        self.name = name
        self.codec = resolve(codec)
        self._decode = self.codec.decode
        self.raw_keys = raw_keys

    # ---- reads -------------------------------------------------------------------------------
    def remote(self) -> Any:
        if self._remote is None:
            raise NotOwner("another member serves this key's partition")
        return self._remote()

    def get(self, key: Key, default: Any = None, *, timeout: float | None = None) -> Any:
        k = key.encode() if key.__class__ is str else encode_key(key)
        try:
            with self._lock:
                blob = self._store.read(self._rmap, k, self._clock(), self._from_backup)
                if blob is None:
                    return default
                # value_of(blob), inlined: the hottest call of an embedded node
                value = blob[VHEAD_SIZE:] if blob[SLOT_AT] & 1 else blob[HEAD_SIZE:]
        except NotOwner:
            return self.remote().get(key, default, timeout=timeout)
        return self._decode(value)

    def get_entry(self, key: Key, *, timeout: float | None = None) -> EntryView | None:
        try:
            return self._get_entry(key)
        except NotOwner:
            return self.remote().get_entry(key, timeout=timeout)

    def _get_entry(self, key: Key) -> EntryView | None:
        k = encode_key(key)
        with self._lock:
            now = self._clock()
            blob = self._store.read(self._rmap, k, now, self._from_backup)
            if blob is None:
                return None
            ts, member, _ = HEAD.unpack_from(blob)
            value, deadline = value_of(blob), self._store.deadline(blob)
        version = Version(ts, member)
        return EntryView(
            self._decode(value), version, from_ms(max(1, deadline - now)) if deadline else None
        )

    def get_many(self, keys: Iterable[Key], *, timeout: float | None = None) -> dict[Key, Any]:
        found, elsewhere = self.get_many_local(keys)
        if elsewhere:
            found.update(self.remote().get_many(elsewhere, timeout=timeout))
        return found

    def get_many_local(self, keys: Iterable[Key]) -> tuple[dict[Key, Any], list[Key]]:
        """The values of the keys this member serves, and the keys it does not."""
        keys = list(keys)
        encoded = [encode_key(k) for k in keys]
        store, rmap, from_backup = self._store, self._rmap, self._from_backup
        found: list[tuple[Key, bytes]] = []
        elsewhere: list[Key] = []
        with self._lock:
            now = self._clock()
            for k, ek in zip(keys, encoded, strict=True):
                try:
                    blob = store.read(rmap, ek, now, from_backup)
                except NotOwner:
                    elsewhere.append(k)
                    continue
                if blob is not None:
                    found.append((k, value_of(blob)))
        decode = self._decode
        return {k: decode(v) for k, v in found}, elsewhere

    def contains(self, key: Key, *, timeout: float | None = None) -> bool:
        k = encode_key(key)
        try:
            with self._lock:
                return self._store.contains(self._rmap, k, self._clock(), self._from_backup)
        except NotOwner:
            return self.remote().contains(key, timeout=timeout)

    def ttl(self, key: Key, *, timeout: float | None = None) -> float | None:
        k = encode_key(key)
        try:
            with self._lock:
                left = self._store.ttl(self._rmap, k, self._clock(), self._from_backup)
        except NotOwner:
            return self.remote().ttl(key, timeout=timeout)
        if left is None:
            return None
        return math.inf if left < 0 else from_ms(left)

    def size(self, *, timeout: float | None = None) -> int:
        if self.clustered():
            return self.remote().size(timeout=timeout)
        with self._lock:
            return self._store.size(self._rmap)

    def scan_page(
        self, cursor: bytes = b"", count: int = 0, *, timeout: float | None = None
    ) -> tuple[list[Key], bytes]:
        if self.clustered():
            return self.remote().scan_page(cursor, count, timeout=timeout)
        with self._lock:
            keys, cursor = self._store.scan(self._rmap, cursor, count, self._clock())
        return [decode_key(k, self.raw_keys) for k in keys], cursor

    def scan(self, count: int = 0) -> Iterator[Key]:
        cursor = b""
        while True:
            keys, cursor = self.scan_page(cursor, count)
            yield from keys
            if not cursor:
                return

    # ---- writes ------------------------------------------------------------------------------
    def _put(
        self,
        key: Key,
        value: Any,
        ttl: Duration,
        max_idle: Duration,
        condition: int = ALWAYS,
        expected: Version | None = None,
    ) -> Version:
        k = encode_key(key)
        v = encode_value(self.codec, value)
        ttl_ms, idle_ms = to_ms(ttl), to_ms(max_idle)
        try:
            with self._lock:
                blob = self._store.write(
                    self._rmap, k, v, self._clock(), ttl_ms, idle_ms, condition, expected
                )
                ts, member, _ = HEAD.unpack_from(blob)
                return Version(ts, member)
        except NotOwner:
            remote = self.remote()
            if condition == ALWAYS:
                return remote.put(key, value, ttl=ttl, max_idle=max_idle)  # type: ignore[no-any-return]
            ok = {
                IF_ABSENT: lambda: remote.put_if_absent(key, value, ttl=ttl, max_idle=max_idle),
                IF_PRESENT: lambda: remote.replace(key, value, ttl=ttl, max_idle=max_idle),
                IF_VERSION: lambda: remote.compare_and_set(
                    key, expected, value, ttl=ttl, max_idle=max_idle
                ),
            }[condition]()
            if not ok:
                raise CasFailed("condition did not hold") from None
            return Version(0, 0)

    def put(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> Version:
        return self._put(key, value, ttl, max_idle)

    def _conditional(
        self,
        key: Key,
        value: Any,
        ttl: Duration,
        max_idle: Duration,
        condition: int,
        expected: Version | None = None,
    ) -> bool:
        try:
            self._put(key, value, ttl, max_idle, condition, expected)
        except CasFailed:
            return False
        return True

    def put_if_absent(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> bool:
        return self._conditional(key, value, ttl, max_idle, IF_ABSENT)

    def replace(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> bool:
        return self._conditional(key, value, ttl, max_idle, IF_PRESENT)

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
        return self._conditional(key, value, ttl, max_idle, IF_VERSION, expected)

    def put_many(
        self,
        items: Mapping[Key, Any] | Iterable[tuple[Key, Any]],
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> None:
        elsewhere = self.put_many_local(items, ttl, max_idle)
        if elsewhere:
            self.remote().put_many(elsewhere, ttl=ttl, max_idle=max_idle, timeout=timeout)

    def put_many_local(
        self,
        items: Mapping[Key, Any] | Iterable[tuple[Key, Any]],
        ttl: Duration,
        max_idle: Duration,
    ) -> list[tuple[Key, Any]]:
        """Write the pairs this member serves; return the others."""
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        encoded = [(encode_key(k), encode_value(self.codec, v)) for k, v in pairs]
        ttl_ms, idle_ms = to_ms(ttl), to_ms(max_idle)
        store, rmap = self._store, self._rmap
        elsewhere: list[tuple[Key, Any]] = []
        with self._lock:
            now = self._clock()
            for pair, (k, v) in zip(pairs, encoded, strict=True):
                try:
                    store.put(rmap, k, v, now, ttl_ms, idle_ms)
                except NotOwner:
                    elsewhere.append(pair)
        return elsewhere

    def delete(self, key: Key, *, timeout: float | None = None) -> bool:
        k = encode_key(key)
        try:
            with self._lock:
                return self._store.delete(self._rmap, k, self._clock())
        except NotOwner:
            return self.remote().delete(key, timeout=timeout)  # type: ignore[no-any-return]

    def delete_many(self, keys: Iterable[Key], *, timeout: float | None = None) -> int:
        count, elsewhere = self.delete_many_local(keys)
        if elsewhere:
            count += self.remote().delete_many(elsewhere, timeout=timeout)
        return count

    def delete_many_local(self, keys: Iterable[Key]) -> tuple[int, list[Key]]:
        keys = list(keys)
        encoded = [encode_key(k) for k in keys]
        count = 0
        elsewhere: list[Key] = []
        with self._lock:
            now = self._clock()
            for key, k in zip(keys, encoded, strict=True):
                try:
                    count += self._store.delete(self._rmap, k, now)
                except NotOwner:
                    elsewhere.append(key)
        return count, elsewhere

    def expire(self, key: Key, ttl: Duration, *, timeout: float | None = None) -> bool:
        k = encode_key(key)
        try:
            with self._lock:
                return self._store.expire(self._rmap, k, to_ms(ttl), self._clock())
        except NotOwner:
            return self.remote().expire(key, ttl, timeout=timeout)  # type: ignore[no-any-return]

    def touch(self, key: Key, *, timeout: float | None = None) -> bool:
        k = encode_key(key)
        try:
            with self._lock:
                return self._store.touch(self._rmap, k, self._clock())
        except NotOwner:
            return self.remote().touch(key, timeout=timeout)  # type: ignore[no-any-return]

    def get_or_load(self, key: Key, loader: Callable[[Key], Any], **kw: Any) -> Any:
        """The client's get_or_load (docs/patterns.md): its lease must be taken on the
        key's primary like any caller's, so it goes through the node's own client."""
        return self.remote().get_or_load(key, loader, **kw)

    def add_listener(self, callback: Callable[[Any], Any], **kw: Any) -> Any:
        """The client's add_listener (docs/patterns.md, "Entry listeners"): the events come
        from every partition's primary, so it listens through the node's own client."""
        return self.remote().add_listener(callback, **kw)

    def incr(
        self, key: Key, delta: int = 1, *, ttl: Duration = None, timeout: float | None = None
    ) -> int:
        k = encode_key(key)
        try:
            with self._lock:
                return self._store.incr(self._rmap, k, delta, to_ms(ttl), self._clock())
        except NotOwner:
            return self.remote().incr(key, delta, ttl=ttl, timeout=timeout)  # type: ignore[no-any-return]

    def decr(
        self, key: Key, delta: int = 1, *, ttl: Duration = None, timeout: float | None = None
    ) -> int:
        return self.incr(key, -delta, ttl=ttl)

    def clear(self, *, timeout: float | None = None) -> int:
        if self.clustered():
            return self.remote().clear(timeout=timeout)  # type: ignore[no-any-return]
        with self._lock:
            return self._store.clear(self._rmap)


class AsyncLocalMap:
    """The same map for asyncio code: coroutines that complete without suspending when
    this member serves the key, and await the node's async smart client when not."""

    def __init__(self, local: LocalMap, remote: Callable[[], Any] | None = None) -> None:
        self._m = local
        self._remote = remote
        self.name = local.name

    def remote(self) -> Any:
        if self._remote is None:
            raise NotOwner("another member serves this key's partition")
        return self._remote()

    async def get(self, key: Key, default: Any = None, *, timeout: float | None = None) -> Any:
        try:
            return self._m.get(key, default)
        except NotOwner:
            return await self.remote().get(key, default, timeout=timeout)

    async def get_entry(self, key: Key, *, timeout: float | None = None) -> EntryView | None:
        try:
            return self._m.get_entry(key)
        except NotOwner:
            return await self.remote().get_entry(key, timeout=timeout)  # type: ignore[no-any-return]

    async def get_many(
        self, keys: Iterable[Key], *, timeout: float | None = None
    ) -> dict[Key, Any]:
        found, elsewhere = self._m.get_many_local(keys)
        if elsewhere:
            found.update(await self.remote().get_many(elsewhere, timeout=timeout))
        return found

    async def contains(self, key: Key, *, timeout: float | None = None) -> bool:
        try:
            return self._m.contains(key)
        except NotOwner:
            return await self.remote().contains(key, timeout=timeout)  # type: ignore[no-any-return]

    async def ttl(self, key: Key, *, timeout: float | None = None) -> float | None:
        try:
            return self._m.ttl(key)
        except NotOwner:
            return await self.remote().ttl(key, timeout=timeout)  # type: ignore[no-any-return]

    async def size(self, *, timeout: float | None = None) -> int:
        if self._m.clustered():
            return await self.remote().size(timeout=timeout)  # type: ignore[no-any-return]
        return self._m.size()

    async def scan_page(
        self, cursor: bytes = b"", count: int = 0, *, timeout: float | None = None
    ) -> tuple[list[Key], bytes]:
        if self._m.clustered():
            return await self.remote().scan_page(cursor, count, timeout=timeout)  # type: ignore[no-any-return]
        return self._m.scan_page(cursor, count)

    async def scan(self, count: int = 0) -> AsyncIterator[Key]:
        cursor = b""
        while True:
            keys, cursor = await self.scan_page(cursor, count)
            for k in keys:
                yield k
            if not cursor:
                return

    async def get_or_load(self, key: Key, loader: Callable[[Key], Any], **kw: Any) -> Any:
        """See LocalMap.get_or_load (`loader` plain or async)."""
        return await self.remote().get_or_load(key, loader, **kw)

    async def add_listener(self, callback: Callable[[Any], Any], **kw: Any) -> Any:
        """See LocalMap.add_listener (`callback` plain or async)."""
        return await self.remote().add_listener(callback, **kw)

    async def put(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> Version:
        try:
            return self._m.put(key, value, ttl=ttl, max_idle=max_idle)
        except NotOwner:
            return await self.remote().put(key, value, ttl=ttl, max_idle=max_idle, timeout=timeout)  # type: ignore[no-any-return]

    async def put_if_absent(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> bool:
        try:
            return self._m.put_if_absent(key, value, ttl=ttl, max_idle=max_idle)
        except NotOwner:
            return await self.remote().put_if_absent(  # type: ignore[no-any-return]
                key, value, ttl=ttl, max_idle=max_idle, timeout=timeout
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
        try:
            return self._m.replace(key, value, ttl=ttl, max_idle=max_idle)
        except NotOwner:
            return await self.remote().replace(  # type: ignore[no-any-return]
                key, value, ttl=ttl, max_idle=max_idle, timeout=timeout
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
        try:
            return self._m.compare_and_set(key, expected, value, ttl=ttl, max_idle=max_idle)
        except NotOwner:
            return await self.remote().compare_and_set(  # type: ignore[no-any-return]
                key, expected, value, ttl=ttl, max_idle=max_idle, timeout=timeout
            )

    async def put_many(
        self,
        items: Mapping[Key, Any] | Iterable[tuple[Key, Any]],
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> None:
        elsewhere = self._m.put_many_local(items, ttl, max_idle)
        if elsewhere:
            await self.remote().put_many(elsewhere, ttl=ttl, max_idle=max_idle, timeout=timeout)

    async def delete(self, key: Key, *, timeout: float | None = None) -> bool:
        try:
            return self._m.delete(key)
        except NotOwner:
            return await self.remote().delete(key, timeout=timeout)  # type: ignore[no-any-return]

    async def delete_many(self, keys: Iterable[Key], *, timeout: float | None = None) -> int:
        count, elsewhere = self._m.delete_many_local(keys)
        if elsewhere:
            count += await self.remote().delete_many(elsewhere, timeout=timeout)
        return count

    async def expire(self, key: Key, ttl: Duration, *, timeout: float | None = None) -> bool:
        try:
            return self._m.expire(key, ttl)
        except NotOwner:
            return await self.remote().expire(key, ttl, timeout=timeout)  # type: ignore[no-any-return]

    async def touch(self, key: Key, *, timeout: float | None = None) -> bool:
        try:
            return self._m.touch(key)
        except NotOwner:
            return await self.remote().touch(key, timeout=timeout)  # type: ignore[no-any-return]

    async def incr(
        self, key: Key, delta: int = 1, *, ttl: Duration = None, timeout: float | None = None
    ) -> int:
        try:
            return self._m.incr(key, delta, ttl=ttl)
        except NotOwner:
            return await self.remote().incr(key, delta, ttl=ttl, timeout=timeout)  # type: ignore[no-any-return]

    async def decr(
        self, key: Key, delta: int = 1, *, ttl: Duration = None, timeout: float | None = None
    ) -> int:
        return await self.incr(key, -delta, ttl=ttl, timeout=timeout)

    async def clear(self, *, timeout: float | None = None) -> int:
        if self._m.clustered():
            return await self.remote().clear(timeout=timeout)  # type: ignore[no-any-return]
        return self._m.clear()


class SyncWaiter(Protocol):
    """What a map with sync backups waits through (grid/embedded/node.py's `SyncBackups`)."""

    def touched(self, keys: Iterable[bytes]) -> dict[int, tuple[int, int]]: ...
    def wait(self, touched: dict[int, tuple[int, int]]) -> None: ...
    async def wait_async(self, touched: dict[int, tuple[int, int]]) -> None: ...


class SyncLocalMap(LocalMap):
    """A LocalMap whose writes return only once the map's sync backups acknowledged
    them, like a remote client's (or raise Unavailable past sync_backup_timeout_s; the
    write stays applied on this member). `grid.Node.map` picks it, once per map, when
    the map has sync backups, so the maps without them pay nothing.

    The partitions a write changed are read right after it: their seq here is the
    write's or a later one, so waiting for it covers the write. Writes that went to
    another member through the smart client were waited for by that member; their
    partitions are not served here and are left out."""

    def __init__(self, sync: SyncWaiter, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync = sync

    def _confirm(self, keys: Iterable[Key]) -> None:
        sync = self._sync
        sync.wait(sync.touched([encode_key(k) for k in keys]))

    def put(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> Version:
        version = super().put(key, value, ttl=ttl, max_idle=max_idle, timeout=timeout)
        self._confirm((key,))
        return version

    def _conditional(
        self,
        key: Key,
        value: Any,
        ttl: Duration,
        max_idle: Duration,
        condition: int,
        expected: Version | None = None,
    ) -> bool:
        # put_if_absent, replace, compare_and_set; a condition that failed changed nothing
        done = super()._conditional(key, value, ttl, max_idle, condition, expected)
        if done:
            self._confirm((key,))
        return done

    def put_many(
        self,
        items: Mapping[Key, Any] | Iterable[tuple[Key, Any]],
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> None:
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        super().put_many(pairs, ttl=ttl, max_idle=max_idle, timeout=timeout)
        self._confirm(k for k, _ in pairs)

    def delete(self, key: Key, *, timeout: float | None = None) -> bool:
        deleted = super().delete(key, timeout=timeout)
        self._confirm((key,))  # an absent key changes too: it leaves a tombstone
        return deleted

    def delete_many(self, keys: Iterable[Key], *, timeout: float | None = None) -> int:
        keys = list(keys)
        count = super().delete_many(keys, timeout=timeout)
        self._confirm(keys)
        return count

    def expire(self, key: Key, ttl: Duration, *, timeout: float | None = None) -> bool:
        changed = super().expire(key, ttl, timeout=timeout)
        if changed:
            self._confirm((key,))
        return changed

    def touch(self, key: Key, *, timeout: float | None = None) -> bool:
        changed = super().touch(key, timeout=timeout)
        if changed:
            self._confirm((key,))
        return changed

    def incr(
        self, key: Key, delta: int = 1, *, ttl: Duration = None, timeout: float | None = None
    ) -> int:
        value = super().incr(key, delta, ttl=ttl, timeout=timeout)  # decr comes here too
        self._confirm((key,))
        return value


class SyncAsyncLocalMap(AsyncLocalMap):
    """AsyncLocalMap with sync backups: as SyncLocalMap, awaiting the backups."""

    def __init__(
        self, sync: SyncWaiter, local: LocalMap, remote: Callable[[], Any] | None = None
    ) -> None:
        super().__init__(local, remote)
        self._sync = sync

    async def _confirm(self, keys: Iterable[Key]) -> None:
        sync = self._sync
        await sync.wait_async(sync.touched([encode_key(k) for k in keys]))

    async def put(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> Version:
        version = await super().put(key, value, ttl=ttl, max_idle=max_idle, timeout=timeout)
        await self._confirm((key,))
        return version

    async def put_if_absent(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> bool:
        done = await super().put_if_absent(key, value, ttl=ttl, max_idle=max_idle, timeout=timeout)
        if done:
            await self._confirm((key,))
        return done

    async def replace(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> bool:
        done = await super().replace(key, value, ttl=ttl, max_idle=max_idle, timeout=timeout)
        if done:
            await self._confirm((key,))
        return done

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
        done = await super().compare_and_set(
            key, expected, value, ttl=ttl, max_idle=max_idle, timeout=timeout
        )
        if done:
            await self._confirm((key,))
        return done

    async def put_many(
        self,
        items: Mapping[Key, Any] | Iterable[tuple[Key, Any]],
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> None:
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        await super().put_many(pairs, ttl=ttl, max_idle=max_idle, timeout=timeout)
        await self._confirm(k for k, _ in pairs)

    async def delete(self, key: Key, *, timeout: float | None = None) -> bool:
        deleted = await super().delete(key, timeout=timeout)
        await self._confirm((key,))  # an absent key changes too: it leaves a tombstone
        return deleted

    async def delete_many(self, keys: Iterable[Key], *, timeout: float | None = None) -> int:
        keys = list(keys)
        count = await super().delete_many(keys, timeout=timeout)
        await self._confirm(keys)
        return count

    async def expire(self, key: Key, ttl: Duration, *, timeout: float | None = None) -> bool:
        changed = await super().expire(key, ttl, timeout=timeout)
        if changed:
            await self._confirm((key,))
        return changed

    async def touch(self, key: Key, *, timeout: float | None = None) -> bool:
        changed = await super().touch(key, timeout=timeout)
        if changed:
            await self._confirm((key,))
        return changed

    async def incr(
        self, key: Key, delta: int = 1, *, ttl: Duration = None, timeout: float | None = None
    ) -> int:
        value = await super().incr(key, delta, ttl=ttl, timeout=timeout)  # and decr
        await self._confirm((key,))
        return value
