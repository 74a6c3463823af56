"""Partitioning, forwarding and migration with real member processes on loopback (issue 5).

Members are `grid node` processes started by grid.harness.cluster.LocalCluster, member-1
the only gossip seed, default settings (271 partitions, backups=1,
max_forward_hops=2). Where data lives is asked of the members themselves: the
admin RPC `Grid/LocalKeys` says per key whether a member holds it and in which
role, `Grid/Table` gives the partition table each member routes by, and
`Grid/Stats` says whether partitions are still moving. Nothing is mocked.

- churn: writers and readers keep going while a 4th member joins and then one
  leaves gracefully (SIGTERM); no acknowledged key ever reads NOT_FOUND (or an
  older value), and every acknowledged write is there afterwards;
- placement: 20,000 keys written through member-1 alone sit on exactly the
  primary and the backup the table names, and nowhere else; so do keys written
  in every partition after the table settled (they reach the backups only
  through the live replication streams);
- forwarding: a client with no table at all (raw Execute to a member that does
  not own the key) gets every operation right; at max_forward_hops the member
  answers NOT_OWNER with a reason; SIZE/CLEAR through one member count the whole
  map and SCAN through one member returns every key exactly once;
- failover: kill -9 of one of three members; its partitions' first backups
  become primaries and every key is still readable, then the replica count is
  restored.

Every wait is a bounded poll; every process is stopped in a `finally`, also when
a test fails. Measured times and counts are printed (pytest -s).
"""

from __future__ import annotations

import asyncio
import collections
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import msgpack
import pytest

import grid
from grid.client.keys import encode_key
from grid.harness.cluster import LocalCluster, MemberProcess
from grid.member.placement.routing import table_from_proto
from partitioning import PartitionTable, partition_of
from proto import grid_pb2 as pb
from tests.integration.support import execute, live, raw_channel, wait_until

pytestmark = pytest.mark.integration

TABLE = "/grid.v1.Grid/Table"
WATCH_TABLE = "/grid.v1.Grid/WatchTable"
LOCAL_KEYS = "/grid.v1.Grid/LocalKeys"
STATS = "/grid.v1.Grid/Stats"
EXECUTE = "/grid.v1.Grid/Execute"
PARTITIONS = 271
MAX_FORWARD_HOPS = 2  # the default
ABSENT, PRIMARY, BACKUP, STRAY = 0, 1, 2, 3  # LocalKeysReply roles
ROLE_NAMES = {ABSENT: "absent", PRIMARY: "primary", BACKUP: "backup", STRAY: "stray"}


