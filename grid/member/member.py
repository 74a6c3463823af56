"""A member's lifecycle: store + gRPC server + background tasks, started and stopped as one.

Used by `grid node` (a dedicated member process) and by `grid.Node` (the same
member inside a user's process). Shutdown is graceful: health turns
NOT_SERVING first so load balancers and clients move away, then in-flight
requests get `shutdown_grace_s` to finish, then the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import xxhash

from grid import __version__, logs
from grid.config import Config
from grid.frontends.memcached.server import MemcachedServer
from grid.frontends.resp.server import RespServer
from grid.member.dataplane import DataPlane
from grid.member.gossip.runtime import GossipRuntime, MemberListener
from grid.member.guard import LoginInterceptor, exposure_warning, reload_loop, server_tls
from grid.member.peer import PeerService
from grid.member.runtime import ClusterRuntime
from grid.member.server import NOT_SERVING, SERVING, GridService, add_health, server_options
from grid.store import Store, wall_ms
from grid.store.durability import Durability, DurableGuard
from grid.wire.security import ServerTls
from persistence import PersistenceError

if TYPE_CHECKING:
    from grid.member.dashboard import Dashboard
    from grid.member.metrics import MetricsServer

log = logs.get("grid.member.member")

GC_FREEZE_EVERY_S = 10.0
"""Why a member freezes the garbage collector's view every few seconds: the store holds
millions of long-lived objects, and CPython runs a full collection whenever the objects
that survived since the last one exceed 25% of the long-lived ones, traversing all of
them: 100-350 ms with the event loop stopped, measured on a member receiving 558k
entries during a migration (docs/benchmarks.md). gc.freeze() moves everything alive now
out of the collector's sight (O(1)), so full collections only look at what is new.
Entries are freed by reference counting when removed (they form no cycles); the cost is
that a cycle that was alive at a freeze and dies later is never collected, a small leak
accepted for bounded pauses (the same trade Instagram made for its Django workers)."""


def member_id(name: str) -> int:
    """A stable 32-bit id from the member name: the version tie-breaker across restarts."""
    return xxhash.xxh32_intdigest(name.encode())


class Member:
    def __init__(self, config: Config, clock: Callable[[], int] = wall_ms) -> None:
        self.config = config
        self.clock = clock
        self.store: Store | None = None
        self.durability: Durability | None = None
        self.service: GridService | None = None
        self.gossip: GossipRuntime | None = None
        self.cluster: ClusterRuntime | None = None
        self.member_listeners: list[MemberListener] = []  # (kind, member), see grid.Node
        self._server: grpc.aio.Server | None = None
        self.data_plane: DataPlane | None = None
        self.metrics: MetricsServer | None = None
        self.tls: ServerTls | None = None
        self.dashboard: Dashboard | None = None
        self.resp: RespServer | None = None
        self.memcached: MemcachedServer | None = None
        self._health = None
        self._tasks: list[asyncio.Task[None]] = []
        self.name = ""
        self.address = ""

    async def start(self) -> None:
        cfg = self.config
        self.tls = server_tls(cfg)  # a bad certificate stops the start here, saying which
        logins = cfg.credentials()
        interceptors = [LoginInterceptor(logins)] if logins.required else None
        server = grpc.aio.server(options=server_options(cfg), interceptors=interceptors)
        try:
            if self.tls is not None:
                port = server.add_secure_port(f"{cfg.host}:{cfg.port}", self.tls.grpc_credentials())
            else:
                port = server.add_insecure_port(f"{cfg.host}:{cfg.port}")
        except RuntimeError:  # grpc's way of saying the bind failed
            port = 0
        if port == 0:
            raise OSError(
                f"cannot listen on {cfg.host}:{cfg.port}: the port is in use or the "
                "address is not this machine's"
            )
        self.address = cfg.advertise or f"{cfg.host}:{port}"
        # A member that keeps data keeps its name: the partition table saved with the data
        # names it, and a restart on another port must still be the same member.
        self.name = (
            cfg.name or _saved_name(cfg.data_dir) or cfg.with_overrides(port=port).member_name
        )
        self.store = Store(cfg, member_id(self.name), self.clock)
        self.service = GridService(self.store, cfg, self.name, self.address)
        if cfg.data_dir:
            self.durability = self._open_durability()  # recovers before anyone is served
            self.service.executor.durability = self.durability
            self.durability.start()  # its fsync task must run before any write is served
            _save_name(cfg.data_dir, self.name)
        self.cluster = ClusterRuntime(
            self.name,
            self.address,
            cfg,
            self.store,
            self.service.executor,
            self.durability,
            lambda: self.gossip.members() if self.gossip is not None else [],
        )
        self.service.cluster = self.cluster
        self.member_listeners.append(self.cluster.coordinator.on_member)
        self.cluster.coordinator.seeds = lambda: self.gossip.seeds() if self.gossip else ()
        peer_service = PeerService(self.cluster)
        self.service.peer_calls = peer_service.calls  # the data plane's CALL frames
        server.add_generic_rpc_handlers((self.service.handler(), peer_service.handler()))
        self._health = add_health(server)
        # "" (the member is up) says SERVING once every port is bound, not when gRPC starts
        # (grpc's default): a member whose memcached port is taken must never look up.
        # grid.v1.Grid (ready to serve data) waits for the rest of the start.
        await self._health.set("", NOT_SERVING)
        await server.start()
        self._server = server
        self.data_plane = DataPlane(self.service, cfg)
        want = cfg.data_bind_port(port)
        try:
            tls = self.tls.context if self.tls is not None else None
            data_port = await self.data_plane.start(cfg.host, want, tls)
        except OSError as e:
            await server.stop(0)
            self._server = None
            raise OSError(
                f"cannot listen on {cfg.host}:{want} for the data plane ({e.strerror or e}); "
                "set data_port to a free port"
            ) from e
        self.service.data_address = cfg.data_advertise or (
            f"{self.address.rsplit(':', 1)[0]}:{data_port}"
        )
        if cfg.metrics_port:
            from grid.member.metrics import MetricsServer  # only members that export load it

            self.metrics = MetricsServer(self)
            try:
                self.metrics.start(cfg.host, cfg.metrics_port, tls)
            except OSError:
                await self.data_plane.stop(0)
                await server.stop(0)
                self._server = None
                raise
        if cfg.resp_port:
            self.resp = RespServer(self.service, cfg)
        if cfg.memcached_port:
            self.memcached = MemcachedServer(self.service, cfg)
        try:
            if self.resp is not None:
                await self.resp.start(cfg.host, cfg.resp_port, tls)
            if self.memcached is not None:
                await self.memcached.start(cfg.host, cfg.memcached_port, tls)
        except OSError:
            await self.stop(0)
            raise
        if cfg.dashboard_port:
            from grid.member.dashboard import Dashboard  # only members serving it load it

            self.dashboard = Dashboard(self)
            try:
                await self.dashboard.start(cfg.host, cfg.dashboard_port, tls)
            except OSError:
                await self.stop(0)
                raise
        await self._health.set("", SERVING)  # every port is bound
        # membership after gRPC is up, so the address we advertise already answers
        self.gossip = GossipRuntime(
            cfg, self.name, self.address, __version__, listeners=self.member_listeners
        )
        self.service.membership = self.gossip
        try:
            await self.gossip.start()
            await self.cluster.start()  # serves nothing until it has a partition table
        except BaseException:
            await self.stop(0)
            raise
        await self._health.set("grid.v1.Grid", SERVING)
        self._tasks.append(asyncio.create_task(self._expiry_loop(), name="grid-expiry"))
        if self.tls is not None:
            self._tasks.append(asyncio.create_task(reload_loop(self.tls), name="grid-tls"))
        if warning := exposure_warning(cfg):
            log.warning("OPEN TO THE NETWORK: " + warning, member=self.name)
        log.info(
            "member ready",
            member=self.name,
            event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
            address=self.address,
            data_address=self.service.data_address,
            resp_address=self.resp.address if self.resp is not None else "",
            memcached_address=self.memcached.address if self.memcached is not None else "",
            partitions=cfg.partitions,
            max_memory=cfg.max_memory,
            eviction_policy=cfg.eviction_policy,
        )

    def _open_durability(self) -> Durability:
        assert self.store is not None
        try:
            durability = Durability(self.config, self.store, self.clock)
        except PersistenceError as e:  # locked by another member, not writable, ...
            raise OSError(f"data_dir {self.config.data_dir}: {e}") from e
        durability.recover()
        gc.freeze()  # the recovered entries are long-lived: see GC_FREEZE_EVERY_S
        self.store.guard = DurableGuard(self.store.lock, durability)
        return durability

    async def _expiry_loop(self) -> None:
        assert self.store is not None
        interval = self.config.expiry_sweep_interval_ms / 1000
        next_freeze = time.monotonic() + GC_FREEZE_EVERY_S
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() >= next_freeze:
                gc.freeze()
                next_freeze = time.monotonic() + GC_FREEZE_EVERY_S
            try:
                self.store.expire_cycle()
                if self.durability is not None:
                    with self.store.lock:
                        self.durability.flush()
            except Exception:  # a bug here must not stop expiry for the member's lifetime
                log.exception("expiry cycle failed")

    async def stop(self, grace: float | None = None) -> None:
        if self._server is None:
            return
        grace = self.config.shutdown_grace_s if grace is None else grace
        log.info("member stopping", member=self.name, grace_s=grace)
        if self.cluster is not None and grace > 0:
            # graceful leave: hand every partition to others before going (they keep
            # serving meanwhile; the old owner forwards until each hand-off is done)
            try:
                await self.cluster.leave()
            except Exception:
                log.exception("hand-off before leaving failed")
        with contextlib.suppress(Exception):
            await self._health.set("", NOT_SERVING)
            await self._health.set("grid.v1.Grid", NOT_SERVING)
        if self.gossip is not None:  # graceful leave: others see "left" at once, not "dead"
            await self.gossip.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.cluster is not None:
            await self.cluster.stop()
        if self.service is not None:
            self.service.end_idle_streams()
        if self.metrics is not None:
            self.metrics.stop()
        if self.dashboard is not None:
            await self.dashboard.stop()
        if self.resp is not None:
            await self.resp.stop(grace)
        if self.memcached is not None:
            await self.memcached.stop(grace)
        if self.data_plane is not None:
            await self.data_plane.stop(grace)
        await self._server.stop(grace)
        self._server = None
        if self.durability is not None:
            await self.durability.close()
        log.info("member stopped", member=self.name)


NAME_FILE = "member.json"


def _saved_name(data_dir: str) -> str:
    if not data_dir:
        return ""
    try:
        data = json.loads((Path(data_dir) / NAME_FILE).read_text())
    except (OSError, ValueError):
        return ""
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else ""


def _save_name(data_dir: str, name: str) -> None:
    path = Path(data_dir) / NAME_FILE
    if _saved_name(data_dir) == name:
        return
    try:
        path.write_text(json.dumps({"name": name}))
    except OSError as e:
        log.warning("cannot save the member name", path=str(path), error=str(e))


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a `grid node` runs on (config `event_loop`); None: asyncio's."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise OSError("event_loop = uvloop, but uvloop is not installed") from None
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


async def run_member(config: Config) -> None:
    """Run a member until SIGTERM or SIGINT, then shut it down gracefully."""
    member = Member(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before start: a stop during it is graceful
        loop.add_signal_handler(sig, stop.set)
    orphan = loop.create_task(_stop_when_orphaned(config.parent_pid, stop))
    try:
        await member.start()
        await stop.wait()
    finally:
        orphan.cancel()
    await member.stop()


ORPHAN_CHECK_S = 0.5
"""How often a member given a parent_pid checks that its parent is still there."""


async def _stop_when_orphaned(parent: int, stop: asyncio.Event) -> None:
    """Set `stop` once `parent` is no longer this process's parent. Polled, not
    PR_SET_PDEATHSIG: that signal follows the parent *thread*, and a harness restarts
    members from its fault threads, which end long before the harness does."""
    if not parent:
        return
    while os.getppid() == parent:
        await asyncio.sleep(ORPHAN_CHECK_S)
    log.warning("parent process gone; stopping", parent_pid=parent)
    stop.set()
