"""Helpers shared by the integration tests: polling, raw gRPC, async bridges, canaries.

Nothing here mocks a grid component: the raw gRPC helpers speak the wire
contract (proto/grid.proto) to a real member, and the async bridge runs the
real AsyncClient/AsyncLocalMap on an event loop owned by the test thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

import grid
from grid.harness.cluster import LocalCluster, MemberProcess, is_serving, migration_state
from grid.member.placement.routing import table_from_proto
from partitioning import PartitionTable
from proto import grid_pb2 as pb

T = TypeVar("T")

EXECUTE = "/grid.v1.Grid/Execute"
STREAM = "/grid.v1.Grid/Stream"
STATS = "/grid.v1.Grid/Stats"
TABLE = "/grid.v1.Grid/Table"
DIGESTS = "/grid.v1.Grid/Digests"
LOCAL_KEYS = "/grid.v1.Grid/LocalKeys"


# ---- polling -------------------------------------------------------------------------------------
@contextlib.contextmanager
def settled_cluster(
    size: int, log_dir: Path, member_args: Sequence[str] = (), **options: Any
) -> Iterator[LocalCluster]:
    """A LocalCluster of `size` members, started, its partitions settled; stopped at the end
    (a module fixture's body: `with settled_cluster(3, tmp.mktemp("x")) as c: yield c`)."""
    cluster = LocalCluster(size, member_args=member_args, log_dir=log_dir, **options)
    try:
        cluster.start()
        wait_partitions_settled(cluster.addresses)
        yield cluster
    finally:
        cluster.stop(grace=5)


def assert_taken_port_refused(flag: str, label: str, log_dir: Path) -> None:
    """A member given a port another socket holds (`flag`, e.g. --resp-port) does not
    start, and says which port and what for ("... for RESP"), as the harness and an
    operator read it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cluster = LocalCluster(1, member_args=[flag, str(port)], log_dir=log_dir)
        with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{port} for {label}"):
            cluster.start()


@contextlib.contextmanager
def reference_server(name: str, argv: Sequence[str], port: int) -> Iterator[str]:
    """A reference server (redis-server, memcached) we compare replies with, on `port` of
    loopback: started, waited for until it accepts a connection, stopped at the end."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{name} did not start") from None
                time.sleep(0.05)
        yield address
    finally:
        proc.terminate()
        proc.wait(10)


def wait_until(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def timed_wait(check: Callable[[], str], timeout: float, what: str, interval: float = 0.1) -> float:
    """Poll `check` (returns "" when satisfied, else what is still wrong) until it is
    satisfied; returns the seconds it took. Fails with the last reason after `timeout`
    (an RPC or client error while polling is a reason too, not a failure)."""
    start = time.monotonic()
    reason = "not checked"
    for _ in range(int(timeout / interval) + 2):
        try:
            reason = check()
        except (grpc.RpcError, grid.GridError, ValueError) as e:
            reason = f"{type(e).__name__}: {short_error(e)}"
        if not reason:
            return time.monotonic() - start
        if time.monotonic() - start >= timeout:
            break
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout}s; last: {reason}")


def short_error(e: BaseException) -> str:
    if isinstance(e, grpc.RpcError):
        return f"{e.code().name} {e.details()}"  # type: ignore[attr-defined]
    return str(e)[:300]


def wait_paused(pid: int, timeout: float = 5.0) -> None:
    """Wait until a process stopped by SIGSTOP is really stopped (state T in /proc)."""

    def stopped() -> bool:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("T", "t")

    wait_until(stopped, timeout, 0.005, what=f"process {pid} to stop")


# ---- raw gRPC ------------------------------------------------------------------------------------
def raw_channel(address: str, max_message: int = 64 * 1024 * 1024) -> grpc.Channel:
    """A plain channel with no (de)serializers: requests and replies are bytes."""
    return grpc.insecure_channel(
        address,
        options=[
            ("grpc.max_send_message_length", max_message),
            ("grpc.max_receive_message_length", max_message),
            ("grpc.enable_retries", 0),
        ],
    )


