"""A simulated cluster of membership `Node`s in virtual time.

    from membership.sim import Cluster
    c = Cluster(seed=7)
    names = c.start_members(5)              # m000 seeds the rest, all start now
    assert c.run_until(c.converged, timeout=5)
    c.crash("m002")
    c.run_until(lambda: c.all_see("m002", MemberState.DEAD), timeout=10)
    print(c.now, c.false_deaths, c.digest())

Each member is a sans-IO `Node` wired to a `SimNetwork` host whose address is
its name.  The cluster knows the ground truth (who is really up) and counts
*false deaths*: a member declared dead by someone while it was running
(paused members count as running: a stall is not a crash).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from membership.actions import Action, EventKind, MemberEvent, Refused, Send, SetTimer
from membership.config import Config
from membership.node import Node
from membership.simnet import Link, SimNetwork, VirtualLoop
from membership.state import MemberInfo, MemberMeta, MemberState
from membership.wire import Kind

EventHook = Callable[[str, MemberEvent], None]
"""hook(observer_name, event)."""


class SimMember:
    """Glue between one `Node` and its network host."""

    __slots__ = ("cluster", "name", "node", "wake")

    def __init__(self, cluster: Cluster, node: Node) -> None:
        self.cluster = cluster
        self.name = node.name
        self.node = node
        self.wake = float("inf")

    def receive(self, now: float, src: str, payload: bytes, reliable: bool) -> None:
        if reliable:
            self.apply(self.node.handle_stream(payload, src, now))
        else:
            self.apply(self.node.handle_datagram(payload, src, now))

    def on_wake(self, now: float, when: float) -> None:
        if when != self.wake:
            return  # superseded
        self.wake = float("inf")
        self.apply(self.node.tick(now))

    def apply(self, actions: list[Action]) -> None:
        c = self.cluster
        net = c.net
        for a in actions:
            t = type(a)
            if t is Send:
                net.send(self.name, a.addr, a.data, a.kind is Kind.STREAM)
            elif t is SetTimer:
                if a.when < self.wake:
                    self.wake = a.when
                    net.call_at(self.name, a.when, self.on_wake, a.when)
            elif t is MemberEvent:
                c._on_event(self.name, a)
            elif t is Refused:
                c.refusals.append((c.loop.now, self.name, a))
            else:
                c.dropped.append((c.loop.now, self.name, a))


class Cluster:
    """N members, a network model, a virtual clock and fault injection."""

    def __init__(
        self,
        seed: int = 0,
        config: Config | None = None,
        link: Link | None = None,
        cluster_name: str = "sim",
        partitions: int = 271,
        trace: bool = True,
        record_events: bool = True,
    ) -> None:
        self.seed = seed
        self.config = config if config is not None else Config()
        self.loop = VirtualLoop()
        self.net = SimNetwork(self.loop, random.Random(f"net:{seed}"), link, trace=trace)
        self.meta = MemberMeta(cluster_name, partitions, grpc="", zone="", version="0.1.0")
        self.members: dict[str, SimMember] = {}
        self.up: dict[str, bool] = {}
        self._restarts: dict[str, int] = {}
        self.events: list[tuple[float, str, MemberEvent]] = []
        self.record_events = record_events
        self.hooks: list[EventHook] = []
        self.false_deaths: list[tuple[float, str, str]] = []
        self.refusals: list[tuple[float, str, Refused]] = []
        self.dropped: list[tuple[float, str, Action]] = []

    # ----------------------------------------------------------------- time

    @property
    def now(self) -> float:
        return self.loop.now

    def run_for(self, duration: float) -> None:
        self.loop.run_until(until=self.loop.now + duration)

    def run_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Run until predicate() holds (checked after every event; keep it
        cheap) or `timeout` virtual seconds pass.  True if it held."""
        return self.loop.run_until(until=self.loop.now + timeout, predicate=predicate)

    # ----------------------------------------------------------------- members

    def _node(
        self, name: str, incarnation: int, meta: MemberMeta | None, config: Config | None
    ) -> Node:
        restarts = self._restarts.get(name, 0)
        rng = random.Random(f"node:{self.seed}:{name}:{restarts}")
        return Node(
            name,
            name,
            meta if meta is not None else self.meta,
            rng=rng,
            config=config if config is not None else self.config,
            incarnation=incarnation,
            now=self.loop.now,
        )

    def add_member(
        self,
        name: str | None = None,
        seeds: list[str] | None = None,
        meta: MemberMeta | None = None,
        config: Config | None = None,
    ) -> str:
        """Start a member now.  seeds default to the first member ever added."""
        if name is None:
            name = f"m{len(self.members):03d}"
        if name in self.members:
            raise ValueError(f"{name} exists; use restart()")
        if seeds is None:
            seeds = [next(iter(self.members))] if self.members else []
        node = self._node(name, 0, meta, config)
        sm = SimMember(self, node)
        self.members[name] = sm
        self.up[name] = True
        self.net.add_host(name, sm.receive)
        sm.apply(node.start(self.loop.now, seeds))
        return name

    def start_members(self, n: int, seeds: list[str] | None = None) -> list[str]:
        """Start n members at the current time, all joining through the first."""
        first = self.add_member(seeds=seeds)
        return [first] + [self.add_member(seeds=seeds or [first]) for _ in range(n - 1)]

    def bootstrap(self, n: int) -> list[str]:
        """n members that already know each other (as after a settled join):
        for large-N experiments that should not spend time converging."""
        names = [f"m{i:04d}" for i in range(n)]
        now = self.loop.now
        states = [MemberInfo(nm, nm, self.meta, 0, MemberState.ALIVE) for nm in names]
        for nm in names:
            node = self._node(nm, 0, None, None)
            node.install(states, now)
            sm = SimMember(self, node)
            self.members[nm] = sm
            self.up[nm] = True
            self.net.add_host(nm, sm.receive)
            sm.apply(node.start(now, ()))
        return names

    def crash(self, name: str) -> None:
        """kill -9: the process is gone, nothing more is sent or received."""
        self.up[name] = False
        self.net.crash(name)

    def restart(self, name: str, seeds: list[str] | None = None) -> None:
        """A crashed member comes back with an empty view and a higher
        incarnation, joining through `seeds` (default: every other member)."""
        old = self.members[name].node
        if self.up[name]:
            self.crash(name)
        self._restarts[name] = self._restarts.get(name, 0) + 1
        node = self._node(name, old.incarnation + 1, old.meta, old.config)
        sm = SimMember(self, node)
        self.members[name] = sm
        self.up[name] = True
        self.net.add_host(name, sm.receive)
        if seeds is None:
            seeds = [n for n in self.members if n != name and self.up[n]][:3]
        sm.apply(node.start(self.loop.now, seeds))

    def leave(self, name: str) -> None:
        """Graceful leave; the member keeps running (to gossip it) until crash()."""
        self.up[name] = False
        sm = self.members[name]
        sm.apply(sm.node.leave(self.loop.now))

    def pause(self, name: str, duration: float) -> None:
        self.net.pause(name, duration)

    def slow(self, name: str, lag: float, duration: float) -> None:
        """CPU starvation: for `duration`, `name` handles each inbound message
        `lag` seconds late while its timers run on time (see SimNetwork.slow)."""
        self.net.slow(name, lag, duration)

    def partition(self, *groups: list[str]) -> None:
        self.net.partition(*groups)

    def heal(self) -> None:
        self.net.heal()

    def set_link(self, a: str, b: str, link: Link) -> None:
        self.net.set_link(a, b, link)

    # ----------------------------------------------------------------- observe

    def _on_event(self, observer: str, ev: MemberEvent) -> None:
        if self.record_events:
            self.events.append((self.loop.now, observer, ev))
        if ev.kind is EventKind.DEAD and self.up.get(ev.member.name, False):
            self.false_deaths.append((self.loop.now, observer, ev.member.name))
        for hook in self.hooks:
            hook(observer, ev)

    def running(self) -> list[str]:
        return [n for n, u in self.up.items() if u]

    def node(self, name: str) -> Node:
        return self.members[name].node

    def view(self, observer: str) -> set[str]:
        """Names `observer` considers alive or suspect, itself included."""
        return {m.name for m in self.node(observer).alive_members()}

    def converged(self) -> bool:
        """Every running member sees exactly the running members as alive."""
        running = self.running()
        want = set(running)
        for n in running:
            node = self.node(n)
            if node.num_alive() != len(want):
                return False
            for m in want:
                if node.state_of(m) is not MemberState.ALIVE:
                    return False
        return True

    def all_see(self, subject: str, state: MemberState) -> bool:
        """Every running member other than `subject` has it in `state`."""
        return all(self.node(n).state_of(subject) is state for n in self.running() if n != subject)

    def digest(self) -> str:
        """Hash of every message sent so far: equal for equal seeds."""
        return self.net.digest()
