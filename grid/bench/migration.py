"""`python -m grid.bench.migration`: how fast partitions move when a member joins, and what
the clients feel meanwhile.

1. Starts 3 members (grid.harness.cluster.LocalCluster: real processes on loopback,
   memory only, default backups=1) and loads N keys (default 1M) of V-byte
   values (default 100, stored as is: codec "raw") with `put_many` batches
   through one `grid.AsyncClient`, several batches in flight. With backups=1
   the cluster holds 2N copies. Waits until the cluster is settled: every
   member has the same table version, the coordinator has no move pending,
   nobody is filling a partition, and the members hold 2N entries in all.
2. Starts a steady load: C asyncio callers (default 16) sharing one
   `grid.AsyncClient`, each doing single-key get (default 80%) or put of a
   random loaded key, one at a time. Measures a baseline window (default 10 s).
3. Starts a 4th member and keeps measuring until migrations settle again
   (the same condition, with the new member in the table and the table equal
   to the 4-member placement): that phase is "during", and its length, from
   the 4th member's start to settle, is the move's duration. Then an "after"
   window of the same length as the baseline.
4. Reports: the move (duration, partitions and key copies moved, entries now
   on the new member, bytes received by all members, MB/s and keys/s), each
   phase's ops/s and p50/p99 latency, the p99 ratio during/before against the
   target (<= 3x), the CPU each process used in each phase, and a per-second
   timeline of the move. Finally checks that every key is still readable and
   that the members hold 2N entries again.

Bytes moved: the sum over members of `migration.bytes_received` (snapshot and
mutation bytes received from primaries; grid/member/replicas/follower.py) over the move. It
includes the backup stream of the steady load's puts; the baseline rate of
that stream is shown so it can be told apart. Key copies moved are derived
from the partition tables before and after: for every partition, the keys
loaded into it times the replicas it gained.

Every wait has a timeout, and the member processes are stopped however the
run ends (normal exit, error, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

import grid
from grid.bench.main import run_guarded
from grid.bench.report import machine
from grid.bench.stats import percentile, process_cpu_s
from grid.cli.status import wide_console
from grid.client.aio import AsyncMap
from grid.config import Config, parse_size
from grid.harness.cluster import LocalCluster, MemberProcess
from grid.member.placement.routing import table_from_proto
from partitioning import PartitionTable, PlacementConfig, build_table, partition_of
from proto import grid_pb2 as pb

P99_TARGET = 3.0
STATS_METHOD = "/grid.v1.Grid/Stats"
TABLE_METHOD = "/grid.v1.Grid/Table"
RPC_TIMEOUT_S = 10.0
POLL_S = 0.5


def key_of(i: int) -> str:
    return f"k{i}"


# ---- talking to members ---------------------------------------------------------------------
class Probe:
    """Stats and Table of every member, over plain gRPC unary calls (one channel each)."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _channel(self, address: str) -> grpc.aio.Channel:
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = grpc.aio.insecure_channel(address)
        return ch

    async def stats(self, address: str) -> pb.StatsReply:
        data = await self._channel(address).unary_unary(STATS_METHOD)(
            pb.StatsRequest().SerializeToString(), timeout=RPC_TIMEOUT_S
        )
        return pb.StatsReply.FromString(data)

    async def all_stats(self, members: list[MemberProcess]) -> dict[str, pb.StatsReply]:
        replies = await asyncio.gather(*(self.stats(m.address) for m in members))
        return {m.name: r for m, r in zip(members, replies, strict=True)}

    async def table(self, address: str) -> PartitionTable:
        data = await self._channel(address).unary_unary(TABLE_METHOD)(
            pb.TableRequest().SerializeToString(), timeout=RPC_TIMEOUT_S
        )
        table, _ = table_from_proto(pb.PartitionTable.FromString(data))
        return table

    async def close(self) -> None:
        for ch in self._channels.values():
            with contextlib.suppress(Exception):
                await ch.close()
        self._channels.clear()


