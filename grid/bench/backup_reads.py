"""`python -m grid.bench.backup_reads`: what reading from backups buys, side by side.

Two measurements, each alternating the two modes in slices within one run (these
machines are noisy; a comparison across runs says little):

1. **Embedded.** Two `grid.Node`s in this process (one per mode) join one member
   process; backups=1, so every partition is on two of the three. Sequential `get`s of
   keys whose partition the node backs up: with `read_from_backup=False` each one goes
   over gRPC to the primary; with `True` the node answers from its own backup copy, no
   hop. This is the case Hazelcast's `read-backup-data` exists for.
2. **Remote clients.** Three member processes, backups=1; `--callers` concurrent smart
   clients' `get`s, primaries only vs spread over both replicas
   (`Client(read_from_backup=True)`). On a 2-core machine shared by three members and the
   client this shows the overhead of the spread more than a gain: every replica is on the
   same cores.

Both modes print ops/s and p50/p99. read_repair_chance is 0 so that only the read path
is measured (a check is a background call, docs/replication.md). Every member process
is stopped however the run ends (grid.bench.main.run_guarded).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

import grid
from grid.bench.main import run_guarded
from grid.bench.stats import percentile
from grid.cli.status import wide_console
from grid.harness.cluster import LocalCluster, wait_settled
from partitioning import partition_of

MAP = "reads"


@dataclass
class Settings:
    keys: int = 20_000
    slices: int = 6
    slice_s: float = 3.0
    callers: int = 32


def row(name: str, mode: str, ops: int, seconds: float, lat: list[float]) -> dict[str, Any]:
    return {
        "workload": name,
        "mode": mode,
        "ops_s": ops / seconds if seconds else 0.0,
        "p50_ms": percentile(lat, 50) * 1e3,  # type: ignore[arg-type]
        "p99_ms": percentile(lat, 99) * 1e3,  # type: ignore[arg-type]
    }


def embedded(s: Settings, log_dir: Path) -> list[dict[str, Any]]:
    log_dir.mkdir(parents=True, exist_ok=True)
    results: dict[bool, tuple[int, float, list[float]]] = {False: (0, 0.0, []), True: (0, 0.0, [])}
    with LocalCluster(1, member_args=["--backups", "1"], log_dir=log_dir) as cluster:
        other = cluster.members[0]
        cluster.wait_ready(other)
        nodes = {
            flag: grid.Node(
                port=0,
                seeds=other.gossip_address,
                backups=1,
                read_from_backup=flag,
                read_repair_chance=0.0,
                name=f"embedded-{int(flag)}",
            )
            for flag in (False, True)
        }
        for node in nodes.values():
            node.open()
        try:
            wait_settled([other.address, *(n.address for n in nodes.values())])
            with grid.Client(other.address, timeout=30) as client:
                m = client.map(MAP)
                for i in range(0, s.keys, 2000):
                    m.put_many({f"k{j}": j for j in range(i, min(s.keys, i + 2000))})
            time.sleep(2.0)  # replication drains (both nodes back up every partition)
            keys: dict[bool, list[str]] = {}
            for flag, node in nodes.items():
                table = node._member.cluster.routing.table  # type: ignore[union-attr]
                keys[flag] = [  # keys whose partition this node backs up
                    f"k{i}" for i in range(s.keys)
                    if node.name
                    in table.replicas(partition_of(f"k{i}".encode(), table.partition_count))[1:]
                ]  # fmt: skip
            for n in range(s.slices * 2):
                flag = bool(n % 2)
                m = nodes[flag].map(MAP)
                ks = keys[flag]
                ops, took, lat = results[flag]
                end = time.monotonic() + s.slice_s / 2
                i = 0
                while time.monotonic() < end:
                    k = ks[i % len(ks)]
                    t0 = time.perf_counter()
                    m.get(k)
                    lat.append(time.perf_counter() - t0)
                    i += 1
                results[flag] = (ops + i, took + s.slice_s / 2, lat)
        finally:
            for node in nodes.values():
                node.close()
    return [
        row("embedded get, key backed up here", "backup copy" if f else "primary", *results[f])
        for f in (False, True)
    ]


async def _remote_slice(
    client: grid.AsyncClient, keys: list[str], callers: int, seconds: float
) -> tuple[int, list[float]]:
    m = client.map(MAP)
    lat: list[float] = []
    end = time.monotonic() + seconds

    async def caller(w: int) -> None:
        i = w
        while time.monotonic() < end:
            t0 = time.perf_counter()
            await m.get(keys[i % len(keys)])
            lat.append(time.perf_counter() - t0)
            i += callers

    await asyncio.gather(*(caller(w) for w in range(callers)))
    return len(lat), lat


def remote(s: Settings, log_dir: Path) -> list[dict[str, Any]]:
    log_dir.mkdir(parents=True, exist_ok=True)
    args = ["--backups", "1", "--read-repair-chance", "0"]
    out: dict[bool, tuple[int, float, list[float]]] = {False: (0, 0.0, []), True: (0, 0.0, [])}
    with LocalCluster(3, member_args=args, log_dir=log_dir) as cluster:
        for mp in cluster.members:
            cluster.wait_ready(mp)
        wait_settled(cluster.addresses)
        keys = [f"k{i}" for i in range(s.keys)]
        with grid.Client(cluster.addresses[0], timeout=30) as client:
            m = client.map(MAP)
            for i in range(0, s.keys, 2000):
                m.put_many({k: 1 for k in keys[i : i + 2000]})

        async def main() -> None:
            plain = grid.AsyncClient(cluster.addresses[0])
            spread = grid.AsyncClient(cluster.addresses[0], read_from_backup=True)
            try:
                for n in range(s.slices * 2):
                    flag = bool(n % 2)
                    ops, lat = await _remote_slice(
                        spread if flag else plain, keys, s.callers, s.slice_s / 2
                    )
                    o, t, all_lat = out[flag]
                    out[flag] = (o + ops, t + s.slice_s / 2, all_lat + lat)
            finally:
                await plain.close()
                await spread.close()

        asyncio.run(main())
    return [
        row(f"{s.callers} clients' get, 3 members", "spread" if f else "primaries", *out[f])
        for f in (False, True)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grid.bench.backup_reads")
    parser.add_argument("--keys", type=int, default=Settings.keys)
    parser.add_argument("--slices", type=int, default=Settings.slices)
    parser.add_argument("--slice-s", type=float, default=Settings.slice_s)
    parser.add_argument("--callers", type=int, default=Settings.callers)
    parser.add_argument("--keep-logs", action="store_true")
    a = parser.parse_args(argv)
    s = Settings(a.keys, a.slices, a.slice_s, a.callers)
    console = wide_console()
    files = Path(tempfile.mkdtemp(prefix="grid-bench-reads-"))
    console.print(f"backup reads: {s}; logs in {files}")

    def work() -> list[dict[str, Any]]:
        return embedded(s, files / "embedded") + remote(s, files / "remote")

    rows, code = run_guarded(console, "backup reads", work, files, a.keep_logs)
    if rows is None:
        return code or 1
    t = Table(title=f"reads from backups ({time.strftime('%Y-%m-%d %H:%M')})")
    for col in ("workload", "mode", "ops/s", "p50 ms", "p99 ms"):
        t.add_column(col, justify="left" if col in ("workload", "mode") else "right")
    for r in rows:
        t.add_row(
            r["workload"], r["mode"], f"{r['ops_s']:,.0f}", f"{r['p50_ms']:.3f}",
            f"{r['p99_ms']:.3f}",
        )  # fmt: skip
    console.print(t)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
