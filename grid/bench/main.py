"""`grid bench`: start the servers, interleave the two sides of every workload, print.

Interleaving is the point of this driver. On a small, shared machine the
speed of everything drifts from one second to the next, so each side runs in
short slices that alternate (grid, ref, ref, grid, ...) and every side's
slices are merged: both see the same noise, and the ratio holds even when
the absolute numbers move. Each loop is bounded by a unit count and by time.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from rich.console import Console

from grid.bench.report import Row, print_report, write_json
from grid.bench.sides import Side
from grid.bench.stats import SideResult, process_cpu_s
from grid.bench.workloads import (
    BULK,
    CONCURRENCY,
    Spec,
    batches,
    bench_keys,
    bench_value,
    select,
)
from grid.cli.status import wide_console

T = TypeVar("T")


@dataclass(frozen=True)
class Timing:
    measure_s: float
    """Measured time per side per workload, spread over slices."""
    slice_s: float
    warmup_s: float
    max_units: int = 2_000_000
    """Upper bound on units per slice, whatever the clock says."""

    @property
    def rounds(self) -> int:
        return max(2, round(self.measure_s / self.slice_s))


FULL = Timing(measure_s=3.0, slice_s=0.3, warmup_s=0.5)
QUICK = Timing(measure_s=0.5, slice_s=0.25, warmup_s=0.1)


def measure(spec: Spec, grid: Side, ref: Side | None, timing: Timing) -> Row:
    """Warm both sides up, then alternate slices (ABBA order) and merge each side's samples."""
    sides = [s for s in (grid, ref) if s is not None]
    for side in sides:
        side.run(timing.warmup_s, timing.max_units)
    results = {id(s): SideResult(s.name) for s in sides}
    server_cpu: dict[int, float | None] = {id(s): 0.0 for s in sides}
    for r in range(timing.rounds):
        for side in sides if r % 2 == 0 else reversed(sides):
            pid = side.pid
            srv0 = process_cpu_s(pid) if pid else None
            cli0 = time.process_time()
            sample = side.run(timing.slice_s, timing.max_units)
            cli1 = time.process_time()
            srv1 = process_cpu_s(pid) if pid else None
            res = results[id(side)]
            res.add(sample)
            res.client_cpu_s += cli1 - cli0
            acc = server_cpu[id(side)]
            server_cpu[id(side)] = (
                None if acc is None or srv0 is None or srv1 is None else acc + srv1 - srv0
            )
    for side in sides:
        results[id(side)].server_cpu_s = server_cpu[id(side)]
    return Row(spec, results[id(grid)], results[id(ref)] if ref is not None else None)


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so the servers we started are stopped on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_guarded(
    console: Console, name: str, work: Callable[[], T], files: Path, keep: bool
) -> tuple[T | None, int | None]:
    """Run a benchmark's measurement so that the members it started are stopped however it
    ends (the work stops them; SIGTERM becomes SystemExit for that). Returns (result, None),
    or (None, exit code) after saying why; `files` (logs, data) are removed after a
    success unless `keep`, and kept for a look after a failure."""
    ok = False
    try:
        with sigterm_as_exit():
            result = work()
        ok = True
        return result, None
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted; members stopped (files: {files})[/yellow]")
        return None, 130
    except SystemExit:
        console.print(f"[yellow]terminated; members stopped (files: {files})[/yellow]")
        raise
    except Exception as e:
        console.print(f"[red]{name}: {type(e).__name__}: {e}[/red]")
        console.print(f"member logs kept in {files}")
        return None, 1
    finally:
        if ok and not keep:
            shutil.rmtree(files, ignore_errors=True)


