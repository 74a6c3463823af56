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


STATE_STYLE = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "dim"}


def human_age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def membership_table(view: list[dict[str, Any]], seen_by: str) -> Table:
    """The membership view of one member: who it thinks is in the cluster, and how."""
    alive = sum(1 for m in view if m["state"] == "alive")
    t = Table(
        title=f"cluster ({alive} alive, as {seen_by} sees it)",
        title_justify="left",
    )
    for col in ("member", "state", "incarnation", "address", "gossip", "zone", "age"):
        t.add_column(col, justify="right" if col in ("incarnation", "age") else "left")
    for m in view:
        style = STATE_STYLE.get(m["state"], "")
        t.add_row(
            m["name"],
            f"[{style}]{m['state']}[/{style}]" if style else m["state"],
            str(m["incarnation"]),
            m["address"],
            m["gossip_address"],
            m["zone"] or "-",
            human_age(m["age"]),
        )
    return t


def persistence_table(stats: list[dict[str, Any]]) -> Table:
    """Durability per member: policy, what recovery loaded and dropped, the log now."""
    t = Table(title="persistence", title_justify="left")
    columns = "member fsync recovered loaded skipped dropped truncated recovery log snapshots disk"
    for col in columns.split():
        t.add_column(col, justify="left" if col in ("member", "fsync", "disk") else "right")
    for s in stats:
        p = s.get("persistence") or {}
        if not p.get("enabled"):
            continue
        t.add_row(
            s["member"], p["fsync"], f"{p['entries_recovered']:,}", f"{p['records_loaded']:,}",
            f"{p['records_skipped']:,}", f"{p['records_dropped']:,}",
            human_bytes(p["bytes_truncated"]), f"{p['recovery_s']:.2f}s",
            human_bytes(p["log_bytes"]), f"{p['snapshots']:,}",
            "[red]FULL[/red]" if p["disk_full"] else "ok",
        )  # fmt: skip
    return t


def partitions_table(stats: list[dict[str, Any]]) -> Table:
    """Partitions per member and partition movement (DESIGN.md: migration)."""
    t = Table(title="partitions", title_justify="left")
    columns = "member primaries backups filling fills handoffs received sent forwarded lag table"
    for col in columns.split():
        t.add_column(col, justify="left" if col in ("member", "table") else "right")
    for s in stats:
        m = s.get("migration") or {}
        role = " (coordinator)" if m.get("coordinator") else ""
        pending = m.get("pending", 0)
        table = f"v{int(m.get('table_version', 0)) >> 32}" + (
            f", {pending} to move" if pending else ""
        )
        t.add_row(
            s["member"] + role, str(m.get("primaries", 0)), str(m.get("backups", 0)),
            str(m.get("in_flight", 0)), f"{int(m.get('fills_done', 0)):,}",
            f"{int(m.get('handoffs', 0)):,}", human_bytes(int(m.get("bytes_received", 0))),
            human_bytes(int(m.get("bytes_sent", 0))), f"{int(m.get('forwarded', 0)):,}",
            f"{int(m.get('lag_changes_max', 0)):,} / {float(m.get('lag_seconds_max', 0)):.2f}s",
            table,
        )  # fmt: skip
    return t


def lag_table(stats: list[dict[str, Any]]) -> Table:
    """The partitions most behind, per primary: which backup, by how many changes and how
    long (docs/replication.md). Shown only while some backup is behind."""
    t = Table(title="replication lag (partitions most behind)", title_justify="left")
    for col in ("primary", "partition", "backup", "changes", "oldest"):
        t.add_column(col, justify="left" if col in ("primary", "backup") else "right")
    for s in stats:
        for row in (s.get("migration") or {}).get("lagging", []):
            t.add_row(
                s["member"], str(row.get("partition", 0)), row.get("backup", ""),
                f"{int(row.get('changes', 0)):,}", f"{float(row.get('seconds', 0)):.2f}s",
            )  # fmt: skip
    return t


def anti_entropy_table(stats: list[dict[str, Any]]) -> Table:
    """Replica comparison and repair per member (docs/replication.md, "Anti-entropy")."""
    t = Table(title="anti-entropy", title_justify="left")
    columns = "member rounds compared differing repaired sent last-round tombstones collected"
    for col in columns.split():
        t.add_column(col, justify="left" if col == "member" else "right")
    for s in stats:
        a = s.get("anti_entropy") or {}

        def n(field: str, a: dict[str, Any] = a) -> str:
            return f"{int(a.get(field, 0)):,}"

        t.add_row(
            s["member"], n("rounds"), n("partitions_compared"), n("partitions_differing"),
            n("keys_repaired"), n("keys_sent"), f"{float(a.get('last_round_s', 0)):.2f}s",
            n("tombstones"), n("tombstones_collected"),
        )  # fmt: skip
    return t


def read_repair_table(stats: list[dict[str, Any]]) -> Table:
    """Reads answered from backup copies, and the read repair they triggered
    (docs/replication.md, "Reads from backups and read repair")."""
    t = Table(title="reads from backups", title_justify="left")
    for col in ("member", "backup reads", "checked", "repaired"):
        t.add_column(col, justify="left" if col == "member" else "right")
    for s in stats:
        a = s.get("anti_entropy") or {}
        t.add_row(
            s["member"],
            *(
                f"{int(a.get(f, 0)):,}"
                for f in ("backup_reads", "read_repair_checked", "read_repair_fixed")
            ),
        )
    return t


def print_status(stats: list[dict[str, Any]], console: Console | None = None) -> None:
    console = console or wide_console()
    for s in stats:
        for warning in s.get("warnings") or ():
            console.print(f"[bold red]! {s['member']}: {warning}[/]")
    views = [s for s in stats if s.get("cluster")]
    if views:
        console.print(membership_table(views[0]["cluster"], views[0]["member"]))
    console.print(members_table(stats))
    if any(s.get("migration") for s in stats):
        console.print(partitions_table(stats))
    if any((s.get("migration") or {}).get("lagging") for s in stats):
        console.print(lag_table(stats))
    if any(s.get("anti_entropy") for s in stats):
        console.print(anti_entropy_table(stats))
    if any(int((s.get("anti_entropy") or {}).get("backup_reads", 0)) for s in stats):
        console.print(read_repair_table(stats))
    if any(s["maps"] for s in stats):
        console.print(maps_table(stats))
    if any((s.get("persistence") or {}).get("enabled") for s in stats):
        console.print(persistence_table(stats))
