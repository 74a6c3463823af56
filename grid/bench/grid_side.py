"""The grid sides: one member process over the SDK, and an embedded node in this process.

The member is a real `grid node` process started by `LocalCluster(1)`, the
same harness users and tests run; the embedded node is `grid.Node(port=0)`
in sync mode, read through `node.map().get` exactly as a service would.
"""

from __future__ import annotations

import asyncio

import cachetools
import msgpack

from grid.bench.sides import ConcurrentSide, InProcessSide, SyncSide
from grid.client.aio import AsyncClient
from grid.client.sync import Client
from grid.embedded.node import Node

MAP = "bench"


class GridBench:
    """A sync Client and an AsyncClient (on `loop`) connected to one member."""

    def __init__(self, address: str, pid: int, loop: asyncio.AbstractEventLoop) -> None:
        self.pid = pid
        self.loop = loop
        self.client = Client(address, timeout=30)
        self.map = self.client.map(MAP)

        async def make() -> AsyncClient:
            return AsyncClient(address, timeout=30)

        self.aclient = loop.run_until_complete(make())
        self.amap = self.aclient.map(MAP)

    def load(self, keys: list[str], value: object) -> None:
        for j in range(0, len(keys), 1000):
            self.map.put_many({k: value for k in keys[j : j + 1000]})

    def close(self) -> None:
        self.loop.run_until_complete(self.aclient.close())
        self.client.close()

    # ---- sides --------------------------------------------------------------------------------
    def seq_get(self, keys: list[str]) -> SyncSide:
        get, n = self.map.get, len(keys)

        def op(i: int) -> int:
            get(keys[i % n])
            return 1

        return SyncSide("Client.get", op, self.pid)

    def seq_put(self, keys: list[str], value: object) -> SyncSide:
        put, n = self.map.put, len(keys)

        def op(i: int) -> int:
            put(keys[i % n], value)
            return 1

        return SyncSide("Client.put", op, self.pid)

    def get_many(self, batches: list[list[str]]) -> SyncSide:
        get_many, n = self.map.get_many, len(batches)

        def op(i: int) -> int:
            return len(get_many(batches[i % n]))

        return SyncSide("get_many 64", op, self.pid)

    def put_many(
        self, batches: list[list[str]], value: object, name: str = "put_many 64"
    ) -> SyncSide:
        put_many, n = self.map.put_many, len(batches)

        def op(i: int) -> int:
            batch = batches[i % n]
            put_many({k: value for k in batch})
            return len(batch)

        return SyncSide(name, op, self.pid)

    def concurrent_get(self, keys: list[str], concurrency: int) -> ConcurrentSide:
        get, n = self.amap.get, len(keys)

        async def op(i: int) -> None:
            await get(keys[i % n])

        return ConcurrentSide(
            f"AsyncClient.get x{concurrency}", self.loop, op, concurrency, self.pid
        )


class EmbeddedBench:
    """An embedded member and, as the reference, the in-process cache a service would use."""

    def __init__(self, keys: list[str], value: object, blob: bytes) -> None:
        self.keys = keys
        self.node = Node(port=0, host="127.0.0.1").open()
        try:
            local = self.node.map(MAP)
            for j in range(0, len(keys), 1000):
                local.put_many({k: value for k in keys[j : j + 1000]})
            self.local = local
            self.cache: cachetools.TTLCache[str, bytes] = cachetools.TTLCache(
                maxsize=len(keys) * 2, ttl=3600
            )
            for k in keys:
                self.cache[k] = blob
        except BaseException:
            self.node.close()
            raise

    def close(self) -> None:
        self.node.close()

    def local_get(self) -> InProcessSide:
        return InProcessSide("node.map().get", self.local.get, self.keys)

    def cachetools_get(self) -> InProcessSide:
        get, unpack = self.cache.get, msgpack.unpackb

        def op(key: str) -> object:
            return unpack(get(key))

        return InProcessSide("TTLCache.get+unpackb", op, self.keys)