def _network_rows(
    specs: list[Spec],
    timing: Timing,
    use_redis: bool,
    console: Console,
    notes: list[str],
    meta: dict[str, Any],
) -> list[Row]:
    from grid.bench.grid_side import GridBench
    from grid.bench.redis_side import RedisBench, find_redis_server, running_redis
    from grid.harness.cluster import LocalCluster

    keys = bench_keys()
    key_batches = batches(keys)
    value, blob = bench_value()
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        loop = asyncio.new_event_loop()
        stack.callback(loop.close)
        binary = find_redis_server() if use_redis else None
        redis_bench: RedisBench | None = None
        if not use_redis:
            notes.append("Redis columns skipped (--no-redis).")
        elif binary is None:
            notes.append(
                "Redis columns skipped: no redis-server found (/usr/bin/redis-server or $PATH); "
                "`make bench` installs it with apt when it can."
            )
        else:
            with console.status("starting redis-server"):
                server = stack.enter_context(running_redis(binary))
                redis_bench = RedisBench(server, loop)
                stack.callback(redis_bench.close)
                meta["redis_version"] = redis_bench.client.info("server")["redis_version"]
                redis_bench.load(keys, blob)
        with console.status("starting a grid member (LocalCluster(1))"):
            cluster = LocalCluster(1, member_args=["--log-level", "warning"])
            stack.enter_context(cluster)
            member = cluster.members[0]
            grid = GridBench(member.address, member.pid, loop)
            stack.callback(grid.close)
            grid.load(keys, value)
        rb = redis_bench
        for spec in specs:
            if spec.name == "get":
                pair = grid.seq_get(keys), rb.seq_get(keys) if rb else None
            elif spec.name == "put":
                pair = grid.seq_put(keys, value), rb.seq_set(keys, value) if rb else None
            elif spec.name == "get_many":
                pair = grid.get_many(key_batches), rb.pipeline_get(key_batches) if rb else None
            elif spec.name == "put_many":
                pair = (
                    grid.put_many(key_batches, value),
                    rb.pipeline_set(key_batches, value) if rb else None,
                )
            elif spec.name == "bulk":
                bulk = batches(keys, BULK)
                pair = (
                    grid.put_many(bulk, value, f"put_many {BULK}"),
                    rb.mset(bulk, value) if rb else None,
                )
            elif spec.name == "async":
                pair = (
                    grid.concurrent_get(keys, CONCURRENCY),
                    rb.concurrent_get(keys, CONCURRENCY) if rb else None,
                )
            else:
                raise AssertionError(spec.name)
            with console.status(f"measuring {spec.title}"):
                rows.append(measure(spec, *pair, timing))
            console.print(f"  done: {spec.title}")
            if not member.alive():
                raise RuntimeError(f"the grid member died:\n{member.log_tail()}")
    return rows


def _embedded_row(spec: Spec, timing: Timing, console: Console) -> Row:
    from grid.bench.grid_side import EmbeddedBench

    keys = bench_keys()
    value, blob = bench_value()
    with console.status(f"measuring {spec.title}"):
        bench = EmbeddedBench(keys, value, blob)
        try:
            row = measure(spec, bench.local_get(), bench.cachetools_get(), timing)
        finally:
            bench.close()
    console.print(f"  done: {spec.title}")
    return row


def run_bench(
    quick: bool = False,
    redis: bool = True,
    only: list[str] | None = None,
    json_path: str | None = None,
) -> int:
    """Run the selected workloads; 0 when the run completed (targets missed or not)."""
    console = wide_console()
    try:
        specs = select(only)
    except ValueError as e:
        console.print(f"[red]grid bench:[/red] {e}")
        return 2
    timing = QUICK if quick else FULL
    started = time.monotonic()
    notes: list[str] = []
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "timing": {"measure_s": timing.measure_s, "slice_s": timing.slice_s},
    }
    console.print(
        f"grid bench: {len(specs)} workload(s), {timing.measure_s:g} s per side each, "
        f"in {timing.rounds} alternating slices"
    )
    rows: list[Row] = []
    try:
        with sigterm_as_exit():
            network = [s for s in specs if s.network]
            if network:
                rows += _network_rows(network, timing, redis, console, notes, meta)
            rows += [_embedded_row(s, timing, console) for s in specs if not s.network]
    except KeyboardInterrupt:
        console.print("[yellow]grid bench: interrupted; servers stopped[/yellow]")
        return 130
    except SystemExit:  # SIGTERM, see sigterm_as_exit
        console.print("[yellow]grid bench: terminated; servers stopped[/yellow]")
        raise
    except Exception as e:  # a failed run is an error: say what, exit non-zero
        console.print(f"[red]grid bench: {type(e).__name__}: {e}[/red]")
        return 1
    rows.sort(key=lambda row: specs.index(row.spec))
    versus = f"redis-server {meta['redis_version']}" if "redis_version" in meta else "references"
    title = f"grid (1 member, loopback) vs {versus}; {time.monotonic() - started:.0f} s"
    print_report(console, rows, title, notes)
    if json_path:
        write_json(json_path, rows, meta)
        console.print(f"results written to {json_path}")
    return 0
