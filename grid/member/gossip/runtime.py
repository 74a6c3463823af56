"""Drives the sans-IO membership core (`membership.Node`) on asyncio.

The core decides; this module only feeds it and carries out what it asks:

* received datagrams and stream frames are opened by the `Sealer` (rejects
  are counted by reason and dropped) and handed to the node with `now` taken
  from `time.monotonic()`;
* `Send` actions are sealed and put on UDP or a one-shot TCP connection;
* one asyncio timer is kept armed for `node.next_deadline()` (re-read after
  every call, so a timer that fires a hair early can never stall the core);
* `MemberEvent`s go to listeners (the embedded API, later the partition
  table); `Refused`/`Dropped` are logged with structlog and counted.

Startup fails with `JoinRefused` (a configuration error) when a seed refuses
us (another cluster name or partition count) and nobody admitted us.
Shutdown is a graceful leave: the node announces it and keeps gossiping
until its leave has been retransmitted enough (`leave_done`) or ~1 s.

Nothing that arrives from the network can raise out of here: the node only
reports malformed input as `Dropped`, and a bug in a listener or in the core
is logged and counted, never allowed to stop the member.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import time
from collections import Counter
from collections.abc import Callable

from grid import logs
from grid.config import Config, ConfigError
from grid.member.gossip.discovery import Discovery, parse_seeds
from grid.member.gossip.security import MAX_OVERHEAD, Rejected, Sealer, parse_keys
from grid.member.gossip.transport import Transport, join_addr, split_addr
from grid.members_view import ClusterMember
from membership import (
    Config as MembershipConfig,
)
from membership import (
    Dropped,
    EventKind,
    Kind,
    MemberEvent,
    MemberInfo,
    MemberMeta,
    Node,
    Refused,
    Send,
    SetTimer,
)

log = logs.get("grid.member.gossip")

MemberListener = Callable[[str, ClusterMember], None]
"""listener(event_kind, member): kind is joined, updated, suspect, alive, dead or left."""

JOIN_WAIT_S = 3.0
"""How long start() waits to be admitted when seeds are configured.  Long enough
for a seed that is starting at the same time; a seed that is down does not
block the member beyond this (joins keep being retried in the background)."""
LEAVE_WAIT_S = 1.0
REDISCOVER_S = 2.0
"""Re-resolve seeds and the DNS name this often while we have no peers."""
LOG_EVERY_S = 10.0
"""At most one warning per rejection reason per this many seconds."""


class JoinRefused(ConfigError):
    """A seed refused us: another cluster name or partition count.  Retrying
    cannot help, so the member does not start."""


def gossip_endpoint(config: Config) -> tuple[str, int, str]:
    """(bind host, bind port, advertised host) of the membership transport.

    Port 0 in the config means the gRPC port + 1000, or any free port when the
    gRPC port itself is 0 (tests, embedded nodes)."""
    host = config.gossip_host or config.host
    port = config.gossip_port or (config.port + 1000 if config.port else 0)
    if port > 65535:
        raise ConfigError(f"gossip port {port} (gRPC port + 1000) is not a port; set gossip_port")
    advertise = host
    if config.advertise:
        with contextlib.suppress(ValueError):
            advertise = split_addr(config.advertise)[0]
    if advertise in ("0.0.0.0", "::", ""):
        advertise = socket.gethostbyname(socket.gethostname())
    return host, port, advertise


async def _ip_of(host: str) -> str:
    """An IP for an advertised host name: peers send datagrams to this address, and a
    name would make every send resolve it (blocking the loop)."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve the advertised host {host!r}")
    return str(infos[0][4][0])


