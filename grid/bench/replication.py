"""`python -m grid.bench.replication`: what backups cost and what they buy (issue 6).

Real member processes on loopback (grid.harness.cluster.LocalCluster, memory only), one
`grid.AsyncClient` per cluster in this process. Four parts (`--only` picks some):

1. failover: a fresh 3-member cluster (default backups=1) per trial. One writer task
   per key (default 50 keys, each in a different partition the victim is primary of,
   found with the client's partition table, plus 10 control keys on the other members),
   each doing single-key `put`s one after the other, a pause of --interval between
   them. The victim (never the coordinator) is killed with SIGKILL. Measured from the
   kill: the first successful put to the victim's partitions (issued after the kill),
   and the time until every sample key has had one. Also, where they can be told
   apart: when a survivor logged the victim "suspect" and "dead" (membership), when
   the coordinator logged "members gone: replicas removed" (the failover table), when
   every survivor's Stats showed a newer table, when the client's table changed, and
   when the survivors had settled again (backups restored). Target: <= 6 s.
2. throughput: three 3-member clusters running at once, backups=0, backups=1 (async)
   and backups=1 with sync_backups=1, the same load on each, in slices that alternate
   between them (the order rotates each round), each slice reported. Loads: "single",
   C callers (default 64) sharing one AsyncClient, each one `put` at a time of a random
   key of K (default 100,000, preloaded) with a V-byte value (default 100, codec raw);
   "batch", 8 callers each doing `put_many` of 64 random keys (ops/s counts keys,
   latency is per batch). Target: backups=1 async >= 0.7x backups=0.
3. lag: on the backups=1 clusters (async, then sync=1), rate-limited writers sharing
   one schedule (default 10,000 keys/s in all as `put_many` of 10 keys from 32 callers;
   `--lag-batch 1`: single puts from C callers, which one client cannot push to 10k/s
   here); every 100 ms the Stats of every member of that cluster:
   `migration.lag_changes_max`, `lag_changes_total`, `lag_seconds_max`. Per sample the
   worst member counts; p50/p99/max over samples. The same sampling runs during the
   throughput slices (lag at saturation).
4. fill: M members (default 2, backups=1) hold N keys (default 1M, 100 B), 2N copies
   (N with one member); one more member starts; time from its start until the cluster
   is settled (same table version everywhere, nothing pending or in flight, the table
   equal to the placement of all members), the copies it received, and bytes/s.

"Settled", the loading and the Stats polling are grid.bench.migration's. Every wait
has a timeout, and every member process is stopped however the run ends (normal
exit, error, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shlex
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import grid
from grid.bench.main import run_guarded
from grid.bench.migration import (
    Poll,
    Probe,
    cpu_now,
    load,
    rebalance_span,
    wait_settled,
    write_json,
)
from grid.bench.stats import percentile
from grid.cli.status import wide_console
from grid.client.aio import AsyncMap
from grid.config import Config
from grid.harness.cluster import LocalCluster, MemberProcess
from partitioning import PartitionTable, partition_of

FAILOVER_TARGET_S = 6.0
THROUGHPUT_TARGET = 0.7
PARTS = ("failover", "throughput", "lag", "fill")
CONFIGS: dict[str, list[str]] = {
    "backups=0": ["--backups", "0"],
    "backups=1 async": ["--backups", "1"],
    "backups=1 sync=1": ["--backups", "1", "--sync-backups", "1"],
}
BATCH_CALLERS = 8
BATCH_KEYS = 64
SAMPLE_EVERY_S = 0.1


def fmt_s(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def ms(samples: list[int], p: float) -> float:
    return percentile(samples, p) / 1e6


class Clusters:
    """Every LocalCluster this run started, so that all are stopped on any exit."""

    def __init__(self, log_root: Path) -> None:
        self.log_root = log_root
        self.live: list[LocalCluster] = []

    async def start(self, name: str, size: int, member_args: Sequence[str]) -> LocalCluster:
        log_dir = self.log_root / name
        log_dir.mkdir(parents=True, exist_ok=True)
        c = LocalCluster(size, member_args=["--log-level", "info", *member_args], log_dir=log_dir)
        self.live.append(c)
        await asyncio.to_thread(c.start, None, 60.0)
        return c

    async def stop(self, c: LocalCluster) -> None:
        await asyncio.to_thread(c.stop)
        with contextlib.suppress(ValueError):
            self.live.remove(c)

    def stop_all(self) -> None:
        for c in self.live:
            with contextlib.suppress(Exception):
                c.stop()
        self.live.clear()


def keys_owned(
    table: PartitionTable, owners: set[str], count: int, prefix: str, distinct: bool = True
) -> list[str]:
    """`count` keys whose partition's primary is in `owners` (each in its own partition
    when `distinct`); str keys are their utf-8 bytes on the wire."""
    out: list[str] = []
    used: set[int] = set()
    i = 0
    while len(out) < count and i < 1_000_000:
        key = f"{prefix}{i}"
        i += 1
        p = partition_of(key.encode(), table.partition_count)
        if table.owner(p) in owners and not (distinct and p in used):
            used.add(p)
            out.append(key)
    return out


def log_events(path: Path) -> list[dict[str, Any]]:
    """The member's JSON log lines (others skipped)."""
    out = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        with contextlib.suppress(ValueError):
            e = json.loads(line)
            if isinstance(e, dict) and "event" in e and "timestamp" in e:
                out.append(e)
    return out


def first_event_after(
    paths: Sequence[Path], since: float, match: Callable[[dict[str, Any]], bool]
) -> float | None:
    """Seconds after wall time `since` of the earliest matching log event in any file."""
    best: float | None = None
    for path in paths:
        for e in log_events(path):
            if not match(e):
                continue
            try:
                at = datetime.fromisoformat(e["timestamp"]).timestamp() - since
            except (ValueError, TypeError):
                continue
            if at >= -0.5 and (best is None or at < best):
                best = at
    return best