@dataclass
class Poll:
    """One look at every member during a wait."""

    at: float  # perf_counter seconds
    stats: dict[str, pb.StatsReply]

    @property
    def bytes_received(self) -> int:
        return sum(s.migration.bytes_received for s in self.stats.values())

    @property
    def entries(self) -> int:
        return sum(s.total.entries for s in self.stats.values())

    @property
    def versions(self) -> set[int]:
        return {s.migration.table_version for s in self.stats.values()}

    @property
    def pending(self) -> int:
        return sum(s.migration.pending for s in self.stats.values() if s.migration.coordinator)

    @property
    def in_flight(self) -> int:
        return sum(s.migration.in_flight for s in self.stats.values())

    @property
    def coordinators(self) -> int:
        return sum(1 for s in self.stats.values() if s.migration.coordinator)

    def quiet(self) -> bool:
        """Same table everywhere, one coordinator with nothing pending, no fill running."""
        return (
            len(self.versions) == 1
            and 0 not in self.versions
            and self.coordinators == 1
            and self.pending == 0
            and self.in_flight == 0
        )

    def describe(self) -> str:
        return (
            f"versions {len(self.versions)}, pending {self.pending}, in flight {self.in_flight}, "
            f"entries {self.entries:,}"
        )


def target_layout(names: list[str], table: PartitionTable, virtual_nodes: int) -> tuple:
    placement = PlacementConfig(
        partition_count=table.partition_count,
        backups=table.backups,
        virtual_nodes=virtual_nodes,
    )
    return tuple(build_table(sorted(names), 1, placement).replica_lists)


async def wait_settled(
    probe: Probe,
    members: list[MemberProcess],
    *,
    timeout: float,
    virtual_nodes: int,
    min_version: int = 0,
    entries: int | None = None,
    samples: list[Poll] | None = None,
    status: Any = None,
    what: str = "settling",
) -> tuple[float, PartitionTable, bool]:
    """Poll until the cluster is quiet on a table newer than `min_version` that names every
    member and equals the placement of `members` (or stays quiet for 3 s without equalling it,
    which is reported), and, if given, the members hold `entries` entries in all.

    Returns (perf_counter time it first was so, the table, whether it equals the target).
    """
    names = [m.name for m in members]
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    last = ""
    while time.monotonic() < deadline:
        for m in members:
            if not m.alive():
                raise RuntimeError(f"{m.name} exited:\n{m.log_tail()}")
        try:
            poll = Poll(time.perf_counter(), await probe.all_stats(members))
        except grpc.aio.AioRpcError as e:
            last = f"stats failed: {e.code().name}"
            await asyncio.sleep(POLL_S)
            continue
        if samples is not None:
            samples.append(poll)
        last = poll.describe()
        if status is not None:
            status.update(f"{what}: {last}")
        version = next(iter(poll.versions))
        ok = poll.quiet() and version > min_version
        if ok and entries is not None:
            ok = poll.entries == entries
        matches = False
        if ok:
            table = await probe.table(members[0].address)
            ok = table.version == version and set(table.members) == set(names)
            matches = ok and tuple(table.replica_lists) == target_layout(
                names, table, virtual_nodes
            )
        if not ok:
            quiet_since = None
        else:
            quiet_since = poll.at if quiet_since is None else quiet_since
            if matches or poll.at - quiet_since >= 3.0:
                return quiet_since, table, matches
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"{what}: not settled after {timeout:.0f} s (last: {last})")


def rebalance_span(path: Path, newcomer: str) -> tuple[float, int] | None:
    """From the coordinator's log: seconds from its first "rebalancing" towards a table with
    `newcomer` to its last "rebalance round done", and how many rounds that took."""
    start = end = None
    rounds = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            e = json.loads(line)
            event = e.get("event")
            if event == "rebalancing" and newcomer in e.get("members", ()):
                start = start or datetime.fromisoformat(e["timestamp"])
            elif event == "rebalance round done" and start is not None:
                end = datetime.fromisoformat(e["timestamp"])
                rounds += 1
        except (ValueError, KeyError, AttributeError, TypeError):
            continue
    if start is None or end is None:
        return None
    return (end - start).total_seconds(), rounds


