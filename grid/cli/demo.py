"""`grid demo` (what `make run` runs): a local cluster, the cache workloads, the stats.

Everything goes through the client SDK to real member processes on loopback,
so what a person sees here is what their service would get.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.table import Table

from grid.cli.cluster_cmd import cluster_table, start_with_progress, wait_for_migrations
from grid.cli.status import print_status, wide_console
from grid.client.sync import Client
from grid.harness import scenarios
from grid.harness.cluster import LocalCluster

EVICTION_MEMORY = "600KB"  # about a quarter of the zipf workload's 4,000 keys


def _check(console: Console, ok: bool, title: str, detail: str) -> bool:
    mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
    console.print(f" {mark} [bold]{title}[/bold]: {detail}")
    return ok


def run_workloads(client: Client, console: Console) -> bool:
    db = scenarios.FakeDatabase()
    users = client.map("users")
    ok = True
    r = scenarios.cache_aside(users, db)
    ok &= _check(
        console,
        not r.first_hit and r.second_hit and r.db_loads == 1,
        "cache-aside",
        f"first read miss -> loaded from the database -> put with "
        f"TTL; second read hit; db loads {r.db_loads}; ttl left {r.ttl_s:.0f}s",
    )
    b = scenarios.batch_read(users, db)
    ok &= _check(
        console,
        b.hits_first == 200 and b.loaded == 300 and b.hits_second == 500,
        "batch read",
        f"get_many of {b.requested} users: {b.hits_first} cached, "
        f"{b.loaded} loaded and written back with one put_many; re-read "
        f"{b.hits_second}/{b.requested}",
    )
    rl = scenarios.rate_limit(client.map("ratelimits"))
    ok &= _check(
        console,
        rl.allowed == 100 and rl.rejected == 20,
        "rate limiter",
        f"120 requests in a 60 s window, limit 100: {rl.allowed} allowed, "
        f"{rl.rejected} rejected; window closes in {rl.counter_ttl_s:.0f}s",
    )
    inv = scenarios.invalidate(users)
    ok &= _check(
        console,
        inv.before is not None and inv.deleted and inv.after is None,
        "invalidation",
        f"cached {inv.before} -> delete -> {inv.after}",
    )
    s = scenarios.sessions(client.map("sessions"))
    ok &= _check(
        console,
        s.alive_while_active and s.gone_after_idle,
        "sessions",
        f"{s.size_bytes // 1000} KB session with 0.6 s max-idle: alive while used "
        f"({s.alive_while_active}), gone after idling ({s.gone_after_idle})",
    )
    return ok


def run_eviction(console: Console) -> tuple[bool, dict[str, Any]]:
    console.print(
        f"\n[bold]eviction[/bold]: zipf reads over 4,000 keys, cache-aside with "
        f"get_many/put_many, each member bounded to {EVICTION_MEMORY}"
    )
    table = Table(title_justify="left")
    for col in ("policy", "reads", "hit ratio", "evictions", "entries kept", "memory used"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    ratios: dict[str, float] = {}
    stats: dict[str, Any] = {}
    for policy in ("lru", "lfu", "random"):
        with (
            LocalCluster(
                1, member_args=["--max-memory", EVICTION_MEMORY, "--eviction-policy", policy]
            ) as c,
            Client(c.addresses[0]) as client,
        ):
            r = scenarios.zipf_cache(client.map("zipf"))
            st = client.stats()
        ratios[policy] = r.hit_ratio
        stats[policy] = st
        tot = st["total"]
        table.add_row(
            policy,
            f"{r.reads:,}",
            f"{r.hit_ratio:.1%}",
            f"{tot['evictions']:,}",
            f"{tot['entries']:,}",
            f"{tot['bytes'] / 1000:.0f} KB",
        )
    console.print(table)
    ok = _check(
        console,
        ratios["lfu"] > ratios["random"],
        "lfu beats random on zipf",
        f"lfu {ratios['lfu']:.1%} vs random {ratios['random']:.1%} (lru {ratios['lru']:.1%})",
    )
    return ok, stats


def run_demo(n: int = 1, keep: bool = False) -> int:
    console = wide_console()
    console.rule("[bold]grid demo")
    cluster = LocalCluster(n)
    start_with_progress(cluster, console)
    try:
        if n > 1 and not wait_for_migrations(cluster.addresses, console):
            console.print("[yellow]partitions did not settle in time; going on[/yellow]")
        console.print(cluster_table(cluster))
        t0 = time.perf_counter()
        with Client(cluster.addresses[0]) as client:
            console.print(
                f"\n[bold]cache workloads[/bold] through the SDK (seed {cluster.addresses[0]}; "
                "each call goes to its key's owner)"
            )
            ok = run_workloads(client, console)
            ok_evict, _ = run_eviction(console)
            ok = ok and ok_evict
            console.print()
            stats = [client.stats()]
            stats[0]["cluster"] = [asdict(m) for m in client.members()]  # member-1's view
            for address in cluster.addresses[1:]:
                with Client(address) as other:
                    stats.append(other.stats())
            print_status(stats, console)
        console.print(
            f"\ndone in {time.perf_counter() - t0:.1f}s: "
            + (
                "[green]every workload behaved as expected[/green]"
                if ok
                else "[red]some workloads did not behave as expected[/red]"
            )
        )
        if keep:
            console.print(
                f"cluster still running at {', '.join(cluster.addresses)}; Ctrl-C stops it"
            )
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return 0 if ok else 1
    finally:
        cluster.stop()
