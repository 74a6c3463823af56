"""Rich tables of member statistics for people at a terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def wide_console() -> Console:
    """A console that does not squeeze tables to 80 columns when output is piped (CI logs)."""
    console = Console()
    return console if console.is_terminal else Console(width=130)


def members_table(stats: list[dict[str, Any]]) -> Table:
    t = Table(title="grid members", title_justify="left")
    for col in (
        "member",
        "address",
        "uptime",
        "entries",
        "memory",
        "max memory",
        "policy",
        "hit ratio",
        "requests",
        "ops",
        "rejected",
    ):
        t.add_column(col, justify="left" if col in ("member", "address", "policy") else "right")
    for s in stats:
        tot = s["total"]
        t.add_row(
            s["member"],
            s["address"],
            f"{s['uptime_s']:.0f}s",
            f"{tot['entries']:,}",
            human_bytes(tot["bytes"]),
            human_bytes(s["max_memory"]) if s["max_memory"] else "unbounded",
            s["eviction_policy"],
            f"{tot['hit_ratio']:.1%}",
            f"{s['requests']:,}",
            f"{s['operations']:,}",
            f"{s['rejected']:,}",
        )
    return t


def maps_table(stats: list[dict[str, Any]]) -> Table:
    t = Table(title="maps", title_justify="left")
    for col in (
        "member",
        "map",
        "entries",
        "memory",
        "hits",
        "misses",
        "hit ratio",
        "puts",
        "deletes",
        "evictions",
        "expirations",
    ):
        t.add_column(col, justify="left" if col in ("member", "map") else "right")
    for s in stats:
        for m in s["maps"]:
            t.add_row(
                s["member"],
                m["name"],
                f"{m['entries']:,}",
                human_bytes(m["bytes"]),
                f"{m['hits']:,}",
                f"{m['misses']:,}",
                f"{m['hit_ratio']:.1%}",
                f"{m['puts']:,}",
                f"{m['deletes']:,}",
                f"{m['evictions']:,}",
                f"{m['expirations']:,}",
            )
    return t


def print_status(stats: list[dict[str, Any]], console: Console | None = None) -> None:
    console = console or wide_console()
    console.print(members_table(stats))
    if any(s["maps"] for s in stats):
        console.print(maps_table(stats))
