"""Tags: `put(key, value, tags=[...])` and `invalidate_tag(tag)` across the cluster.

A `TaggedMap` keeps an entry's tags inside the entry: the stored value is the msgpack
pair [tags, the value as the map's codec encodes it]. There is no separate index, so
there is nothing to keep right: an entry that expires, is evicted, deleted, moved by a
migration or taken over by a backup takes its tags along, and an index can never name
an entry that is gone nor miss one that is there.

`invalidate_tag(tag)` scans the map (SCAN pages, then their values, patterns.py
`scan_pages`) and deletes every entry whose tags hold the tag, each delete on the
version it read (IF_VERSION): an entry rewritten meanwhile, perhaps without the tag, is
left alone. SCAN sees every key present for the whole scan exactly once, migrations
included, so a tagged entry written before the call is removed; one written during it
may or may not be, as with any invalidation racing a write. The price of keeping no
index: the call reads the whole map, a second or two for 14,000 entries on 3 members
here. Readers of the map through a plain client see the [tags, value] pair.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import Any

import msgpack

from grid.client import patterns
from grid.client.keys import Key, decode_key, encode_key, to_ms
from grid.errors import InvalidArgument, Status
from proto import grid_pb2 as pb


def pack(tags: Iterable[str], value: bytes) -> bytes:
    return msgpack.packb([sorted(set(tags)), value])


def unpack(stored: bytes) -> tuple[list[str], bytes]:
    tags, value = msgpack.unpackb(stored)
    return tags, value


def invalidate(map_name: str, tag: str) -> Generator[patterns.Step, Any, int]:
    """Delete every entry holding `tag`; how many went."""
    removed = 0

    def page(keys: list[bytes], results: list[pb.Result]) -> Generator[patterns.Step, Any, None]:
        nonlocal removed
        ops = [
            pb.Op(code=pb.DELETE, map=map_name, key=k, condition=pb.IF_VERSION,
                  expected_ts=r.version_ts, expected_member=r.version_member)
            for k, r in zip(keys, results, strict=True)
            if tag in unpack(r.value)[0]
        ]  # fmt: skip
        if ops:
            for r in (yield "ops", ops):
                if r.status not in (Status.CAS_FAILED, Status.NOT_FOUND):
                    patterns.check(r)
                    removed += r.count

    yield from patterns.scan_pages(map_name, page)
    return removed


def _checked(tags: Iterable[str]) -> list[str]:
    tags = list(tags)
    if not all(isinstance(t, str) and t for t in tags):
        raise InvalidArgument("tags are non-empty strings")
    return tags


class TaggedMap:
    """A (blocking) map whose entries carry tags: `grid.TaggedMap(client.map("pages"))`."""

    def __init__(self, map: Any) -> None:
        remote = getattr(map, "remote", None)  # an embedded node's map: its client's
        self.map = remote() if callable(remote) else map
        self.name = self.map.name
        self._codec = self.map._m.codec
        self._raw = self.map._m.raw_keys

    def _drive(self, pattern: patterns.Pattern) -> Any:
        m = self.map._m
        return patterns.drive_sync(pattern, lambda ops: self.map._run(m._conn.call(ops)), None)

    def put(
        self, key: Key, value: Any, *, tags: Iterable[str] = (), ttl: float | None = None
    ) -> None:
        if value is None:
            raise InvalidArgument("None cannot be stored; delete the key instead")
        stored = pack(_checked(tags), self._codec.encode(value))
        op = pb.Op(code=pb.PUT, map=self.name, key=encode_key(key), value=stored, ttl_ms=to_ms(ttl))
        (r,) = self._drive(_one(op))
        patterns.check(r)

    def put_many(
        self, items: dict[Key, tuple[Any, Iterable[str]]], *, ttl: float | None = None
    ) -> None:
        """Several (value, tags) at once, in one batch a member."""
        ms = to_ms(ttl)
        ops = [
            pb.Op(code=pb.PUT, map=self.name, key=encode_key(k), ttl_ms=ms,
                  value=pack(_checked(tags), self._codec.encode(v)))
            for k, (v, tags) in items.items()
        ]  # fmt: skip
        for r in self._drive(_many(ops)):
            patterns.check(r)

    def get(self, key: Key, default: Any = None) -> Any:
        got = self.get_with_tags(key)
        return default if got is None else got[0]

    def get_with_tags(self, key: Key) -> tuple[Any, list[str]] | None:
        (r,) = self._drive(_one(pb.Op(code=pb.GET, map=self.name, key=encode_key(key))))
        if r.status == Status.NOT_FOUND:
            return None
        tags, value = unpack(patterns.check(r).value)
        return self._codec.decode(value), tags

    def delete(self, key: Key) -> bool:
        (r,) = self._drive(_one(pb.Op(code=pb.DELETE, map=self.name, key=encode_key(key))))
        return bool(patterns.check(r).count)

    def invalidate_tag(self, tag: str) -> int:
        """Delete every entry tagged `tag`, cluster-wide; how many went."""
        return int(self._drive(invalidate(self.name, tag)))

    def keys_tagged(self, tag: str) -> list[Key]:
        """The keys whose entries hold `tag` now (a scan, as invalidate_tag's)."""
        found: list[Key] = []

        def page(
            keys: list[bytes], results: list[pb.Result]
        ) -> Generator[patterns.Step, Any, None]:
            found.extend(decode_key(k, self._raw) for k, r in zip(keys, results, strict=True)
                         if tag in unpack(r.value)[0])  # fmt: skip
            yield from ()

        self._drive(patterns.scan_pages(self.name, page))
        return found


class AsyncTaggedMap:
    """TaggedMap for asyncio, on an AsyncMap."""

    def __init__(self, map: Any) -> None:
        remote = getattr(map, "remote", None)
        self.map = remote() if callable(remote) else map
        self.name = self.map.name

    async def _drive(self, pattern: patterns.Pattern) -> Any:
        return await patterns.drive_async(pattern, self.map._conn.call, None)

    async def put(
        self, key: Key, value: Any, *, tags: Iterable[str] = (), ttl: float | None = None
    ) -> None:
        if value is None:
            raise InvalidArgument("None cannot be stored; delete the key instead")
        stored = pack(_checked(tags), self.map.codec.encode(value))
        op = pb.Op(code=pb.PUT, map=self.name, key=encode_key(key), value=stored, ttl_ms=to_ms(ttl))
        (r,) = await self._drive(_one(op))
        patterns.check(r)

    async def get(self, key: Key, default: Any = None) -> Any:
        (r,) = await self._drive(_one(pb.Op(code=pb.GET, map=self.name, key=encode_key(key))))
        if r.status == Status.NOT_FOUND:
            return default
        return self.map.codec.decode(unpack(patterns.check(r).value)[1])

    async def delete(self, key: Key) -> bool:
        (r,) = await self._drive(_one(pb.Op(code=pb.DELETE, map=self.name, key=encode_key(key))))
        return bool(patterns.check(r).count)

    async def invalidate_tag(self, tag: str) -> int:
        return int(await self._drive(invalidate(self.name, tag)))


def _one(op: pb.Op) -> Generator[patterns.Step, Any, list[pb.Result]]:
    return (yield from _many([op]))


def _many(ops: list[pb.Op]) -> Generator[patterns.Step, Any, list[pb.Result]]:
    results = yield "ops", ops
    return list(results)
