"""A hand-cranked network for unit tests of `Node`: no simulator, explicit
time, explicit delivery, and a filter to drop chosen messages."""

from __future__ import annotations

import random
from collections.abc import Callable

from membership.actions import Action, MemberEvent, Send
from membership.config import Config
from membership.node import Node
from membership.state import MemberInfo, MemberMeta, MemberState
from membership.wire import Kind, Packet, decode_packet

META = MemberMeta("test", 271, grpc="127.0.0.1:5000", zone="a", version="1")

Drop = Callable[[str, str, Send], bool]
"""drop(src, dst, send) -> True to lose the message."""


def make_node(name: str, config: Config | None = None, meta: MemberMeta = META, **kw) -> Node:
    return Node(name, name, meta, rng=random.Random(name), config=config or Config(), **kw)


def decode(send: Send) -> Packet:
    return decode_packet(send.data, 1 << 30)


class Net:
    def __init__(self, *nodes: Node) -> None:
        self.nodes = {n.addr: n for n in nodes}
        self.in_flight: list[tuple[str, Send]] = []
        self.events: list[tuple[str, MemberEvent]] = []
        self.others: list[tuple[str, Action]] = []
        self.sent: list[tuple[str, Send]] = []
        self.drop: Drop = lambda src, dst, s: False

    def absorb(self, src: str, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                self.sent.append((src, a))
                self.in_flight.append((src, a))
            elif isinstance(a, MemberEvent):
                self.events.append((src, a))
            else:
                self.others.append((src, a))

    def deliver(self, now: float, limit: int = 10_000) -> int:
        """Deliver everything in flight (and what it causes), instantly."""
        n = 0
        while self.in_flight and n < limit:
            src, s = self.in_flight.pop(0)
            n += 1
            node = self.nodes.get(s.addr)
            if node is None or self.drop(src, s.addr, s):
                continue
            if s.kind is Kind.STREAM:
                self.absorb(s.addr, node.handle_stream(s.data, src, now))
            else:
                self.absorb(s.addr, node.handle_datagram(s.data, src, now))
        return n

    def tick(self, now: float) -> None:
        for addr, node in self.nodes.items():
            self.absorb(addr, node.tick(now))

    def run(self, start: float, end: float, step: float = 0.01) -> None:
        """Tick every node every `step` and deliver instantly."""
        t = start
        while t <= end + 1e-9:
            self.tick(t)
            self.deliver(t)
            t += step

    def start_all(self, now: float = 0.0) -> None:
        """Start every node with a full, quiet view of the others."""
        states = [
            MemberInfo(n.name, n.addr, n.meta, 0, MemberState.ALIVE) for n in self.nodes.values()
        ]
        for addr, node in self.nodes.items():
            node.install(states, now)
            self.absorb(addr, node.start(now))

    def kinds(self, observer: str, subject: str) -> list[str]:
        return [e.kind.value for o, e in self.events if o == observer and e.member.name == subject]
