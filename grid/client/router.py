"""Smart routing: send each operation straight to the member that owns its partition.

Why: a member that gets an operation for a partition it does not own forwards it
to the owner, which costs a second hop (and the forwarding member's CPU) on
every call. A client that knows the partition table sends each batch to its
owners itself, one coalescing stream per member (connection.py), in parallel.
This is what Hazelcast's and Ignite's "smart" clients and Redis Cluster clients do.

How:
- Bootstrap: the client is given one or more seed addresses. The first seed that
  answers `Grid/Table` gives the table, and with it every member's address, so
  one seed is enough to find the whole cluster. A member without a table yet
  (version 0), an older member without the RPC (UNIMPLEMENTED) or smart routing
  turned off leaves the client in fallback mode: everything goes to the seed's
  connection, exactly as before routing existed (the member forwards).
- Following changes: a background task holds a `Grid/WatchTable` stream to one
  member and installs every newer table it sends; if the stream breaks it moves
  on to another known member with jittered, capped backoff. Replies also carry
  the answering member's table version, and a newer one triggers a fetch.
- Calls: `call` groups operations by owner (keyed ops by the key's partition,
  SCAN by the partition inside its cursor, SIZE/CLEAR and anything keyless by
  any live member, which fans out), sends the groups concurrently and puts the
  results back in order. Operations answered NOT_OWNER (or UNAVAILABLE, when
  idempotent), or lost because the owner's stream broke (the member died), are
  sent again after refreshing the table, with jittered backoff, within the
  call's deadline. A non-idempotent operation (incr) that may have reached a
  member is never sent again: it raises Unavailable, as the plain connection does.

The per-member connections are `fail_fast`: they report a broken stream at once
(with whether the batch may have been sent) instead of retrying the same member
until the deadline, because the right retry may be a different member.

The pure parts (which partition an op belongs to, grouping by owner, decoding a
wire table) are plain functions, tested without a network in
tests/client/test_router_unit.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc
import msgpack
from google.protobuf.message import DecodeError

from grid.client.connection import (
    ENDPOINTS_METHOD,
    AsyncConnection,
    CallFailed,
    ConnectionOptions,
    StreamLost,
    tls_hint,
)
from grid.client.wireops import AnyOp
from grid.errors import AuthenticationFailed, NotOwner, Status, Unavailable
from partitioning import PartitionTable, partition_of
from partitioning.keys import partitions_of
from proto import grid_pb2 as pb

log = logging.getLogger("grid.client")  # stdlib logging: a library must not print by itself

TABLE_METHOD = "/grid.v1.Grid/Table"
WATCH_METHOD = "/grid.v1.Grid/WatchTable"

READ_OPS = frozenset({pb.GET, pb.CONTAINS, pb.TTL})
"""What a member may answer from a backup copy when the client reads from backups."""
KEYED_OPS = frozenset(
    {pb.GET, pb.PUT, pb.DELETE, pb.EXPIRE, pb.TTL, pb.CONTAINS, pb.INCR, pb.TOUCH}
)
"""Opcodes that name one key: they go to the owner of the key's partition."""

DISCOVER_TIMEOUT = 2.0
"""Seconds to wait for one seed's Table answer before trying the next seed."""
REDISCOVER_AFTER = 1.0
"""After no seed answered, calls go to the first seed (retrying it as before) and the
seeds are asked again at most this often."""
FETCH_TIMEOUT = 1.0
"""Seconds to wait for one member's Table answer during a refresh."""
WATCH_BACKOFF = (0.1, 5.0)
"""First and largest delay between WatchTable attempts after a stream breaks."""


# ---- pure parts ----------------------------------------------------------------------------------
def parse_seeds(address: str | Iterable[str]) -> list[str]:
    """'h1:p1,h2:p2' or ['h1:p1', 'h2:p2'] -> distinct addresses in order; at least one."""
    parts = address.split(",") if isinstance(address, str) else list(address)
    seeds: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"addresses are 'host:port' strings, not {type(part).__name__}")
        part = part.strip()
        if part and part not in seeds:
            seeds.append(part)
    if not seeds:
        raise ValueError("give at least one member address ('host:port')")
    return seeds


