"""What one member knows about another: state, incarnation, metadata."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class MemberState(IntEnum):
    """SWIM states plus LEFT.  LEFT is distinct from DEAD because the runtime
    reacts differently: a member that left handed its partitions off and will
    not come back with its data, a dead one may reappear and its backups must
    be promoted now."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


@dataclass(frozen=True, slots=True)
class MemberMeta:
    """Metadata every member advertises.  cluster and partitions must match
    for two members to be in one cluster (a member with another partition
    count would place keys differently); the rest is informational."""

    cluster: str
    partitions: int
    grpc: str = ""
    zone: str = ""
    version: str = ""

    def incompatibility(self, other: MemberMeta) -> str | None:
        """Why a member with `other` metadata may not join us, or None."""
        if other.cluster != self.cluster:
            return f"cluster name {other.cluster!r} differs from ours {self.cluster!r}"
        if other.partitions != self.partitions:
            return f"partition count {other.partitions} differs from ours {self.partitions}"
        return None


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """An immutable snapshot handed to the runtime (events, queries)."""

    name: str
    addr: str
    meta: MemberMeta
    incarnation: int
    state: MemberState


@dataclass(slots=True)
class Member:
    """The mutable record the core keeps per member (hot: slots, no copies)."""

    name: str
    addr: str
    meta: MemberMeta
    incarnation: int
    state: MemberState
    since: float
    """Time of the last state change: drives gossip-to-the-dead and reaping."""

    def info(self) -> MemberInfo:
        return MemberInfo(self.name, self.addr, self.meta, self.incarnation, self.state)
