"""`grid.Node`: a full member inside your process, with local maps.

    with grid.Node(port=0) as node:          # sync: the member's loop runs in a thread
        node.map("users").put("u1", {...})

    async with grid.Node(port=0) as node:    # async: the member runs on your loop
        await node.map("users").put("u1", {...})

It is a real member: it serves other clients over gRPC at `node.address`
while your code reads and writes its maps directly. `node.map()` returns a
blocking map when the node was started with `with`/`open()`, and a map of
coroutines when started with `async with`/`await start()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grid.client.codec import Codec
from grid.client.sync import _LoopThread
from grid.config import Config
from grid.gossip.view import ClusterMember
from grid.localmap import AsyncLocalMap, LocalMap
from grid.member import Member
from grid.stats_view import stats_dict


class Node:
    def __init__(self, config: Config | None = None, **options: Any) -> None:
        """`config` if given, else defaults < GRID_* environment; then `options` on top."""
        if config is None:
            self.config = Config.load(flags=options)
        else:
            self.config = config.with_overrides(**options) if options else config
        self._member = Member(self.config)
        self._thread: _LoopThread | None = None
        self._mode: str | None = None
        self._listeners = self._member.member_listeners
        self._client: Any = None  # the node's own smart client, for keys others serve

    # ---- lifecycle -----------------------------------------------------------------------
    def open(self) -> Node:
        """Start the member on a background thread (for blocking code)."""
        self._require_stopped()
        self._thread = _LoopThread(f"grid-node-{self.config.port}")
        try:
            self._thread.run(self._member.start())
        except BaseException:
            self._thread.stop()
            self._thread = None
            raise
        self._mode = "sync"
        return self

    def close(self) -> None:
        if self._mode != "sync" or self._thread is None:
            return
        if self._client is not None:
            self._client.close()
            self._client = None
        self._thread.run(self._member.stop(0.5))
        self._thread.stop()
        self._thread = None
        self._mode = None

    async def start(self) -> Node:
        """Start the member on the running event loop (for asyncio code)."""
        self._require_stopped()
        await self._member.start()
        self._mode = "async"
        return self

    async def stop(self) -> None:
        if self._mode == "async":
            if self._client is not None:
                await self._client.close()
                self._client = None
            await self._member.stop(0.5)
            self._mode = None

    def _require_stopped(self) -> None:
        if self._mode is not None:
            raise RuntimeError("the node is already running")

    def __enter__(self) -> Node:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Node:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- use ------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return self._member.address

    @property
    def name(self) -> str:
        return self._member.name

    def map(self, name: str, *, codec: str | Codec = "msgpack", raw_keys: bool = False) -> Any:
        """A LocalMap (sync mode) or AsyncLocalMap (async mode) over this member's store."""
        if self._mode is None or self._member.store is None:
            raise RuntimeError("start the node first (with/open() or async with/start())")
        if self._mode == "sync":
            return LocalMap(
                self._member.store,
                name,
                codec,
                raw_keys,
                remote=lambda: self._smart_client().map(name, codec=codec, raw_keys=raw_keys),
                clustered=self._clustered,
            )
        local = LocalMap(self._member.store, name, codec, raw_keys, clustered=self._clustered)
        return AsyncLocalMap(
            local, lambda: self._smart_client().map(name, codec=codec, raw_keys=raw_keys)
        )

    def _clustered(self) -> bool:
        cluster = self._member.cluster
        return cluster is not None and len(cluster.routing.members()) > 1

    def _smart_client(self) -> Any:
        """A client of the cluster through this member (created on first need): calls for
        partitions other members serve go straight to them, as from any client."""
        if self._client is None:
            if self._mode == "sync":
                from grid.client.sync import Client

                self._client = Client(self.address)
            else:
                from grid.client.aio import AsyncClient

                self._client = AsyncClient(self.address)
        return self._client

    def stats(self) -> dict[str, Any]:
        if self._mode is None or self._member.service is None:
            raise RuntimeError("the node is not running")
        return stats_dict(self._member.service.stats_reply())

    def members(self) -> list[ClusterMember]:
        """The cluster as this member sees it: itself first, then the others by name
        (dead and left members included until they are forgotten)."""
        gossip = self._member.gossip
        if self._mode is None or gossip is None:
            raise RuntimeError("the node is not running")
        return gossip.members()

    def membership_counters(self) -> dict[str, int]:
        """Gossip packets in/out and rejected ones by reason (docs/membership.md)."""
        gossip = self._member.gossip
        if self._mode is None or gossip is None:
            raise RuntimeError("the node is not running")
        return gossip.counters()

    def add_member_listener(self, callback: Callable[[str, ClusterMember], None]) -> None:
        """Call `callback(kind, member)` on every change of this member's view; kind is
        joined, updated, suspect, alive, dead or left.  It runs on the member's event
        loop (the node's thread in sync mode): keep it short and do not block.
        Listeners added before start() are kept and see every event."""
        self._listeners.append(callback)

    def remove_member_listener(self, callback: Callable[[str, ClusterMember], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)