def cursor_partition(cursor: bytes, partition_count: int) -> int | None:
    """The partition a SCAN cursor continues from (b"" starts at 0); None if malformed,
    so any member can answer it with the precise INVALID_ARGUMENT."""
    if not cursor:
        return 0
    try:
        part, _after = msgpack.unpackb(cursor)
    except Exception:  # any malformed cursor: let a member say what is wrong with it
        return None
    if type(part) is not int or not 0 <= part < partition_count:
        return None
    return part


def op_partition(op: AnyOp, partition_count: int) -> int | None:
    """The partition whose owner must see `op`, or None when any member can take it
    (SIZE and CLEAR fan out on the member; an unknown opcode gets its error anywhere)."""
    if op.code in KEYED_OPS:
        return partition_of(op.key, partition_count)
    if op.code == pb.SCAN:
        return cursor_partition(op.cursor, partition_count)
    return None


def group_by_owner(
    ops: Sequence[AnyOp],
    indexes: Iterable[int],
    owners: Sequence[str],
    any_address: str,
) -> dict[str, list[int]]:
    """Address -> the indexes (into ops, ascending as given) of the ops to send there.

    `owners[p]` is the address of partition p's primary ("" if unknown: any member).
    Order inside a group is kept, so two ops on one key in one call apply in order.
    A batch of keyed ops (the usual one) is hashed in one pass (`partitions_of`), and a
    batch whose keys all live on one member (a small batch, a hash-tagged one, a
    one-member cluster) is one group without a loop.
    """
    idx = list(indexes)
    count = len(owners)
    if len(idx) == 1:
        return {_address(op_partition(ops[idx[0]], count), owners, any_address): idx}
    chosen = [ops[i] for i in idx]
    if {op.code for op in chosen} <= KEYED_OPS:
        addresses = [
            owners[p] or any_address for p in partitions_of([op.key for op in chosen], count)
        ]
    else:
        addresses = [_address(op_partition(op, count), owners, any_address) for op in chosen]
    if len(set(addresses)) <= 1:
        return {addresses[0]: idx} if idx else {}
    groups: dict[str, list[int]] = {a: [] for a in dict.fromkeys(addresses)}
    for i, address in zip(idx, addresses, strict=True):
        groups[address].append(i)
    return groups


def _address(partition: int | None, owners: Sequence[str], any_address: str) -> str:
    return (owners[partition] if partition is not None else "") or any_address


@dataclass(frozen=True)
class Route:
    """A validated partition table plus what routing needs: each partition's owner address."""

    table: PartitionTable
    addresses: Mapping[str, str]
    """Member name -> gRPC address, for every member in the table."""
    owners: tuple[str, ...]
    """Per partition, the primary's address ("" if the table gave none)."""
    replicas: tuple[tuple[str, ...], ...]
    """Per partition, every replica's address, the primary first (read_from_backup)."""

    @property
    def version(self) -> int:
        return self.table.version

    @classmethod
    def from_proto(cls, msg: pb.PartitionTable) -> Route | None:
        """None for version 0 (the member has no table yet); ValueError if malformed.

        Replica indexes point into the message's member list, whatever its order; the
        table itself is rebuilt over sorted names, and its constructor checks the
        fingerprint, so a damaged table is refused rather than routed by.
        """
        if msg.version == 0:
            return None
        names = [m.name for m in msg.members]
        if len(set(names)) != len(names):
            raise ValueError("partition table lists a member twice")
        layout = []
        for p, replicas in enumerate(msg.replicas):
            if not replicas.members or any(i >= len(names) for i in replicas.members):
                raise ValueError(f"partition {p}: replicas must be indexes into members")
            layout.append(tuple(names[i] for i in replicas.members))
        table = PartitionTable(
            msg.version, msg.partition_count, msg.backups, tuple(sorted(names)), tuple(layout)
        )
        addresses = {m.name: m.address for m in msg.members}
        replicas = tuple(
            tuple(addresses[m] for m in table.replicas(p)) for p in range(table.partition_count)
        )
        return cls(table, addresses, tuple(r[0] for r in replicas), replicas)