def execute_bytes(address: str, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes to Execute; raises grpc.RpcError on a non-OK gRPC status."""
    with raw_channel(address) as ch:
        return ch.unary_unary(EXECUTE)(data, timeout=timeout)


def execute(address: str, ops: Sequence[pb.Op], request_id: int = 1) -> pb.BatchReply:
    """One BatchRequest through the unary Execute method."""
    data = pb.BatchRequest(id=request_id, ops=ops).SerializeToString()
    return pb.BatchReply.FromString(execute_bytes(address, data))


def raw_stats(address: str, timeout: float = 3.0) -> pb.StatsReply:
    with raw_channel(address) as ch:
        return pb.StatsReply.FromString(
            ch.unary_unary(STATS)(pb.StatsRequest().SerializeToString(), timeout=timeout)
        )


def partitions_settled(addresses: Sequence[str]) -> bool:
    """Every member has the same partition table, holds primaries, and nothing moves."""
    return migration_state(addresses, timeout=3.0) == (0, 0)


def wait_partitions_settled(addresses: Sequence[str], timeout: float = 60.0) -> None:
    wait_until(lambda: partitions_settled(addresses), timeout, 0.1, "partitions to settle")


def wait_replicated(addresses: Sequence[str], timeout: float = 20.0) -> None:
    """Until no member reports replication lag: every backup applied every change."""
    wait_until(
        lambda: all(raw_stats(a).migration.lag_changes_total == 0 for a in addresses),
        timeout,
        0.05,
        "backups to catch up",
    )


def live(cluster: Any) -> list[Any]:
    """The members of a LocalCluster whose process still runs."""
    return [m for m in cluster.members if m.alive()]


def assert_member_healthy(address: str) -> pb.StatsReply:
    """The member answers its health check (SERVING) and Stats; returns the stats."""
    assert is_serving(address, timeout=3.0), f"member at {address} is not SERVING"
    return raw_stats(address)


class Canary:
    """Known data written before a hostile request and checked unchanged after it."""

    MAP = "canary"

    def __init__(self, address: str, tag: str, n: int = 20) -> None:
        self.address = address
        self.items = {f"{tag}:{i}": {"i": i, "tag": tag, "blob": "c" * i} for i in range(n)}
        self.counter = f"{tag}:counter"

    def write(self) -> None:
        with grid.Client(self.address, timeout=5) as client:
            m = client.map(self.MAP)
            m.put_many(self.items)
            m.delete(self.counter)
            assert m.incr(self.counter, 7) == 7

    def check(self) -> None:
        """Member up, and every canary entry still holds exactly what was written."""
        assert_member_healthy(self.address)
        with grid.Client(self.address, timeout=5) as client:
            m = client.map(self.MAP)
            assert m.get_many(self.items) == self.items
            assert m.get(self.counter) == 7


# ---- asyncio from a synchronous test -------------------------------------------------------------
class AsyncRunner:
    """An event loop owned by the test thread: `run(coro)` drives it until coro is done.

    pytest-asyncio is not a dependency, so async fixtures live on this loop. Between
    `run` calls the loop is idle, which is what a quiet asyncio service looks like too.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def close(self) -> None:
        if self.loop.is_closed():
            return
        tasks = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for t in tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


async def _collect(agen: AsyncIterator[T]) -> list[T]:
    return [item async for item in agen]


class BlockingMap:
    """The blocking map API over an AsyncMap or AsyncLocalMap, driven on an AsyncRunner.

    Lets the scenario functions in grid/harness/scenarios.py (written against the blocking API)
    run unchanged through the asyncio flavours.
    """

    def __init__(self, amap: Any, runner: AsyncRunner) -> None:
        self._m = amap
        self._runner = runner
        self.name = amap.name

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._m, attr)
        if attr == "scan":

            def scan(count: int = 0) -> Iterator[Any]:
                return iter(self._runner.run(_collect(target(count))))

            return scan
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._runner.run(target(*args, **kwargs))

        return call