async def coordinator_of(probe: Probe, members: list[MemberProcess]) -> MemberProcess | None:
    stats = await probe.all_stats(members)
    return next((m for m in members if stats[m.name].migration.coordinator), None)


# ---- 1. failover ------------------------------------------------------------------------------
@dataclass
class Attempt:
    key: str
    t0: float  # perf_counter seconds
    t1: float
    ok: bool
    error: str = ""


class IntervalWriters:
    """One task per key: put, pause `interval`, put again, ... every attempt recorded."""

    def __init__(self, m: AsyncMap, keys: list[str], interval: float, timeout: float) -> None:
        self.attempts: list[Attempt] = []
        self._stop = False
        self._m, self._interval, self._timeout = m, interval, timeout
        self._tasks = [asyncio.create_task(self._writer(k)) for k in keys]

    async def _writer(self, key: str) -> None:
        n = 0
        while not self._stop:
            n += 1
            value = f"{key}:{n}".encode()
            t0 = time.perf_counter()
            try:
                await self._m.put(key, value, timeout=self._timeout)
            except Exception as e:  # counted: the point is to see them
                self.attempts.append(Attempt(key, t0, time.perf_counter(), False, type(e).__name__))
            else:
                self.attempts.append(Attempt(key, t0, time.perf_counter(), True))
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        self._stop = True
        await asyncio.wait_for(
            asyncio.gather(*self._tasks, return_exceptions=True), self._timeout + 10
        )


async def failover_trial(
    console: Console, clusters: Clusters, trial: int, s: Settings, virtual_nodes: int
) -> dict[str, Any]:
    c = await clusters.start(f"failover-{trial}", 3, [])
    probe = Probe()
    client = grid.AsyncClient(c.addresses, timeout=s.put_timeout, codec="raw")
    try:
        members = list(c.members)
        await wait_settled(probe, members, timeout=60, virtual_nodes=virtual_nodes)
        coordinator = await coordinator_of(probe, members)
        others = [m for m in members if m is not coordinator]
        victim = others[trial % len(others)]
        survivors = [m for m in members if m is not victim]
        table = await client.table()
        assert table is not None
        before_version = table.version
        victim_keys = keys_owned(table, {victim.name}, s.sample_keys, "fo")
        control_keys = keys_owned(table, {m.name for m in survivors}, 10, "ctl")
        m = client.map("failover", codec="raw")
        writers = IntervalWriters(m, victim_keys + control_keys, s.interval, s.put_timeout)
        polls: list[Poll] = []
        table_seen: dict[str, float] = {}
        client_table_at: float | None = None
        stop_polling = False

        async def poll_stats() -> None:
            while not stop_polling:
                t = time.perf_counter()
                with contextlib.suppress(Exception):
                    st = await asyncio.wait_for(probe.all_stats(survivors), 2.0)
                    polls.append(Poll(t, st))
                    for name, r in st.items():
                        if r.migration.table_version > before_version:
                            table_seen.setdefault(name, t)
                await asyncio.sleep(max(0.0, SAMPLE_EVERY_S - (time.perf_counter() - t)))

        async def poll_client() -> None:
            nonlocal client_table_at
            while not stop_polling and client_table_at is None:
                t = await client.table()
                if t is not None and t.version > before_version:
                    client_table_at = time.perf_counter()
                await asyncio.sleep(0.01)

        try:
            await asyncio.sleep(2.0)  # writes flowing before the kill
            kill_wall = time.time()
            t_kill = time.perf_counter()
            c.kill(victim)
            pollers = [asyncio.create_task(poll_stats()), asyncio.create_task(poll_client())]
            deadline = t_kill + s.failover_timeout
            want = set(victim_keys)
            while time.perf_counter() < deadline:
                done = {a.key for a in writers.attempts if a.ok and a.t0 >= t_kill}
                if want <= done:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # a little after, to see the steady state again
        finally:
            await writers.stop()
        t_all_done = time.perf_counter()
        matched = False
        with contextlib.suppress(TimeoutError):  # the survivors on the 2-member placement
            _, _, matched = await wait_settled(
                probe, survivors, timeout=60, virtual_nodes=virtual_nodes,
                min_version=before_version,
            )  # fmt: skip
        stop_polling = True
        await asyncio.wait_for(asyncio.gather(*pollers, return_exceptions=True), 5)
        # settled: from the first of the 100 ms polls after which every poll is quiet on the
        # final table (the wait above only confirms it, and starts after the writers stop)
        settled_s: float | None = None
        if matched and polls:
            final = max(polls[-1].versions)
            for p in reversed(polls):
                if not (p.quiet() and p.versions == {final}):
                    break
                settled_s = p.at - t_kill
        await asyncio.to_thread(victim.process.wait, 10)

        after = [a for a in writers.attempts if a.key in want and a.t0 >= t_kill and a.ok]
        first_ok = min((a.t1 - t_kill for a in after), default=None)
        per_key: dict[str, float] = {}
        for a in after:
            per_key[a.key] = min(per_key.get(a.key, 1e9), a.t1 - t_kill)
        all_ok = max(per_key.values()) if len(per_key) == len(want) else None
        window = [a for a in writers.attempts if t_kill <= a.t1 <= t_kill + (all_ok or 0) + 1]
        failed = Counter(a.error for a in window if not a.ok and a.key in want)
        ctl = [a for a in writers.attempts if a.key not in want and a.t1 >= t_kill]
        ctl_window = [a for a in ctl if a.t1 <= t_all_done]
        pre = [a for a in writers.attempts if a.ok and a.t1 < t_kill]
        logs = [m.log_path for m in survivors]
        coord_log = [coordinator.log_path] if coordinator is not None else logs

        def about(kind: str) -> Callable[[dict[str, Any]], bool]:
            return lambda e: e.get("event") == f"member {kind}" and e.get("peer") == victim.name

        def gone(e: dict[str, Any]) -> bool:
            return e.get("event") == "members gone: replicas removed" and victim.name in e.get(
                "gone", ()
            )

        return {
            "trial": trial + 1,
            "victim": victim.name,
            "coordinator": coordinator.name if coordinator else None,
            "victim_primaries": len(table.partitions_of(victim.name).primary),
            "sample_keys": len(victim_keys),
            "writes_before_kill_per_s": len(pre) / 2.0,
            "suspect_s": first_event_after(logs, kill_wall, about("suspect")),
            "dead_s": first_event_after(logs, kill_wall, about("dead")),
            "dead_on_coordinator_s": first_event_after(coord_log, kill_wall, about("dead")),
            "failover_table_logged_s": first_event_after(coord_log, kill_wall, gone),
            "survivors_on_new_table_s": (
                max(table_seen.values()) - t_kill if len(table_seen) == len(survivors) else None
            ),
            "client_table_s": client_table_at - t_kill if client_table_at else None,
            "first_write_ok_s": first_ok,
            "all_keys_ok_s": all_ok,
            "settled_s": settled_s,
            "settled_table_matches_target": matched,
            "failed_writes": dict(failed),
            "control_writes": len(ctl_window),
            "control_failed": sum(1 for a in ctl_window if not a.ok),
            "control_max_ms": max(((a.t1 - a.t0) * 1e3 for a in ctl_window), default=0.0),
        }
    finally:
        with contextlib.suppress(Exception):
            await client.close()
        await probe.close()
        await clusters.stop(c)