class GossipRuntime:
    """One member's membership: transport, security, discovery and the core."""

    def __init__(
        self,
        config: Config,
        name: str,
        grpc_address: str,
        version: str,
        membership: MembershipConfig | None = None,
        listeners: list[MemberListener] | None = None,
    ) -> None:
        """`listeners` is used as is (not copied): the owner may add to it later."""
        self.config = config
        self.name = name
        self.grpc_address = grpc_address
        self.mconfig = membership or MembershipConfig()
        self.meta = MemberMeta(
            config.cluster_name,
            config.partitions,
            grpc=grpc_address,
            zone=config.zone,
            version=version,
        )
        try:
            keys = parse_keys(config.encryption_keys)
        except ValueError as e:
            raise ConfigError(f"encryption_keys: {e}") from e
        self.sealer = Sealer(config.gossip_secret(), keys)
        self.transport = Transport(
            self._on_datagram,
            self._on_stream,
            max_datagram=self.mconfig.max_datagram_size + MAX_OVERHEAD,
            max_frame=self.mconfig.max_stream_size + MAX_OVERHEAD,
        )
        self.node: Node | None = None
        self.address = ""
        self.discovery: Discovery | None = None
        self.refused: str | None = None
        self.stats: Counter[str] = Counter()
        self._listeners = listeners if listeners is not None else []
        self._first_seen: dict[str, float] = {}
        self._started_at = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._armed: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._admitted = asyncio.Event()
        self._last_log: dict[str, tuple[float, int]] = {}
        self._stopping = False

    # ---- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind, join through the seeds, and wait (bounded) to be admitted."""
        cfg = self.config
        host, port, advertise = gossip_endpoint(cfg)
        await self.transport.start(host, port)
        try:
            self.address = join_addr(await _ip_of(advertise), self.transport.port)
            self.discovery = Discovery(
                parse_seeds(cfg.seeds), cfg.discovery_dns, self.transport.port
            )
            seeds = [a for a in await self.discovery.resolve() if a != self.address]
            now = time.monotonic()
            self._started_at = now
            self.node = Node(
                self.name,
                self.address,
                self.meta,
                rng=random.Random(),
                config=self.mconfig,
                incarnation=0,
                now=now,
            )
            self._first_seen[self.name] = now
            self._run(self.node.start(now, seeds))
            if self.discovery.configured:
                self._tasks.append(
                    asyncio.create_task(self._rediscover(), name="grid-gossip-discovery")
                )
            log.info(
                "gossip started",
                member=self.name,
                gossip=self.address,
                seeds=seeds,
                dns=cfg.discovery_dns or None,
                authenticated=self.sealer.authenticated,
                encrypted=self.sealer.encrypted,
            )
            if seeds:  # somebody to be admitted by (a DNS name may list only us so far)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._admitted.wait(), JOIN_WAIT_S)
                if self.refused is not None:
                    raise JoinRefused(f"the cluster refused this member: {self.refused}")
                if self.node.num_alive() == 1:
                    log.warning(
                        "no seed answered yet; joining in the background",
                        member=self.name,
                        seeds=seeds,
                    )
        except BaseException:
            await self._shutdown()
            raise

    async def stop(self, leave_wait: float = LEAVE_WAIT_S) -> None:
        """Leave gracefully (others see `left`, not `dead`), then close the sockets."""
        node = self.node
        if node is not None and not node.has_left and not self._stopping:
            self._run(node.leave(time.monotonic()))
            deadline = time.monotonic() + leave_wait
            # alone, nobody can hear the leave: do not wait for it to spread
            while node.num_alive() > 1 and not node.leave_done and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            log.info("gossip left", member=self.name, leave_done=node.leave_done)
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._stopping = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.transport.close()

    # ---- queries --------------------------------------------------------------------------
    def seeds(self) -> tuple[str, ...]:
        """The addresses joined through, other than this member's (`Node.seeds`)."""
        return () if self.node is None else self.node.seeds

    def members(self) -> list[ClusterMember]:
        """Everything this member knows, itself first, then by name (tombstones included)."""
        if self.node is None:
            return []
        infos = sorted(self.node.members(), key=lambda m: (m.name != self.name, m.name))
        now = time.monotonic()
        return [self._view(m, now) for m in infos]

    def counters(self) -> dict[str, int]:
        """Packets in/out and rejected ones by reason (`rejected_<reason>`, `rejected`)."""
        rejected = Counter(self.sealer.rejected)
        if self.transport.oversized_datagrams:
            rejected["oversized"] += self.transport.oversized_datagrams
        base = ("datagrams_in", "datagrams_out", "streams_in", "streams_out", "internal_errors")
        out = {k: self.stats.get(k, 0) for k in base}
        out.update(self.stats)
        out.update({f"rejected_{k}": v for k, v in rejected.items()})
        out["rejected"] = sum(rejected.values())
        out.update({f"transport_{k}": v for k, v in self.transport.errors.items()})
        if self.node is not None:
            out["health_score"] = self.node.health_score
        return out

    def _view(self, m: MemberInfo, now: float) -> ClusterMember:
        return ClusterMember(
            name=m.name,
            address=m.meta.grpc,
            state=m.state.name.lower(),
            incarnation=m.incarnation,
            age=max(0.0, now - self._first_seen.get(m.name, self._started_at)),
            zone=m.meta.zone,
            gossip_address=m.addr,
            version=m.meta.version,
        )

    # ---- inputs ---------------------------------------------------------------------------
    def _on_datagram(self, data: bytes, src: str) -> None:
        self.stats["datagrams_in"] += 1
        self._receive(data, src, Kind.DATAGRAM)

    def _on_stream(self, data: bytes, src: str) -> None:
        self.stats["streams_in"] += 1
        self._receive(data, src, Kind.STREAM)

    def _receive(self, data: bytes, src: str, kind: Kind) -> None:
        node = self.node
        if node is None or self._stopping:
            return
        try:
            payload = self.sealer.open(data)
        except Rejected as e:
            self._warn_rejected(e.reason, src)
            return
        try:
            now = time.monotonic()
            if kind is Kind.DATAGRAM:
                actions = node.handle_datagram(payload, src, now)
            else:
                actions = node.handle_stream(payload, src, now)
            self._run(actions)
        except Exception:  # a bug in the core must not take the member down
            self.stats["internal_errors"] += 1
            log.exception("membership core failed on input", src=src, size=len(data))

    def _on_timer(self) -> None:
        self._timer = None
        self._armed = None
        if self.node is None or self._stopping:
            return
        try:
            self._run(self.node.tick(time.monotonic()))
        except Exception:
            self.stats["internal_errors"] += 1
            log.exception("membership tick failed")
            self._arm()

    async def _rediscover(self) -> None:
        """While alone, resolve seeds and the DNS name again and try to join them."""
        assert self.discovery is not None
        while True:
            await asyncio.sleep(REDISCOVER_S)
            node = self.node
            if node is None or node.has_left or self.refused is not None:
                return
            if node.num_alive() > 1:
                continue
            addrs = [a for a in await self.discovery.resolve() if a != self.address]
            if addrs:
                log.info("trying to join", member=self.name, addresses=addrs)
                self._run(node.join(addrs, time.monotonic()))

    # ---- outputs --------------------------------------------------------------------------
    def _run(self, actions: list) -> None:
        for a in actions:
            t = type(a)
            if t is Send:
                self._send(a)
            elif t is MemberEvent:
                self._event(a)
            elif t is SetTimer:
                pass  # _arm() below reads next_deadline(), which is the same request
            elif t is Refused:
                self._refused(a)
            elif t is Dropped:
                reason = "misdirected" if a.reason.startswith("ping for") else "malformed"
                self.sealer.count(reason)
                self._warn_rejected(reason, a.addr, a.reason)
        self._arm()

    def _send(self, a: Send) -> None:
        frame = self.sealer.seal(a.data)
        if a.kind is Kind.DATAGRAM:
            self.stats["datagrams_out"] += 1
            self.transport.send_datagram(a.addr, frame)
        else:
            self.stats["streams_out"] += 1
            self.transport.send_stream(a.addr, frame)

    def _arm(self) -> None:
        node = self.node
        when = None if node is None or self._stopping else node.next_deadline()
        if when == self._armed and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed = when
        if when is not None:
            delay = max(0.0, when - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _event(self, ev: MemberEvent) -> None:
        m = ev.member
        now = time.monotonic()
        if ev.kind is EventKind.JOINED and m.name not in self._first_seen:
            self._first_seen[m.name] = now
        if self.node is not None and self.node.num_alive() > 1:
            self._admitted.set()
        log.info(
            "member " + ev.kind.value,
            member=self.name,
            peer=m.name,
            gossip=m.addr,
            grpc=m.meta.grpc,
            incarnation=m.incarnation,
        )
        view = self._view(m, now)
        for listener in list(self._listeners):
            try:
                listener(ev.kind.value, view)
            except Exception:
                log.exception("member listener failed", listener=repr(listener))

    def _refused(self, r: Refused) -> None:
        self.stats["refused"] += 1
        if r.by_us:
            log.warning(
                "refused a member", member=self.name, peer=r.name, addr=r.addr, reason=r.reason
            )
            return
        alone = self.node is None or self.node.num_alive() == 1
        log.error(
            "the cluster refused this member",
            member=self.name,
            by=r.name,
            addr=r.addr,
            reason=r.reason,
            admitted_elsewhere=not alone,
        )
        if alone:
            self.refused = f"{r.reason} (said {r.name} at {r.addr})"
            self._admitted.set()

    def _warn_rejected(self, reason: str, src: str, detail: str = "") -> None:
        """Warn about rejected input, at most once per reason per LOG_EVERY_S."""
        now = time.monotonic()
        last, count = self._last_log.get(reason, (0.0, 0))
        if now - last < LOG_EVERY_S and last:
            self._last_log[reason] = (last, count + 1)
            return
        self._last_log[reason] = (now, 0)
        log.warning(
            "gossip message rejected",
            member=self.name,
            reason=reason,
            src=src,
            detail=detail or None,
            suppressed_since_last=count,
        )