class Readers:
    """Where each partition's reads go on one turn, for a client that reads from backups:
    turns rotate over the partition's replicas, so reads spread over them while one
    call's reads of a partition still go to one member (one batch). A replica whose
    stream just broke is skipped for the primary."""

    __slots__ = ("avoid", "replicas", "turn")

    def __init__(
        self, replicas: Sequence[Sequence[str]], turn: int, avoid: set[str] | frozenset[str]
    ) -> None:
        self.replicas = replicas
        self.turn = turn
        self.avoid = avoid

    def __len__(self) -> int:
        return len(self.replicas)

    def __getitem__(self, p: int) -> str:
        r = self.replicas[p]
        address = r[(p + self.turn) % len(r)]
        return r[0] if address in self.avoid else address


_CONNECT_FAILURE = re.compile(r"(?:Failed to connect to remote host|failed to connect to all "
                              r"addresses)[^:]*:\s*(?:.*:\s*)?([^:;]+)$")  # fmt: skip


def connect_failure(details: str) -> str:
    """What gRPC's long UNAVAILABLE text says went wrong ("Connection refused"), in brief."""
    found = _CONNECT_FAILURE.search(details.strip())
    return found.group(1).strip() if found else details.strip()


def backoff(attempt: int, base: float, cap: float) -> float:
    """Jittered exponential backoff (half to full of base * 2**attempt, capped)."""
    return min(cap, base * 2**attempt) * (0.5 + random.random() / 2)


# ---- the router ----------------------------------------------------------------------------------
Connect = Callable[[str, ConnectionOptions], AsyncConnection]


