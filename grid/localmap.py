"""Maps of an embedded node: the client's API, served straight from the local store.

No protobuf, no network, no thread hop: a `get` takes the store lock, looks
the key up and decodes the value in the caller's thread. This is what makes
an embedded member worth having, and why this file exists next to the remote
client instead of routing local calls through the gRPC adapter (which would
cost an order of magnitude more per call; see docs/benchmarks.md).

Semantics are the store's, so they match the remote client's exactly; the
test suite runs one scenario suite against all four map flavours.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

from grid.client.aio import EntryView, encode_value
from grid.client.codec import Codec, resolve
from grid.client.keys import Duration, Key, decode_key, encode_key, from_ms, to_ms
from grid.errors import CasFailed
from grid.store import ALWAYS, IF_ABSENT, IF_PRESENT, IF_VERSION, Store
from replication.hlc import Version


class LocalMap:
    """Blocking map API over the local store (embedded `grid.Node` in sync mode)."""

    def __init__(
        self, store: Store, name: str, codec: str | Codec = "msgpack", raw_keys: bool = False
    ) -> None:
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
    def get(self, key: Key, default: Any = None, *, timeout: float | None = None) -> Any:
        k = key.encode() if key.__class__ is str else encode_key(key)
        with self._lock:
            e = self._store.get(self._rmap, k, self._clock())
            if e is None:
                return default
            value = e.value
        return self._decode(value)

    def get_entry(self, key: Key, *, timeout: float | None = None) -> EntryView | None:
        k = encode_key(key)
        with self._lock:
            now = self._clock()
            e = self._store.get(self._rmap, k, now)
            if e is None:
                return None
            value, version, deadline = e.value, Version(e.ts, e.member), e.deadline()
        return EntryView(
            self._decode(value), version, from_ms(deadline - now) if deadline else None
        )

    def get_many(self, keys: Iterable[Key], *, timeout: float | None = None) -> dict[Key, Any]:
        keys = list(keys)
        encoded = [encode_key(k) for k in keys]
        store, rmap = self._store, self._rmap
        found: list[tuple[Key, bytes]] = []
        with self._lock:
            now = self._clock()
            for k, ek in zip(keys, encoded, strict=True):
                e = store.get(rmap, ek, now)
                if e is not None:
                    found.append((k, e.value))
        decode = self._decode
        return {k: decode(v) for k, v in found}

    def contains(self, key: Key, *, timeout: float | None = None) -> bool:
        k = encode_key(key)
        with self._lock:
            return self._store.contains(self._rmap, k, self._clock())

    def ttl(self, key: Key, *, timeout: float | None = None) -> float | None:
        k = encode_key(key)
        with self._lock:
            left = self._store.ttl(self._rmap, k, self._clock())
        if left is None:
            return None
        return math.inf if left < 0 else from_ms(left)

    def size(self, *, timeout: float | None = None) -> int:
        with self._lock:
            return self._store.size(self._rmap)

    def scan_page(
        self, cursor: bytes = b"", count: int = 0, *, timeout: float | None = None
    ) -> tuple[list[Key], bytes]:
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
        with self._lock:
            e = self._store.put(
                self._rmap, k, v, self._clock(), ttl_ms, idle_ms, condition, expected
            )
            return Version(e.ts, e.member)

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
        pairs = items.items() if isinstance(items, Mapping) else items
        encoded = [(encode_key(k), encode_value(self.codec, v)) for k, v in pairs]
        ttl_ms, idle_ms = to_ms(ttl), to_ms(max_idle)
        store, rmap = self._store, self._rmap
        with self._lock:
            now = self._clock()
            for k, v in encoded:
                store.put(rmap, k, v, now, ttl_ms, idle_ms)

    def delete(self, key: Key, *, timeout: float | None = None) -> bool:
        k = encode_key(key)
        with self._lock:
            return self._store.delete(self._rmap, k, self._clock())

    def delete_many(self, keys: Iterable[Key], *, timeout: float | None = None) -> int:
        encoded = [encode_key(k) for k in keys]
        with self._lock:
            now = self._clock()
            return sum(self._store.delete(self._rmap, k, now) for k in encoded)

    def expire(self, key: Key, ttl: Duration, *, timeout: float | None = None) -> bool:
        k = encode_key(key)
        with self._lock:
            return self._store.expire(self._rmap, k, to_ms(ttl), self._clock())

    def touch(self, key: Key, *, timeout: float | None = None) -> bool:
        k = encode_key(key)
        with self._lock:
            return self._store.touch(self._rmap, k, self._clock())

    def incr(
        self, key: Key, delta: int = 1, *, ttl: Duration = None, timeout: float | None = None
    ) -> int:
        k = encode_key(key)
        with self._lock:
            return self._store.incr(self._rmap, k, delta, to_ms(ttl), self._clock())

    def decr(
        self, key: Key, delta: int = 1, *, ttl: Duration = None, timeout: float | None = None
    ) -> int:
        return self.incr(key, -delta, ttl=ttl)

    def clear(self, *, timeout: float | None = None) -> int:
        with self._lock:
            return self._store.clear(self._rmap)


class AsyncLocalMap:
    """The same map for asyncio code: coroutines that complete without suspending."""

    def __init__(self, local: LocalMap) -> None:
        self._m = local
        self.name = local.name

    async def get(self, key: Key, default: Any = None, *, timeout: float | None = None) -> Any:
        return self._m.get(key, default)

    async def get_entry(self, key: Key, *, timeout: float | None = None) -> EntryView | None:
        return self._m.get_entry(key)

    async def get_many(
        self, keys: Iterable[Key], *, timeout: float | None = None
    ) -> dict[Key, Any]:
        return self._m.get_many(keys)

    async def contains(self, key: Key, *, timeout: float | None = None) -> bool:
        return self._m.contains(key)

    async def ttl(self, key: Key, *, timeout: float | None = None) -> float | None:
        return self._m.ttl(key)

    async def size(self, *, timeout: float | None = None) -> int:
        return self._m.size()

    async def scan_page(
        self, cursor: bytes = b"", count: int = 0, *, timeout: float | None = None
    ) -> tuple[list[Key], bytes]:
        return self._m.scan_page(cursor, count)

    async def scan(self, count: int = 0) -> AsyncIterator[Key]:
        for k in self._m.scan(count):
            yield k

    async def put(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> Version:
        return self._m.put(key, value, ttl=ttl, max_idle=max_idle)

    async def put_if_absent(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> bool:
        return self._m.put_if_absent(key, value, ttl=ttl, max_idle=max_idle)

    async def replace(
        self,
        key: Key,
        value: Any,
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> bool:
        return self._m.replace(key, value, ttl=ttl, max_idle=max_idle)

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
        return self._m.compare_and_set(key, expected, value, ttl=ttl, max_idle=max_idle)

    async def put_many(
        self,
        items: Mapping[Key, Any] | Iterable[tuple[Key, Any]],
        *,
        ttl: Duration = None,
        max_idle: Duration = None,
        timeout: float | None = None,
    ) -> None:
        self._m.put_many(items, ttl=ttl, max_idle=max_idle)

    async def delete(self, key: Key, *, timeout: float | None = None) -> bool:
        return self._m.delete(key)

    async def delete_many(self, keys: Iterable[Key], *, timeout: float | None = None) -> int:
        return self._m.delete_many(keys)

    async def expire(self, key: Key, ttl: Duration, *, timeout: float | None = None) -> bool:
        return self._m.expire(key, ttl)

    async def touch(self, key: Key, *, timeout: float | None = None) -> bool:
        return self._m.touch(key)

    async def incr(
        self, key: Key, delta: int = 1, *, ttl: Duration = None, timeout: float | None = None
    ) -> int:
        return self._m.incr(key, delta, ttl=ttl)

    async def decr(
        self, key: Key, delta: int = 1, *, ttl: Duration = None, timeout: float | None = None
    ) -> int:
        return self._m.decr(key, delta, ttl=ttl)

    async def clear(self, *, timeout: float | None = None) -> int:
        return self._m.clear()
