"""What the product shows of membership: a plain dataclass per member, and
its protobuf form for the Members RPC.

Kept free of the runtime's imports (sockets, cryptography) so the client SDK
can use the same dataclass for what it reads off the wire.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from proto import grid_pb2 as pb

COUNTER_PREFIX = "grid-gossip-"
"""Members replies carry the member's gossip counters as gRPC trailing metadata
`grid-gossip-<counter>: <decimal>` (MembersReply has no field for them)."""


@dataclass(frozen=True, slots=True)
class ClusterMember:
    """One member as the answering member's membership view sees it."""

    name: str
    address: str
    """gRPC host:port, for clients."""
    state: str
    """alive, suspect, dead or left."""
    incarnation: int
    age: float
    """Seconds since the answering member first learned of this one."""
    zone: str = ""
    gossip_address: str = ""
    version: str = ""

    def to_proto(self) -> pb.MemberInfo:
        return pb.MemberInfo(
            name=self.name,
            address=self.address,
            gossip_address=self.gossip_address,
            state=self.state,
            incarnation=self.incarnation,
            age_s=self.age,
            zone=self.zone,
            version=self.version,
        )

    @classmethod
    def from_proto(cls, m: pb.MemberInfo) -> ClusterMember:
        return cls(
            name=m.name,
            address=m.address,
            state=m.state,
            incarnation=m.incarnation,
            age=m.age_s,
            zone=m.zone,
            gossip_address=m.gossip_address,
            version=m.version,
        )


def members_reply(me: str, members: Iterable[ClusterMember]) -> pb.MembersReply:
    return pb.MembersReply(self=me, members=[m.to_proto() for m in members])


def counters_metadata(counters: Mapping[str, int]) -> tuple[tuple[str, str], ...]:
    items = sorted(counters.items())
    return tuple((COUNTER_PREFIX + k.replace("_", "-"), str(v)) for k, v in items)


def counters_from_metadata(metadata: Iterable[tuple[str, str | bytes]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in metadata or ():
        if key.startswith(COUNTER_PREFIX):
            text = value.decode() if isinstance(value, bytes) else value
            if text.isdigit():
                out[key[len(COUNTER_PREFIX) :].replace("-", "_")] = int(text)
    return out
