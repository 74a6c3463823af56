"""The admin questions a chaos run asks members, over their gRPC control plane.

Stats (who coordinates, what moves, how far backups lag), the partition table (who is
primary of a key), and per-partition digests (are the replicas equal). The same calls
tests/integration/support.py makes; here so the harness needs nothing from tests/.
Every call has a deadline; a member that does not answer raises grpc.RpcError.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from partitioning import partition_of
from proto import grid_pb2 as pb

STATS = "/grid.v1.Grid/Stats"
TABLE = "/grid.v1.Grid/Table"
DIGESTS = "/grid.v1.Grid/Digests"


def _call(address: str, method: str, request: bytes, timeout: float) -> bytes:
    with grpc.insecure_channel(address, options=[("grpc.enable_retries", 0)]) as ch:
        return ch.unary_unary(method)(request, timeout=timeout)


def stats(address: str, timeout: float = 3.0) -> pb.StatsReply:
    return pb.StatsReply.FromString(
        _call(address, STATS, pb.StatsRequest().SerializeToString(), timeout)
    )


@dataclass(frozen=True)
class Table:
    """A member's partition table: version 0 means it has none yet."""

    version: int
    partition_count: int
    members: tuple[str, ...]
    replicas: tuple[tuple[str, ...], ...]  # per partition, primary first

    def primary_of(self, key: str) -> str:
        replicas = self.replicas[partition_of(key.encode(), self.partition_count)]
        return replicas[0] if replicas else ""


def table(address: str, timeout: float = 3.0) -> Table:
    msg = pb.PartitionTable.FromString(
        _call(address, TABLE, pb.TableRequest().SerializeToString(), timeout)
    )
    names = tuple(m.name for m in msg.members)
    replicas = tuple(tuple(names[i] for i in r.members) for r in msg.replicas)
    return Table(msg.version, msg.partition_count, names, replicas)


def digest_roots(address: str, timeout: float = 10.0) -> dict[int, int]:
    """Partition -> digest root of the copy this member holds."""
    data = _call(address, DIGESTS, pb.DigestsRequest().SerializeToString(), timeout)
    return {d.partition: d.root for d in pb.DigestsReply.FromString(data).digests}


def coordinator(members: dict[str, str]) -> str:
    """The name of the one member (of name -> address) that says it coordinates, or ""."""
    acting = [name for name, a in members.items() if stats(a).migration.coordinator]
    return acting[0] if len(acting) == 1 else ""


def settled(addresses: Sequence[str]) -> str:
    """Empty when every member has one table version, each holds primaries, nothing
    moves and no backup lags; else what is not so yet."""
    versions = set()
    for address in addresses:
        m = stats(address).migration
        versions.add(m.table_version)
        if m.pending or m.in_flight:
            return f"{address}: {m.pending} moves pending, {m.in_flight} fills"
        if m.primaries == 0:
            return f"{address} holds no primaries yet"
    if len(versions) != 1:
        return f"table versions differ: {sorted(versions)}"
    return ""


def replicas_differ(members: dict[str, str]) -> str:
    """Empty when the members (name -> address) share one table naming exactly them,
    nothing moves, no backup lags, and every partition's replicas have one digest root;
    else what is not so yet."""
    tables = {name: table(a) for name, a in members.items()}
    versions = {t.version for t in tables.values()}
    if len(versions) != 1 or 0 in versions:
        return f"members disagree on the table: versions {sorted(versions)}"
    t = next(iter(tables.values()))
    if set(t.members) != set(members):
        return f"the table names {sorted(t.members)}, not {sorted(members)}"
    if why := settled(list(members.values())):
        return why
    lagging = [n for n, a in members.items() if stats(a).migration.lag_changes_total]
    if lagging:
        return f"backups behind on {lagging}"
    roots = {name: digest_roots(a) for name, a in members.items()}
    differing = [
        p
        for p, replicas in enumerate(t.replicas)
        if len({roots[r].get(p) for r in replicas}) != 1
        or None in {roots[r].get(p) for r in replicas}
    ]
    if differing:
        return f"{len(differing)} partitions whose replicas differ, e.g. {differing[:5]}"
    return ""
