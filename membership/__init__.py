"""SWIM-style membership: who is in the cluster and who is alive.

A sans-IO core (no sockets, no asyncio, no wall clock); the runtime in
`grid/` feeds it packets and timer ticks and carries out the actions it
returns.  See docs/membership.md and the comment at the top of node.py.

Public API:
    Node                      the protocol state machine of one member
    Config                    tunables (defaults documented in config.py)
    MemberMeta, MemberInfo, MemberState
    Send, SetTimer, MemberEvent, EventKind, Refused, Dropped   (actions)
    Kind                      DATAGRAM (UDP) or STREAM (TCP)
    MalformedMessage          raised by wire.decode_packet, nothing else is
The simulator lives in membership.sim (Cluster) on top of membership.simnet.
"""

from membership.actions import Action, Dropped, EventKind, MemberEvent, Refused, Send, SetTimer
from membership.config import Config
from membership.node import Node
from membership.state import MemberInfo, MemberMeta, MemberState
from membership.wire import Kind, MalformedMessage

__all__ = [
    "Action",
    "Config",
    "Dropped",
    "EventKind",
    "Kind",
    "MalformedMessage",
    "MemberEvent",
    "MemberInfo",
    "MemberMeta",
    "MemberState",
    "Node",
    "Refused",
    "Send",
    "SetTimer",
]
