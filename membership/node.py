"""The sans-IO SWIM member: failure detection, dissemination, membership.

How it works
------------

Every member keeps a list of the others with a state (alive, suspect, dead,
left) and an *incarnation* number that only the member itself may increase.
Three periodic jobs, all driven by `tick(now)`, keep those lists true:

1. Probing (failure detection).  Once per protocol period we ping the next
   member of a shuffled round-robin list (memberlist's order: every member is
   probed once per round, and new members are inserted at random places so
   nobody waits long).  If no ack comes within probe_timeout we ask k other
   members to ping it for us (ping-req) and, in parallel, ping it over the
   stream kind (TCP), which gets through when UDP is filtered or lossy.  If
   nothing has come back by the end of the period the member becomes
   *suspect*.  A member is never declared dead on one missed probe: it stays
   suspect for a suspicion timeout and is declared dead only if nobody has
   heard a refutation by then.  Suspect and dead are gossiped like any news.

2. Refutation and incarnations.  A member that hears it is suspected (or
   declared dead) gossips `alive` with its incarnation raised above the
   accusation's.  State messages are ordered by incarnation: a newer
   incarnation always wins, at equal incarnation suspect beats alive and dead
   beats suspect, so a stale accusation cannot undo a refutation and a stale
   alive cannot undo an accusation.  A restarted member either starts with a
   higher incarnation or learns through push-pull that it is thought dead
   and refutes; either way it comes back as a new incarnation.  A graceful
   leave is a `dead` message a member sends about itself with the left flag;
   it is the only way to reach the LEFT state.

3. Dissemination.  Every update we learn or originate goes into a broadcast
   queue and is piggybacked onto probes, acks and a gossip tick (every
   gossip_interval to gossip_nodes random members, only when the queue is not
   empty) until it has been sent retransmit_mult x log10(N) times: epidemic
   spread reaches everyone in O(log N) rounds w.h.p.  Because the only
   periodic traffic is the probe, the cost per member is constant in N.
   Push-pull (a full state exchange over the stream kind with one random
   member every push_pull_interval) catches whatever gossip lost; a joining
   member does one immediately with its seeds, which is how it gets the
   whole member list in one round trip.  Push-pull occasionally targets a
   member we consider dead (Serf's reconnect): after a partition heals, that
   is how two sides that declared each other dead find each other again:
   each side refutes the other's accusation and the refutations spread.

Lifeguard (Dadgar et al., 2018; memberlist) makes the detector robust when
the *prober* is the sick one, which is the usual cause of false positives:

* Local health awareness: a score that rises when our probes fail without
  the nacks our ping-req helpers should have sent, or when we have to refute
  an accusation; it scales our probe interval and timeout by (score + 1), so
  a stalled member stops accusing healthy ones.  A clean probe lowers it.
* Dynamic suspicion: a suspicion starts with a long timeout and shrinks, on a
  log scale, as other members independently confirm it (see suspicion.py).
  A real crash is confirmed by many probers and is declared quickly; a
  suspicion raised by one sick member waits long enough to be refuted.
* Buddy system: when we probe a member we suspect, the suspect message rides
  in the same packet, so the member learns of it at once and can refute.

Membership is guarded at the door: members advertise metadata (cluster name,
partition count, gRPC address, zone, version), and a member whose cluster
name or partition count differs from ours is refused: its push-pull is
answered with a Refuse message, its alive gossip is ignored, and a `Refused`
action tells the runtime why.

The state machine
-----------------

Nothing in here does I/O or reads a clock.  The runtime calls:

* ``start(now, seeds)`` once, ``leave(now)`` to leave gracefully;
* ``handle_datagram(data, addr, now)`` / ``handle_stream(data, addr, now)``
  for every received message (malformed ones become a `Dropped` action);
* ``tick(now)`` when the last `SetTimer` asked for it;

and each returns a list of actions (actions.py): `Send` (bytes, address and
kind), `SetTimer`, `MemberEvent`, `Refused`, `Dropped`.  Randomness comes from
the `random.Random` passed in, so a simulator with a seeded generator and a
virtual clock replays a run exactly.  Timers live in one heap; cancelled
timers are not removed but ignored when they fire (each carries what it needs
to check it is still current), which keeps every operation O(log timers).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Any

from membership.actions import (
    Action,
    Dropped,
    EventKind,
    MemberEvent,
    Refused,
    Send,
    SetTimer,
)
from membership.awareness import Awareness
from membership.broadcast import BroadcastQueue
from membership.config import Config
from membership.state import Member, MemberInfo, MemberMeta, MemberState
from membership.suspicion import Suspicion
from membership.wire import (
    MAX_SEQ,
    PACKET_OVERHEAD_MAX,
    Ack,
    Alive,
    Dead,
    Gossip,
    Kind,
    MalformedMessage,
    Message,
    Nack,
    Ping,
    PingReq,
    PushPull,
    Refuse,
    Suspect,
    assemble,
    decode_packet,
    encode_gossip,
    encode_message,
)

ALIVE = MemberState.ALIVE
SUSPECT = MemberState.SUSPECT
DEAD = MemberState.DEAD
LEFT = MemberState.LEFT
DATAGRAM = Kind.DATAGRAM
STREAM = Kind.STREAM

# timer kinds
_T_PROBE = 0
_T_PROBE_TIMEOUT = 1
_T_PROBE_DEADLINE = 2
_T_RELAY = 3
_T_SUSPICION = 4
_T_GOSSIP = 5
_T_PUSH_PULL = 6
_T_JOIN = 7
_T_SYNC = 8
_T_RECONNECT = 9

_NACK_FRACTION = 0.8
"""A ping-req helper nacks after this fraction of the probe timeout, so the
nack reaches the requester before the end of its protocol period."""

_MAX_REFUSED_MEMO = 1024


@dataclass(slots=True)
class _Probe:
    name: str
    incarnation: int
    indirect: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _Relay:
    seq: int
    reply_to: str
    nack: bool


class Node:
    """One member's protocol state.  Not thread-safe: one caller at a time."""

    def __init__(
        self,
        name: str,
        addr: str,
        meta: MemberMeta,
        *,
        rng: random.Random,
        config: Config | None = None,
        incarnation: int = 0,
        now: float = 0.0,
    ) -> None:
        self.config = config if config is not None else Config()
        self.name = name
        self.addr = addr
        self._rng = rng
        self._me = Member(name, addr, meta, incarnation, ALIVE, now)
        self._members: dict[str, Member] = {name: self._me}
        # alive + suspect members other than us, for O(1) random choice
        self._live: list[str] = []
        self._live_pos: dict[str, int] = {}
        # dead (not left) members, for reconnect attempts
        self._dead: list[str] = []
        self._dead_pos: dict[str, int] = {}
        self._recent_dead: list[str] = []
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._timers: list[tuple[float, int, int, Any]] = []
        self._timer_seq = 0
        self._announced: float | None = None
        self._seq = rng.randrange(MAX_SEQ)
        self._probes: dict[int, _Probe] = {}
        self._relays: dict[int, _Relay] = {}
        self._suspicions: dict[str, Suspicion] = {}
        self._bq = BroadcastQueue(self.config.retransmit_limit)
        self._awareness = Awareness(
            self.config.awareness_max_multiplier, self.config.lifeguard_awareness
        )
        self._out: list[Action] = []
        self._seeds: list[str] = []
        self._started = False
        self._joined = False
        self._synced = False
        self._join_refused = False
        self._left = False
        self._refused_memo: dict[tuple[str, str], None] = {}

    # ------------------------------------------------------------------ queries

    @property
    def incarnation(self) -> int:
        return self._me.incarnation

    @property
    def meta(self) -> MemberMeta:
        return self._me.meta

    @property
    def health_score(self) -> int:
        """Lifeguard awareness score: 0 is healthy; timeouts scale by score+1."""
        return self._awareness.score

    @property
    def has_left(self) -> bool:
        return self._left

    @property
    def leave_done(self) -> bool:
        """True once our leave has been piggybacked its full retransmit count;
        the runtime may wait for this (with a timeout) before shutting down."""
        return self._left and not self._bq.pending(self.name)

    @property
    def joined(self) -> bool:
        """True once we know at least one other member (or have no seeds)."""
        return self._joined

    def num_alive(self) -> int:
        """Alive and suspect members, including us (the N of the formulas)."""
        return len(self._live) + 1

    def member(self, name: str) -> MemberInfo | None:
        m = self._members.get(name)
        return None if m is None else m.info()

    def state_of(self, name: str) -> MemberState | None:
        """Cheap lookup for hot predicates (no snapshot object)."""
        m = self._members.get(name)
        return None if m is None else m.state

    @property
    def seeds(self) -> tuple[str, ...]:
        """The addresses this member was told to join through, other than its own: a
        member that hears from none of them is not a cluster of one (`known_members`)."""
        return tuple(self._seeds)

    def members(self) -> list[MemberInfo]:
        """Everything we know, including ourselves and dead/left tombstones."""
        return [m.info() for m in self._members.values()]

    def alive_members(self) -> list[MemberInfo]:
        """Alive and suspect members including ourselves: the cluster view."""
        return [m.info() for m in self._members.values() if m.state <= SUSPECT]

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    # ------------------------------------------------------------------ inputs

    def start(self, now: float, seeds: list[str] | tuple[str, ...] = ()) -> list[Action]:
        """Begin probing and gossiping; join through `seeds` (addresses) if any."""
        if self._started:
            raise RuntimeError("already started")
        self._started = True
        cfg = self.config
        rng = self._rng
        # random phases: members started together must not probe in lockstep
        self._schedule(now + rng.uniform(0, cfg.probe_interval), _T_PROBE, None)
        self._schedule(now + rng.uniform(0, cfg.gossip_interval), _T_GOSSIP, None)
        self._schedule(now + rng.uniform(0.5, 1.0) * cfg.push_pull_interval, _T_PUSH_PULL, None)
        self._schedule(now + rng.uniform(0.5, 1.0) * cfg.reconnect_interval, _T_RECONNECT, None)
        self._queue_alive_self()
        self._seeds = [s for s in seeds if s != self.addr]
        if self._seeds:
            self._send_join()
            self._schedule(now + cfg.join_retry_interval, _T_JOIN, None)
        else:
            self._joined = True
        return self._flush()

    def join(self, seeds: list[str] | tuple[str, ...], now: float) -> list[Action]:
        """Try to join through more addresses (discovery found new ones, e.g. a DNS
        name re-resolved while we are alone).  They become seeds too, so later
        push-pull rounds retry them while we have no peers."""
        if not self._started:
            raise RuntimeError("start() first")
        new = [s for s in seeds if s != self.addr and s not in self._seeds]
        self._seeds.extend(new)
        if not self._left and not self._join_refused:
            for seed in [s for s in seeds if s != self.addr]:
                self._send_push_pull(seed, join=True, reply=False)
        return self._flush()

    def install(self, states: list[MemberInfo], now: float) -> None:
        """Adopt a member list without gossiping it (the push-pull merge of a
        join reply, minus the network).  For simulators that start from a
        converged cluster, and for tests."""
        for s in states:
            if s.name != self.name and s.name not in self._members:
                self._add_member(s.name, s.addr, s.meta, s.incarnation, s.state, now)
        if self._live:
            self._joined = True
        self._out.clear()

    def handle_datagram(self, data: bytes, addr: str, now: float) -> list[Action]:
        """Feed one received datagram (`addr` is only used in Dropped reports)."""
        self._receive(data, addr, now, DATAGRAM)
        return self._flush()

    def handle_stream(self, data: bytes, addr: str, now: float) -> list[Action]:
        """Feed one message received over the stream kind."""
        self._receive(data, addr, now, STREAM)
        return self._flush()

    def tick(self, now: float) -> list[Action]:
        """Run every timer due at `now`."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, kind, arg = heapq.heappop(timers)
            self._fire(kind, arg, now)
        return self._flush()

    def leave(self, now: float) -> list[Action]:
        """Leave gracefully: announce it and stop probing.  Keep calling tick()
        until `leave_done` (or a timeout) so the announcement spreads."""
        if self._left:
            return self._flush()
        self._left = True
        me = self._me
        me.state = LEFT
        me.since = now
        payload = encode_gossip(Dead(self.name, me.incarnation, self.name, True))
        self._bq.queue(self.name, payload)
        direct = assemble(None, [payload])
        for name in self._sample_live(self.config.leave_fanout, None):
            self._out.append(Send(self._members[name].addr, direct, DATAGRAM))
        return self._flush()

    def update_meta(self, meta: MemberMeta, now: float) -> list[Action]:
        """Advertise new metadata (a new incarnation carries it)."""
        self._me.meta = meta
        self._me.incarnation += 1
        self._queue_alive_self()
        return self._flush()

    # ------------------------------------------------------------------ plumbing

    def _flush(self) -> list[Action]:
        if self._timers:
            first = self._timers[0][0]
            if first != self._announced:
                self._announced = first
                self._out.append(SetTimer(first))
        out = self._out
        self._out = []
        return out

    def _schedule(self, when: float, kind: int, arg: Any) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, kind, arg))

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & MAX_SEQ
        return self._seq

    def _send(self, addr: str, msg: Message | None, kind: Kind, prefix: list[bytes] | None = None):
        """Send a message, piggybacking as much queued gossip as fits."""
        body = None if msg is None else encode_message(msg)
        if kind is STREAM:
            self._out.append(Send(addr, assemble(body, []), STREAM))
            return
        gossip = prefix if prefix is not None else []
        room = self.config.max_datagram_size - PACKET_OVERHEAD_MAX - (len(body) if body else 1)
        room -= sum(len(p) for p in gossip)
        gossip += self._bq.take(room, len(self._live) + 1)
        if body is None and not gossip:
            return
        self._out.append(Send(addr, assemble(body, gossip), DATAGRAM))

    def _emit(self, kind: EventKind, m: Member, now: float) -> None:
        self._out.append(MemberEvent(kind, m.info(), now))

    def _refuse(self, name: str, addr: str, reason: str, by_us: bool) -> None:
        key = (name, reason)
        if key in self._refused_memo:
            return
        if len(self._refused_memo) >= _MAX_REFUSED_MEMO:
            self._refused_memo.clear()
        self._refused_memo[key] = None
        self._out.append(Refused(name, addr, reason, by_us))

    # ----- member bookkeeping (all O(1) except probe-order insertion)

    def _live_add(self, name: str) -> None:
        if name not in self._live_pos:
            self._live_pos[name] = len(self._live)
            self._live.append(name)
            # random place in the probe round, as memberlist does
            n = len(self._probe_order)
            i = self._rng.randrange(n + 1)
            self._probe_order.insert(i, name)
            if i < self._probe_index:
                self._probe_index += 1
        self._dead_remove(name)

    def _live_remove(self, name: str) -> None:
        i = self._live_pos.pop(name, None)
        if i is None:
            return
        last = self._live.pop()
        if last != name:
            self._live[i] = last
            self._live_pos[last] = i

    def _dead_add(self, name: str) -> None:
        if name not in self._dead_pos:
            self._dead_pos[name] = len(self._dead)
            self._dead.append(name)

    def _dead_remove(self, name: str) -> None:
        i = self._dead_pos.pop(name, None)
        if i is None:
            return
        last = self._dead.pop()
        if last != name:
            self._dead[i] = last
            self._dead_pos[last] = i

    def _add_member(
        self, name: str, addr: str, meta: MemberMeta, inc: int, state: MemberState, now: float
    ) -> Member:
        m = Member(name, addr, meta, inc, state, now)
        self._members[name] = m
        if state <= SUSPECT:
            self._live_add(name)
        elif state == DEAD:
            self._dead_add(name)
        return m

    def _sample_live(self, k: int, exclude: str | None) -> list[str]:
        live = self._live
        if k <= 0 or not live:
            return []
        picked = self._rng.sample(live, min(len(live), k + (exclude is not None)))
        if exclude is not None:
            picked = [p for p in picked if p != exclude][:k]
        return picked

    def _queue_alive_self(self) -> None:
        me = self._me
        g = Alive(me.name, me.addr, me.incarnation, me.meta)
        self._bq.queue(me.name, encode_gossip(g))

    def _broadcast(self, g: Gossip) -> None:
        self._bq.queue(g.name, encode_gossip(g))

    # ------------------------------------------------------------------ timers

    def _fire(self, kind: int, arg: Any, now: float) -> None:
        if kind == _T_PROBE:
            self._probe(now)
        elif kind == _T_PROBE_TIMEOUT:
            self._probe_timeout(arg, now)
        elif kind == _T_PROBE_DEADLINE:
            self._probe_deadline(arg, now)
        elif kind == _T_RELAY:
            relay = self._relays.pop(arg, None)
            if relay is not None and relay.nack:
                self._send(relay.reply_to, Nack(relay.seq), DATAGRAM)
        elif kind == _T_SUSPICION:
            name, susp = arg
            if self._suspicions.get(name) is susp and susp.deadline <= now:
                del self._suspicions[name]
                m = self._members[name]
                self._on_dead(Dead(name, m.incarnation, self.name, False), now)
        elif kind == _T_GOSSIP:
            self._gossip(now)
        elif kind == _T_PUSH_PULL:
            self._push_pull(now)
        elif kind == _T_RECONNECT:
            self._schedule(now + self.config.reconnect_interval, _T_RECONNECT, None)
            dead = self._dead
            if dead and not self._left:
                target = dead[self._rng.randrange(len(dead))]
                self._send_push_pull(self._members[target].addr, join=False, reply=False)
        elif kind == _T_SYNC:
            if self._live and not self._left:
                target = self._live[self._rng.randrange(len(self._live))]
                self._send_push_pull(self._members[target].addr, join=False, reply=False)
        elif kind == _T_JOIN:
            if self._live:
                self._joined = True
            if not self._joined and not self._join_refused and not self._left:
                self._send_join()
                self._schedule(now + self.config.join_retry_interval, _T_JOIN, None)

    def _next_probe_target(self, now: float) -> Member | None:
        members = self._members
        order = self._probe_order
        for _ in range(2):
            while self._probe_index < len(order):
                name = order[self._probe_index]
                self._probe_index += 1
                m = members.get(name)
                if m is not None and m.state <= SUSPECT and name != self.name:
                    return m
            self._reset_probe_round(now)
            if not order:
                return None
            order = self._probe_order
        return None

    def _reset_probe_round(self, now: float) -> None:
        """End of a round: reap old tombstones and reshuffle (memberlist's
        resetNodes); O(N) once per N probes."""
        cfg = self.config
        members = self._members
        expired = [
            m.name
            for m in members.values()
            if (m.state == DEAD and now - m.since > cfg.reconnect_timeout)
            or (m.state == LEFT and now - m.since > cfg.left_retention and m is not self._me)
        ]
        for name in expired:
            del members[name]
            self._dead_remove(name)
        self._probe_order = list(self._live)
        self._rng.shuffle(self._probe_order)
        self._probe_index = 0

    def _probe(self, now: float) -> None:
        cfg = self.config
        interval = self._awareness.scale(cfg.probe_interval)
        target = None if self._left else self._next_probe_target(now)
        if target is not None:
            seq = self._next_seq()
            self._probes[seq] = _Probe(target.name, target.incarnation)
            prefix = None
            if target.state == SUSPECT and cfg.lifeguard_buddy:
                g = Suspect(target.name, target.incarnation, self.name)
                prefix = [encode_gossip(g)]
            self._send(target.addr, Ping(seq, target.name, self.addr), DATAGRAM, prefix)
            timeout = self._awareness.scale(cfg.probe_timeout)
            self._schedule(now + timeout, _T_PROBE_TIMEOUT, seq)
            self._schedule(now + interval, _T_PROBE_DEADLINE, seq)
        self._schedule(now + interval, _T_PROBE, None)

    def _probe_timeout(self, seq: int, now: float) -> None:
        p = self._probes.get(seq)
        if p is None:
            return
        m = self._members.get(p.name)
        if m is None or m.state > SUSPECT:
            del self._probes[seq]  # declared dead/left meanwhile: no verdict, no blame
            return
        p.indirect = True
        cfg = self.config
        helpers = self._sample_live(cfg.indirect_checks, p.name)
        nack = cfg.lifeguard_awareness
        for h in helpers:
            msg = PingReq(seq, p.name, m.addr, self.addr, nack)
            self._send(self._members[h].addr, msg, DATAGRAM)
        p.expected_nacks = len(helpers) if nack else 0
        if cfg.tcp_fallback_probe:
            self._send(m.addr, Ping(seq, p.name, self.addr), STREAM)

    def _probe_deadline(self, seq: int, now: float) -> None:
        p = self._probes.pop(seq, None)
        if p is None:
            return  # acked
        # Lifeguard: missing nacks mean *our* network is suspect, not only the target
        if p.expected_nacks > 0:
            self._awareness.apply_delta(max(0, p.expected_nacks - p.nacks))
        else:
            self._awareness.apply_delta(1)
        self._on_suspect(Suspect(p.name, p.incarnation, self.name), now)

    def _gossip(self, now: float) -> None:
        cfg = self.config
        self._schedule(now + cfg.gossip_interval, _T_GOSSIP, None)
        if not len(self._bq):
            return
        # gossip also to the recently dead, so a wrongly accused member hears it
        if self._recent_dead:
            horizon = now - cfg.gossip_to_the_dead_time
            members = self._members
            self._recent_dead = [
                n
                for n in self._recent_dead
                if (m := members.get(n)) is not None and m.state >= DEAD and m.since >= horizon
            ]
        live = self._live
        dead = self._recent_dead
        pool = len(live) + len(dead)
        if pool == 0:
            return
        for i in self._rng.sample(range(pool), min(pool, cfg.gossip_nodes)):
            name = live[i] if i < len(live) else dead[i - len(live)]
            self._send(self._members[name].addr, None, DATAGRAM)
            if not len(self._bq):
                break

    def _push_pull(self, now: float) -> None:
        cfg = self.config
        n = len(self._live) + 1
        self._schedule(now + cfg.push_pull_scaled(n), _T_PUSH_PULL, None)
        if self._left:
            return
        if not self._live:
            if self._seeds and not self._join_refused:
                self._send_join()
        else:
            target = self._live[self._rng.randrange(len(self._live))]
            self._send_push_pull(self._members[target].addr, join=False, reply=False)

    def _send_join(self) -> None:
        for seed in self._seeds:
            self._send_push_pull(seed, join=True, reply=False)

    def _send_push_pull(self, addr: str, join: bool, reply: bool) -> None:
        # the live records go straight to the encoder, which runs right here
        states = list(self._members.values())
        self._send(addr, PushPull(self.name, self.addr, join, reply, states), STREAM)

    # ------------------------------------------------------------------ receive

    def _receive(self, data: bytes, addr: str, now: float, kind: Kind) -> None:
        cfg = self.config
        limit = cfg.max_datagram_size if kind is DATAGRAM else cfg.max_stream_size
        try:
            pkt = decode_packet(data, limit)
        except MalformedMessage as exc:
            self._out.append(Dropped(addr, str(exc)))
            return
        for g in pkt.gossip:
            self._on_gossip(g, now)
        msg = pkt.msg
        t = type(msg)
        if t is Ping:
            if msg.target != self.name:
                self._out.append(Dropped(addr, f"ping for {msg.target!r}, we are {self.name!r}"))
                return
            self._send(msg.reply_to, Ack(msg.seq), kind)
        elif t is Ack:
            self._on_ack(msg.seq)
        elif t is PingReq:
            self._on_ping_req(msg, now)
        elif t is Nack:
            p = self._probes.get(msg.seq)
            if p is not None:
                p.nacks += 1
        elif t is PushPull:
            self._on_push_pull(msg, addr, now)
        elif t is Refuse:
            self._join_refused = True
            self._refuse(msg.sender, addr, msg.reason, by_us=False)

    def _on_gossip(self, g: Gossip, now: float) -> None:
        t = type(g)
        if t is Alive:
            self._on_alive(g, now, True)
        elif t is Suspect:
            self._on_suspect(g, now)
        else:
            self._on_dead(g, now)

    def _on_ack(self, seq: int) -> None:
        p = self._probes.pop(seq, None)
        if p is not None:
            if not p.indirect:
                self._awareness.apply_delta(-1)
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            self._send(relay.reply_to, Ack(relay.seq), DATAGRAM)

    def _on_ping_req(self, msg: PingReq, now: float) -> None:
        if msg.target == self.name or msg.target_addr == self.addr:
            return
        seq = self._next_seq()
        self._relays[seq] = _Relay(msg.seq, msg.reply_to, msg.nack)
        self._send(msg.target_addr, Ping(seq, msg.target, self.addr), DATAGRAM)
        self._schedule(now + _NACK_FRACTION * self.config.probe_timeout, _T_RELAY, seq)

    def _on_push_pull(self, msg: PushPull, addr: str, now: float) -> None:
        sender = None
        for s in msg.states:
            if s.name == msg.sender:
                sender = s
                break
        if sender is None or sender.name == self.name:
            self._out.append(Dropped(addr, "push-pull without a valid sender state"))
            return
        reason = self._me.meta.incompatibility(sender.meta)
        if reason is not None:
            self._refuse(sender.name, msg.reply_to, reason, by_us=True)
            if not msg.reply:
                self._send(msg.reply_to, Refuse(self.name, reason), STREAM)
            return
        # a join reply only tells us what the cluster already knows: adopt it
        # quietly instead of re-gossiping the whole member list
        quiet = msg.reply and msg.join
        for s in msg.states:
            st = s.state
            if st == ALIVE:
                self._on_alive(Alive(s.name, s.addr, s.incarnation, s.meta), now, not quiet)
            elif st == LEFT:
                self._on_dead(Dead(s.name, s.incarnation, s.name, True), now)
            else:
                # memberlist: a remote "dead" only makes us suspect; we check ourselves
                self._on_suspect(Suspect(s.name, s.incarnation, msg.sender), now)
        if msg.reply:
            if msg.join and not self._synced:
                # members that joined at the same time as us are missing from
                # the seed's answer; one more exchange soon after fills them in
                # instead of relying on gossip alone
                self._synced = True
                self._schedule(now + self.config.join_sync_delay, _T_SYNC, None)
            self._joined = True
        else:
            self._send_push_pull(msg.reply_to, join=msg.join, reply=True)

    # ------------------------------------------------------------------ state rules

    def _refute(self, accused: int) -> None:
        me = self._me
        me.incarnation = max(me.incarnation, accused) + 1
        self._queue_alive_self()
        # being accused is a sign we are the slow one
        self._awareness.apply_delta(1)

    def _on_alive(self, a: Alive, now: float, broadcast: bool) -> None:
        if a.name == self.name:
            me = self._me
            if self._left:
                return
            if a.incarnation > me.incarnation or (
                a.incarnation == me.incarnation and (a.addr != me.addr or a.meta != me.meta)
            ):
                self._refute(a.incarnation)
            return
        reason = self._me.meta.incompatibility(a.meta)
        if reason is not None:
            self._refuse(a.name, a.addr, reason, by_us=True)
            return
        m = self._members.get(a.name)
        if m is None:
            m = self._add_member(a.name, a.addr, a.meta, a.incarnation, ALIVE, now)
            if self._seeds:
                self._joined = True
            self._emit(EventKind.JOINED, m, now)
            if broadcast:
                self._broadcast(a)
            return
        if a.incarnation <= m.incarnation:
            return
        old = m.state
        if old <= SUSPECT and a.addr != m.addr:
            return  # another process claims a live member's name: ignore it
        meta_changed = a.meta != m.meta
        m.incarnation = a.incarnation
        m.addr = a.addr
        m.meta = a.meta
        if old != ALIVE:
            m.state = ALIVE
            m.since = now
        if old == SUSPECT:
            self._suspicions.pop(a.name, None)
            self._emit(EventKind.ALIVE, m, now)
        elif old >= DEAD:
            self._live_add(a.name)
            self._emit(EventKind.JOINED, m, now)
        elif meta_changed:
            self._emit(EventKind.UPDATED, m, now)
        if broadcast:
            self._broadcast(a)

    def _on_suspect(self, s: Suspect, now: float) -> None:
        m = self._members.get(s.name)
        if m is None or s.incarnation < m.incarnation:
            return
        susp = self._suspicions.get(s.name)
        if susp is not None:
            if susp.confirm(s.source, now):
                self._schedule(susp.deadline, _T_SUSPICION, (s.name, susp))
                self._broadcast(s)
            return
        if m.state != ALIVE:
            return
        if m is self._me:
            if not self._left:
                self._refute(s.incarnation)
            return
        cfg = self.config
        n = len(self._live) + 1
        lo = cfg.suspicion_timeout(n)
        if cfg.lifeguard_dynamic_suspicion:
            # k confirmations expected; memberlist aims to hit the minimum two
            # probe periods short of suspicion_mult periods.  n - 2 excludes
            # us and the suspect.
            k = cfg.suspicion_mult - 2
            if n - 2 < k:
                k = 0
            hi = cfg.suspicion_max_timeout_mult * lo
        else:
            k, hi = 0, lo
        m.incarnation = s.incarnation
        m.state = SUSPECT
        m.since = now
        susp = Suspicion(s.source, s.incarnation, k, lo, hi, now)
        self._suspicions[s.name] = susp
        self._schedule(susp.deadline, _T_SUSPICION, (s.name, susp))
        self._broadcast(s)
        self._emit(EventKind.SUSPECT, m, now)

    def _on_dead(self, d: Dead, now: float) -> None:
        m = self._members.get(d.name)
        if m is None or d.incarnation < m.incarnation or m.state >= DEAD:
            return
        if m is self._me:
            if not self._left:
                self._refute(d.incarnation)
            return
        left = d.left and d.source == d.name
        if not left and d.source != self.name:
            src = self._members.get(d.source)
            if src is None or src.state != ALIVE or now - src.since < self.config.accuser_grace:
                # A verdict from a member we saw alive only just now (or not at all) is
                # news from the far side of a partition that has just healed: its
                # detector judged members it could not reach. Take it as a suspicion,
                # which the accused can refute, not as a death.
                self._on_suspect(Suspect(d.name, d.incarnation, d.source), now)
                return
        m.incarnation = d.incarnation
        m.state = LEFT if left else DEAD
        m.since = now
        self._suspicions.pop(d.name, None)
        self._live_remove(d.name)
        if not left:
            self._dead_add(d.name)
        self._recent_dead.append(d.name)
        self._broadcast(d)
        self._emit(EventKind.LEFT if left else EventKind.DEAD, m, now)
