"""`python -m grid.bench.durability`: what persistence costs, side by side with Redis's AOF.

Three measurements, each against real processes on loopback in the same run:

1. Write throughput of 64 concurrent writers (100-byte values): grid memory-only
   and with fsync never / interval / always, against redis-server with
   appendonly yes and appendfsync always / everysec (redis.asyncio, 64 tasks).
   Slices alternate between all six servers so they share the machine's drift.
   Targets (issue 13): grid always >= 1.0x Redis always; grid interval >= 0.9x
   grid memory-only.
2. Recovery of N records of 100 bytes (default 1M): grid's recovery time (the
   member's own `recovery_s`, from its journal) against Redis replaying an AOF of
   the same N SETs (aof-use-rdb-preamble no, so it really replays commands; its
   own "DB loaded" time); and, each in a fresh bare process, the member's journal
   again and the per-partition logs of earlier builds (persistence.Log) holding
   the same records in the same batches; a bare process's CPU seconds include a
   full collection after recovery, so that neither layout defers its collector's
   cost. A member's start from the same journal (Durability.recover(): the
   recovery and the load into the store) is measured the same way. Targets: the
   member's rate >= 0.5x Redis's; the journal's >= 1.0x the per-partition logs'
   (bare vs bare).
3. A snapshot of a member holding about 1 GB (1M x 1 KB; --snapshot-mb to
   shrink): how long it takes, and the p99 write latency of 16 writers before
   and while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import redis
from rich.console import Console
from rich.table import Table

import grid
import persistence
from grid.bench.redis_side import RedisServer, find_redis_server
from grid.bench.sides import ConcurrentSide
from grid.bench.stats import SideResult, percentile
from grid.harness.cluster import LocalCluster, MemberProcess
from partitioning.keys import partition_of
from proto import grid_pb2 as pb

VALUE = b"v" * 98  # msgpack bin 8: 100 bytes as stored
WRITERS = 64


def _start(cluster: LocalCluster, index: int, args: list[str]) -> MemberProcess:
    member = cluster.start_member(index, args)
    cluster.wait_ready(member, timeout=600)
    return member


def _stats(address: str) -> dict[str, Any]:
    with grid.Client(address, timeout=30) as client:
        return client.stats()


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@contextlib.contextmanager
def _redis(binary: str, args: list[str], directory: str | None = None) -> Iterator[RedisServer]:
    server = RedisServer(binary, args, directory)
    try:
        yield server.start(timeout=600)
    finally:
        server.stop(remove_dir=directory is None)


# ---- 1. write throughput ---------------------------------------------------------------------
def write_throughput(console: Console, redis_bin: str | None, seconds: float, tmp: Path) -> dict:
    loop = asyncio.new_event_loop()
    sides: list[tuple[str, ConcurrentSide]] = []
    clients: list[Any] = []
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(LocalCluster(0))
        configs = [
            ("grid memory-only", []),
            ("grid fsync=never", ["--fsync", "never"]),
            ("grid fsync=interval", ["--fsync", "interval"]),
            ("grid fsync=always", ["--fsync", "always"]),
        ]
        for i, (name, args) in enumerate(configs):
            if args:
                args = [*args, "--data-dir", str(tmp / f"grid-{i}")]
            member = _start(cluster, i, [*args, "--log-level", "warning"])
            client = loop.run_until_complete(_aclient(member.address))
            clients.append(client)
            sides.append((name, _grid_put_side(name, loop, client, member.pid)))
        if redis_bin:
            for policy in ("always", "everysec"):
                server = stack.enter_context(
                    _redis(redis_bin, ["--appendonly", "yes", "--appendfsync", policy])
                )
                aclient = redis.asyncio.Redis(port=server.port)
                clients.append(aclient)
                sides.append(
                    (f"redis appendfsync={policy}", _redis_set_side(loop, aclient, server))
                )
        results = {name: SideResult(name) for name, _ in sides}
        for _, side in sides:  # warm up
            side.run(0.2, 10_000)
        rounds = max(1, int(seconds / 0.3))
        for _ in range(rounds):
            for name, side in sides:
                results[name].add(side.run(0.3, 200_000))
        for c in clients:
            with contextlib.suppress(Exception):
                loop.run_until_complete(
                    c.close() if isinstance(c, grid.AsyncClient) else c.aclose()
                )
    loop.close()
    table = Table(title="64 concurrent writers, 100-byte values", title_justify="left")
    for col in ("server", "ops/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="left" if col == "server" else "right")
    out: dict[str, dict[str, float]] = {}
    for name, r in results.items():
        ops = r.ops / r.elapsed_s if r.elapsed_s else 0.0
        p50, p99 = percentile(r.latencies_ns, 50) / 1e6, percentile(r.latencies_ns, 99) / 1e6
        out[name] = {"ops_s": ops, "p50_ms": p50, "p99_ms": p99}
        table.add_row(name, f"{ops:,.0f}", f"{p50:.2f}", f"{p99:.2f}")
    console.print(table)
    return out


async def _aclient(address: str) -> grid.AsyncClient:
    return grid.AsyncClient(address, timeout=30)


def _grid_put_side(
    name: str, loop: asyncio.AbstractEventLoop, client: grid.AsyncClient, pid: int
) -> ConcurrentSide:
    m = client.map("bench", codec="raw")

    async def op(i: int) -> None:
        await m.put(f"k{i % 100_000}", VALUE)

    return ConcurrentSide(name, loop, op, WRITERS, pid)


def _redis_set_side(
    loop: asyncio.AbstractEventLoop, client: Any, server: RedisServer
) -> ConcurrentSide:
    async def op(i: int) -> None:
        await client.set(f"k{i % 100_000}", VALUE)

    return ConcurrentSide("redis", loop, op, WRITERS, server.pid)


# ---- 2. recovery -----------------------------------------------------------------------------
def recovery(console: Console, redis_bin: str | None, records: int, tmp: Path) -> dict:
    out: dict[str, dict[str, float]] = {}
    data = tmp / "recovery-grid"
    with LocalCluster(0) as cluster:
        args = ["--data-dir", str(data), "--fsync", "never", "--log-level", "warning"]
        member = _start(cluster, 0, args)
        with grid.Client(member.address, timeout=60) as client:
            m = client.map("bench", codec="raw")
            for j in range(0, records, 5000):
                m.put_many({f"k{i}": VALUE for i in range(j, min(records, j + 5000))})
        cluster.kill(member, signal.SIGTERM)
        member.process.wait(120)
        cluster.members.clear()
        disk = _dir_bytes(data)
        member = _start(cluster, 0, args)
        stats = _stats(member.address)["persistence"]
    seconds = stats["recovery_s"]
    out["grid journal (member)"] = {
        "records": stats["records_loaded"],
        "seconds": seconds,
        "records_s": stats["records_loaded"] / seconds,
        "mb_s": disk / seconds / 1e6,
    }
    out["grid journal (bare process)"] = _bare_recovery("Journal", data)
    out["grid member start (bare process)"] = _bare_start(data)
    legacy = tmp / "recovery-legacy"
    _write_legacy(records, legacy)
    out["per-partition logs (bare process)"] = _bare_recovery("Log", legacy)
    if redis_bin:
        rdir = tempfile.mkdtemp(prefix="grid-bench-aof-", dir=tmp)
        aof = [
            "--appendonly",
            "yes",
            "--appendfsync",
            "no",
            "--aof-use-rdb-preamble",
            "no",
            "--auto-aof-rewrite-percentage",
            "0",
            "--loglevel",
            "notice",
        ]
        with _redis(redis_bin, aof, rdir) as server:
            client = redis.Redis(port=server.port)
            for j in range(0, records, 5000):
                pipe = client.pipeline(transaction=False)
                for i in range(j, min(records, j + 5000)):
                    pipe.set(f"k{i}", VALUE)
                pipe.execute()
            client.close()
        disk = _dir_bytes(Path(rdir) / "appendonlydir")
        with _redis(redis_bin, aof, rdir) as server:
            text = (Path(rdir) / "redis.log").read_text(errors="replace")
        found = re.findall(r"DB loaded from append only file: ([\d.]+) seconds", text)
        if found:
            rs = float(found[-1])
            out["redis"] = {
                "records": records,
                "seconds": rs,
                "records_s": records / rs,
                "mb_s": disk / rs / 1e6,
            }
    table = Table(title=f"recovery of {records:,} records of 100 bytes", title_justify="left")
    for col in ("server", "records", "seconds", "records/s", "MB/s", "CPU s"):
        table.add_column(col, justify="left" if col == "server" else "right")
    for name, r in out.items():
        table.add_row(
            name,
            f"{r['records']:,.0f}",
            f"{r['seconds']:.2f}",
            f"{r['records_s']:,.0f}",
            f"{r['mb_s']:.1f}",
            f"{r['cpu_s']:.2f}" if "cpu_s" in r else "-",
        )
    console.print(table)
    return out


def _write_legacy(records: int, data: Path) -> None:
    """The per-partition layout of earlier builds (persistence.Log) holding the same
    records in the same 5,000-key batches, split by partition as the member's flush did:
    the "before" of the journal, measured in the same run."""
    cfg = persistence.Config(data, fsync=persistence.FsyncPolicy.NEVER)
    seq: dict[int, int] = {}
    ts = time.time_ns() // 1000
    with persistence.Log.open(cfg) as log:
        for j in range(0, records, 5000):
            batch: dict[int, list[tuple[Any, ...]]] = {}
            for i in range(j, min(records, j + 5000)):
                key = f"k{i}".encode()
                p = partition_of(key)
                s = seq[p] = seq.get(p, 0) + 1
                ts += 1
                batch.setdefault(p, []).append((s, 1, "bench", key, VALUE, ts, 1, 0, 0))
            for p, recs in batch.items():
                log.append(p, recs, trusted=True)


def _bare_recovery(kind: str, data: Path) -> dict[str, float]:
    """persistence.Journal or .Log recovering `data` in a fresh process with nothing
    else running in it: the same method for both layouts (a member also starts its
    servers' threads meanwhile, and a warm heap would flatter either). The CPU
    seconds include a full collection afterwards: each turns the cyclic GC off
    while it recovers, and what it leaves to the collector is part of its cost."""
    code = (
        "import gc, sys, time, persistence\n"
        "with getattr(persistence, sys.argv[1]).open(persistence.Config(sys.argv[2])) as x:\n"
        "    cpu = time.process_time()\n"
        "    _, r = x.recover(int(time.time() * 1000))\n"
        "    gc.collect()\n"
        "    cpu = time.process_time() - cpu\n"
        "print(r.records_loaded, r.duration_s, cpu)\n"
    )
    return _timed_in_fresh_process(code, [kind, str(data)], _dir_bytes(data))


def _bare_start(data: Path) -> dict[str, float]:
    """What a member does with its data_dir at start (grid/store/durability.py:
    recover the journal, load the store), in a fresh process, measured as
    _bare_recovery measures the journal alone."""
    code = (
        "import gc, os, random, sys, time\n"
        "from grid import logs\n"
        "from grid.config import Config\n"
        "from grid.store import Store\n"
        "from grid.store.durability import Durability\n"
        "logs.configure('warning')\n"
        "config = Config(data_dir=sys.argv[1], fsync='never')\n"
        "clock = lambda: int(time.time() * 1000)\n"
        "store = Store(config, member_id=1, clock=clock, rng=random.Random(1))\n"
        "d = Durability(config, store, clock)\n"
        "cpu = time.process_time()\n"
        "d.recover()\n"
        "gc.collect()\n"
        "cpu = time.process_time() - cpu\n"
        "print(d.entries_recovered, d.start_s, cpu, flush=True)\n"
        "os._exit(0)\n"
    )
    return _timed_in_fresh_process(code, [str(data)], _dir_bytes(data))


def _timed_in_fresh_process(code: str, args: list[str], disk: int) -> dict[str, float]:
    """Run `code` (it prints records, seconds and CPU seconds) in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    loaded, seconds, cpu = out.stdout.split()
    return {
        "records": int(loaded),
        "seconds": float(seconds),
        "records_s": int(loaded) / float(seconds),
        "mb_s": disk / float(seconds) / 1e6,
        "cpu_s": float(cpu),
    }


# ---- 3. snapshot under load ------------------------------------------------------------------
def snapshot_under_load(console: Console, megabytes: int, tmp: Path) -> dict:
    entries = megabytes * 1000  # 1 KB values
    value = b"s" * 1000
    with LocalCluster(0) as cluster:
        member = _start(cluster, 0, ["--data-dir", str(tmp / "snap"), "--log-level", "warning"])
        with grid.Client(member.address, timeout=120) as client:
            m = client.map("big", codec="raw")
            for j in range(0, entries, 2000):
                m.put_many({f"b{i}": value for i in range(j, min(entries, j + 2000))})
        before = asyncio.run(_writer_latency(member.address, 1.5, None))
        during = asyncio.run(_writer_latency(member.address, None, member.address))
    out = {
        "entries": entries,
        "snapshot_s": during["snapshot_s"],
        "records": during["records"],
        "p99_before_ms": before["p99_ms"],
        "p99_during_ms": during["p99_ms"],
        "p50_before_ms": before["p50_ms"],
        "p50_during_ms": during["p50_ms"],
    }
    console.print(
        f"snapshot of {entries:,} entries (~{megabytes} MB of values): "
        f"{out['snapshot_s']:.2f}s; 16 writers p50/p99 {out['p50_before_ms']:.2f}/"
        f"{out['p99_before_ms']:.2f} ms before, {out['p50_during_ms']:.2f}/"
        f"{out['p99_during_ms']:.2f} ms while snapshotting"
    )
    return out


async def _writer_latency(address: str, seconds: float | None, snapshot_at: str | None) -> dict:
    """16 writers for `seconds`, or for as long as a snapshot RPC takes."""
    lat: list[int] = []
    done = asyncio.Event()
    info: dict[str, float] = {}
    async with grid.AsyncClient(address, timeout=30) as client:
        m = client.map("hot", codec="raw")

        async def writer(w: int) -> None:
            i = 0
            while not done.is_set() and i < 1_000_000:
                t0 = time.perf_counter_ns()
                await m.put(f"h{w}:{i % 1000}", VALUE)
                lat.append(time.perf_counter_ns() - t0)
                i += 1

        tasks = [asyncio.create_task(writer(w)) for w in range(16)]
        if snapshot_at:
            await asyncio.sleep(0.2)
            async with grpc.aio.insecure_channel(snapshot_at) as ch:
                reply = pb.SnapshotReply.FromString(
                    await ch.unary_unary("/grid.v1.Grid/Snapshot")(
                        pb.SnapshotRequest().SerializeToString(), timeout=600
                    )
                )
            info = {"snapshot_s": reply.seconds, "records": reply.records}
        else:
            await asyncio.sleep(seconds or 1.0)
        done.set()
        await asyncio.gather(*tasks)
    return {**info, "p50_ms": percentile(lat, 50) / 1e6, "p99_ms": percentile(lat, 99) / 1e6}


# ---- driver ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m grid.bench.durability",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs")
    parser.add_argument("--records", type=int, help="records for the recovery test [1M]")
    parser.add_argument("--snapshot-mb", type=int, help="MB of data to snapshot [1000]")
    parser.add_argument("--seconds", type=float, help="seconds per write-throughput side [3]")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument(
        "--only",
        choices=("throughput", "recovery", "snapshot"),
        help="run one measurement (e.g. to compare a change to the snapshot path)",
    )
    args = parser.parse_args(argv)
    records = args.records or (100_000 if args.quick else 1_000_000)
    snapshot_mb = args.snapshot_mb or (50 if args.quick else 1000)
    seconds = args.seconds or (0.6 if args.quick else 3.0)
    console = Console()
    redis_bin = None if args.no_redis else find_redis_server()
    if not args.no_redis and redis_bin is None:
        console.print("[yellow]redis-server not found: Redis columns skipped[/yellow]")
    from grid import logs

    logs.configure("warning")
    t: dict = {}
    r: dict = {}
    s: dict = {}
    with tempfile.TemporaryDirectory(prefix="grid-bench-durability-") as tmp:
        if args.only in (None, "throughput"):
            t = write_throughput(console, redis_bin, seconds, Path(tmp))
        if args.only in (None, "recovery"):
            r = recovery(console, redis_bin, records, Path(tmp))
        if args.only in (None, "snapshot"):
            s = snapshot_under_load(console, snapshot_mb, Path(tmp))
    checks = []
    if "redis appendfsync=always" in t:
        ratio = t["grid fsync=always"]["ops_s"] / t["redis appendfsync=always"]["ops_s"]
        checks.append(("always vs Redis always", ratio, 1.0))
    if t:
        ratio = t["grid fsync=interval"]["ops_s"] / t["grid memory-only"]["ops_s"]
        checks.append(("interval vs grid memory-only", ratio, 0.9))
    if r:
        journal = r["grid journal (bare process)"]["records_s"]
        legacy = r["per-partition logs (bare process)"]["records_s"]
        checks.append(("recovery: journal vs per-partition logs", journal / legacy, 1.0))
    if "redis" in r:
        checks.append(
            (
                "recovery rate vs Redis AOF",
                r["grid journal (member)"]["records_s"] / r["redis"]["records_s"],
                0.5,
            )
        )
    if s:
        checks.append(
            ("p99 during snapshot / before", s["p99_during_ms"] / s["p99_before_ms"], None)
        )
    table = Table(title="targets", title_justify="left")
    for col in ("ratio", "measured", "target", "met"):
        table.add_column(col)
    for name, ratio, target in checks:
        met = "-" if target is None else ("yes" if ratio >= target else "NO")
        table.add_row(name, f"{ratio:.2f}x", "report" if target is None else f">= {target}x", met)
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