# ---- loading ---------------------------------------------------------------------------------
async def load(
    console: Console,
    m: AsyncMap,
    keys: int,
    value: bytes,
    batch: int,
    concurrency: int,
    timeout: float,
) -> float:
    """put_many all keys, `concurrency` batches in flight, with a progress bar; seconds taken."""
    starts = iter(range(0, keys, batch))
    started = time.perf_counter()
    with Progress(
        TextColumn("loading"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} keys/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("load", total=keys, rate="-")

        async def worker() -> None:
            for j in starts:
                items = [(key_of(i), value) for i in range(j, min(keys, j + batch))]
                await m.put_many(items, timeout=60)
                progress.advance(task, len(items))
                done = progress.tasks[0].completed
                rate = done / (time.perf_counter() - started)
                progress.update(task, rate=f"{rate:,.0f}")

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout)
    return time.perf_counter() - started


async def verify(
    console: Console, m: AsyncMap, keys: int, value: bytes, timeout: float
) -> tuple[int, int]:
    """get_many every key: (missing, wrong value)."""
    missing = wrong = 0
    batch = 1000
    starts = iter(range(0, keys, batch))
    with Progress(
        TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("verify", total=keys)

        async def worker() -> None:
            nonlocal missing, wrong
            for j in starts:
                names = [key_of(i) for i in range(j, min(keys, j + batch))]
                got = await m.get_many(names, timeout=60)
                for k in names:
                    v = got.get(k)
                    if v is None:
                        missing += 1
                    elif v != value:
                        wrong += 1
                progress.advance(task, len(names))

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(8))), timeout)
    return missing, wrong


# ---- the steady load -------------------------------------------------------------------------
@dataclass
class Phase:
    name: str
    started: float = 0.0  # perf_counter seconds
    ended: float = 0.0
    lat_ns: list[int] = field(default_factory=list)
    done_at: list[float] = field(default_factory=list)  # perf_counter seconds, per op
    gets: int = 0
    puts: int = 0
    missing: int = 0  # gets of a loaded key that answered "no such key"
    errors: Counter[str] = field(default_factory=Counter)
    cpu0: dict[str, float | None] = field(default_factory=dict)
    cpu1: dict[str, float | None] = field(default_factory=dict)
    cpu_at: tuple[float, float] = (0.0, 0.0)  # when cpu0 and cpu1 were read

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def ops_s(self) -> float:
        return len(self.lat_ns) / self.seconds if self.seconds else 0.0

    def ms(self, p: float) -> float:
        return percentile(self.lat_ns, p) / 1e6

    def cpu_pct(self, name: str) -> float | None:
        a, b = self.cpu0.get(name), self.cpu1.get(name)
        spent = self.cpu_at[1] - self.cpu_at[0]
        if a is None or b is None or spent <= 0:
            return None
        return (b - a) / spent * 100


class SteadyLoad:
    """`callers` tasks, each one op at a time: get (probability `get_ratio`) or put."""

    def __init__(
        self, m: AsyncMap, keys: int, value: bytes, callers: int, get_ratio: float
    ) -> None:
        self.m = m
        self.keys = keys
        self.value = value
        self.get_ratio = get_ratio
        self.phase: Phase | None = None
        self._stop = False
        self._tasks = [asyncio.create_task(self._caller(w)) for w in range(callers)]

    async def _caller(self, w: int) -> None:
        rng = random.Random(w)
        m, value, keys, get_ratio = self.m, self.value, self.keys, self.get_ratio
        while not self._stop:
            key = key_of(rng.randrange(keys))
            is_get = rng.random() < get_ratio
            t0 = time.perf_counter_ns()
            try:
                if is_get:
                    got = await m.get(key, timeout=10)
                else:
                    await m.put(key, value, timeout=10)
                    got = value
            except Exception as e:  # counted, not fatal: the point is to see them
                if self.phase is not None:
                    self.phase.errors[type(e).__name__] += 1
                await asyncio.sleep(0.01)
                continue
            t1 = time.perf_counter_ns()
            phase = self.phase
            if phase is None:
                continue
            phase.lat_ns.append(t1 - t0)
            phase.done_at.append(t1 / 1e9)
            if is_get:
                phase.gets += 1
                if got is None:
                    phase.missing += 1
            else:
                phase.puts += 1

    async def stop(self) -> None:
        self._stop = True
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 30)


