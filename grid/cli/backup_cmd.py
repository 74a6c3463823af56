"""`grid backup`, `grid restore` and `grid snapshot` (docs/operations.md: procedures)."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from rich.console import Console
from rich.progress import Progress

import persistence
from grid.cli.status import human_bytes
from proto import grid_pb2 as pb


def run_backup(dest: str, addresses: list[str], timeout: float = 600.0) -> int:
    """Ask each member for an online backup into dest/<member name>."""
    console = Console(stderr=True)
    root = Path(dest).resolve()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("backing up", total=len(addresses))
        for address in addresses:
            with grpc.insecure_channel(address) as ch:
                try:
                    stats = pb.StatsReply.FromString(
                        ch.unary_unary("/grid.v1.Grid/Stats")(
                            pb.StatsRequest().SerializeToString(), timeout=10
                        )
                    )
                    target = root / stats.member
                    reply = pb.BackupReply.FromString(
                        ch.unary_unary("/grid.v1.Grid/Backup")(
                            pb.BackupRequest(dir=str(target)).SerializeToString(),
                            timeout=timeout,
                        )
                    )
                except grpc.RpcError as e:
                    console.print(f"[red]{address}: {e.code().name}: {e.details()}[/red]")
                    return 1
            bar.advance(task)
            console.print(
                f"{stats.member} ({address}): {reply.files} files, "
                f"{human_bytes(reply.bytes)} -> {target}"
            )
    return 0


def run_snapshot(addresses: list[str], timeout: float = 600.0) -> int:
    console = Console(stderr=True)
    for address in addresses:
        with grpc.insecure_channel(address) as ch:
            try:
                reply = pb.SnapshotReply.FromString(
                    ch.unary_unary("/grid.v1.Grid/Snapshot")(
                        pb.SnapshotRequest().SerializeToString(), timeout=timeout
                    )
                )
            except grpc.RpcError as e:
                console.print(f"[red]{address}: {e.code().name}: {e.details()}[/red]")
                return 1
        console.print(
            f"{address}: {reply.partitions} partitions, {reply.records:,} records in "
            f"{reply.seconds:.2f}s"
        )
    return 0


def run_restore(src: str, data_dir: str) -> int:
    """Verify a backup's checksums, then copy it into an empty data_dir."""
    console = Console(stderr=True)
    source = Path(src)
    if not (source / "manifest.json").exists():
        folders = [p.name for p in source.iterdir() if (p / "manifest.json").exists()]
        hint = f"; member folders here: {', '.join(folders)}" if folders else ""
        console.print(f"[red]{source} has no manifest.json{hint}[/red]")
        return 1
    problems = persistence.verify_backup(source)
    if problems:
        console.print("[red]the backup does not verify:[/red]\n" + "\n".join(problems))
        return 1
    try:
        files = persistence.restore(source, Path(data_dir))
    except persistence.PersistenceError as e:
        console.print(f"[red]restore failed: {e}[/red]")
        return 1
    manifest = json.loads((source / "manifest.json").read_text())
    console.print(
        f"restored {files} files ({len(manifest['files'])} in the manifest) into {data_dir}; "
        f"start the member with --data-dir {data_dir}"
    )
    return 0