async def run_failover(
    console: Console, clusters: Clusters, s: Settings, virtual_nodes: int
) -> list[dict[str, Any]]:
    out = []
    for trial in range(s.trials):
        with console.status(f"failover trial {trial + 1} of {s.trials}"):
            r = await failover_trial(console, clusters, trial, s, virtual_nodes)
        out.append(r)
        console.print(
            f"failover trial {r['trial']}: killed {r['victim']}; first write ok after "
            f"{fmt_s(r['first_write_ok_s'])} s, all {r['sample_keys']} keys after "
            f"{fmt_s(r['all_keys_ok_s'])} s (dead on the coordinator at "
            f"{fmt_s(r['dead_on_coordinator_s'])} s)"
        )
    return out


def report_failover(console: Console, trials: list[dict[str, Any]], s: Settings) -> None:
    t = Table(
        title=f"failover: kill -9 of a primary (3 members, backups=1); {s.sample_keys} sample "
        f"keys + 10 control keys, each written every {s.interval * 1e3:g} ms (put timeout "
        f"{s.put_timeout:g} s); seconds after the kill",
        title_justify="left",
    )
    cols = ("trial", "victim", "suspect", "dead (coord.)", "table logged", "all on table",
            "client table", "first write ok", f"all {s.sample_keys} keys ok", "settled",
            "failed puts", "control max ms")  # fmt: skip
    for col in cols:
        t.add_column(col, justify="left" if col == "victim" else "right")
    for r in trials:
        t.add_row(
            str(r["trial"]),
            r["victim"],
            fmt_s(r["suspect_s"]),
            fmt_s(r["dead_on_coordinator_s"]),
            fmt_s(r["failover_table_logged_s"]),
            fmt_s(r["survivors_on_new_table_s"]),
            fmt_s(r["client_table_s"]),
            fmt_s(r["first_write_ok_s"]),
            fmt_s(r["all_keys_ok_s"]),
            fmt_s(r["settled_s"]),
            str(sum(r["failed_writes"].values())),
            f"{r['control_max_ms']:.0f}",
        )
    console.print(t)
    done = [r["all_keys_ok_s"] for r in trials if r["all_keys_ok_s"] is not None]
    if done:
        worst = max(done)
        good = worst <= FAILOVER_TARGET_S and len(done) == len(trials)
        met = "[green]met[/green]" if good else "[red]missed[/red]"
        console.print(
            f"kill -> all sample keys writable: median {sorted(done)[len(done) // 2]:.2f} s, "
            f"worst {worst:.2f} s over {len(trials)} trial(s) (target <= "
            f"{FAILOVER_TARGET_S:g} s): {met}"
        )


# ---- 2. throughput ----------------------------------------------------------------------------
@dataclass
class Slice:
    config: str
    load: str
    round: int
    seconds: float = 0.0
    ops: int = 0
    lat_ns: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    cpu_pct: dict[str, float | None] = field(default_factory=dict)
    cpu_window_s: float = 0.0  # what cpu_pct is over (the slice plus stopping its callers)
    lag: list[dict[str, float]] = field(default_factory=list)

    @property
    def ops_s(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "load": self.load,
            "round": self.round,
            "seconds": self.seconds,
            "ops": self.ops,
            "ops_s": self.ops_s,
            "p50_ms": ms(self.lat_ns, 50),
            "p99_ms": ms(self.lat_ns, 99),
            "errors": dict(self.errors),
            "cpu_pct": self.cpu_pct,
            "cpu_window_s": self.cpu_window_s,
            "lag": lag_summary(self.lag),
        }