def machine_cpu_s() -> float | None:
    """CPU seconds the whole machine spent busy (all cores, /proc/stat), None if unknown."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def cpu_now(members: list[MemberProcess]) -> dict[str, float | None]:
    out: dict[str, float | None] = {m.name: process_cpu_s(m.pid) for m in members}
    out["bench"] = time.process_time()
    out["machine"] = machine_cpu_s()
    return out


def begin(phase: Phase, load: SteadyLoad, members: list[MemberProcess]) -> Phase:
    phase.cpu0 = cpu_now(members)
    phase.started = time.perf_counter()
    phase.cpu_at = (phase.started, 0.0)
    load.phase = phase
    return phase


def end(phase: Phase, members: list[MemberProcess], at: float | None = None) -> None:
    """Close the phase at `at` (default now); ops completed after `at` are dropped from it."""
    phase.cpu1 = cpu_now(members)
    now = time.perf_counter()
    phase.cpu_at = (phase.cpu_at[0], now)
    phase.ended = at if at is not None else now
    if at is not None:
        keep = [i for i, t in enumerate(phase.done_at) if t <= at]
        if len(keep) != len(phase.done_at):
            phase.lat_ns = [phase.lat_ns[i] for i in keep]
            phase.done_at = [phase.done_at[i] for i in keep]


# ---- the run ---------------------------------------------------------------------------------
@dataclass
class Settings:
    keys: int
    value_size: int
    rate: str | None
    callers: int
    get_ratio: float
    window_s: float
    batch: int
    load_concurrency: int
    settle_timeout_s: float
    verify: bool


async def run(
    console: Console, cluster: LocalCluster, s: Settings, virtual_nodes: int
) -> dict[str, Any]:
    value = b"v" * s.value_size
    copies = 2 * s.keys
    probe = Probe()
    client = grid.AsyncClient(cluster.addresses, timeout=30, codec="raw")
    out: dict[str, Any] = {}
    try:
        members = list(cluster.members)
        with console.status("waiting for the 3-member table") as status:
            await wait_settled(
                probe, members, timeout=60, virtual_nodes=virtual_nodes, status=status
            )
        m = client.map("bench")
        load_s = await load(
            console, m, s.keys, value, s.batch, s.load_concurrency, max(600.0, s.keys / 500)
        )
        console.print(
            f"loaded {s.keys:,} keys in {load_s:.1f} s ({s.keys / load_s:,.0f} keys/s, "
            f"{s.keys * s.value_size / load_s / 1e6:.1f} MB/s of values)"
        )
        with console.status("waiting for the backups") as status:
            await wait_settled(
                probe, members, timeout=300, virtual_nodes=virtual_nodes, entries=copies,
                status=status, what="waiting for 2N copies",
            )  # fmt: skip
        before_table = await probe.table(members[0].address)
        per_partition = Counter(
            partition_of(key_of(i).encode(), before_table.partition_count) for i in range(s.keys)
        )

        steady = SteadyLoad(m, s.keys, value, s.callers, s.get_ratio)
        try:
            with console.status("warming up the steady load (2 s)"):
                await asyncio.sleep(2.0)
            # baseline
            poll0 = Poll(time.perf_counter(), await probe.all_stats(members))
            before = begin(Phase("before"), steady, members)
            with console.status(f"baseline: {s.callers} callers for {s.window_s:g} s"):
                await asyncio.sleep(s.window_s)
            end(before, members)
            poll1 = Poll(time.perf_counter(), await probe.all_stats(members))
            repl_rate = (poll1.bytes_received - poll0.bytes_received) / (poll1.at - poll0.at)

            # the join
            during = begin(Phase("during"), steady, members)
            t_join = during.started
            newcomer = cluster.start_member(3)
            during.cpu0[newcomer.name] = 0.0  # a new process: all its CPU is the move's
            await asyncio.to_thread(cluster.wait_ready, newcomer, 120)
            t_serving = time.perf_counter()
            members = list(cluster.members)
            samples: list[Poll] = [poll1]
            with console.status("joining") as status:
                t_settled, after_table, matched = await wait_settled(
                    probe, members, timeout=s.settle_timeout_s, virtual_nodes=virtual_nodes,
                    min_version=before_table.version, samples=samples, status=status,
                    what="member-4 joined; migrating",
                )  # fmt: skip
            end(during, members, at=max(t_settled, during.started + 0.1))
            settled_stats = await probe.all_stats(members)

            after = begin(Phase("after"), steady, members)
            with console.status(f"after: {s.window_s:g} s"):
                await asyncio.sleep(s.window_s)
            end(after, members)
        finally:
            await steady.stop()

        with console.status("waiting for old copies to be dropped") as status:
            _, _, _ = await wait_settled(
                probe, members, timeout=120, virtual_nodes=virtual_nodes, entries=copies,
                min_version=before_table.version, status=status, what="2N copies",
            )  # fmt: skip
        final = await probe.all_stats(members)
        missing = wrong = -1
        if s.verify:
            missing, wrong = await verify(console, m, s.keys, value, max(600.0, s.keys / 1000))

        # the move, derived
        move_s = t_settled - t_join
        received = sum(st.migration.bytes_received for st in settled_stats.values()) - sum(
            st.migration.bytes_received for st in poll1.stats.values()
        )
        copies_moved = sum(
            per_partition[p] * len(set(after_table.replicas(p)) - set(before_table.replicas(p)))
            for p in range(before_table.partition_count)
        )
        parts_changed = sum(
            1
            for p in range(before_table.partition_count)
            if before_table.replicas(p) != after_table.replicas(p)
        )
        primaries_moved = sum(
            1
            for p in range(before_table.partition_count)
            if before_table.owner(p) != after_table.owner(p)
        )
        new = settled_stats[newcomer.name]
        coordinator = next(
            (mp for mp in members if settled_stats[mp.name].migration.coordinator), members[0]
        )
        span = rebalance_span(coordinator.log_path, newcomer.name)
        rebalance_s, rounds = span if span else (float("nan"), 0)
        held = after_table.partitions_of(newcomer.name)
        out = {
            "keys": s.keys,
            "value_size": s.value_size,
            "copies": copies,
            "load_s": load_s,
            "before_table_version": before_table.version,
            "after_table_version": after_table.version,
            "table_matches_target": matched,
            "move": {
                "seconds": move_s,
                "start_to_serving_s": t_serving - t_join,
                "partitions_changed": parts_changed,
                "primaries_moved": primaries_moved,
                "new_member_primaries": len(held.primary),
                "new_member_backups": len(held.backup),
                "new_member_entries": new.total.entries,
                "key_copies_moved": copies_moved,
                "bytes_received": received,
                "replication_bytes_s_before": repl_rate,
                "mb_s": received / move_s / 1e6,
                "key_copies_s": copies_moved / move_s,
                "new_member_entries_s": new.total.entries / move_s,
                "coordinator": coordinator.name,
                "coordinator_rebalance_s": rebalance_s,
                "coordinator_rounds": rounds,
                "key_copies_s_rebalance": copies_moved / rebalance_s,
                "mb_s_rebalance": received / rebalance_s / 1e6,
            },
            "phases": {p.name: phase_dict(p) for p in (before, during, after)},
            "p99_ratio": during.ms(99) / before.ms(99),
            "timeline": timeline(during, samples),
            "final_entries": {n: st.total.entries for n, st in final.items()},
            "routing_during_move": {
                n: {
                    "forwarded": st.migration.forwarded - _old(poll1, n, "forwarded"),
                    "not_owner": st.migration.not_owner - _old(poll1, n, "not_owner"),
                    "handoffs": st.migration.handoffs - _old(poll1, n, "handoffs"),
                    "bytes_sent": st.migration.bytes_sent - _old(poll1, n, "bytes_sent"),
                }
                for n, st in settled_stats.items()
            },
            "missing": missing,
            "wrong": wrong,
        }
        return out
    finally:
        with contextlib.suppress(Exception):
            await client.close()
        await probe.close()


def _old(poll: Poll, name: str, attr: str) -> int:
    st = poll.stats.get(name)
    return getattr(st.migration, attr) if st is not None else 0


def phase_dict(p: Phase) -> dict[str, Any]:
    return {
        "wall_start": time.time() - (time.perf_counter() - p.started),
        "seconds": p.seconds,
        "ops": len(p.lat_ns),
        "ops_s": p.ops_s,
        "gets": p.gets,
        "puts": p.puts,
        "p50_ms": p.ms(50),
        "p99_ms": p.ms(99),
        "p999_ms": p.ms(99.9),
        "max_ms": max(p.lat_ns, default=0) / 1e6,
        "missing": p.missing,
        "errors": dict(p.errors),
        "cpu_pct": {n: p.cpu_pct(n) for n in p.cpu1},
    }


def timeline(during: Phase, samples: list[Poll]) -> list[dict[str, float]]:
    """Per second of the move: ops/s, p99, and MB/s received by all members."""
    rows = []
    t = during.started
    i = 0
    order = sorted(range(len(during.done_at)), key=during.done_at.__getitem__)
    while t < during.ended:
        t1 = min(t + 1.0, during.ended)
        lat = []
        while i < len(order) and during.done_at[order[i]] <= t1:
            lat.append(during.lat_ns[order[i]])
            i += 1
        inside = [x for x in samples if t <= x.at <= t1]
        before = [x for x in samples if x.at <= t]
        mb = None
        if inside and before:
            a, b = before[-1], inside[-1]
            mb = (b.bytes_received - a.bytes_received) / (b.at - a.at) / 1e6
        rows.append(
            {
                "t": t - during.started,
                "ops_s": len(lat) / (t1 - t) if t1 > t else 0.0,
                "p99_ms": percentile(lat, 99) / 1e6,
                "mb_s": mb if mb is not None else float("nan"),
                "entries": float(inside[-1].entries) if inside else float("nan"),
            }
        )
        t = t1
    return rows


# ---- printing --------------------------------------------------------------------------------
def report(console: Console, r: dict[str, Any], s: Settings, rate: int, parallel: int) -> None:
    mv = r["move"]
    ph = r["phases"]
    off = "" if rate else " = off"
    backups = mv["new_member_backups"]
    repl = mv["replication_bytes_s_before"]
    rb, rounds = mv["coordinator_rebalance_s"], mv["coordinator_rounds"]
    console.print()
    t = Table(title="the move (member-4 joins a 3-member cluster)", title_justify="left")
    t.add_column("what")
    t.add_column("value", justify="right")
    rows = [
        ("data", f"{r['keys']:,} keys x {r['value_size']} B; backups=1: {r['copies']:,} copies"),
        ("migration_max_bytes_per_s", f"{rate:,} ({rate / 2**20:g} MiB/s{off})"),
        ("migration_max_parallel", f"{parallel}"),
        ("duration: member-4 start -> settled", f"{mv['seconds']:.2f} s"),
        ("  of which start -> serving", f"{mv['start_to_serving_s']:.2f} s"),
        ("partitions whose replicas changed", f"{mv['partitions_changed']} of 271"),
        ("primaries moved", f"{mv['primaries_moved']}"),
        ("member-4 holds", f"{mv['new_member_primaries']} primaries, {backups} backups"),
        ("entries on member-4 after", f"{mv['new_member_entries']:,}"),
        ("key copies moved (from the tables)", f"{mv['key_copies_moved']:,}"),
        ("bytes received by all members", f"{mv['bytes_received'] / 1e6:,.1f} MB"),
        ("  backup stream of client puts, before", f"{repl / 1e6:.2f} MB/s"),
        ("MB/s (bytes received / duration)", f"{mv['mb_s']:.1f}"),
        ("key copies/s (moved / duration)", f"{mv['key_copies_s']:,.0f}"),
        ("member-4 entries/s", f"{mv['new_member_entries_s']:,.0f}"),
        (f"{mv['coordinator']}'s rebalance (its log)", f"{rb:.2f} s, {rounds} round(s)"),
        ("  MB/s over the rebalance", f"{mv['mb_s_rebalance']:.1f}"),
        ("  key copies/s over the rebalance", f"{mv['key_copies_s_rebalance']:,.0f}"),
        ("final table = 4-member placement", "yes" if r["table_matches_target"] else "NO"),
    ]  # fmt: skip
    for a, b in rows:
        t.add_row(a, b)
    console.print(t)

    t = Table(
        title=f"{s.callers} callers, {s.get_ratio:.0%} get / {1 - s.get_ratio:.0%} put, "
        "single keys, one AsyncClient",
        title_justify="left",
    )
    for col in ("phase", "seconds", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors",
                "missing gets"):  # fmt: skip
        t.add_column(col, justify="left" if col == "phase" else "right")
    for name, p in ph.items():
        errors = sum(p["errors"].values())
        t.add_row(
            name,
            f"{p['seconds']:.1f}",
            f"{p['ops_s']:,.0f}",
            f"{p['p50_ms']:.2f}",
            f"{p['p99_ms']:.2f}",
            f"{p['p999_ms']:.2f}",
            f"{p['max_ms']:.1f}",
            f"{errors}" + (f" {p['errors']}" if errors else ""),
            f"{p['missing']}",
        )
    console.print(t)
    ratio = r["p99_ratio"]
    met = "[green]met[/green]" if ratio <= P99_TARGET else "[red]missed[/red]"
    console.print(f"p99 during / before: {ratio:.2f}x (target <= {P99_TARGET:g}x): {met}")
    console.print(
        f"ops/s during / before: {ph['during']['ops_s'] / ph['before']['ops_s']:.2f}x; "
        f"after / before: {ph['after']['ops_s'] / ph['before']['ops_s']:.2f}x"
    )

    cores = os.cpu_count() or 1
    t = Table(
        title=f"CPU % of one core, per process and phase (machine: all {cores} cores, "
        "every process on it, this run's and others')",
        title_justify="left",
    )
    names = list(ph["during"]["cpu_pct"])
    t.add_column("phase")
    for n in names:
        t.add_column(n, justify="right")
    for name, p in ph.items():
        cells = []
        for n in names:
            v = p["cpu_pct"].get(n)
            cells.append("-" if v is None else f"{v:.0f}")
        t.add_row(name, *cells)
    console.print(t)

    t = Table(title="timeline of the move (1 s buckets)", title_justify="left")
    for col in ("t s", "ops/s", "p99 ms", "MB/s received", "entries (all)"):
        t.add_column(col, justify="right")
    for row in r["timeline"]:
        mb, en = row["mb_s"], row["entries"]
        t.add_row(
            f"{row['t']:.0f}",
            f"{row['ops_s']:,.0f}",
            f"{row['p99_ms']:.1f}",
            "-" if mb != mb else f"{mb:.1f}",
            "-" if en != en else f"{en:,.0f}",
        )
    console.print(t)
    t = Table(title="per member, over the move", title_justify="left")
    for col in ("member", "bytes sent MB", "hand-offs", "ops forwarded", "NOT_OWNER answers"):
        t.add_column(col, justify="left" if col == "member" else "right")
    for n, d in r["routing_during_move"].items():
        t.add_row(
            n,
            f"{d['bytes_sent'] / 1e6:.1f}",
            f"{d['handoffs']}",
            f"{d['forwarded']:,}",
            f"{d['not_owner']:,}",
        )
    console.print(t)
    fe = r["final_entries"]
    console.print(
        f"entries per member after: {', '.join(f'{n} {v:,}' for n, v in fe.items())} "
        f"(sum {sum(fe.values()):,} = 2 x {r['keys']:,})"
    )
    if r["missing"] >= 0:
        colour = "green" if r["missing"] == 0 and r["wrong"] == 0 else "red"
        console.print(
            f"[{colour}]verify: {r['keys']:,} keys read back, {r['missing']} missing, "
            f"{r['wrong']} with a wrong value[/{colour}]"
        )


# ---- driver ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m grid.bench.migration",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys to load [1,000,000]")
    parser.add_argument("--value-size", type=int, default=100, help="bytes per value [100]")
    parser.add_argument(
        "--rate",
        help="migration_max_bytes_per_s for every member (e.g. 16MiB, 0 = no limit) "
        "[the member default, 64 MiB/s]",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        help="migration_max_parallel for every member [the member default, 8]",
    )
    parser.add_argument("--callers", type=int, default=16, help="steady-load callers [16]")
    parser.add_argument("--get-ratio", type=float, default=0.8, help="share of gets [0.8]")
    parser.add_argument("--window", type=float, default=10.0, help="before/after seconds [10]")
    parser.add_argument("--batch", type=int, default=1000, help="keys per put_many [1000]")
    parser.add_argument("--load-concurrency", type=int, default=8, help="batches in flight [8]")
    parser.add_argument(
        "--settle-timeout", type=float, default=600.0, help="seconds for the move [600]"
    )
    parser.add_argument("--no-verify", action="store_true", help="skip reading every key back")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--keep-logs", metavar="DIR", help="keep the members' logs in DIR")
    args = parser.parse_args(argv)
    if args.keys < 1 or args.value_size < 1 or args.callers < 1 or not 0 <= args.get_ratio <= 1:
        parser.error("--keys, --value-size and --callers must be >= 1, --get-ratio in [0, 1]")
    defaults = Config()
    try:
        rate = defaults.migration_max_bytes_per_s if args.rate is None else parse_size(args.rate)
    except Exception as e:
        parser.error(f"--rate: {e}")
    s = Settings(
        keys=args.keys,
        value_size=args.value_size,
        rate=args.rate,
        callers=args.callers,
        get_ratio=args.get_ratio,
        window_s=args.window,
        batch=args.batch,
        load_concurrency=args.load_concurrency,
        settle_timeout_s=args.settle_timeout,
        verify=not args.no_verify,
    )
    from grid import logs

    logs.configure("warning")
    console = wide_console()
    parallel = args.parallel or defaults.migration_max_parallel
    console.print(
        f"grid migration bench: 3 members + 1 joining, {s.keys:,} keys x {s.value_size} B "
        f"(backups=1: {2 * s.keys:,} copies), migration_max_bytes_per_s {rate:,} "
        f"({rate / 2**20:g} MiB/s), migration_max_parallel {parallel}"
    )
    member_args = ["--log-level", "info"]
    if args.rate is not None:
        member_args += ["--migration-max-bytes-per-s", str(args.rate)]
    if args.parallel is not None:
        member_args += ["--migration-max-parallel", str(args.parallel)]
    log_dir = Path(args.keep_logs or tempfile.mkdtemp(prefix="grid-bench-migration-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def work() -> dict[str, Any]:
        with LocalCluster(3, member_args=member_args, log_dir=log_dir) as c:
            result = asyncio.run(run(console, c, s, defaults.virtual_nodes))
            with console.status("stopping the members"):
                c.stop()
        return result

    result, code = run_guarded(console, "migration bench", work, log_dir, bool(args.keep_logs))
    if code is not None:
        return code
    assert result is not None
    report(console, result, s, rate, parallel)
    console.print(f"total run time {time.monotonic() - started:.0f} s")
    if args.json:
        write_json(
            console,
            args.json,
            result,
            settings=vars(s),
            migration_max_bytes_per_s=rate,
            migration_max_parallel=parallel,
        )
    return 0


def write_json(console: Console, path: str, result: dict[str, Any], **meta: Any) -> None:
    """The run's results with the date and the machine, for docs/benchmarks.md."""
    head = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine()}
    Path(path).write_text(json.dumps({**head, **meta, **result}, indent=2) + "\n")
    console.print(f"results written to {path}")


if __name__ == "__main__":
    raise SystemExit(main())