def table_of(address: str) -> PartitionTable | None:
    with raw_channel(address) as ch:
        msg = pb.PartitionTable.FromString(
            ch.unary_unary(TABLE)(pb.TableRequest().SerializeToString(), timeout=3.0)
        )
    return table_from_proto(msg)[0] if msg.version else None


def roots_of(address: str, maps: Sequence[str] = ()) -> dict[int, int]:
    """Partition -> digest root of the copy held there (of these maps only, if named)."""
    request = pb.DigestsRequest(maps=maps).SerializeToString()
    with raw_channel(address) as ch:
        reply = pb.DigestsReply.FromString(ch.unary_unary(DIGESTS)(request, timeout=10.0))
    return {d.partition: d.root for d in reply.digests}


def replicas_differ(members: Sequence[MemberProcess], maps: Sequence[str] = ()) -> str:
    """Empty when every member has the same table naming exactly these members and every
    partition's replicas (as that table names them) have one digest root (of these maps
    only, if named); else what is not so yet."""
    tables = {m.name: table_of(m.address) for m in members}
    versions = {t.version if t else 0 for t in tables.values()}
    if len(versions) != 1 or 0 in versions:
        return f"members disagree on the table: versions {sorted(versions)}"
    table = next(iter(tables.values()))
    assert table is not None
    names = {m.name for m in members}
    if set(table.members) != names:
        return f"the table names {sorted(table.members)}, not {sorted(names)}"
    # a table can name a member before any partition is placed on it (the coordinator's
    # first table after a join keeps the old replica lists): wait for the moves too
    if not partitions_settled([m.address for m in members]):
        return "partitions still moving"
    roots = {m.name: roots_of(m.address, maps) for m in members}
    differing = []
    for p, replicas in enumerate(table.replica_lists):
        seen = {roots[r].get(p) for r in replicas}
        if len(seen) != 1 or None in seen:
            differing.append(p)
    if differing:
        return f"{len(differing)} partitions whose replicas differ, e.g. {differing[:5]}"
    return ""


def local_roles(channel: grpc.Channel, map_name: str, keys: Sequence[str | bytes]) -> list[int]:
    """LocalKeys roles (0 absent, 1 primary, 2 backup) over an open raw channel."""
    request = pb.LocalKeysRequest(
        map=map_name, keys=[k.encode() if isinstance(k, str) else k for k in keys]
    )
    data = channel.unary_unary(LOCAL_KEYS)(request.SerializeToString(), timeout=10)
    return list(pb.LocalKeysReply.FromString(data).roles)


def roles_at(address: str, map_name: str, keys: Sequence[str | bytes]) -> list[int]:
    """local_roles on a channel of its own."""
    with raw_channel(address) as ch:
        return local_roles(ch, map_name, keys)


def wrong_values(
    m: Any, want: dict[str, Any], absent: Sequence[str] = (), limit: int = 5
) -> tuple[int, list[str]]:
    """(how many keys are wrong, a few of them) after reading every key in batches."""
    keys = list(want) + list(absent)
    got: dict[str, Any] = {}
    for i in range(0, len(keys), 1000):
        got.update(m.get_many(keys[i : i + 1000], timeout=20))
    bad = [f"{k}={got.get(k)!r} want {v!r}" for k, v in want.items() if got.get(k) != v]
    bad += [f"{k} deleted but ={got[k]!r}" for k in absent if k in got]
    return len(bad), bad[:limit]


REPO = Path(__file__).resolve().parents[2]  # the repository root


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRID_")}
    return {**env, "PYTHONUNBUFFERED": "1", **(extra or {})}