class Router:
    """Routes batches to partition owners; the same surface AsyncMap uses from a connection
    (`call`, `unary`, `stats`, `close`), so the maps do not know whether they route."""

    def __init__(
        self,
        seeds: Sequence[str],
        options: ConnectionOptions | None = None,
        *,
        smart: bool = True,
        connect: Connect = AsyncConnection,
    ) -> None:
        """`connect` builds a connection (tests pass a fake). Nothing starts here: the table
        is fetched by the first call, so a client can be made outside a running loop."""
        if not seeds:
            raise ValueError("a router needs at least one seed address")
        self.seeds = list(seeds)
        self.options = options or ConnectionOptions()
        self.smart = smart
        self._connect = connect
        self._member_options = replace(self.options, fail_fast=True)
        self._seed_conns: dict[str, AsyncConnection] = {}
        self.seed = self._seed_conn(self.seeds[0])
        """The seed member's connection (default retries): stats, members, fallback calls."""
        self._conns: dict[str, AsyncConnection] = {}  # member address -> fail-fast connection
        self._retired: set[AsyncConnection] = set()  # members gone from the table, closing
        self._route: Route | None = None
        self._suspects: set[str] = set()  # addresses whose stream just broke
        self._any = ""  # the member that takes keyless ops (SIZE, CLEAR)
        self._discovered = not smart  # a seed answered Table (or routing is off)
        self._unauthenticated = ""  # a seed refused our credentials: what it said
        self._rediscover_at = 0.0
        self._discover_task: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # closers of retired connections
        self._closed = False
        self._reached = False  # some seed has answered once
        self._unreachable = ""  # why no seed could be reached at all, while none ever was
        self._turn = random.randrange(1 << 16)  # read_from_backup: which replica reads next
        self.watchers: dict[int, Any] = {}
        """Watches running on this router (grid/client/watch.py: listeners, near caches),
        by watch id: closed with it."""

    # ---- what the client shows ---------------------------------------------------------------
    @property
    def table(self) -> PartitionTable | None:
        """The table routing follows now; None while in fallback mode."""
        return self._route.table if self._route else None

    @property
    def version(self) -> int:
        return self._route.version if self._route else 0

    @property
    def addresses(self) -> dict[str, str]:
        """Member name -> gRPC address, from the table ({} in fallback mode)."""
        return dict(self._route.addresses) if self._route else {}

    @property
    def discovered(self) -> bool:
        """A seed answered with its table (or routing is off): `route` is what to go by."""
        return self._discovered

    @property
    def route(self) -> Route | None:
        """What routing follows now (None: everything goes to the seed). Replaced whole on
        every change, never mutated, so another thread may read it (grid/client/blocking.py)."""
        return self._route

    def refresh(self) -> None:
        """Fetch the table again soon (a reply said a newer one exists); nothing when routing
        is off, which must go on sending everything to the seed."""
        if self.smart and not self._closed:
            self._refresh()

    async def endpoints(self, address: str, timeout: float) -> pb.EndpointsReply:
        """Where a member's data plane is (its Endpoints over gRPC)."""
        conn = self.seed if address == self.seed.address else self._member(address)
        data, _ = await conn.unary(ENDPOINTS_METHOD, b"", max(0.001, timeout))
        return pb.EndpointsReply.FromString(data)

    async def discover(self, timeout: float | None = None) -> None:
        """Fetch the table now if it has not been (the first call does it anyway)."""
        loop = asyncio.get_running_loop()
        await self._discover(loop.time() + (self.options.timeout if timeout is None else timeout))

    # ---- the AsyncConnection surface ---------------------------------------------------------
    async def call(
        self, ops: Sequence[AnyOp], timeout: float | None = None, idempotent: bool = True
    ) -> list[pb.Result]:
        """Run ops on their owners and return one result per op, in order."""
        if self._closed:
            raise Unavailable("the client is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.options.timeout if timeout is None else timeout)
        if not self._discovered:
            await self._discover(deadline)
            if self._unauthenticated:  # a member refused our token: retrying cannot help
                raise AuthenticationFailed(self._unauthenticated)
            if self._unreachable:  # never reached any seed: say so now, not at the deadline
                raise Unavailable(self._unreachable)
        route = self._route
        if route is None:
            return await self._through_seed(ops, deadline, idempotent)
        if len(ops) == 1 and not self.options.read_from_backup:
            return await self._routed_one(ops, route, deadline, idempotent, loop)
        return await self._routed(ops, deadline, idempotent)

    async def unary(
        self, method: str, request: bytes, timeout: float | None = None
    ) -> tuple[bytes, grpc.aio.Metadata]:
        """A unary call to the seed member, or to another member of the table if the seed
        is unreachable (Members: any member can say who is in the cluster)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.options.timeout if timeout is None else timeout)
        try:
            return await self.seed.unary(method, request, timeout)
        except CallFailed as e:
            if e.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            first: Unavailable = e
        for address in self._route.addresses.values() if self._route else ():
            left = deadline - loop.time()
            if address == self.seed.address or left <= 0:
                continue
            with contextlib.suppress(Unavailable):
                return await self._member(address).unary(method, request, left)
        raise first

    async def stats(self, timeout: float | None = None) -> pb.StatsReply:
        """The seed member's stats (the member this client was pointed at)."""
        return await self.seed.stats(timeout)

    async def close(self) -> None:
        for watcher in list(self.watchers.values()):
            with contextlib.suppress(Exception):
                await watcher.close()
        self._closed = True
        tasks = [self._discover_task, self._refresh_task, self._watch_task, *self._tasks]
        for task in tasks:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)
        conns = {*self._conns.values(), *self._seed_conns.values(), *self._retired}
        self._conns.clear()
        self._retired.clear()
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)

    # ---- connections -------------------------------------------------------------------------
    def _seed_conn(self, address: str) -> AsyncConnection:
        conn = self._seed_conns.get(address)
        if conn is None:
            conn = self._seed_conns[address] = self._connect(address, self.options)
        return conn

    def connection(self, address: str) -> AsyncConnection:
        """The connection to a member (made on first use): watches ride on it."""
        return self._member(address)

    def _member(self, address: str) -> AsyncConnection:
        """The fail-fast connection to a member, made on first use (a channel is cheap and
        its stream opens only when a batch goes out)."""
        conn = self._conns.get(address)
        if conn is None:
            conn = self._conns[address] = self._connect(address, self._member_options)
        return conn

    def _retire(self, keep: set[str]) -> None:
        """Close connections to members no longer in the table, after a grace period so
        that calls already in flight on them finish (or fail over) first."""
        for address in [a for a in self._conns if a not in keep]:
            conn = self._conns.pop(address)
            self._retired.add(conn)
            self._spawn(self._close_later(conn))

    async def _close_later(self, conn: AsyncConnection) -> None:
        try:
            await asyncio.sleep(self.options.timeout)
        finally:
            self._retired.discard(conn)
            await conn.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- discovery and table updates ---------------------------------------------------------
    async def _discover(self, deadline: float) -> None:
        """Ask the seeds for the table, once (shared by concurrent callers), each caller
        waiting no longer than its own deadline; if no seed answers, calls go to the
        first seed as before and the seeds are asked again later."""
        loop = asyncio.get_running_loop()
        if self._discovered or loop.time() < self._rediscover_at:
            return
        task = self._discover_task
        if task is None or task.done():
            task = self._discover_task = loop.create_task(self._ask_seeds())
        await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))

    async def _ask_seeds(self) -> None:
        request = pb.TableRequest().SerializeToString()
        timeout = min(self.options.timeout, DISCOVER_TIMEOUT)
        refused: list[str] = []
        hint = ""
        for address in self.seeds:
            conn = self._seed_conn(address)
            try:
                data, _ = await conn.unary(TABLE_METHOD, request, timeout)
            except CallFailed as e:
                if e.code == grpc.StatusCode.UNIMPLEMENTED:  # an older member: no routing
                    log.info("member %s has no partition table RPC: no smart routing", address)
                    self.seed = conn
                    self._discovered = True
                    return
                if e.code == grpc.StatusCode.UNAUTHENTICATED:
                    self._unauthenticated = str(e)
                elif e.code == grpc.StatusCode.UNAVAILABLE:
                    refused.append(f"{address} ({connect_failure(str(e))})")
                    hint = hint or tls_hint(str(e), self.options.security)
                continue
            except Unavailable:
                continue
            self._reached = True
            self._unreachable = ""
            self.seed = conn
            self._discovered = True
            self._install(data, address)
            self._start_watch(address)
            return
        self._rediscover_at = asyncio.get_running_loop().time() + REDISCOVER_AFTER
        if not self._reached and len(refused) == len(self.seeds):
            self._unreachable = (
                f"cannot reach a grid member at {', '.join(refused)}: is one running there? "
                "Start one with `grid node`, or give the address of one (--address, "
                "GRID_ADDRESS)" + (f"; {hint}" if hint else "")
            )

    def _install(self, data: bytes, source: str) -> bool:
        """Route by this serialized table if it is newer than the one in use; False if not
        installed. A damaged table is logged and ignored: the one in use stays."""
        try:
            msg = pb.PartitionTable.FromString(data)
            if msg.version <= self.version:
                return False
            route = Route.from_proto(msg)
        except (DecodeError, ValueError) as e:
            log.warning("ignoring a malformed partition table from %s: %s", source, e)
            return False
        if route is None:
            return False
        log.debug(
            "partition table %#x from %s: %d members", route.version, source, len(route.addresses)
        )
        self._route = route
        self._suspects.clear()
        live = set(route.addresses.values())
        if self._any not in live:
            self._any = ""
        self._retire(live | set(self.seeds))
        return True

    def _refresh(self) -> asyncio.Task[None]:
        """Fetch the table from some member (one fetch at a time, shared by every caller)."""
        task = self._refresh_task
        if task is None or task.done():
            task = self._refresh_task = asyncio.get_running_loop().create_task(self._fetch())
        return task

    async def _fetch(self) -> None:
        """Ask members (healthy ones first, in random order to spread the load) until one
        answers; install its table if newer."""
        request = pb.TableRequest().SerializeToString()
        for address in self._candidates():
            try:
                data, _ = await self._member(address).unary(TABLE_METHOD, request, FETCH_TIMEOUT)
            except Unavailable:
                continue
            self._install(data, address)
            return

    def _candidates(self) -> list[str]:
        """Members to ask for the table: the table's, healthy first, then the seeds."""
        members = list(self._route.addresses.values()) if self._route else []
        random.shuffle(members)
        members.sort(key=lambda a: a in self._suspects)  # stable: healthy ones first
        return list(dict.fromkeys([*members, *self.seeds]))

    def _start_watch(self, first: str) -> None:
        if self._watch_task is None or self._watch_task.done():
            self._watch_task = asyncio.get_running_loop().create_task(self._watch(first))

    async def _watch(self, first: str) -> None:
        """Follow WatchTable on one member; when its stream ends or breaks, wait (jittered,
        capped backoff) and follow another. Stops when the client closes, or if every
        member asked turns out not to have the RPC."""
        address, attempt = first, 0
        unimplemented: set[str] = set()
        while not self._closed:
            request = pb.TableRequest(known_version=self.version).SerializeToString()
            try:
                async for data in self._member(address).watch(WATCH_METHOD, request):
                    self._install(data, address)
                    attempt = 0
            except CallFailed as e:
                if e.code == grpc.StatusCode.UNIMPLEMENTED:
                    unimplemented.add(address)
                log.debug("table watch on %s: %s", address, e)
            except Exception as e:  # a damaged message: try elsewhere, never die
                log.debug("table watch on %s: %r", address, e)
            candidates = [a for a in self._candidates() if a not in unimplemented]
            if not candidates:
                return
            if address in candidates:  # next one after the member that just failed
                address = candidates[(candidates.index(address) + 1) % len(candidates)]
            else:
                address = candidates[0]
            await asyncio.sleep(backoff(attempt, *WATCH_BACKOFF))
            attempt += 1

    # ---- routed calls ------------------------------------------------------------------------
    def any_address(self, route: Route) -> str:
        """A member for keyless ops: the seed if it is in the table, else any healthy one;
        kept until it fails, so SIZE/CLEAR do not hop around."""
        if self._any and self._any not in self._suspects:
            return self._any
        live = [a for a in route.addresses.values() if a and a not in self._suspects]
        if self.seed.address in live:
            self._any = self.seed.address
        elif live:
            self._any = random.choice(live)
        else:
            self._any = next(iter(route.addresses.values()), self.seed.address)
        return self._any

    async def _send(
        self,
        address: str,
        ops: list[AnyOp],
        deadline: float,
        idempotent: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> list[pb.Result]:
        """`loop`: the running loop, passed down (asyncio.get_running_loop costs a getpid
        system call on Python 3.11)."""
        conn = self._member(address)
        try:
            results = await conn.call(ops, deadline - loop.time(), idempotent)
        except StreamLost:
            raise
        except Unavailable as e:
            if conn.closed and not self._closed:  # retired under us: the member left
                raise StreamLost(f"{address} left the cluster", sent=True) from e
            raise
        self._suspects.discard(address)
        if conn.table_version > self.version:
            self._refresh()  # the member has a newer table: fetch it, do not wait for it
        return results

    def _retry_delay(
        self,
        attempt: int,
        deadline: float,
        results: Sequence[pb.Result | None],
        retry: Sequence[int],
        why: str,
    ) -> float | None:
        """The backoff before the next try, or None when the deadline leaves no room for
        one: then the answers standing (NOT_OWNER, UNAVAILABLE) are final, and an
        operation with no answer at all raises Unavailable."""
        delay = backoff(attempt, self.options.retry_base, self.options.retry_cap)
        if asyncio.get_running_loop().time() + delay < deadline:
            return delay
        if any(results[i] is None for i in retry):
            raise Unavailable(f"no owner answered before the deadline: {why}")
        return None

    async def _through_seed(
        self, ops: Sequence[AnyOp], deadline: float, idempotent: bool
    ) -> list[pb.Result]:
        """Fallback mode: everything goes to the seed, which forwards. Operations it answers
        NOT_OWNER (a partition moving, or the first table not made yet: right after a
        cluster starts) are sent again with backoff until the deadline, as routed calls
        are; once a table turns up (the seed had none when asked), the rest are routed."""
        loop = asyncio.get_running_loop()
        results: list[pb.Result | None] = [None] * len(ops)
        todo: list[int] = list(range(len(ops)))
        attempt = 0
        while True:
            retry: list[int] = []
            try:
                got = await self.seed.call(
                    [ops[i] for i in todo], deadline - loop.time(), idempotent
                )
            except NotOwner as e:  # the whole batch refused: none of it applied
                retry, why = todo, str(e)
            else:
                for i, r in zip(todo, got, strict=True):
                    results[i] = r
                    if r.status == Status.NOT_OWNER:
                        retry.append(i)
                        why = r.error
            if not retry:
                return results  # type: ignore[return-value]  # every slot is filled
            delay = self._retry_delay(attempt, deadline, results, retry, why)
            attempt += 1
            if delay is None:
                return results  # type: ignore[return-value]  # NOT_OWNER stands
            await asyncio.sleep(delay)
            if self._route is None and self.seed.table_version > 0:
                refresh = self._refresh()
                await asyncio.wait({refresh}, timeout=max(0.0, deadline - loop.time()))
            if self._route is not None:
                redone = await self._routed([ops[i] for i in retry], deadline, idempotent)
                for i, r in zip(retry, redone, strict=True):
                    results[i] = r
                return results  # type: ignore[return-value]  # every slot is filled
            todo = retry

    async def _send_groups(
        self,
        ops: Sequence[AnyOp],
        groups: dict[str, list[int]],
        deadline: float,
        idempotent: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> list[object]:
        """Every group to its member at once: per group its results, or the StreamLost or
        NotOwner that stopped it (those `_routed` retries; any other error is returned
        from gather and raised by the caller, or raised here for a single group)."""
        sends = [
            self._send(address, [ops[i] for i in idxs], deadline, idempotent, loop)
            for address, idxs in groups.items()
        ]
        if len(sends) == 1:
            try:
                return [await sends[0]]
            except (StreamLost, NotOwner) as e:
                return [e]
        return await asyncio.gather(*sends, return_exceptions=True)

    async def _routed_one(
        self,
        ops: Sequence[AnyOp],
        route: Route,
        deadline: float,
        idempotent: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> list[pb.Result]:
        """A call of one op (the async get's): `_routed`'s first round without its
        bookkeeping. Anything but an answer to keep (a lost stream, NOT_OWNER, UNAVAILABLE
        to retry) goes on in `_routed` as the outcome of that round."""
        owners = route.owners
        p = op_partition(ops[0], len(owners))
        address = (owners[p] if p is not None else "") or self.any_address(route)
        outcome: list[pb.Result] | StreamLost | NotOwner
        try:
            outcome = await self._send(address, list(ops), deadline, idempotent, loop)
        except (StreamLost, NotOwner) as e:
            outcome = e
        else:
            status = outcome[0].status
            if status != Status.NOT_OWNER and (status != Status.UNAVAILABLE or not idempotent):
                return outcome
        return await self._routed(ops, deadline, idempotent, first=({address: [0]}, [outcome]))

    async def _routed(
        self,
        ops: Sequence[AnyOp],
        deadline: float,
        idempotent: bool,
        first: tuple[dict[str, list[int]], list[object]] | None = None,
    ) -> list[pb.Result]:
        """`first`: the groups and outcomes of a first round already sent (`_routed_one`)."""
        loop = asyncio.get_running_loop()
        results: list[pb.Result | None] = [None] * len(ops)
        todo: list[int] = list(range(len(ops)))
        attempt = 0
        spread = self.options.read_from_backup and all(op.code in READ_OPS for op in ops)
        while True:
            route = self._route
            assert route is not None
            owners: Sequence[str] = route.owners
            outcomes: list[object]
            if first is not None:
                (groups, outcomes), first = first, None
            else:
                if spread:
                    owners = Readers(route.replicas, self._turn, self._suspects)
                    self._turn += 1
                groups = group_by_owner(ops, todo, owners, self.any_address(route))
                outcomes = await self._send_groups(ops, groups, deadline, idempotent, loop)
            retry: list[int] = []
            stale = False
            why = ""
            for (address, idxs), outcome in zip(groups.items(), outcomes, strict=True):
                if isinstance(outcome, StreamLost):
                    if outcome.sent and not idempotent:
                        raise Unavailable(
                            f"connection to {address} lost ({outcome}); the "
                            "operation may or may not have been applied"
                        )
                    self._suspects.add(address)
                    retry.extend(idxs)
                    stale, why = True, str(outcome)
                elif isinstance(outcome, NotOwner):  # the whole batch refused: none applied
                    retry.extend(idxs)
                    stale, why = True, str(outcome)
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    assert isinstance(outcome, list)
                    for i, r in zip(idxs, outcome, strict=True):
                        results[i] = r
                        if r.status == Status.NOT_OWNER:
                            retry.append(i)
                            stale, why = True, r.error
                        elif r.status == Status.UNAVAILABLE and idempotent:
                            retry.append(i)
                            why = r.error
            if not retry:
                return results  # type: ignore[return-value]  # every slot is filled
            delay = self._retry_delay(attempt, deadline, results, retry, why)
            attempt += 1
            if delay is None:
                return results  # type: ignore[return-value]  # NOT_OWNER/UNAVAILABLE stand
            before = self.version
            if stale:
                refresh = self._refresh()
                await asyncio.wait({refresh}, timeout=max(0.0, deadline - loop.time()))
            if self.version == before:  # nothing new to go by yet: give the cluster time
                await asyncio.sleep(delay)
            todo = sorted(retry)
