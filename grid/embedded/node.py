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

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterable
from typing import Any

from grid.client.codec import Codec
from grid.client.nearcache import NearCache
from grid.client.stats_view import stats_dict
from grid.client.sync import _LoopThread
from grid.config import Config
from grid.embedded.localmap import AsyncLocalMap, LocalMap, SyncAsyncLocalMap, SyncLocalMap
from grid.errors import Unavailable
from grid.member.member import Member
from grid.member.server import SYNC_NOT_CONFIRMED
from grid.members_view import ClusterMember
from partitioning import partition_of

SYNC_WAIT_GRACE_S = 5.0
"""How long a blocking map waits past sync_backup_timeout_s for the member's loop to
answer at all (it answers at the timeout; this only bounds a stuck or stopped loop)."""


class SyncBackups:
    """How an embedded write waits for its map's sync backups, as a remote client's
    write does in the server (`GridService._finish`): until `n` backups (capped by the
    partition's) acknowledged each partition it changed, or Unavailable past
    sync_backup_timeout_s. The wait runs on the member's event loop, where the
    replicator's acknowledgements arrive; callers on other threads or loops hop to it."""

    def __init__(
        self, member: Member, loop: asyncio.AbstractEventLoop, n: int, ranks: int | None = None
    ) -> None:
        assert member.cluster is not None and member.store is not None
        self._replicator = member.cluster.replicator
        self._routing = member.cluster.routing
        self._partitions = member.store.partitions
        self._loop = loop
        self.n = n
        self.timeout = member.config.sync_backup_timeout_s
        # per-map backups: only the map's first `ranks` backups hold it, and only their
        # acknowledgements count (None: every backup holds every map)
        self._extra = () if ranks is None else (ranks,)

    def touched(self, keys: Iterable[bytes]) -> dict[int, tuple[int, int]]:
        """partition -> its (term, seq) here, for the keys' partitions this member is
        primary of and that have backups (called right after the write: the seq is the
        write's or a later one)."""
        routing, position, count = self._routing, self._replicator.mark, self._partitions
        table = routing.table
        out: dict[int, tuple[int, int]] = {}
        if table is None:
            return out
        for k in keys:
            p = partition_of(k, count)
            if p not in out and routing.serves(p) and len(table.replicas(p)) > 1:
                out[p] = position(p)
        return out

    def wait(self, touched: dict[int, tuple[int, int]]) -> None:
        """Blocking, in the caller's thread (not the member's loop)."""
        if not touched:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError(
                "a blocking map cannot wait for sync backups on the node's own event loop"
            )
        coro = self._replicator.wait_backups(touched, self.n, self.timeout, *self._extra)
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # the loop is closed: the node stopped
            coro.close()
            raise Unavailable(SYNC_NOT_CONFIRMED) from None
        try:
            confirmed = fut.result(self.timeout + SYNC_WAIT_GRACE_S)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            fut.cancel()
            confirmed = False
        if not confirmed:
            raise Unavailable(SYNC_NOT_CONFIRMED)

    async def wait_async(self, touched: dict[int, tuple[int, int]]) -> None:
        if not touched:
            return
        coro = self._replicator.wait_backups(touched, self.n, self.timeout, *self._extra)
        if asyncio.get_running_loop() is self._loop:
            confirmed = await coro
        else:  # a map used from another loop than the node's
            confirmed = await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(coro, self._loop)
            )
        if not confirmed:
            raise Unavailable(SYNC_NOT_CONFIRMED)


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
        self._loop: asyncio.AbstractEventLoop | None = None  # the member's event loop
        self._sync_maps = self.config.sync_backups_by_map()

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
        self._loop = self._thread.loop
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
        self._loop = None

    async def start(self) -> Node:
        """Start the member on the running event loop (for asyncio code)."""
        self._require_stopped()
        await self._member.start()
        self._mode = "async"
        self._loop = asyncio.get_running_loop()
        return self

    async def stop(self) -> None:
        if self._mode == "async":
            if self._client is not None:
                await self._client.close()
                self._client = None
            await self._member.stop(0.5)
            self._mode = None
            self._loop = None

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

    def map(
        self,
        name: str,
        *,
        codec: str | Codec = "msgpack",
        raw_keys: bool = False,
        near_cache: NearCache | None = None,
    ) -> Any:
        """A LocalMap (sync mode) or AsyncLocalMap (async mode) over this member's store;
        their Sync* subclasses when the map has sync backups (writes wait for them).
        `near_cache` keeps the values of keys other members serve in this process too
        (the node's own partitions are served from its store already), invalidated as
        a client's near cache is (grid/client/nearcache.py)."""
        if self._mode is None or self._member.store is None:
            raise RuntimeError("start the node first (with/open() or async with/start())")
        sync = self._sync_backups(name)

        def remote() -> Any:
            client = self._smart_client()
            return client.map(name, codec=codec, raw_keys=raw_keys, near_cache=near_cache)

        store, backup = self._member.store, self.config.read_from_backup
        if self._mode == "sync":
            if sync is None:
                return LocalMap(
                    store, name, codec, raw_keys, remote, self._clustered, from_backup=backup
                )
            return SyncLocalMap(
                sync, store, name, codec, raw_keys, remote, self._clustered, from_backup=backup
            )
        local = LocalMap(
            store, name, codec, raw_keys, clustered=self._clustered, from_backup=backup
        )
        if sync is None:
            return AsyncLocalMap(local, remote)
        return SyncAsyncLocalMap(sync, local, remote)

    def _sync_backups(self, name: str) -> SyncBackups | None:
        """What the map's writes wait for: None when it has no sync backups (decided
        here, once per map, so that their writes cost what they always did)."""
        n = self._sync_maps.get(name, self.config.sync_backups)
        cluster = self._member.cluster
        if not n or cluster is None or self._loop is None:
            return None
        held = cluster.replicator.map_backups.of(name)  # as GridService._sync_for does
        if not min(n, held):
            return None
        return SyncBackups(self._member, self._loop, min(n, held), held)

    def _clustered(self) -> bool:
        cluster = self._member.cluster
        return cluster is not None and len(cluster.routing.members()) > 1

    def _smart_client(self) -> Any:
        """A client of the cluster through this member (created on first need): calls for
        partitions other members serve go straight to them, as from any client."""
        if self._client is None:
            cfg = self.config
            kw = {  # the member's own credentials: it dials itself and its peers as a peer
                "read_from_backup": cfg.read_from_backup,
                "tls": bool(cfg.tls_cert),
                "tls_ca": cfg.tls_ca,
                "tls_cert": cfg.tls_cert,
                "tls_key": cfg.tls_key,
                "token": cfg.auth_token,
            }
            if self._mode == "sync":
                from grid.client.sync import Client

                self._client = Client(self.address, **kw)
            else:
                from grid.client.aio import AsyncClient

                self._client = AsyncClient(self.address, **kw)
        return self._client

    def lock(self, name: str, **kw: Any) -> Any:
        """`with node.lock(name, ttl=10) as token:` (`async with` in async mode): the
        client's lease lock (docs/patterns.md), through this member."""
        return self._smart_client().lock(name, **kw)

    def rate_limit(self, name: str, who: str, **kw: Any) -> Any:
        """The client's rate limit (docs/patterns.md); a coroutine in async mode."""
        return self._smart_client().rate_limit(name, who, **kw)

    def topic(self, name: str, **kw: Any) -> Any:
        """The client's publish/subscribe topic (grid/client/topics.py), through this
        member: a Topic, or an AsyncTopic in async mode."""
        return self._smart_client().topic(name, **kw)

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