def run_grid(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """`grid ARGS...` as a subprocess, with no GRID_* variables but those given."""
    return subprocess.run(
        [sys.executable, "-m", "grid", *args],
        cwd=REPO,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- a history of acknowledged writes under faults -----------------------------------------------
class WriteHistory:
    """Per key: the last value a put of it was acknowledged with, and the values sent after
    it whose answer never came (they may or may not have been applied). Every key is
    written by one writer at a time with increasing values, so after the faults a key must
    hold its last acknowledged value or one of those later attempts."""

    def __init__(self) -> None:
        self.acked: dict[str, int] = {}
        self.uncertain: dict[str, set[int]] = {}
        self.acks = 0
        self.errors = 0

    def ack(self, key: str, value: int) -> None:
        self.acked[key] = value
        self.uncertain.pop(key, None)
        self.acks += 1

    def fail(self, key: str, value: int) -> None:
        self.uncertain.setdefault(key, set()).add(value)
        self.errors += 1

    def lost(self, m: Any, limit: int = 5) -> tuple[int, list[str]]:
        """(how many keys hold neither their last acknowledged value nor a later attempt,
        a few of them) after reading every acknowledged key through map `m`."""
        keys = list(self.acked)
        got: dict[str, Any] = {}
        for i in range(0, len(keys), 1000):
            got.update(m.get_many(keys[i : i + 1000], timeout=20))
        bad = [
            f"{k}={got.get(k)!r} acknowledged {v}"
            for k, v in self.acked.items()
            if got.get(k) != v and got.get(k) not in self.uncertain.get(k, ())
        ]
        return len(bad), bad[:limit]


class BackgroundWrites:
    """Concurrent writers, each putting increasing values to keys of its own through one
    AsyncClient (smart routing, every member given as a seed), on a thread of their own
    until `stop()`, `max_seconds` or `max_ops` per writer: bounded in count and time.
    Use as a context manager; `history` is complete once it exits."""

    def __init__(
        self,
        seeds: Sequence[str],
        map_name: str,
        *,
        writers: int = 16,
        keys_per_writer: int = 16,
        pause_s: float = 0.002,
        timeout: float = 10.0,
        max_seconds: float = 120.0,
        max_ops: int = 100_000,
    ) -> None:
        self.seeds = list(seeds)
        self.map_name = map_name
        self.writers = writers
        self.keys_per_writer = keys_per_writer
        self.pause_s = pause_s
        self.timeout = timeout
        self.max_seconds = max_seconds
        self.max_ops = max_ops
        self.history = WriteHistory()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="grid-test-writes", daemon=True)
        self.failure: BaseException | None = None

    def __enter__(self) -> BackgroundWrites:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 30)
        assert not self._thread.is_alive(), "the writers did not stop"
        if self.failure is not None:
            raise AssertionError(f"the writers failed: {self.failure!r}") from self.failure

    def wait_acks(self, more: int, timeout: float = 30.0, what: str = "") -> None:
        """Until `more` further writes were acknowledged from now (the cluster takes writes)."""
        target = self.history.acks + more
        wait_until(
            lambda: self.history.acks >= target or not self._thread.is_alive(),
            timeout,
            0.02,
            what or f"{more} more acknowledged writes",
        )
        assert self.history.acks >= target, (
            f"the writers stopped at {self.history.acks} acknowledged writes, before {target}"
        )

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported by stop()
            self.failure = e

    async def _main(self) -> None:
        started = time.monotonic()
        history = self.history
        async with grid.AsyncClient(self.seeds, timeout=self.timeout) as client:
            m = client.map(self.map_name)

            async def writer(w: int) -> None:
                keys = [f"w{w}-k{i}" for i in range(self.keys_per_writer)]
                for value in range(1, self.max_ops + 1):
                    if self._stop.is_set() or time.monotonic() - started > self.max_seconds:
                        return
                    key = keys[value % len(keys)]
                    try:
                        await m.put(key, value)
                    except grid.GridError:
                        history.fail(key, value)
                        await asyncio.sleep(0.05)  # an owner is down: do not spin
                        continue
                    history.ack(key, value)
                    await asyncio.sleep(self.pause_s)

            await asyncio.gather(*(writer(w) for w in range(self.writers)))