class LagSampler:
    """Every SAMPLE_EVERY_S: each member's lag fields; per sample the worst member."""

    def __init__(self, probe: Probe, members: list[MemberProcess]) -> None:
        self.samples: list[dict[str, float]] = []
        self.failures = 0
        self._probe, self._members = probe, members
        self._stop = False
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop:
            t = time.perf_counter()
            try:
                st = await asyncio.wait_for(self._probe.all_stats(self._members), 2.0)
            except Exception:
                self.failures += 1
            else:
                mig = [r.migration for r in st.values()]
                self.samples.append(
                    {
                        "seconds_max": max(x.lag_seconds_max for x in mig),
                        "changes_max": max(x.lag_changes_max for x in mig),
                        "changes_total": sum(x.lag_changes_total for x in mig),
                        "sync_timeouts": sum(x.sync_timeouts for x in mig),
                    }
                )
            await asyncio.sleep(max(0.0, SAMPLE_EVERY_S - (time.perf_counter() - t)))

    async def stop(self) -> list[dict[str, float]]:
        self._stop = True
        await asyncio.wait_for(asyncio.gather(self._task, return_exceptions=True), 5)
        return self.samples


def lag_summary(samples: list[dict[str, float]]) -> dict[str, float]:
    if not samples:
        return {}

    def pct(name: str, p: float) -> float:
        return percentile([x[name] for x in samples], p)  # type: ignore[misc]

    out: dict[str, float] = {"samples": len(samples)}
    for name in ("seconds_max", "changes_max", "changes_total"):
        out[f"{name}_p50"] = pct(name, 50)
        out[f"{name}_p99"] = pct(name, 99)
        out[f"{name}_max"] = max(x[name] for x in samples)
    out["sync_timeouts"] = samples[-1]["sync_timeouts"] - samples[0]["sync_timeouts"]
    return out


async def timed_load(
    m: AsyncMap, kind: str, s: Settings, seconds: float, seed: int
) -> tuple[int, list[int], Counter[str], float]:
    """Run the load for `seconds`: (ops done in the window, latencies ns, errors, window s)."""
    value = b"v" * s.value_size
    stop = False
    lat: list[int] = []
    done_ops = 0
    errors: Counter[str] = Counter()
    end_ns = 0

    async def single(w: int) -> None:
        nonlocal done_ops
        rng = random.Random(seed * 1000 + w)
        while not stop:
            key = f"t{rng.randrange(s.keyspace)}"
            t0 = time.perf_counter_ns()
            try:
                await m.put(key, value, timeout=10)
            except Exception as e:
                errors[type(e).__name__] += 1
                await asyncio.sleep(0.01)
                continue
            t1 = time.perf_counter_ns()
            if not end_ns or t1 <= end_ns:
                lat.append(t1 - t0)
                done_ops += 1

    async def batch(w: int) -> None:
        nonlocal done_ops
        rng = random.Random(seed * 1000 + w)
        while not stop:
            items = [(f"t{rng.randrange(s.keyspace)}", value) for _ in range(BATCH_KEYS)]
            t0 = time.perf_counter_ns()
            try:
                await m.put_many(items, timeout=10)
            except Exception as e:
                errors[type(e).__name__] += 1
                await asyncio.sleep(0.01)
                continue
            t1 = time.perf_counter_ns()
            if not end_ns or t1 <= end_ns:
                lat.append(t1 - t0)
                done_ops += len(items)

    if kind == "single":
        tasks = [asyncio.create_task(single(w)) for w in range(s.callers)]
    else:
        tasks = [asyncio.create_task(batch(w)) for w in range(BATCH_CALLERS)]
    start = time.perf_counter_ns()
    try:
        await asyncio.sleep(seconds)
        end_ns = time.perf_counter_ns()
    finally:
        stop = True
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    return done_ops, lat, errors, (end_ns - start) / 1e9


@dataclass
class Side:
    name: str
    cluster: LocalCluster
    client: grid.AsyncClient
    m: AsyncMap


async def start_sides(
    console: Console, clusters: Clusters, s: Settings, probe: Probe, virtual_nodes: int
) -> list[Side]:
    sides = []
    for name, args in CONFIGS.items():
        with console.status(f"starting 3 members with {name}"):
            c = await clusters.start(name.replace(" ", "-").replace("=", ""), 3, args)
            await wait_settled(probe, list(c.members), timeout=60, virtual_nodes=virtual_nodes)
        client = grid.AsyncClient(c.addresses, timeout=10, codec="raw")
        m = client.map("bench", codec="raw")
        value = b"v" * s.value_size
        with console.status(f"{name}: preloading {s.keyspace:,} keys"):
            for j in range(0, s.keyspace, 1000):
                items = [(f"t{i}", value) for i in range(j, min(s.keyspace, j + 1000))]
                await m.put_many(items, timeout=60)
        sides.append(Side(name, c, client, m))
    return sides


