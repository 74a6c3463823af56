"""What the core asks of its runtime.  Every call into `Node` returns a list
of these, in order; the runtime carries them out and never inspects protocol
state.  Sends carry ready-encoded bytes so the runtime's only job is moving
them (plus authentication/encryption, which is the transport's)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from membership.state import MemberInfo
from membership.wire import Kind


@dataclass(slots=True)
class Send:
    """Send `data` to `addr`.  DATAGRAM: one UDP datagram, fire and forget.
    STREAM: one framed message over TCP (connect, write, close is enough;
    the answer, if any, comes back as a new stream message to our address)."""

    addr: str
    data: bytes
    kind: Kind


@dataclass(slots=True)
class SetTimer:
    """Call `Node.tick()` at (or soon after) `when`; replaces earlier requests.
    Calling tick early or extra times is harmless."""

    when: float


class EventKind(Enum):
    JOINED = "joined"
    """A member we did not know, or knew as dead/left, is alive."""
    UPDATED = "updated"
    """An alive member changed its metadata."""
    SUSPECT = "suspect"
    ALIVE = "alive"
    """A suspected member refuted the suspicion."""
    DEAD = "dead"
    LEFT = "left"


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """A change in our view of another member (never about ourselves)."""

    kind: EventKind
    member: MemberInfo
    time: float


@dataclass(frozen=True, slots=True)
class Refused:
    """A member was kept out of the cluster, or we were.  by_us=True: we
    refused `name` at `addr` (its metadata is incompatible); False: a seed
    refused our join.  The runtime should log it; on by_us=False it should
    also fail startup, since retrying cannot succeed."""

    name: str
    addr: str
    reason: str
    by_us: bool


@dataclass(frozen=True, slots=True)
class Dropped:
    """An inbound message was malformed and ignored (for logs and metrics)."""

    addr: str
    reason: str


Action = Send | SetTimer | MemberEvent | Refused | Dropped
