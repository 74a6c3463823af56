"""The smart client's router without a network.

Two halves. The pure functions (seed parsing, which partition an op belongs to,
SCAN cursor decoding, grouping ops by owner, decoding a wire table) are checked
directly, with hypothesis where a property says more than examples. The Router
itself runs against an in-memory fake cluster (`FakeCluster`): members own
partitions by a real `build_table` placement, answer NOT_OWNER for what they do
not own (no forwarding, so every misroute is visible), die on demand (a
fail-fast connection then raises StreamLost, as the real one does) and push
tables through a WatchTable-like stream. The fake speaks the same surface the
router uses from AsyncConnection (call, unary, watch, close, table_version).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import grpc
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grid.client.connection import CallFailed, ConnectionOptions, StreamLost
from grid.client.router import (
    TABLE_METHOD,
    WATCH_METHOD,
    Readers,
    Route,
    Router,
    cursor_partition,
    group_by_owner,
    op_partition,
    parse_seeds,
)
from grid.errors import Status, Unavailable
from partitioning import PartitionTable, PlacementConfig, build_table, partition_of
from proto import grid_pb2 as pb

T = TypeVar("T")
P = 16  # partitions in the fake cluster: small, so every member owns several
FAST = ConnectionOptions(timeout=2.0, retry_base=0.005, retry_cap=0.02)


def run(coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def to_proto(
    table: PartitionTable, addresses: dict[str, str], order: Sequence[str] | None = None
) -> pb.PartitionTable:
    """The wire form of a table, members listed in `order` (the router must not care)."""
    names = list(order or table.members)
    index = {n: i for i, n in enumerate(names)}
    return pb.PartitionTable(
        version=table.version,
        partition_count=table.partition_count,
        backups=table.backups,
        members=[pb.TableMember(name=n, address=addresses[n]) for n in names],
        replicas=[pb.Replicas(members=[index[m] for m in r]) for r in table.replica_lists],
    )


def addr(name: str) -> str:
    return f"{name}.test:5701"


# ---- pure functions ------------------------------------------------------------------------------
def test_parse_seeds() -> None:
    assert parse_seeds("h:1") == ["h:1"]
    assert parse_seeds(" h:1, h:2 ,,h:1") == ["h:1", "h:2"]
    assert parse_seeds(["h:2", "h:1"]) == ["h:2", "h:1"]
    with pytest.raises(ValueError):
        parse_seeds(" , ")
    with pytest.raises(TypeError):
        parse_seeds([b"h:1"])  # type: ignore[list-item]


@given(st.integers(0, P - 1), st.binary(max_size=64))
def test_cursor_partition_reads_what_the_member_writes(part: int, last: bytes) -> None:
    assert cursor_partition(msgpack.packb([part, last]), P) == part


@given(st.binary(max_size=40))
def test_cursor_partition_never_raises(cursor: bytes) -> None:
    p = cursor_partition(cursor, P)
    assert p is None or 0 <= p < P


def test_cursor_partition_edges() -> None:
    assert cursor_partition(b"", P) == 0
    assert cursor_partition(msgpack.packb([P, b""]), P) is None  # out of range
    assert cursor_partition(msgpack.packb([-1, b""]), P) is None
    assert cursor_partition(msgpack.packb(["1", b""]), P) is None
    assert cursor_partition(msgpack.packb([True, b""]), P) is None
    assert cursor_partition(msgpack.packb([1, b"", 3]), P) is None


def test_op_partition() -> None:
    for code in (pb.GET, pb.PUT, pb.DELETE, pb.EXPIRE, pb.TTL, pb.CONTAINS, pb.INCR, pb.TOUCH):
        op = pb.Op(code=code, map="m", key=b"user:{42}:x")
        assert op_partition(op, P) == partition_of(b"user:{42}:x", P) == partition_of(b"42", P)
    assert op_partition(pb.Op(code=pb.SCAN, map="m", cursor=msgpack.packb([5, b"k"])), P) == 5
    assert op_partition(pb.Op(code=pb.SCAN, map="m"), P) == 0
    for code in (pb.SIZE, pb.CLEAR, pb.OP_UNSPECIFIED, 99):
        assert op_partition(pb.Op(code=code, map="m"), P) is None


keys = st.binary(min_size=1, max_size=12)
op_lists = st.lists(
    st.one_of(
        keys.map(lambda k: pb.Op(code=pb.GET, map="m", key=k)),
        keys.map(lambda k: pb.Op(code=pb.PUT, map="m", key=k, value=b"v")),
        st.just(pb.Op(code=pb.SIZE, map="m")),
        st.integers(0, P - 1).map(
            lambda p: pb.Op(code=pb.SCAN, map="m", cursor=msgpack.packb([p, b""]))
        ),
    ),
    max_size=60,
)
owner_lists = st.lists(st.sampled_from(["a:1", "b:1", "c:1", ""]), min_size=P, max_size=P)


@given(op_lists, owner_lists)
def test_group_by_owner_sends_every_op_once_to_its_owner(
    ops: list[pb.Op], owners: list[str]
) -> None:
    groups = group_by_owner(ops, range(len(ops)), owners, "any:1")
    flat = sorted(i for idxs in groups.values() for i in idxs)
    assert flat == list(range(len(ops)))  # each op exactly once
    for address, idxs in groups.items():
        assert idxs == sorted(idxs)  # order kept inside a group
        for i in idxs:
            p = op_partition(ops[i], P)
            expected = (owners[p] if p is not None else "") or "any:1"
            assert address == expected


def test_group_by_owner_takes_a_subset() -> None:
    ops = [pb.Op(code=pb.SIZE, map="m")] * 5
    assert group_by_owner(ops, [1, 3], ["a:1"] * P, "x:1") == {"x:1": [1, 3]}


# ---- decoding a wire table -----------------------------------------------------------------------
NAMES = ("member-1", "member-2", "member-3")
ADDRESSES = {n: addr(n) for n in NAMES}


def table3(epoch: int = 1, names: Sequence[str] = NAMES) -> PartitionTable:
    return build_table(names, epoch, PlacementConfig(partition_count=P, backups=1))


@given(st.permutations(NAMES))
def test_route_from_proto_any_member_order(order: list[str]) -> None:
    table = table3()
    route = Route.from_proto(to_proto(table, ADDRESSES, order))
    assert route is not None
    assert route.table == table
    assert route.addresses == ADDRESSES
    assert route.owners == tuple(ADDRESSES[table.owner(p)] for p in range(P))


def test_reads_from_backups_rotate_over_replicas_and_skip_suspects() -> None:
    """read_from_backup: on successive turns each partition's reads visit every replica;
    within a turn a partition has one reader (its reads stay in one batch); a replica
    whose stream just broke is replaced by the primary."""
    table = table3()
    route = Route.from_proto(to_proto(table, ADDRESSES))
    assert route is not None
    for p in range(P):
        replicas = {ADDRESSES[m] for m in table.replicas(p)}
        seen = {Readers(route.replicas, turn, set())[p] for turn in range(len(replicas))}
        assert seen == replicas
    gets = [pb.Op(code=pb.GET, key=f"k{i}".encode()) for i in range(200)]
    for turn in range(3):
        readers = Readers(route.replicas, turn, set())
        groups = group_by_owner(gets, range(len(gets)), readers, "any:1")
        for address, idx in groups.items():
            for i in idx:
                p = partition_of(gets[i].key, P)
                assert address == readers[p] and address in route.replicas[p]
    backup = route.replicas[0][1]
    assert Readers(route.replicas, 0, {backup})[0] == route.owners[0]
    assert Readers(route.replicas, 1, {backup})[0] == route.owners[0]


def test_route_from_proto_refuses_damage() -> None:
    assert Route.from_proto(pb.PartitionTable()) is None  # version 0: no table yet
    good = to_proto(table3(), ADDRESSES)
    for damage in (
        lambda m: m.replicas[3].members.__setitem__(0, (m.replicas[3].members[0] + 1) % 3),
        lambda m: m.replicas[0].members.append(7),  # index out of range
        lambda m: m.replicas[0].ClearField("members"),
        lambda m: m.replicas.pop(),
        lambda m: setattr(m, "version", m.version + 1),
        lambda m: m.members.append(pb.TableMember(name="member-1", address="x:1")),
    ):
        msg = pb.PartitionTable()
        msg.CopyFrom(good)
        damage(msg)
        with pytest.raises(ValueError):
            Route.from_proto(msg)


# ---- the router against a fake cluster -----------------------------------------------------------
class FakeMember:
    def __init__(self, name: str) -> None:
        self.name = name
        self.address = addr(name)
        self.dead = False
        self.ops = 0


class FakeCluster:
    """Members that own partitions by `table`; `pushed` is what WatchTable streams send
    (it may lag `table`, to leave a client stale on purpose)."""

    def __init__(self, names: Sequence[str] = NAMES) -> None:
        self.members = {n: FakeMember(n) for n in names}
        self.by_address = {m.address: m for m in self.members.values()}
        self.data: dict[bytes, bytes] = {}
        self.counters: dict[bytes, int] = {}
        self.unimplemented = False
        self.tableless = False  # members answer Table with version 0 (no table yet)
        self.told: PartitionTable | None = None  # if set, Table answers this, not `table`
        self.table: PartitionTable | None = table3()
        self.pushed = self.table
        self.changed = asyncio.Event()
        self.conns: list[FakeConn] = []
        self.table_calls = 0

    def table_bytes(self, table: PartitionTable | None) -> bytes:
        if table is None:
            return pb.PartitionTable().SerializeToString()
        return to_proto(table, {n: m.address for n, m in self.members.items()}).SerializeToString()

    def install(self, table: PartitionTable, push: bool = True) -> None:
        self.table = table
        if push:
            self.pushed = table
        self._wake()

    def kill(self, name: str) -> None:
        self.members[name].dead = True
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def connect(self, address: str, options: ConnectionOptions) -> FakeConn:
        conn = FakeConn(self, address, options)
        self.conns.append(conn)
        return conn

    def execute(self, member: FakeMember, op: pb.Op) -> pb.Result:
        assert self.table is not None
        if op.code in (pb.SIZE, pb.CLEAR):
            return pb.Result(count=len(self.data))
        owner = self.table.owner(partition_of(op.key, P))
        if owner != member.name:
            return pb.Result(status=Status.NOT_OWNER, error=f"{owner} owns it")
        member.ops += 1
        if op.code == pb.PUT:
            self.data[op.key] = op.value
            return pb.Result()
        if op.code == pb.GET:
            if op.key not in self.data:
                return pb.Result(status=Status.NOT_FOUND)
            return pb.Result(value=self.data[op.key])
        if op.code == pb.INCR:
            self.counters[op.key] = self.counters.get(op.key, 0) + op.delta
            return pb.Result(count=self.counters[op.key])
        raise AssertionError(f"fake cannot run op {op.code}")


class FakeConn:
    def __init__(self, cluster: FakeCluster, address: str, options: ConnectionOptions) -> None:
        self.cluster = cluster
        self.address = address
        self.options = options
        self.table_version = 0
        self.closed = False
        self.batches: list[list[pb.Op]] = []

    def _member(self) -> FakeMember | None:
        m = self.cluster.by_address.get(self.address)
        return None if m is None or m.dead else m

    async def call(
        self, ops: Sequence[pb.Op], timeout: float | None = None, idempotent: bool = True
    ) -> list[pb.Result]:
        if self.closed:
            raise Unavailable("the client is closed")
        await asyncio.sleep(0)
        member = self._member()
        if member is None:
            if self.options.fail_fast:
                raise StreamLost(f"connection to {self.address} lost", sent=True)
            raise Unavailable(f"{self.address} unavailable")
        self.batches.append(list(ops))
        if self.cluster.table is not None:
            self.table_version = self.cluster.table.version
        return [self.cluster.execute(member, op) for op in ops]

    async def unary(
        self, method: str, request: bytes, timeout: float | None = None
    ) -> tuple[bytes, tuple[()]]:
        await asyncio.sleep(0)
        if self._member() is None:
            raise CallFailed(f"{self.address} down", grpc.StatusCode.UNAVAILABLE)
        if self.cluster.unimplemented:
            raise CallFailed("no such method", grpc.StatusCode.UNIMPLEMENTED)
        assert method == TABLE_METHOD
        self.cluster.table_calls += 1
        table = None if self.cluster.tableless else self.cluster.told or self.cluster.table
        return self.cluster.table_bytes(table), ()

    async def watch(self, method: str, request: bytes) -> AsyncIterator[bytes]:
        assert method == WATCH_METHOD
        known = pb.TableRequest.FromString(request).known_version
        while True:
            if self._member() is None:
                raise CallFailed(f"{self.address} down", grpc.StatusCode.UNAVAILABLE)
            if self.cluster.unimplemented:
                raise CallFailed("no such method", grpc.StatusCode.UNIMPLEMENTED)
            pushed = None if self.cluster.tableless else self.cluster.pushed
            if pushed is not None and pushed.version > known:
                known = pushed.version
                yield self.cluster.table_bytes(pushed)
            await self.cluster.changed.wait()

    async def stats(self, timeout: float | None = None) -> pb.StatsReply:
        return pb.StatsReply(member="fake", address=self.address)

    async def close(self) -> None:
        self.closed = True


def put(key: bytes, value: bytes = b"v") -> pb.Op:
    return pb.Op(code=pb.PUT, map="m", key=key, value=value)


def get(key: bytes) -> pb.Op:
    return pb.Op(code=pb.GET, map="m", key=key)


KEYS = [f"k{i}".encode() for i in range(300)]


async def until(condition: Callable[[], bool], timeout: float) -> None:
    """Poll a condition on the running loop (the router works in background tasks);
    return when it holds, or at the timeout (the caller's assertion then says what)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.01)


def make_router(cluster: FakeCluster, seeds: Sequence[str] | None = None) -> Router:
    return Router(
        list(seeds or [addr("member-1")]),
        FAST,
        connect=cluster.connect,  # type: ignore[arg-type]
    )


def test_one_seed_finds_every_member_and_sends_ops_to_owners() -> None:
    async def main() -> None:
        cluster = FakeCluster()
        router = make_router(cluster)
        results = await router.call([put(k, k) for k in KEYS])
        assert all(r.status == Status.OK for r in results)
        assert router.table == cluster.table
        assert router.addresses == {n: addr(n) for n in NAMES}
        got = await router.call([get(k) for k in reversed(KEYS)])
        assert [r.value for r in got] == list(reversed(KEYS))  # reassembled in order
        assert all(m.ops > 0 for m in cluster.members.values())  # every member served
        assert sum(m.ops for m in cluster.members.values()) == 2 * len(KEYS)  # no misroute
        await router.close()

    run(main())


def test_stale_table_not_owner_refreshes_and_retries() -> None:
    async def main() -> None:
        cluster = FakeCluster()
        router = make_router(cluster)
        await router.call([put(k) for k in KEYS])
        # members 1 and 2 only, and the watch stream is not told: the client is stale
        cluster.install(table3(2, NAMES[:2]), push=False)
        results = await router.call([get(k) for k in KEYS])
        assert all(r.status == Status.OK for r in results)
        assert router.version == cluster.table.version  # type: ignore[union-attr]
        await router.close()

    run(main())


def test_watch_installs_pushed_tables_and_retires_connections() -> None:
    async def main() -> None:
        cluster = FakeCluster()
        router = make_router(cluster)
        await router.call([put(k) for k in KEYS])
        member3 = next(c for c in cluster.conns if c.address == addr("member-3"))
        newer = table3(2, NAMES[:2])
        cluster.install(newer)
        await until(lambda: router.version == newer.version, 1)
        assert router.table == newer
        assert addr("member-3") not in router.addresses.values()
        assert member3 in router._retired  # closed after a grace period, not under a call
        await router.close()
        assert member3.closed

    run(main())


def test_dead_owner_idempotent_ops_retry_until_the_table_moves() -> None:
    async def main() -> None:
        cluster = FakeCluster()
        router = make_router(cluster)
        await router.call([put(k, k) for k in KEYS])
        cluster.kill("member-3")

        async def promote() -> None:
            await asyncio.sleep(0.1)
            cluster.install(table3(2, NAMES[:2]))

        task = asyncio.create_task(promote())
        got = await router.call([get(k) for k in KEYS], timeout=3)
        await task
        assert [r.value for r in got] == KEYS
        await router.close()

    run(main())


def test_incr_is_not_resent_after_a_lost_stream_but_is_after_not_owner() -> None:
    async def main() -> None:
        cluster = FakeCluster()
        router = make_router(cluster)
        await router.call([put(b"warm")])
        table = cluster.table
        assert table is not None
        key = next(k for k in KEYS if table.owner(partition_of(k, P)) == "member-3")
        incr = pb.Op(code=pb.INCR, map="m", key=key, delta=1)
        cluster.kill("member-3")
        with pytest.raises(Unavailable, match="may or may not have been applied"):
            await router.call([incr], idempotent=False)
        # a table that moves the key away while the client is stale: NOT_OWNER means not
        # applied, so incr goes again, to the new owner, and counts once
        cluster.members["member-3"].dead = False
        cluster.install(table3(2, NAMES[:2]), push=False)
        (r,) = await router.call([incr], idempotent=False)
        assert r.status == Status.OK and r.count == 1
        await router.close()

    run(main())


def test_not_owner_until_the_deadline_returns_not_owner() -> None:
    """A member that keeps refusing (its table equals the client's): the answer stands."""

    async def main() -> None:
        cluster = FakeCluster()
        router = make_router(cluster)
        await router.call([put(b"warm")])
        table = cluster.table
        assert table is not None
        key = next(k for k in KEYS if table.owner(partition_of(k, P)) == "member-2")
        cluster.told = table  # members tell clients the old table...
        cluster.install(table3(2, ("member-1", "member-3")), push=False)  # ...but serve this
        (r,) = await router.call([get(key)], timeout=0.3)
        assert r.status == Status.NOT_OWNER
        assert cluster.table_calls >= 1  # it did ask for a newer table
        await router.close()

    run(main())


def test_keyless_ops_go_to_one_live_member() -> None:
    async def main() -> None:
        cluster = FakeCluster()
        router = make_router(cluster)
        await router.call([put(k) for k in KEYS[:10]])
        (r,) = await router.call([pb.Op(code=pb.SIZE, map="m")])
        assert r.count == 10
        seed = next(c for c in cluster.conns if c.address == addr("member-1") and c.batches)
        assert [op.code for op in seed.batches[-1]] == [pb.SIZE]  # the seed takes them
        cluster.kill("member-1")
        (r,) = await router.call([pb.Op(code=pb.SIZE, map="m")])
        assert r.count == 10  # another member took over
        await router.close()

    run(main())


def test_first_seed_down_second_answers() -> None:
    async def main() -> None:
        cluster = FakeCluster()
        cluster.kill("member-1")
        router = make_router(cluster, [addr("member-1"), addr("member-2")])
        table = cluster.table
        assert table is not None
        key = next(k for k in KEYS if table.owner(partition_of(k, P)) != "member-1")
        assert (await router.call([put(key)]))[0].status == Status.OK
        assert router.seed.address == addr("member-2")
        assert router.table == cluster.table
        await router.close()

    run(main())


@pytest.mark.parametrize("why", ["no table yet", "old member", "routing off"])
def test_fallback_sends_everything_to_the_seed(why: str) -> None:
    async def main() -> None:
        cluster = FakeCluster()
        cluster.table = build_table(["member-1"], 1, PlacementConfig(partition_count=P))
        if why == "no table yet":  # the member still answers every op (it owns all)
            cluster.tableless = True
        elif why == "old member":
            cluster.unimplemented = True
        router = Router(
            [addr("member-1")],
            FAST,
            smart=why != "routing off",
            connect=cluster.connect,  # type: ignore[arg-type]
        )
        await router.call([put(k) for k in KEYS[:50]])
        assert router.table is None
        used = [c for c in cluster.conns if c.batches]
        assert [(c.address, c.options.fail_fast) for c in used] == [(addr("member-1"), False)]
        await router.close()

    run(main())


def test_no_table_yet_then_the_watch_delivers_one() -> None:
    async def main() -> None:
        cluster = FakeCluster()
        cluster.tableless = True
        router = make_router(cluster)
        await router.discover()
        assert router.table is None
        cluster.tableless = False
        cluster.install(table3())
        await until(lambda: router.table is not None, 1)
        assert router.table == cluster.table
        await router.close()

    run(main())


def test_watch_moves_to_another_member_when_its_stream_breaks() -> None:
    async def main() -> None:
        cluster = FakeCluster()
        router = make_router(cluster)
        await router.discover()
        cluster.kill("member-1")  # the member the watch follows
        await asyncio.sleep(0.05)
        newer = table3(2, NAMES[1:])
        cluster.install(newer)
        await until(lambda: router.version == newer.version, 6)
        assert router.table == newer
        await router.close()

    run(main())


def test_concurrent_failures_share_one_table_fetch() -> None:
    async def main() -> None:
        cluster = FakeCluster()
        router = make_router(cluster)
        await router.call([put(k) for k in KEYS])
        cluster.install(table3(2, NAMES[:2]), push=False)
        before = cluster.table_calls
        rng = random.Random(7)
        results = await asyncio.gather(*(router.call([get(rng.choice(KEYS))]) for _ in range(50)))
        assert all(r.status == Status.OK for (r,) in results)
        assert cluster.table_calls - before <= 3
        await router.close()

    run(main())


def test_closed_router_raises() -> None:
    async def main() -> None:
        cluster = FakeCluster()
        router = make_router(cluster)
        await router.call([put(b"x")])
        await router.close()
        with pytest.raises(Unavailable, match="closed"):
            await router.call([get(b"x")])
        assert all(c.closed for c in cluster.conns)

    run(main())