async def run_throughput(
    console: Console, sides: list[Side], s: Settings, probe: Probe
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for kind in s.loads:
        for side in sides:  # warm-up, not recorded
            with console.status(f"{kind}: warm-up on {side.name}"):
                await timed_load(side.m, kind, s, 1.0, seed=99)
        for rnd in range(s.rounds):
            order = sides[rnd % len(sides) :] + sides[: rnd % len(sides)]
            for side in order:
                members = list(side.cluster.members)
                sl = Slice(side.name, kind, rnd + 1)
                with console.status(f"{kind}, round {rnd + 1}/{s.rounds}: {side.name}"):
                    sampler = LagSampler(probe, members)
                    cpu0 = cpu_now(members)
                    t0 = time.perf_counter()
                    sl.ops, sl.lat_ns, sl.errors, sl.seconds = await timed_load(
                        side.m, kind, s, s.slice_s, seed=rnd
                    )
                    spent = time.perf_counter() - t0
                    cpu1 = cpu_now(members)
                    sl.lag = await sampler.stop()
                sl.cpu_window_s = spent
                for n, a in cpu0.items():
                    b = cpu1.get(n)
                    sl.cpu_pct[n] = None if a is None or b is None else (b - a) / spent * 100
                d = sl.as_dict()
                out.append(d)
                console.print(
                    f"  {kind:6} round {rnd + 1} {side.name:16} {d['ops_s']:9,.0f} ops/s  "
                    f"p50 {d['p50_ms']:6.2f} ms  p99 {d['p99_ms']:7.2f} ms  "
                    f"errors {sum(sl.errors.values())}"
                )
    return out


def throughput_summary(slices: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per load and config: total ops / total seconds, median of slice ops/s, ratios."""
    out: dict[str, dict[str, Any]] = {}
    for kind in dict.fromkeys(x["load"] for x in slices):
        per: dict[str, Any] = {}
        for cfg in CONFIGS:
            xs = [x for x in slices if x["load"] == kind and x["config"] == cfg]
            if not xs:
                continue
            rates = sorted(x["ops_s"] for x in xs)
            ops = sum(x["ops"] for x in xs)

            def cpu_us(x: dict[str, Any], members: bool) -> float:
                pct = [v for k, v in x["cpu_pct"].items() if k.startswith("member-") == members
                       and k != "machine" and v is not None]  # fmt: skip
                return sum(pct) / 100 * x["cpu_window_s"] * 1e6

            per[cfg] = {
                "member_cpu_us_per_op": sum(cpu_us(x, True) for x in xs) / ops if ops else None,
                "bench_cpu_us_per_op": sum(cpu_us(x, False) for x in xs) / ops if ops else None,
                "ops_s": sum(x["ops"] for x in xs) / sum(x["seconds"] for x in xs),
                "median_ops_s": rates[len(rates) // 2],
                "min_ops_s": rates[0],
                "max_ops_s": rates[-1],
            }
        base = per.get("backups=0")
        for v in per.values():
            v["ratio"] = v["ops_s"] / base["ops_s"] if base and base["ops_s"] else None
        # per round: the ratio of the slices of the same round
        for cfg, v in per.items():
            rounds = []
            for x in slices:
                if x["load"] != kind or x["config"] != cfg:
                    continue
                b = next(
                    (y for y in slices if y["load"] == kind and y["config"] == "backups=0"
                     and y["round"] == x["round"]), None,
                )  # fmt: skip
                if b and b["ops_s"]:
                    rounds.append(x["ops_s"] / b["ops_s"])
            v["round_ratios"] = rounds
        out[kind] = per
    return out


def report_throughput(
    console: Console, slices: list[dict[str, Any]], s: Settings, cores: int
) -> None:
    what = {
        "single": f"{s.callers} callers x single-key put",
        "batch": f"{BATCH_CALLERS} callers x put_many of {BATCH_KEYS} (latency per batch)",
    }
    t = Table(
        title=f"write throughput, every slice ({s.slice_s:g} s each; keys of {s.keyspace:,}, "
        f"{s.value_size} B values; one AsyncClient per cluster); CPU % of one core "
        f"(machine: of {cores * 100}%)",
        title_justify="left",
    )
    cols = ("load", "round", "config", "ops/s", "p50 ms", "p99 ms", "errors", "members CPU %",
            "bench CPU %", "machine %", "lag s p99", "lag changes p99")  # fmt: skip
    for col in cols:
        t.add_column(col, justify="left" if col in ("load", "config") else "right")
    for x in slices:
        cpu = x["cpu_pct"]
        mem = [v for k, v in cpu.items() if k.startswith("member-") and v is not None]
        lag = x["lag"]
        t.add_row(
            x["load"],
            str(x["round"]),
            x["config"],
            f"{x['ops_s']:,.0f}",
            f"{x['p50_ms']:.2f}",
            f"{x['p99_ms']:.2f}",
            str(sum(x["errors"].values())),
            "/".join(f"{v:.0f}" for v in mem),
            fmt_s(cpu.get("bench"), 0),
            fmt_s(cpu.get("machine"), 0),
            fmt_s(lag.get("seconds_max_p99"), 3),
            fmt_s(lag.get("changes_max_p99"), 0),
        )
    console.print(t)
    summary = throughput_summary(slices)
    t = Table(title="write throughput, summed over slices", title_justify="left")
    for col in ("load", "config", "ops/s", "slices min..max", "x backups=0",
                "per-round ratios", "members CPU µs/op", "bench CPU µs/op"):  # fmt: skip
        t.add_column(col, justify="left" if col in ("load", "config") else "right")
    for kind, per in summary.items():
        for cfg, v in per.items():
            ratio = v["ratio"]
            t.add_row(
                what.get(kind, kind),
                cfg,
                f"{v['ops_s']:,.0f}",
                f"{v['min_ops_s']:,.0f}..{v['max_ops_s']:,.0f}",
                "-" if ratio is None else f"{ratio:.2f}x",
                " ".join(f"{r:.2f}" for r in v["round_ratios"]),
                fmt_s(v["member_cpu_us_per_op"], 1),
                fmt_s(v["bench_cpu_us_per_op"], 1),
            )
    console.print(t)
    for kind, per in summary.items():
        r = per.get("backups=1 async", {}).get("ratio")
        if r is not None:
            met = "[green]met[/green]" if r >= THROUGHPUT_TARGET else "[red]missed[/red]"
            console.print(
                f"{kind}: backups=1 async / backups=0 = {r:.2f}x (target >= "
                f"{THROUGHPUT_TARGET:g}x): {met}"
            )


# ---- 3. replication lag at a fixed rate -------------------------------------------------------
async def paced_load(
    m: AsyncMap, s: Settings, rate: float, seconds: float
) -> tuple[int, int, list[int], Counter[str], int]:
    """`rate` keys/s, as single puts (`s.lag_batch` 1: `s.callers` tasks) or put_many of
    `s.lag_batch` keys (32 tasks), the tasks sharing one schedule; a slot more than 100 ms
    late is skipped (counted), so a stall does not turn into a burst. Returns (keys
    written, slots skipped, latencies ns per call, errors, callers)."""
    value = b"v" * s.value_size
    per_s = rate / s.lag_batch  # calls per second
    callers = s.callers if s.lag_batch == 1 else 32
    start = time.perf_counter()
    end = start + seconds
    slot = 0
    skipped = 0
    lat: list[int] = []
    errors: Counter[str] = Counter()

    async def caller(w: int) -> None:
        nonlocal slot, skipped
        rng = random.Random(7000 + w)
        while True:
            now = time.perf_counter()
            if now >= end:
                return
            late = int((now - start - 0.1) * per_s)
            if slot < late:
                skipped += late - slot
                slot = late
            at = start + slot / per_s
            slot += 1
            if at > now:
                await asyncio.sleep(at - now)
            if at >= end:
                return
            t0 = time.perf_counter_ns()
            try:
                if s.lag_batch == 1:
                    await m.put(f"t{rng.randrange(s.keyspace)}", value, timeout=10)
                else:
                    items = [(f"t{rng.randrange(s.keyspace)}", value) for _ in range(s.lag_batch)]
                    await m.put_many(items, timeout=10)
            except Exception as e:
                errors[type(e).__name__] += 1
                continue
            lat.append(time.perf_counter_ns() - t0)

    tasks = [asyncio.create_task(caller(w)) for w in range(callers)]
    await asyncio.wait_for(asyncio.gather(*tasks), seconds + 30)
    return len(lat) * s.lag_batch, skipped, lat, errors, callers


async def run_lag(
    console: Console, sides: list[Side], s: Settings, probe: Probe
) -> list[dict[str, Any]]:
    out = []
    for side in sides:
        if side.name == "backups=0":
            continue
        members = list(side.cluster.members)
        with console.status(f"lag: {side.name} at {s.lag_rate:,.0f} puts/s for {s.lag_s:g} s"):
            sampler = LagSampler(probe, members)
            t0 = time.perf_counter()
            cpu0 = cpu_now(members)
            ops, skipped, lat, errors, callers = await paced_load(side.m, s, s.lag_rate, s.lag_s)
            spent = time.perf_counter() - t0
            cpu1 = cpu_now(members)
            samples = await sampler.stop()
        cpu = {n: None if a is None or cpu1.get(n) is None else (cpu1[n] - a) / spent * 100
               for n, a in cpu0.items()}  # fmt: skip
        r = {
            "config": side.name,
            "rate": s.lag_rate,
            "batch": s.lag_batch,
            "callers": callers,
            "cpu_pct": cpu,
            "seconds": spent,
            "ops": ops,
            "ops_s": ops / spent,
            "skipped": skipped,
            "p50_ms": ms(lat, 50),
            "p99_ms": ms(lat, 99),
            "errors": dict(errors),
            "stats_failures": sampler.failures,
            "lag": lag_summary(samples),
        }
        out.append(r)
        lg = r["lag"]
        console.print(
            f"  lag {side.name}: {r['ops_s']:,.0f} keys/s; lag_seconds_max p50 "
            f"{fmt_s(lg.get('seconds_max_p50'), 4)} p99 {fmt_s(lg.get('seconds_max_p99'), 4)} s; "
            f"lag_changes_max p50 {fmt_s(lg.get('changes_max_p50'), 0)} p99 "
            f"{fmt_s(lg.get('changes_max_p99'), 0)}"
        )
    return out


def report_lag(console: Console, runs: list[dict[str, Any]], s: Settings) -> None:
    how = (
        f"single puts, {s.callers} callers"
        if s.lag_batch == 1
        else f"put_many of {s.lag_batch} keys, 32 callers; latency per call"
    )
    t = Table(
        title=f"replication lag at {s.lag_rate:,.0f} keys/s (rate-limited: {how}; {s.lag_s:g} s); "
        f"Stats of every member every {SAMPLE_EVERY_S * 1e3:g} ms, worst member per sample",
        title_justify="left",
    )
    cols = ("config", "keys/s", "put p50 / p99 ms", "lag_seconds_max ms p50 / p99 / max",
            "lag_changes_max p50 / p99 / max", "lag_changes_total p50 / p99",
            "sync timeouts")  # fmt: skip
    for col in cols:
        t.add_column(col, justify="left" if col == "config" else "right")

    def trio(
        lg: dict[str, float], name: str, scale: float, digits: int, keys: Sequence[str]
    ) -> str:
        xs = [lg.get(f"{name}_{k}") for k in keys]
        return " / ".join("-" if x is None else f"{x * scale:,.{digits}f}" for x in xs)

    for r in runs:
        lg = r["lag"]
        t.add_row(
            r["config"],
            f"{r['ops_s']:,.0f}",
            f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}",
            trio(lg, "seconds_max", 1e3, 1, ("p50", "p99", "max")),
            trio(lg, "changes_max", 1, 0, ("p50", "p99", "max")),
            trio(lg, "changes_total", 1, 0, ("p50", "p99")),
            fmt_s(lg.get("sync_timeouts"), 0),
        )
    console.print(t)


# ---- 4. filling a new member ------------------------------------------------------------------
async def run_fill(
    console: Console, clusters: Clusters, s: Settings, virtual_nodes: int
) -> dict[str, Any]:
    c = await clusters.start("fill", s.fill_members, list(s.fill_args))
    probe = Probe()
    client = grid.AsyncClient(c.addresses, timeout=30, codec="raw")
    try:
        members = list(c.members)
        n = s.fill_keys
        copies = n * min(2, len(members))
        await wait_settled(probe, members, timeout=60, virtual_nodes=virtual_nodes)
        m = client.map("fill", codec="raw")
        load_s = await load(
            console, m, n, b"v" * s.value_size, 1000, 8, max(600.0, n / 500)
        )  # migration's key names: k0, k1, ...
        with console.status("waiting for the backups"):
            await wait_settled(
                probe, members, timeout=300, virtual_nodes=virtual_nodes, entries=copies,
                what="waiting for the copies",
            )  # fmt: skip
        before_table = await probe.table(members[0].address)
        poll0 = Poll(time.perf_counter(), await probe.all_stats(members))
        t_start = time.perf_counter()
        newcomer = c.start_member(len(members))
        await asyncio.to_thread(c.wait_ready, newcomer, 120)
        t_serving = time.perf_counter()
        members = list(c.members)
        with console.status(f"{newcomer.name} joined; filling") as status:
            t_settled, after_table, matched = await wait_settled(
                probe, members, timeout=s.settle_timeout, virtual_nodes=virtual_nodes,
                min_version=before_table.version, status=status, what="filling",
            )  # fmt: skip
        settled = await probe.all_stats(members)
        received = sum(x.migration.bytes_received for x in settled.values()) - sum(
            x.migration.bytes_received for x in poll0.stats.values()
        )
        with console.status("waiting for old copies to be dropped"):
            await wait_settled(
                probe, members, timeout=120, virtual_nodes=virtual_nodes,
                entries=n * min(2, len(members)),
                min_version=before_table.version, what="old copies dropped",
            )  # fmt: skip
        final = await probe.all_stats(members)
        held = after_table.partitions_of(newcomer.name)
        coordinator = next((x for x in members if final[x.name].migration.coordinator), None)
        span = rebalance_span(coordinator.log_path, newcomer.name) if coordinator else None
        move_s = t_settled - t_start
        new_entries = final[newcomer.name].total.entries
        return {
            "members_before": s.fill_members,
            "member_args": list(s.fill_args),
            "keys": n,
            "value_size": s.value_size,
            "copies": copies,
            "load_s": load_s,
            "seconds": move_s,
            "start_to_serving_s": t_serving - t_start,
            "coordinator_rebalance_s": span[0] if span else None,
            "coordinator_rounds": span[1] if span else None,
            "new_member": newcomer.name,
            "new_member_primaries": len(held.primary),
            "new_member_backups": len(held.backup),
            "new_member_entries": new_entries,
            "new_member_entries_s": new_entries / move_s,
            "bytes_received": received,
            "mb_s": received / move_s / 1e6,
            "table_matches_target": matched,
            "final_entries": {k: v.total.entries for k, v in final.items()},
        }
    finally:
        with contextlib.suppress(Exception):
            await client.close()
        await probe.close()
        await clusters.stop(c)


def report_fill(console: Console, r: dict[str, Any]) -> None:
    t = Table(
        title=f"filling a new member: {r['members_before']} member"
        f"{'s' if r['members_before'] > 1 else ''} (backups=1) hold "
        f"{r['keys']:,} keys x {r['value_size']} B = {r['copies']:,} copies; "
        f"{r['new_member']} starts"
        + (f"; members run with {' '.join(r['member_args'])}" if r.get("member_args") else ""),
        title_justify="left",
    )
    t.add_column("what")
    t.add_column("value", justify="right")
    rb = r["coordinator_rebalance_s"]
    rows = [
        ("start -> settled", f"{r['seconds']:.2f} s"),
        ("  of which start -> serving", f"{r['start_to_serving_s']:.2f} s"),
        ("  coordinator's rebalance (its log)",
         "-" if rb is None else f"{rb:.2f} s, {r['coordinator_rounds']} round(s)"),
        (f"{r['new_member']} holds",
         f"{r['new_member_primaries']} primaries, {r['new_member_backups']} backups"),
        (f"entries on {r['new_member']}", f"{r['new_member_entries']:,}"),
        ("  per second of the move", f"{r['new_member_entries_s']:,.0f}"),
        ("bytes received by all members", f"{r['bytes_received'] / 1e6:,.1f} MB"),
        ("MB/s", f"{r['mb_s']:.1f}"),
        ("final table = placement", "yes" if r["table_matches_target"] else "NO"),
        ("entries per member after",
         ", ".join(f"{k} {v:,}" for k, v in r["final_entries"].items())),
    ]  # fmt: skip
    for a, b in rows:
        t.add_row(a, b)
    console.print(t)


# ---- driver -----------------------------------------------------------------------------------
@dataclass
class Settings:
    only: list[str]
    trials: int
    sample_keys: int
    interval: float
    put_timeout: float
    failover_timeout: float
    loads: list[str]
    callers: int
    keyspace: int
    value_size: int
    slice_s: float
    rounds: int
    lag_rate: float
    lag_batch: int
    lag_s: float
    fill_keys: int
    fill_members: int
    settle_timeout: float
    fill_args: tuple[str, ...] = ()


async def run_all(console: Console, clusters: Clusters, s: Settings) -> dict[str, Any]:
    virtual_nodes = Config().virtual_nodes
    out: dict[str, Any] = {}
    if "failover" in s.only:
        out["failover"] = await run_failover(console, clusters, s, virtual_nodes)
    if "throughput" in s.only or "lag" in s.only:
        probe = Probe()
        sides: list[Side] = []
        try:
            sides = await start_sides(console, clusters, s, probe, virtual_nodes)
            if "throughput" in s.only:
                out["throughput"] = await run_throughput(console, sides, s, probe)
                out["throughput_summary"] = throughput_summary(out["throughput"])
            if "lag" in s.only:
                out["lag"] = await run_lag(console, sides, s, probe)
        finally:
            for side in sides:
                with contextlib.suppress(Exception):
                    await side.client.close()
            await probe.close()
            for side in sides:
                await clusters.stop(side.cluster)
            for c in list(clusters.live):  # a side that failed while starting
                await clusters.stop(c)
    if "fill" in s.only:
        out["fill"] = await run_fill(console, clusters, s, virtual_nodes)
    return out


def csv(value: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [x.strip() for x in value.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"{what}: choose from {', '.join(allowed)}")
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m grid.bench.replication",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--only",
        type=lambda v: csv(v, PARTS, "--only"),
        default=list(PARTS),
        help=f"parts to run, comma-separated: {', '.join(PARTS)} [all]",
    )
    parser.add_argument("--trials", type=int, default=5, help="failover trials [5]")
    parser.add_argument("--sample-keys", type=int, default=50, help="failover keys [50]")
    parser.add_argument(
        "--interval", type=float, default=0.02, help="failover: pause between puts, s [0.02]"
    )
    parser.add_argument(
        "--put-timeout", type=float, default=5.0, help="failover: timeout of one put [5, the "
        "client's default]",
    )  # fmt: skip
    parser.add_argument(
        "--failover-timeout", type=float, default=30.0, help="failover: give up after, s [30]"
    )
    parser.add_argument(
        "--load",
        type=lambda v: csv(v, ("single", "batch"), "--load"),
        default=["single", "batch"],
        help="throughput loads: single, batch [both]",
    )
    parser.add_argument("--callers", type=int, default=64, help="single-put callers [64]")
    parser.add_argument("--keyspace", type=int, default=100_000, help="keys written [100,000]")
    parser.add_argument("--value-size", type=int, default=100, help="bytes per value [100]")
    parser.add_argument("--slice", type=float, default=5.0, help="seconds per slice [5]")
    parser.add_argument("--rounds", type=int, default=4, help="slices per config and load [4]")
    parser.add_argument("--lag-rate", type=float, default=10_000, help="lag: keys/s [10,000]")
    parser.add_argument(
        "--lag-batch", type=int, default=10, help="lag: keys per put_many, 1 = single puts [10]"
    )
    parser.add_argument("--lag-seconds", type=float, default=20.0, help="lag: seconds [20]")
    parser.add_argument("--fill-keys", type=int, default=1_000_000, help="fill: keys [1M]")
    parser.add_argument(
        "--fill-members", type=int, default=2, help="fill: members before the join [2]"
    )
    parser.add_argument(
        "--settle-timeout", type=float, default=600.0, help="fill: seconds to settle [600]"
    )
    parser.add_argument(
        "--fill-args", default="",
        help="fill: member flags, e.g. \"--migration-max-bytes-per-s 0 "
        "--migration-max-parallel 8\" for how fast a member can be filled without the "
        "throttle that protects clients (default: the members' defaults)",
    )  # fmt: skip
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--keep-logs", metavar="DIR", help="keep the members' logs in DIR")
    args = parser.parse_args(argv)
    positive = ("trials", "sample_keys", "callers", "keyspace", "value_size", "rounds",
                "lag_batch", "fill_keys", "fill_members")  # fmt: skip
    if any(getattr(args, n) < 1 for n in positive) or min(args.slice, args.lag_seconds) <= 0:
        parser.error(f"{', '.join('--' + n.replace('_', '-') for n in positive)} must be >= 1")
    s = Settings(
        only=args.only,
        trials=args.trials,
        sample_keys=args.sample_keys,
        interval=args.interval,
        put_timeout=args.put_timeout,
        failover_timeout=args.failover_timeout,
        loads=args.load,
        callers=args.callers,
        keyspace=args.keyspace,
        value_size=args.value_size,
        slice_s=args.slice,
        rounds=args.rounds,
        lag_rate=args.lag_rate,
        lag_batch=args.lag_batch,
        lag_s=args.lag_seconds,
        fill_keys=args.fill_keys,
        fill_members=args.fill_members,
        fill_args=tuple(shlex.split(args.fill_args)),
        settle_timeout=args.settle_timeout,
    )
    from grid import logs

    logs.configure("warning")
    console = wide_console()
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    console.print(
        f"grid replication bench ({', '.join(s.only)}): real member processes on loopback, "
        f"memory only, {cores} CPUs; load average {load_before[0]:.2f}"
    )
    log_dir = Path(args.keep_logs or tempfile.mkdtemp(prefix="grid-bench-replication-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    clusters = Clusters(log_dir)
    started = time.monotonic()

    def work() -> dict[str, Any]:
        try:
            return asyncio.run(run_all(console, clusters, s))
        finally:
            clusters.stop_all()

    result, code = run_guarded(console, "replication bench", work, log_dir, bool(args.keep_logs))
    if code is not None:
        return code
    assert result is not None
    console.print()
    if "failover" in result:
        report_failover(console, result["failover"], s)
    if "throughput" in result:
        report_throughput(console, result["throughput"], s, cores)
    if "lag" in result:
        report_lag(console, result["lag"], s)
    if "fill" in result:
        report_fill(console, result["fill"])
    load_after = os.getloadavg()
    console.print(
        f"total run time {time.monotonic() - started:.0f} s; load average (1, 5, 15 min) at "
        f"the start {', '.join(f'{x:.2f}' for x in load_before)}, at the end "
        f"{', '.join(f'{x:.2f}' for x in load_after)}"
    )
    if args.json:
        write_json(
            console,
            args.json,
            result,
            settings=vars(s),
            load_average_before=load_before,
            load_average_after=load_after,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
