"""A deterministic discrete-event loop and network model for sans-IO nodes.

Generic on purpose: nothing here knows about membership.  Hosts are opaque
addresses with a receive callback; payloads are opaque bytes; a message is
either unreliable (datagram: may be lost, reordered) or reliable (stream:
never lost, FIFO per link, but still cut by partitions and crashes).  The
replication issue plugs its own nodes into the same loop and network; this
module imports only the stdlib so it can move to a shared package as is.

Determinism: all randomness comes from one seeded `random.Random`; events are
ordered by (time, insertion sequence), never by hash or id; nothing reads a
wall clock.  Same seed and same calls give the same run, bit for bit, which
`SimNetwork.digest()` (a hash of every send) makes checkable.

Faults: per-link loss/delay/jitter, partitions between groups of hosts,
one-way cuts (hosts of one group cannot send to those of another, while the
other way works: a firewall rule or a broken route in one direction),
pausing a host (a CPU stall: its timers and inbound messages wait until it
resumes, then run in their original order), slowing a host (a CPU-starved or
overloaded process: every inbound message is handled `lag` seconds late, in
order, while its timers still fire on time -- the Lifeguard paper's model of
a slow member, which misses acks and accuses healthy members), and crashing a host (its pending
timers and in-flight inbound messages are discarded; a restart attaches a
fresh receiver to the same address).

Performance: one heap of plain tuples, no per-message copies (the payload
bytes object travels by reference), O(log events) per message.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Receiver = Callable[[float, str, bytes, bool], None]
"""receive(now, src_addr, payload, reliable)."""


class VirtualLoop:
    """A virtual clock and a heap of callbacks."""

    __slots__ = ("_heap", "_seq", "events", "now")

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.events = 0

    def call_at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        """Run fn(*args) at virtual time `when` (not before now)."""
        self._seq += 1
        heapq.heappush(self._heap, (max(when, self.now), self._seq, fn, args))

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.call_at(self.now + delay, fn, *args)

    def pending(self) -> int:
        return len(self._heap)

    def run_until(
        self,
        until: float | None = None,
        predicate: Callable[[], bool] | None = None,
    ) -> bool:
        """Run events in order until virtual time `until` (the clock is then
        set to it) or until `predicate()` is true after an event.  Returns
        True if the predicate was met, False otherwise.  The predicate runs
        after every event, so keep it O(1)."""
        heap = self._heap
        pop = heapq.heappop
        if predicate is not None and predicate():
            return True
        n = 0
        while heap:
            if until is not None and heap[0][0] > until:
                break
            when, _, fn, args = pop(heap)
            self.now = when
            n += 1
            fn(*args)
            if predicate is not None and predicate():
                self.events += n
                return True
        self.events += n
        if until is not None and until > self.now:
            self.now = until
        return False


@dataclass(slots=True)
class Link:
    """Properties of the path from one host to another."""

    loss: float = 0.0
    """Probability an unreliable message is dropped."""
    delay: float = 0.0002
    """Fixed one-way latency in seconds (LAN: ~0.2 ms)."""
    jitter: float = 0.0003
    """Extra latency, uniform in [0, jitter)."""


class _Host:
    __slots__ = (
        "addr",
        "deferred",
        "epoch",
        "lag",
        "lag_tail",
        "lag_until",
        "paused",
        "receiver",
        "up",
    )

    def __init__(self, addr: str, receiver: Receiver) -> None:
        self.addr = addr
        self.receiver = receiver
        self.up = True
        self.paused = False
        self.epoch = 0
        self.lag = 0.0
        self.lag_until = 0.0
        self.lag_tail = 0.0
        self.deferred: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []


@dataclass(slots=True)
class NetStats:
    sent: int = 0
    sent_reliable: int = 0
    bytes: int = 0
    lost: int = 0
    cut: int = 0
    """Dropped by a partition or because a host was down."""
    delivered: int = 0


class SimNetwork:
    """Hosts, links and faults on top of a `VirtualLoop`."""

    def __init__(
        self,
        loop: VirtualLoop,
        rng: random.Random,
        default_link: Link | None = None,
        trace: bool = True,
    ) -> None:
        self.loop = loop
        self.rng = rng
        self.default_link = default_link if default_link is not None else Link()
        self._links: dict[tuple[str, str], Link] = {}
        self._hosts: dict[str, _Host] = {}
        self._group: dict[str, int] = {}
        self._one_way: tuple[frozenset[str], frozenset[str]] | None = None
        self._fifo: dict[tuple[str, str], float] = {}
        self.stats = NetStats()
        self._trace = hashlib.blake2b(digest_size=16) if trace else None

    # ----------------------------------------------------------------- hosts

    def add_host(self, addr: str, receiver: Receiver) -> None:
        """Attach a receiver to an address (a new host, or a restart)."""
        host = self._hosts.get(addr)
        if host is None:
            self._hosts[addr] = _Host(addr, receiver)
            return
        host.receiver = receiver
        host.up = True
        host.paused = False
        host.lag = 0.0
        host.deferred.clear()
        host.epoch += 1

    def is_up(self, addr: str) -> bool:
        host = self._hosts.get(addr)
        return host is not None and host.up

    def is_paused(self, addr: str) -> bool:
        host = self._hosts.get(addr)
        return host is not None and host.paused

    def crash(self, addr: str) -> None:
        """Stop the host now: pending timers and in-flight inbound are lost."""
        host = self._hosts[addr]
        host.up = False
        host.paused = False
        host.deferred.clear()
        host.epoch += 1

    def pause(self, addr: str, duration: float) -> None:
        """Stall the host for `duration`: nothing it receives or schedules runs
        until then; it all runs, in original order, when it resumes."""
        host = self._hosts[addr]
        if not host.up or host.paused:
            return
        host.paused = True
        self.loop.call_later(duration, self._resume, host, host.epoch)

    def slow(self, addr: str, lag: float, duration: float) -> None:
        """Starve the host for `duration`: each message that arrives meanwhile is
        handled `lag` seconds after it arrives (FIFO, like a backlogged socket
        buffer), while its timers fire on time.  It answers probes late and
        reads the answers to its own probes late."""
        host = self._hosts[addr]
        host.lag = lag
        host.lag_until = self.loop.now + duration

    def _resume(self, host: _Host, epoch: int) -> None:
        if host.epoch != epoch or not host.paused:
            return
        host.paused = False
        deferred = host.deferred
        host.deferred = []
        deferred.sort(key=lambda e: (e[0], e[1]))
        for _, _, fn, args in deferred:
            self.loop.call_at(self.loop.now, fn, *args)

    def call_at(self, addr: str, when: float, fn: Callable[..., None], *args: Any) -> None:
        """A timer owned by a host: deferred while it is paused, dropped if it
        crashes first.  fn(now, *args) is called."""
        host = self._hosts[addr]
        self.loop.call_at(when, self._host_event, host, host.epoch, fn, args)

    def _host_event(
        self, host: _Host, epoch: int, fn: Callable[..., None], args: tuple[Any, ...]
    ) -> None:
        if host.epoch != epoch or not host.up:
            return
        if host.paused:
            loop = self.loop
            loop._seq += 1
            host.deferred.append((loop.now, loop._seq, self._host_event, (host, epoch, fn, args)))
            return
        fn(self.loop.now, *args)

    # ----------------------------------------------------------------- links

    def set_link(self, src: str, dst: str, link: Link, both_ways: bool = True) -> None:
        self._links[(src, dst)] = link
        if both_ways:
            self._links[(dst, src)] = link

    def clear_links(self) -> None:
        self._links.clear()

    def partition(self, *groups: list[str] | tuple[str, ...] | set[str]) -> None:
        """Hosts in different groups cannot reach each other; hosts in no
        group reach everyone.  Replaces any previous partition."""
        self._group = {}
        for i, g in enumerate(groups):
            for addr in g:
                self._group[addr] = i

    def cut_one_way(self, src: list[str] | set[str], dst: list[str] | set[str]) -> None:
        """Hosts in `src` cannot send to hosts in `dst`; `dst` still reaches `src`.
        Replaces any previous one-way cut; `heal` ends it too."""
        self._one_way = (frozenset(src), frozenset(dst))

    def heal(self) -> None:
        self._group = {}
        self._one_way = None

    def reachable(self, src: str, dst: str) -> bool:
        one_way = self._one_way
        if one_way is not None and src in one_way[0] and dst in one_way[1]:
            return False
        g = self._group
        if not g:
            return True
        a = g.get(src)
        b = g.get(dst)
        return a is None or b is None or a == b

    # ----------------------------------------------------------------- send

    def send(self, src: str, dst: str, payload: bytes, reliable: bool) -> None:
        """Put a message on the wire; delivery is scheduled, or it is lost."""
        stats = self.stats
        stats.sent += 1
        stats.bytes += len(payload)
        loop = self.loop
        now = loop.now
        if self._trace is not None:
            self._trace.update(
                struct.pack("<dI?", now, len(payload), reliable)
                + src.encode()
                + b"\0"
                + dst.encode()
                + b"\0"
                + payload
            )
        host = self._hosts.get(dst)
        cuts = self._group or self._one_way is not None
        if host is None or not host.up or (cuts and not self.reachable(src, dst)):
            stats.cut += 1
            return
        link = self._links.get((src, dst), self.default_link) if self._links else self.default_link
        rng = self.rng
        when = now + link.delay + rng.random() * link.jitter
        if reliable:
            stats.sent_reliable += 1
            key = (src, dst)
            last = self._fifo.get(key, 0.0)
            if when < last:
                when = last
            self._fifo[key] = when
        elif link.loss and rng.random() < link.loss:
            stats.lost += 1
            return
        loop._seq += 1
        heapq.heappush(
            loop._heap,
            (when, loop._seq, self._deliver, (host, host.epoch, src, payload, reliable)),
        )

    def _deliver(self, host: _Host, epoch: int, src: str, payload: bytes, reliable: bool) -> None:
        if host.epoch != epoch or not host.up:
            self.stats.cut += 1
            return
        if host.paused:
            loop = self.loop
            loop._seq += 1
            host.deferred.append(
                (loop.now, loop._seq, self._deliver, (host, epoch, src, payload, reliable))
            )
            return
        if host.lag and self.loop.now < host.lag_until:
            when = max(self.loop.now + host.lag, host.lag_tail)
            host.lag_tail = when
            self.loop.call_at(when, self._deliver_late, host, epoch, src, payload, reliable)
            return
        self._deliver_late(host, epoch, src, payload, reliable)

    def _deliver_late(
        self, host: _Host, epoch: int, src: str, payload: bytes, reliable: bool
    ) -> None:
        if host.epoch != epoch or not host.up:
            self.stats.cut += 1
            return
        if host.paused:
            loop = self.loop
            loop._seq += 1
            host.deferred.append(
                (loop.now, loop._seq, self._deliver_late, (host, epoch, src, payload, reliable))
            )
            return
        self.stats.delivered += 1
        host.receiver(self.loop.now, src, payload, reliable)

    def digest(self) -> str:
        """Hash of every send so far (time, endpoints, kind, bytes)."""
        if self._trace is None:
            raise RuntimeError("tracing is off")
        return self._trace.hexdigest()