# ---- admin RPCs over cached channels -------------------------------------------------------------
class Admin:
    """Raw Table/LocalKeys/Stats/Execute calls, one channel per member kept open for polls."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.Channel] = {}

    def _unary(self, address: str, method: str, request: bytes, timeout: float = 5.0) -> bytes:
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = raw_channel(address)
        return ch.unary_unary(method)(request, timeout=timeout)

    def table(self, address: str) -> tuple[PartitionTable | None, dict[str, str]]:
        msg = pb.PartitionTable.FromString(
            self._unary(address, TABLE, pb.TableRequest().SerializeToString())
        )
        if not msg.version:
            return None, {}
        return table_from_proto(msg)

    def stats(self, address: str) -> pb.StatsReply:
        return pb.StatsReply.FromString(
            self._unary(address, STATS, pb.StatsRequest().SerializeToString())
        )

    def roles(self, address: str, map_name: str, keys: Sequence[bytes]) -> list[int]:
        roles: list[int] = []
        for i in range(0, len(keys), 5000):
            request = pb.LocalKeysRequest(map=map_name, keys=keys[i : i + 5000])
            reply = pb.LocalKeysReply.FromString(
                self._unary(address, LOCAL_KEYS, request.SerializeToString(), timeout=20)
            )
            roles.extend(reply.roles)
        assert len(roles) == len(keys)
        return roles

    def execute(self, address: str, ops: Sequence[pb.Op], hops: int = 0) -> pb.BatchReply:
        request = pb.BatchRequest(id=1, ops=ops, hops=hops)
        return pb.BatchReply.FromString(
            self._unary(address, EXECUTE, request.SerializeToString(), timeout=15)
        )

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()


@pytest.fixture(scope="module")
def admin() -> Iterator[Admin]:
    a = Admin()
    try:
        yield a
    finally:
        a.close()


def settled(admin: Admin, members: Sequence[MemberProcess]) -> PartitionTable | None:
    """The table, once partitions stopped moving: every member has the same table, it names
    exactly these members and gives each of them primaries, every partition has its full
    replica count, the one coordinator has nothing pending and no member is being filled.
    None while that is not so (or a member is busy)."""
    try:
        stats = [admin.stats(m.address) for m in members]
        tables = [admin.table(m.address)[0] for m in members]
    except grpc.RpcError:
        return None
    table = tables[0]
    names = {m.name for m in members}
    coordinators = [s for s in stats if s.migration.coordinator]
    if (
        table is None
        or any(t is None or t.version != table.version for t in tables)
        or any(s.migration.table_version != table.version for s in stats)
        or set(table.members) != names
        or any(not table.partitions_of(n).primary for n in names)
        or any(len(r) != min(1 + table.backups, len(names)) for r in table.replica_lists)
        or len(coordinators) != 1
        or coordinators[0].migration.pending != 0
        or any(s.migration.in_flight != 0 for s in stats)
    ):
        return None
    return table


def wait_settled(
    admin: Admin, members: Sequence[MemberProcess], timeout: float = 60.0
) -> tuple[PartitionTable, float]:
    t0 = time.monotonic()
    table = wait_until(
        lambda: settled(admin, members),
        timeout,
        0.1,
        f"{len(members)} members to settle on one table with nothing moving",
    )
    return table, time.monotonic() - t0


def expected_roles(table: PartitionTable, member: str, key: bytes) -> int:
    replicas = table.replicas(partition_of(key, table.partition_count))
    if replicas[0] == member:
        return PRIMARY
    return BACKUP if member in replicas[1:] else ABSENT


@dataclass
class Placement:
    """What every member said about every key, against what the table says."""

    table: PartitionTable
    keys: list[bytes]
    observed: dict[str, list[int]]  # member -> role per key
    wrong_primary: list[tuple[int, str]] = field(default_factory=list)  # (partition, what)
    wrong_replicas: list[tuple[int, str]] = field(default_factory=list)

    def describe(self, problems: list[tuple[int, str]], limit: int = 5) -> str:
        parts = sorted({p for p, _ in problems})
        examples = "; ".join(what for _, what in problems[:limit])
        return f"{len(problems)} of {len(self.keys)} keys in partitions {parts}, e.g. {examples}"


def placement(
    admin: Admin, members: Sequence[MemberProcess], map_name: str, keys: list[bytes]
) -> Placement:
    """Ask every member which of `keys` it holds (LocalKeys) and compare with the table.

    wrong_primary: the table's primary does not hold the key as primary, or another member
    claims to. wrong_replicas: any member whose role differs from the table's (primary on
    the primary, backup on each backup, absent everywhere else: no stray copies)."""
    table, _ = admin.table(members[0].address)
    assert table is not None
    observed = {m.name: admin.roles(m.address, map_name, keys) for m in members}
    result = Placement(table, keys, observed)
    for i, key in enumerate(keys):
        p = partition_of(key, table.partition_count)
        owner = table.owner(p)
        primaries = [n for n, roles in observed.items() if roles[i] == PRIMARY]
        seen = {n: ROLE_NAMES[roles[i]] for n, roles in observed.items()}
        want = {n: ROLE_NAMES[expected_roles(table, n, key)] for n in observed}
        if primaries != [owner]:
            result.wrong_primary.append((p, f"{key!r} (p{p}, table primary {owner}): {seen}"))
        if seen != want:
            result.wrong_replicas.append((p, f"{key!r} (p{p}): held {seen}, table says {want}"))
    return result


def check_placement(
    admin: Admin,
    members: Sequence[MemberProcess],
    map_name: str,
    keys: list[bytes],
    timeout: float = 15.0,
) -> Placement:
    """Primaries must be exact at once (the cluster has settled); backups are filled
    asynchronously and stray copies dropped after a table change, so every replica is
    polled for (bounded) before it must be exact too."""
    first = placement(admin, members, map_name, keys)
    assert not first.wrong_primary, "keys not on their primary: " + first.describe(
        first.wrong_primary
    )
    result = first
    deadline = time.monotonic() + timeout
    while result.wrong_replicas and time.monotonic() < deadline:
        time.sleep(0.2)
        result = placement(admin, members, map_name, keys)
    assert result.table.version == first.table.version, "the table changed during the check"
    assert not result.wrong_primary, "keys not on their primary: " + result.describe(
        result.wrong_primary
    )
    assert not result.wrong_replicas, "keys not on exactly their replicas: " + result.describe(
        result.wrong_replicas
    )
    return result


# ---- churn: a member joins, another leaves, under load -------------------------------------------
@dataclass
class History:
    """Acknowledged writes and what readers saw. Values of a key only ever increase."""

    acked: dict[str, int] = field(default_factory=dict)  # key -> last acknowledged value
    tail: dict[str, set[int]] = field(default_factory=lambda: collections.defaultdict(set))
    acked_keys: list[str] = field(default_factory=list)  # every key acknowledged once, in order
    writes: int = 0
    write_errors: list[str] = field(default_factory=list)
    reads: int = 0
    read_errors: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    phase: str = "before the join"
    slowest_write: float = 0.0


async def writer(
    m: grid.AsyncMap, keys: list[str], history: History, stop: threading.Event
) -> None:
    """Sequential puts over its own keys with increasing values per key. An acknowledged put
    is recorded; a failed one is not (it may or may not have been applied: `tail`)."""
    value = dict.fromkeys(keys, 0)
    i = 0
    while not stop.is_set():
        key = keys[i % len(keys)]
        i += 1
        value[key] += 1
        v = value[key]
        t0 = time.monotonic()
        try:
            await m.put(key, v)
        except grid.GridError as e:
            history.write_errors.append(f"{history.phase}: {key}={v}: {e!r}")
            history.tail[key].add(v)
            await asyncio.sleep(0.05)
            continue
        history.slowest_write = max(history.slowest_write, time.monotonic() - t0)
        if key not in history.acked:
            history.acked_keys.append(key)
        history.acked[key] = v
        history.tail.pop(key, None)
        history.writes += 1
    # leave no key whose last attempt is unacknowledged, if the cluster lets us (bounded)
    for key in keys:
        for _ in range(20):
            if not history.tail.get(key):
                break
            value[key] += 1
            try:
                await m.put(key, value[key])
            except grid.GridError as e:
                history.write_errors.append(f"final: {key}={value[key]}: {e!r}")
                history.tail[key].add(value[key])
                await asyncio.sleep(0.1)
                continue
            history.acked[key] = value[key]
            history.tail.pop(key, None)
            history.writes += 1


async def reader(m: grid.AsyncMap, history: History, stop: threading.Event, seed: int) -> None:
    """Reads keys acknowledged before the read started: never NOT_FOUND, never older."""
    rng = random.Random(seed)
    while not stop.is_set():
        if not history.acked_keys:
            await asyncio.sleep(0.01)
            continue
        key = rng.choice(history.acked_keys)
        before = history.acked[key]
        try:
            got = await m.get(key)
        except grid.GridError as e:
            history.read_errors.append(f"{history.phase}: {key}: {e!r}")
            await asyncio.sleep(0.05)
            continue
        history.reads += 1
        if got is None:
            history.not_found.append(f"{history.phase}: {key} (acknowledged {before})")
        elif got < before:
            history.stale.append(f"{history.phase}: {key} read {got}, acknowledged {before}")


class Load(threading.Thread):
    """Writers and readers on an event loop of their own, until `stop` is set.

    Two clients: a smart one seeded with member-1 (its table goes stale at every change
    and it must catch up), and a plain one (smart_routing=False) talking only to a member
    that stays, which forwards everything it does not own."""

    def __init__(self, smart_seed: str, plain_seed: str, history: History) -> None:
        super().__init__(daemon=True, name="partitioning-load")
        self.smart_seed = smart_seed
        self.plain_seed = plain_seed
        self.history = history
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self.main())
        except BaseException as e:  # reported by the test
            self.error = e

    async def main(self) -> None:
        h, stop = self.history, self.stop
        async with (
            grid.AsyncClient(self.smart_seed, timeout=10) as smart,
            grid.AsyncClient(self.plain_seed, timeout=10, smart_routing=False) as plain,
        ):
            sm, pm = smart.map(CHURN_MAP), plain.map(CHURN_MAP)
            tasks = [writer(sm, [f"s{w}-k{k}" for k in range(16)], h, stop) for w in range(6)]
            tasks += [writer(pm, [f"p{w}-k{k}" for k in range(16)], h, stop) for w in range(2)]
            tasks += [reader(sm, h, stop, seed=r) for r in range(2)]
            tasks += [reader(pm, h, stop, seed=10 + r) for r in range(2)]
            await asyncio.gather(*tasks)


CHURN_MAP = "churn"
PRELOAD = {f"pre-{i}": f"v{i}" for i in range(10_000)}
"""Written before the load, never changed: migrations move snapshots, not just live keys."""


@pytest.fixture
def churn_cluster(no_grid_env: None, tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(3, log_dir=tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.stop(grace=10)


def forwarding_counters(admin: Admin, members: Sequence[MemberProcess]) -> dict[str, tuple]:
    """Per member: (operations forwarded to their owner, operations answered NOT_OWNER)."""
    out = {}
    for m in members:
        s = admin.stats(m.address).migration
        out[m.name] = (s.forwarded, s.not_owner)
    return out


@pytest.mark.parametrize(
    "leaving",
    [
        pytest.param(1, id="member-2-leaves"),
        pytest.param(0, id="the-coordinator-and-smart-seed-leaves"),
    ],
)
def test_join_then_graceful_leave_under_load_loses_nothing(
    churn_cluster: LocalCluster, admin: Admin, leaving: int
) -> None:
    """member-1..3 under load; member-4 joins; then member-2 (or member-1: the coordinator,
    and the only address the smart client was given) leaves with SIGTERM."""
    cluster = churn_cluster
    table, took = wait_settled(admin, cluster.members)
    print(f"\n3 members settled {took:.2f}s after start (table version {table.version:#x})")
    m1, m3 = cluster.members[0], cluster.members[2]
    leaver = cluster.members[leaving]
    assert admin.stats(m1.address).migration.coordinator
    with grid.Client(m1.address, timeout=30) as c:
        for i in range(0, len(PRELOAD), 2500):
            c.map(CHURN_MAP).put_many(dict(list(PRELOAD.items())[i : i + 2500]))
    history = History()
    load = Load(m1.address, m3.address, history)
    load.start()
    timings: dict[str, float] = {}
    survivors: list[MemberProcess] = []
    try:
        wait_until(lambda: history.writes >= 200, 20, 0.05, "the writers to get going")
        time.sleep(2.0)

        history.phase = "during the join"
        writes_before = history.writes
        t0 = time.monotonic()
        joiner = cluster.start_member(3)
        cluster.wait_ready(joiner)
        timings["join: ready"] = time.monotonic() - t0
        writes_at_ready = history.writes
        joined, _ = wait_settled(admin, live(cluster), timeout=60)
        timings["join: settled"] = time.monotonic() - t0
        during_migration = history.writes - writes_at_ready
        assert joined.partitions_of(joiner.name).primary
        assert joined.partitions_of(joiner.name).backup
        assert history.writes > writes_before, "no write was acknowledged during the join"

        history.phase = "between"
        time.sleep(1.0)

        history.phase = "during the leave"
        writes_before = history.writes
        t0 = time.monotonic()
        cluster.kill(leaver, signal.SIGTERM)
        code = leaver.process.wait(60)
        timings["leave: exited"] = time.monotonic() - t0
        assert code == 0, leaver.log_tail()
        # before it exits, the leaver merges what it still holds into the primaries
        assert "copies handed back before leaving" in leaver.log_path.read_text(), leaver.log_tail()
        survivors = live(cluster)
        assert len(survivors) == 3
        left, _ = wait_settled(admin, survivors, timeout=60)
        timings["leave: settled"] = time.monotonic() - t0
        assert leaver.name not in left.members
        assert history.writes > writes_before, "no write was acknowledged during the leave"

        history.phase = "after"
        time.sleep(1.5)
    finally:
        load.stop.set()
        load.join(60)
    assert not load.is_alive(), "the load did not stop"
    assert load.error is None, f"the load crashed: {load.error!r}"

    errors_by_phase = collections.Counter(e.split(":")[0] for e in history.write_errors)
    print(
        f"{leaver.name} left; timings: { {k: round(v, 2) for k, v in timings.items()} }; "
        f"{during_migration} writes acknowledged while the join's partitions moved\n"
        f"{history.writes} writes acknowledged over {len(history.acked)} keys, "
        f"{len(history.write_errors)} write errors {dict(errors_by_phase)}, "
        f"slowest acknowledged write {history.slowest_write:.2f}s; "
        f"{history.reads} reads, {len(history.read_errors)} read errors, "
        f"{len(history.not_found)} NOT_FOUND, {len(history.stale)} stale; "
        f"survivors' (forwarded, NOT_OWNER) counters: {forwarding_counters(admin, survivors)}"
    )
    for e in (history.write_errors + history.read_errors)[:5]:
        print(f"  error: {e}")
    assert history.writes > 1000, "the load should have acknowledged a lot of writes"
    assert not history.not_found, f"acknowledged keys read NOT_FOUND: {history.not_found[:5]}"
    assert not history.stale, f"reads older than an acknowledged write: {history.stale[:5]}"

    # every acknowledged key reads back its last acknowledged value (or, if even the final
    # retries failed, one of the unacknowledged values written after it), through both
    # kinds of client, each talking to a member that stayed
    keys = sorted(history.acked)
    unsure = {k for k, vs in history.tail.items() if vs}
    for address, smart in ((m3.address, True), (m3.address, False)):
        with grid.Client(address, timeout=10, smart_routing=smart) as c:
            m = c.map(CHURN_MAP)
            got = m.get_many(keys)
            pre = {}
            for i in range(0, len(PRELOAD), 5000):
                pre.update(m.get_many(list(PRELOAD)[i : i + 5000]))
        wrong = [
            f"{k}: read {got.get(k)}, acknowledged {history.acked[k]}"
            for k in keys
            if got.get(k) != history.acked[k] and got.get(k) not in history.tail.get(k, ())
        ]
        assert not wrong, f"{len(wrong)} keys lost their last acknowledged write: {wrong[:5]}"
        lost = sorted(set(PRELOAD) - set(pre))
        assert not lost, f"{len(lost)} preloaded keys lost: {lost[:5]}"
        assert pre == PRELOAD
    print(f"final check: {len(keys)} written keys, {len(unsure)} with an unacknowledged tail")
    # and each key sits on exactly its primary and backup of the final table
    check_placement(
        admin, survivors, CHURN_MAP, [encode_key(k) for k in [*keys, *PRELOAD]], timeout=20
    )
    for m in survivors:
        assert "Traceback" not in m.log_path.read_text(errors="replace"), m.log_tail(40)


# ---- three members: placement, forwarding, failover ----------------------------------------------
PLACED_MAP = "placed"
N_PLACED = 20_000


@pytest.fixture(scope="module")
def three(no_grid_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(3, log_dir=tmp_path_factory.mktemp("three"))
    try:
        c.start()
        yield c
    finally:
        c.stop(grace=10)


def test_20000_keys_sit_on_exactly_their_primary_and_backup(
    three: LocalCluster, admin: Admin
) -> None:
    seed = three.members[0]
    items = {f"key-{i}": i for i in range(N_PLACED)}
    keys = list(items)
    t0 = time.monotonic()
    # written while the cluster may still be forming its first table
    with grid.Client(seed.address, timeout=30) as c:
        m = c.map(PLACED_MAP)
        for i in range(0, N_PLACED, 2000):
            m.put_many({k: items[k] for k in keys[i : i + 2000]})
        wrote = time.monotonic() - t0
        _, took = wait_settled(admin, three.members)
        got: dict = {}
        for i in range(0, N_PLACED, 5000):
            got.update(m.get_many(keys[i : i + 5000]))
    assert got == items
    t1 = time.monotonic()
    result = check_placement(admin, three.members, PLACED_MAP, [encode_key(k) for k in keys])
    counts = {
        n: collections.Counter(ROLE_NAMES[r] for r in roles) for n, roles in result.observed.items()
    }
    print(
        f"\n{N_PLACED} keys written in {wrote:.2f}s, settled {took:.2f}s later, placement "
        f"checked in {time.monotonic() - t1:.2f}s (table {result.table.version:#x}): "
        f"{ {n: dict(c) for n, c in counts.items()} }"
    )
    assert result.table.backups == 1
    for n, c in counts.items():  # every member has a share of both roles
        assert c["primary"] > N_PLACED // 10 and c["backup"] > N_PLACED // 10, (n, c)
    assert sum(c["primary"] for c in counts.values()) == N_PLACED
    assert sum(c["backup"] for c in counts.values()) == N_PLACED


def covering(prefix: str, per_partition: int) -> list[str]:
    """Keys `prefix-i`, exactly `per_partition` in every partition."""
    counts = [0] * PARTITIONS
    keys: list[str] = []
    i = 0
    while len(keys) < per_partition * PARTITIONS:
        key = f"{prefix}-{i}"
        p = partition_of(encode_key(key), PARTITIONS)
        if counts[p] < per_partition:
            counts[p] += 1
            keys.append(key)
        i += 1
    return keys


def test_writes_after_the_table_settled_reach_every_backup(
    three: LocalCluster, admin: Admin
) -> None:
    """Keys written after the last migration reach the backups only through the live
    replication streams (the placement test's keys may also have come in fill snapshots),
    so every partition gets some: every backup must be subscribed to its primary."""
    table, _ = wait_settled(admin, three.members)
    keys = covering("late", 2)
    with grid.Client(three.members[0].address, timeout=30) as c:
        c.map("late").put_many({k: k for k in keys})
    t0 = time.monotonic()
    result = check_placement(admin, three.members, "late", [encode_key(k) for k in keys])
    print(f"\nevery backup of 271 partitions had its new keys after {time.monotonic() - t0:.2f}s")
    assert result.table.version == table.version


def packed(v: object) -> bytes:
    return msgpack.packb(v)


def op(code: int, map_name: str, key: bytes = b"", **fields: object) -> pb.Op:
    return pb.Op(code=code, map=map_name, key=key, **fields)


def keys_where(
    table: PartitionTable, prefix: str, n: int, want: Callable[[tuple[str, ...]], bool]
) -> list[bytes]:
    """The first n keys `prefix-i` whose replica list satisfies `want(replicas)`."""
    found: list[bytes] = []
    i = 0
    while len(found) < n:
        key = f"{prefix}-{i}".encode()
        if want(table.replicas(partition_of(key, table.partition_count))):
            found.append(key)
        i += 1
    return found


def test_a_client_without_a_table_gets_every_operation_right(
    three: LocalCluster, admin: Admin
) -> None:
    """Raw Execute to member-1 for keys of partitions member-1 has no copy of at all: the
    member forwards, the answers are the owner's, the data lands on the owner only."""
    table, _ = wait_settled(admin, three.members)
    me = three.members[0]
    mp = "forwarded"
    foreign = keys_where(table, "far", 6, lambda r: me.name not in r)
    owned = keys_where(table, "near", 2, lambda r: r[0] == me.name)
    forwarded_before = admin.stats(me.address).migration.forwarded
    a, b, ctr, gone = foreign[:4]

    def run(*ops: pb.Op, hops: int = 0) -> list[pb.Result]:
        reply = admin.execute(me.address, ops, hops)
        assert reply.status == pb.OK, reply
        assert reply.table_version == table.version
        assert len(reply.results) == len(ops)
        return list(reply.results)

    # writes: put, conditional puts, incr, expire; one batch mixing owned and foreign keys
    r = run(
        op(pb.PUT, mp, a, value=packed("a1")),
        op(pb.PUT, mp, owned[0], value=packed("n1")),
        op(pb.PUT, mp, b, value=packed("b1"), condition=pb.IF_ABSENT),
        op(pb.PUT, mp, b, value=packed("b2"), condition=pb.IF_ABSENT),
        op(pb.INCR, mp, ctr, delta=5),
        op(pb.INCR, mp, ctr, delta=-2),
        op(pb.PUT, mp, gone, value=packed("g")),
    )
    assert [x.status for x in r] == [pb.OK, pb.OK, pb.OK, pb.CAS_FAILED, pb.OK, pb.OK, pb.OK]
    assert r[4].count == 5 and r[5].count == 3
    assert r[0].version_ts and r[2].version_ts
    version_a = (r[0].version_ts, r[0].version_member)
    r = run(
        op(pb.PUT, mp, a, value=packed("a2"), condition=pb.IF_VERSION,
           expected_ts=version_a[0], expected_member=version_a[1]),
        op(pb.PUT, mp, a, value=packed("a3"), condition=pb.IF_VERSION,
           expected_ts=version_a[0], expected_member=version_a[1]),
        op(pb.PUT, mp, foreign[4], value=packed("x"), condition=pb.IF_PRESENT),
        op(pb.EXPIRE, mp, b, ttl_ms=3_600_000),
        op(pb.DELETE, mp, gone),
        op(pb.DELETE, mp, gone),
    )  # fmt: skip
    assert [x.status for x in r] == [pb.OK, pb.CAS_FAILED, pb.CAS_FAILED, pb.OK, pb.OK, pb.OK]
    assert r[3].count == 1 and r[4].count == 1 and r[5].count == 0
    # reads
    r = run(
        op(pb.GET, mp, a),
        op(pb.GET, mp, b),
        op(pb.GET, mp, ctr),
        op(pb.GET, mp, gone),
        op(pb.GET, mp, owned[0]),
        op(pb.CONTAINS, mp, a),
        op(pb.CONTAINS, mp, foreign[4]),
        op(pb.TTL, mp, b),
        op(pb.TTL, mp, a),
        op(pb.TOUCH, mp, a),
        op(pb.GET, mp, foreign[5]),
    )
    assert [x.status for x in r[:4]] == [pb.OK, pb.OK, pb.OK, pb.NOT_FOUND]
    assert msgpack.unpackb(r[0].value) == "a2"
    assert msgpack.unpackb(r[1].value) == "b1"
    assert msgpack.unpackb(r[2].value) == 3
    assert msgpack.unpackb(r[4].value) == "n1"
    assert r[5].count == 1 and r[6].count == 0
    assert 3_500_000 < r[7].count <= 3_600_000 and r[8].count == -1
    assert r[9].count == 1 and r[10].status == pb.NOT_FOUND
    forwarded = admin.stats(me.address).migration.forwarded - forwarded_before
    print(f"\nmember-1 forwarded {forwarded} operations for keys it has no copy of")
    assert forwarded >= 6 + 6 + 10  # every foreign-key operation above went to its owner

    # the data is on the owner (and its backup), never on member-1
    placed = placement(admin, three.members, mp, [a, b, ctr, owned[0]])
    assert not placed.wrong_primary, placed.wrong_primary
    assert all(role == ABSENT for role in placed.observed[me.name][:3])

    # through a plain client to member-1 (no table: everything forwarded) the same holds
    with grid.Client(me.address, timeout=10, smart_routing=False) as plain:
        pm = plain.map(mp, raw_keys=True)
        assert pm.get(a) == "a2"
        assert pm.incr(ctr, 10) == 13
        assert pm.delete(b) is True and pm.get(b) is None
        pm.put(b, {"again": True})
        assert pm.get_many([a, b, gone]) == {a: "a2", b: {"again": True}}

    # at max_forward_hops an operation for another member's partition is not forwarded:
    # NOT_OWNER with a reason; the member's own partitions are still answered
    owner = table.owner(partition_of(a, PARTITIONS))
    r = run(
        op(pb.GET, mp, a),
        op(pb.PUT, mp, a, value=packed("not-applied")),
        op(pb.GET, mp, owned[0]),
        hops=MAX_FORWARD_HOPS,
    )
    assert [x.status for x in r] == [pb.NOT_OWNER, pb.NOT_OWNER, pb.OK]
    for x in r[:2]:
        assert owner in x.error and str(table.version) in x.error, x.error
    assert run(op(pb.GET, mp, a))[0].value == packed("a2")  # the refused put did nothing
    # one hop fewer is still forwarded
    r = run(op(pb.GET, mp, a), hops=MAX_FORWARD_HOPS - 1)
    assert r[0].status == pb.OK and r[0].value == packed("a2")


def test_size_clear_and_scan_through_one_member_span_the_cluster(
    three: LocalCluster, admin: Admin
) -> None:
    wait_settled(admin, three.members)
    mp = "spread"
    items = {f"s-{i}": i for i in range(3000)}
    with grid.Client(three.members[0].address, timeout=30) as c:
        c.map(mp).put_many(items)
    encoded = {encode_key(k) for k in items}

    # SIZE sent to any one member counts every member's partitions
    for m in three.members:
        r = execute(m.address, [op(pb.SIZE, mp)])
        assert r.results[0].status == pb.OK, r.results[0]
        assert r.results[0].count == len(items), m.name

    # raw SCAN through each member: every key exactly once
    for m in three.members:
        seen: list[bytes] = []
        cursor, pages = b"", 0
        while True:
            r = execute(m.address, [op(pb.SCAN, mp, cursor=cursor, limit=97)]).results[0]
            assert r.status == pb.OK, r
            seen.extend(r.keys)
            cursor = r.cursor
            pages += 1
            assert pages < 1000, "the scan does not end"
            if not cursor:
                break
        dupes = [k for k, n in collections.Counter(seen).items() if n > 1]
        assert not dupes, f"{m.name}: {len(dupes)} keys scanned twice, e.g. {dupes[:3]}"
        assert set(seen) == encoded, m.name

    # and through the clients, smart and plain
    for smart in (True, False):
        with grid.Client(three.members[1].address, timeout=30, smart_routing=smart) as c:
            keys = list(c.map(mp).scan(count=113))
            assert len(keys) == len(items) and set(keys) == set(items), f"smart={smart}"
            assert c.map(mp).size() == len(items)

    # CLEAR through one member clears every member's partitions
    r = execute(three.members[2].address, [op(pb.CLEAR, mp)]).results[0]
    assert r.status == pb.OK and r.count == len(items)
    for m in three.members:
        assert execute(m.address, [op(pb.SIZE, mp)]).results[0].count == 0


class TableWatch(threading.Thread):
    """Every table a member installs, in order (WatchTable), until closed."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True, name="table-watch")
        self.channel = raw_channel(address)
        self.call = self.channel.unary_stream(WATCH_TABLE)(
            pb.TableRequest().SerializeToString(), timeout=120
        )
        self.tables: list[PartitionTable] = []

    def run(self) -> None:
        try:
            for data in self.call:
                msg = pb.PartitionTable.FromString(data)
                if msg.version:
                    self.tables.append(table_from_proto(msg)[0])
        except grpc.RpcError:
            pass  # cancelled by close()

    def close(self) -> None:
        self.call.cancel()
        self.join(5)
        self.channel.close()


def test_kill_9_of_one_of_three_fails_over_to_the_backups(
    three: LocalCluster, admin: Admin
) -> None:
    before, _ = wait_settled(admin, three.members)
    seed = three.members[0]
    stats = {m.name: admin.stats(m.address) for m in three.members}
    victim = next(
        m for m in three.members[1:] if not stats[m.name].migration.coordinator
    )  # not the seed, not the coordinator
    survivors = [m for m in three.members if m is not victim]
    mp = "failover"
    items = {f"f-{i}": {"i": i} for i in range(5000)}
    keys = [encode_key(k) for k in items]
    with grid.Client(seed.address, timeout=30) as c:
        c.map(mp).put_many(items)
    # backups are asynchronous: wait (bounded) until every key is on its backup too
    check_placement(admin, three.members, mp, keys)
    assert admin.table(seed.address)[0] == before, "the table changed while writing"
    victims_primaries = set(before.partitions_of(victim.name).primary)
    assert victims_primaries

    watch = TableWatch(seed.address)
    watch.start()
    try:
        wait_until(lambda: watch.tables, 5, 0.02, "the watch's first table")
        t0 = time.monotonic()
        three.kill(victim, signal.SIGKILL)
        victim.process.wait(5)
        first = wait_until(
            lambda: next((t for t in watch.tables if victim.name not in t.members), None),
            30,
            0.05,
            f"a table without {victim.name}",
        )
        failed_over = time.monotonic() - t0
        after, _ = wait_settled(admin, survivors, timeout=60)
        settled_at = time.monotonic() - t0
    finally:
        watch.close()
    print(
        f"\nkill -9 of {victim.name}: first table without it after {failed_over:.2f}s, "
        f"settled after {settled_at:.2f}s; {len(watch.tables)} tables seen"
    )
    # failover: the first table without the victim promotes each of its partitions' first
    # backup, and leaves every other primary where it was
    wrong = [
        f"p{p}: {before.replicas(p)} -> {first.replicas(p)}"
        for p in range(before.partition_count)
        if first.owner(p) != (before.replicas(p)[1] if p in victims_primaries else before.owner(p))
    ]
    assert not wrong, f"{len(wrong)} partitions did not fail over to their backup: {wrong[:5]}"

    # every key is still readable, with its value, and sits on its new primary and backup
    with grid.Client(seed.address, timeout=30) as c:
        got = c.map(mp).get_many(list(items))
        lost = sorted(set(items) - set(got))
        assert not lost, f"{len(lost)} keys lost with {victim.name}: {lost[:5]}"
        assert got == items
        placed = c.map(PLACED_MAP).get_many([f"key-{i}" for i in range(0, N_PLACED, 7)])
    if placed:  # the placement test ran first: its keys survived too
        assert placed == {f"key-{i}": i for i in range(0, N_PLACED, 7)}
    result = check_placement(admin, survivors, mp, keys)
    assert result.table.version == after.version
    assert all(len(after.replicas(p)) == 2 for p in range(after.partition_count))


def test_pipelined_batches_each_get_their_own_forwarding(no_grid_env: None, tmp_path: Path) -> None:
    """On one stream, a batch that needs forwarding followed at once by one that does
    not: the first is still forwarded. Under fsync=always its reply is finished from a
    task after its fsync, by when the executor has served the next batches."""
    from grid.member.placement.routing import table_from_proto
    from tests.integration.support import raw_channel, wait_partitions_settled

    with LocalCluster(0) as cluster:
        for i in range(2):
            args = ["--data-dir", str(tmp_path / f"m{i}"), "--fsync", "always"]
            cluster.wait_ready(cluster.start_member(i, args))
        wait_partitions_settled(cluster.addresses)
        first = cluster.members[0]
        with raw_channel(first.address) as ch:
            table, _ = table_from_proto(
                pb.PartitionTable.FromString(ch.unary_unary("/grid.v1.Grid/Table")(b""))
            )
            mine = [k for k in (f"k{i}".encode() for i in range(500))
                    if table.owner(partition_of(k, 271)) == first.name]  # fmt: skip
            theirs = [k for k in (f"k{i}".encode() for i in range(500))
                      if table.owner(partition_of(k, 271)) != first.name]  # fmt: skip
            assert len(mine) >= 100 and len(theirs) >= 50, (len(mine), len(theirs))
            puts = [pb.Op(code=pb.PUT, map="p", key=k, value=b"v") for k in mine + theirs]
            ch.unary_unary("/grid.v1.Grid/Execute")(
                pb.BatchRequest(id=1, ops=puts).SerializeToString(), timeout=10
            )
            # each batch writes one owned key (so it waits for an fsync) and reads keys
            # of one side or the other
            requests = [
                pb.BatchRequest(
                    id=i,
                    ops=[pb.Op(code=pb.PUT, map="w", key=mine[i], value=b"v")]
                    + [pb.Op(code=pb.GET, map="p", key=k) for k in keys],
                ).SerializeToString()
                for i, keys in ((1, theirs[:50]), (2, mine[:50]), (3, mine[50:100]))
            ]
            call = ch.stream_stream("/grid.v1.Grid/Stream")
            replies = {
                r.id: r
                for r in (pb.BatchReply.FromString(d) for d in call(iter(requests), timeout=10))
            }
    assert sorted(replies) == [1, 2, 3]
    for r in replies.values():
        statuses = [x.status for x in r.results]
        assert statuses == [pb.OK] * 51, [x.error for x in r.results if x.status][:1]
