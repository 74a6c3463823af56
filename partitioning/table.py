"""The partition table: who holds which partition, under which version.

Version scheme. `version = epoch << 32 | fingerprint`, where

* `epoch` (0 <= epoch < 2**31) is supplied by the caller: the membership
  view number, which membership increments whenever the member set changes
  (and, after a split brain heals, sets above both sides' epochs). It gives
  versions an order, which a hash alone cannot: a member that answers
  NOT_OWNER with version v tells a client holding version u < v that its
  table is stale, and a member never installs a table older than its own.
* `fingerprint` is the low 32 bits of xxh3_64 over the canonical content
  (partition count, backups, sorted members, replica lists). It makes the
  version change with the member set even if a caller reuses an epoch (two
  sides of a split brain both at epoch 7 get different versions), lets two
  members compare tables by one integer, and lets `from_dict` reject a table
  damaged or forged in transit.

So equal versions mean equal tables (up to a 2**-32 fingerprint collision
within one epoch), and version order is epoch order. The whole fits a signed
64-bit integer, for protobuf int64 and msgpack alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

from xxhash import xxh3_64_intdigest

from partitioning.config import MAX_BACKUPS, PlacementConfig
from partitioning.placement import Layout, Members, normalize_members, place

MAX_EPOCH = (1 << 31) - 1


def fingerprint(
    partition_count: int, backups: int, members: tuple[str, ...], layout: Layout
) -> int:
    """32-bit digest of table content; the encoding is frozen: all versions must agree."""
    index = {m: i for i, m in enumerate(members)}
    parts = [f"grid-partition-table/1;{partition_count};{backups}", *members]
    parts.extend(",".join(str(index[m]) for m in replicas) for replicas in layout)
    return xxh3_64_intdigest("\n".join(parts).encode()) & 0xFFFFFFFF


@dataclass(frozen=True)
class MemberPartitions:
    """What one member holds; `backup` lists partitions where it is any backup rank."""

    primary: tuple[int, ...]
    backup: tuple[int, ...]


@dataclass(frozen=True)
class PartitionTable:
    """An immutable, validated placement; build with `build_table` or `from_dict`."""

    version: int
    partition_count: int
    backups: int
    members: tuple[str, ...]
    replica_lists: Layout = field(repr=False)

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def of_layout(
        cls,
        epoch: int,
        partition_count: int,
        backups: int,
        members: tuple[str, ...],
        layout: Layout,
    ) -> PartitionTable:
        """A table for an arbitrary layout (an interim table during migration)."""
        members = tuple(sorted(members))
        fp = fingerprint(partition_count, backups, members, layout)
        return cls(make_version(epoch, fp), partition_count, backups, members, tuple(layout))

    @property
    def epoch(self) -> int:
        return self.version >> 32

    @property
    def fingerprint(self) -> int:
        return self.version & 0xFFFFFFFF

    def newer_than(self, other: PartitionTable) -> bool:
        """Whether to install self over other; equal epochs never replace each other."""
        return self.epoch > other.epoch

    def owner(self, partition: int) -> str:
        """The primary: the member that takes writes and default reads for the partition."""
        return self.replica_lists[partition][0]

    def replicas(self, partition: int) -> tuple[str, ...]:
        """Primary first, then backups in promotion order."""
        return self.replica_lists[partition]

    def partitions_of(self, member: str) -> MemberPartitions:
        """Empty for a member not in the table (it may just have left)."""
        return self._by_member.get(member, MemberPartitions((), ()))

    @cached_property
    def _by_member(self) -> dict[str, MemberPartitions]:
        primary: dict[str, list[int]] = {m: [] for m in self.members}
        backup: dict[str, list[int]] = {m: [] for m in self.members}
        for p, replicas in enumerate(self.replica_lists):
            primary[replicas[0]].append(p)
            for m in replicas[1:]:
                backup[m].append(p)
        return {m: MemberPartitions(tuple(primary[m]), tuple(backup[m])) for m in self.members}

    def to_dict(self) -> dict[str, Any]:
        """Plain ints, strings and lists; replicas as indexes into `members` to stay small."""
        index = {m: i for i, m in enumerate(self.members)}
        return {
            "version": self.version,
            "partition_count": self.partition_count,
            "backups": self.backups,
            "members": list(self.members),
            "replicas": [[index[m] for m in replicas] for replicas in self.replica_lists],
        }

    @classmethod
    def from_dict(cls, data: Any) -> PartitionTable:
        """Inverse of `to_dict`; raises ValueError on anything malformed or tampered with."""
        if not isinstance(data, dict):
            raise ValueError(f"partition table must be a dict, got {type(data).__name__}")
        try:
            version, count, backups = data["version"], data["partition_count"], data["backups"]
            members, replicas = data["members"], data["replicas"]
        except KeyError as missing:
            raise ValueError(f"partition table lacks field {missing}") from None
        if not isinstance(members, list | tuple) or not all(isinstance(m, str) for m in members):
            raise ValueError("partition table members must be a list of strings")
        if not isinstance(replicas, list | tuple):
            raise ValueError("partition table replicas must be a list of lists")
        layout = []
        for p, row in enumerate(replicas):
            if not isinstance(row, list | tuple) or not all(
                type(i) is int and 0 <= i < len(members) for i in row
            ):
                raise ValueError(f"partition {p}: replicas must be indexes into members")
            layout.append(tuple(members[i] for i in row))
        return cls(version, count, backups, tuple(members), tuple(layout))


def _validate(table: PartitionTable) -> None:
    """The invariants every consumer relies on, checked once at construction."""
    for name in ("version", "partition_count", "backups"):
        value = getattr(table, name)
        if type(value) is not int:
            raise ValueError(f"{name} must be an int, got {value!r}")
    if not 0 <= table.version <= (MAX_EPOCH << 32 | 0xFFFFFFFF):
        raise ValueError(f"version out of range: {table.version}")
    if table.partition_count < 1 or len(table.replica_lists) != table.partition_count:
        raise ValueError(
            f"expected {table.partition_count} partitions, got {len(table.replica_lists)}"
        )
    if not 0 <= table.backups <= MAX_BACKUPS:
        raise ValueError(f"backups must be in [0, {MAX_BACKUPS}], got {table.backups}")
    if not table.members or list(table.members) != sorted(set(table.members)):
        raise ValueError("members must be non-empty, sorted and distinct")
    # A table in effect may list fewer replicas than placement wants while new backups are
    # being filled (grid/member/placement/coordinator.py publishes such interim tables); never none.
    wanted = min(1 + table.backups, len(table.members))
    live = set(table.members)
    for p, replicas in enumerate(table.replica_lists):
        n = len(replicas)
        if not 1 <= n <= wanted or len(set(replicas)) != n or not live.issuperset(replicas):
            raise ValueError(
                f"partition {p}: need 1 to {wanted} distinct members, got {replicas!r}"
            )
    expected = fingerprint(table.partition_count, table.backups, table.members, table.replica_lists)
    if table.fingerprint != expected:
        raise ValueError(
            f"fingerprint mismatch: version says {table.fingerprint:#x}, content is {expected:#x}"
        )


def make_version(epoch: int, fp: int) -> int:
    if type(epoch) is not int or not 0 <= epoch <= MAX_EPOCH:
        raise ValueError(f"epoch must be an int in [0, {MAX_EPOCH}], got {epoch!r}")
    return epoch << 32 | fp


def build_table(
    members: Members, epoch: int, config: PlacementConfig | None = None
) -> PartitionTable:
    """The table every member and client computes for this member set at this epoch."""
    config = config or PlacementConfig()
    normalized = normalize_members(members)  # once: `members` may be a one-shot iterator
    names = tuple(name for name, _ in normalized)
    layout = _placed(normalized, config)
    fp = fingerprint(config.partition_count, config.backups, names, layout)
    return PartitionTable(
        make_version(epoch, fp), config.partition_count, config.backups, names, layout
    )


PLACEMENTS_KEPT = 16
"""Placements remembered by member set. The coordinator builds its target table in
every round (every second, and on every membership event) from a member set that
rarely changes, and a placement costs tens of milliseconds at N = 50 (the ring's
md5 points plus the bounded-load passes); a few sets cover a split and its heal."""


@lru_cache(maxsize=PLACEMENTS_KEPT)
def _placed(members: tuple[tuple[str, int], ...], config: PlacementConfig) -> Layout:
    """`place`, memoized: a pure function of the member set and the config."""
    return place(dict(members), config)
