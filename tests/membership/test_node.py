"""Unit tests of the sans-IO core, driven by hand (no simulator)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from membership.actions import Dropped, Refused, Send, SetTimer
from membership.config import Config
from membership.node import Node
from membership.state import MemberInfo, MemberMeta, MemberState
from membership.wire import (
    Ack,
    Alive,
    Dead,
    Kind,
    Nack,
    Ping,
    PingReq,
    Suspect,
    encode_packet,
)

from .harness import META, Net, decode, make_node

CFG = Config()
P = CFG.probe_interval


def trio(config: Config = CFG) -> tuple[Net, Node, Node, Node]:
    a, b, c = (make_node(n, config) for n in "abc")
    net = Net(a, b, c)
    net.start_all()
    return net, a, b, c


def pings_from(net: Net, src: str, kind: Kind = Kind.DATAGRAM) -> list[tuple[str, Ping]]:
    out = []
    for s, send in net.sent:
        if s == src and send.kind is kind:
            msg = decode(send).msg
            if isinstance(msg, Ping):
                out.append((send.addr, msg))
    return out


def test_start_requests_a_timer_and_tick_is_idempotent():
    a = make_node("a")
    actions = a.start(0.0)
    timers = [x for x in actions if isinstance(x, SetTimer)]
    assert len(timers) == 1 and timers[0].when == a.next_deadline()
    assert a.tick(0.0) == []  # nothing due yet


def test_probe_and_ack_keep_everyone_alive():
    net, a, _b, _c = trio()
    net.run(0.0, 10 * P)
    assert pings_from(net, "a"), "a must probe"
    acks = [s for src, s in net.sent if src in "bc" and isinstance(decode(s).msg, Ack)]
    assert acks
    assert not any(e.kind.value in ("suspect", "dead") for _, e in net.events)
    assert a.health_score == 0
    assert {m.name for m in a.alive_members()} == {"a", "b", "c"}


def test_probe_round_robin_covers_every_member_each_round():
    nodes = [make_node(f"n{i}") for i in range(6)]
    net = Net(*nodes)
    net.start_all()
    net.run(0.0, 5 * P + 0.01)
    targets = [dst for dst, _ in pings_from(net, "n0")]
    assert sorted(targets[:5]) == ["n1", "n2", "n3", "n4", "n5"]


def test_indirect_probe_saves_a_member_behind_a_bad_link():
    net, a, _b, _c = trio()
    # a cannot reach c directly, but b can
    net.drop = lambda src, dst, s: {src, dst} == {"a", "c"} and s.kind is Kind.DATAGRAM
    net.run(0.0, 20 * P)
    reqs = [decode(s).msg for src, s in net.sent if src == "a"]
    assert any(isinstance(m, PingReq) and m.target == "c" for m in reqs)
    # b relayed acks back to a
    assert any(
        src == "b" and s.addr == "a" and isinstance(decode(s).msg, Ack) for src, s in net.sent
    )
    assert a.state_of("c") is MemberState.ALIVE
    assert net.kinds("a", "c") == []


def test_tcp_fallback_probe_is_a_stream_ping_and_gets_a_stream_ack():
    cfg = dataclasses.replace(CFG, indirect_checks=0)
    a, b = make_node("a", cfg), make_node("b", cfg)
    net = Net(a, b)
    net.start_all()
    net.drop = lambda src, dst, s: s.kind is Kind.DATAGRAM
    net.run(0.0, 6 * P)
    assert pings_from(net, "a", Kind.STREAM)
    stream = [decode(s).msg for src, s in net.sent if src == "b" and s.kind is Kind.STREAM]
    assert any(isinstance(m, Ack) for m in stream)
    assert a.state_of("b") is MemberState.ALIVE


def test_silent_member_is_suspected_then_declared_dead():
    net, a, _b, _c = trio()
    net.nodes.pop("c")  # crashed: nothing reaches it
    net.run(0.0, 20.0, step=0.05)
    assert net.kinds("a", "c")[:2] == ["suspect", "dead"]
    assert net.kinds("b", "c")[:2] == ["suspect", "dead"]
    assert a.state_of("c") is MemberState.DEAD
    assert a.num_alive() == 2
    # declared dead no earlier than the suspicion timeout (n=3: k=0 -> minimum)
    ev = [(e.kind.value, e.time) for o, e in net.events if o == "a" and e.member.name == "c"]
    assert ev[1][1] - ev[0][1] >= CFG.suspicion_timeout(3) - 1e-9


def test_suspected_member_refutes_with_a_higher_incarnation():
    net, a, b, _c = trio()
    net.absorb("a", b.handle_datagram(encode_packet(None, [Suspect("b", 0, "a")]), "a", 0.0))
    assert b.incarnation == 1
    assert b.health_score == 1  # Lifeguard: being accused hints we are slow
    # a suspects b locally, then hears b's refutation
    net.absorb("a", a.handle_datagram(encode_packet(None, [Suspect("b", 0, "c")]), "c", 0.0))
    assert a.state_of("b") is MemberState.SUSPECT
    net.absorb("a", a.handle_datagram(encode_packet(None, [Alive("b", "b", 1, META)]), "b", 0.1))
    assert a.state_of("b") is MemberState.ALIVE
    assert net.kinds("a", "b") == ["suspect", "alive"]
    # a stale accusation cannot undo the refutation
    a.handle_datagram(encode_packet(None, [Suspect("b", 0, "c")]), "c", 0.2)
    assert a.state_of("b") is MemberState.ALIVE


# (c has been alive for a while at t = 20: its verdicts count; see the next tests)
def test_dead_member_refutes_and_rejoins():
    _net, a, b, _c = trio()
    a.handle_datagram(encode_packet(None, [Dead("b", 0, "c", False)]), "c", 20.0)
    assert a.state_of("b") is MemberState.DEAD
    out = b.handle_datagram(encode_packet(None, [Dead("b", 0, "c", False)]), "c", 20.0)
    assert b.incarnation == 1 and b.state_of("b") is MemberState.ALIVE
    assert not any(isinstance(x, Refused) for x in out)
    ev = a.handle_datagram(encode_packet(None, [Alive("b", "b", 1, META)]), "b", 21.0)
    assert a.state_of("b") is MemberState.ALIVE
    assert [x.kind.value for x in ev if hasattr(x, "kind") and hasattr(x, "member")] == ["joined"]


def test_left_member_cannot_be_faked_by_others():
    _net, a, _b, _c = trio()
    # c claims b left: only b may say so, so it counts as dead
    a.handle_datagram(encode_packet(None, [Dead("b", 0, "c", True)]), "c", 20.0)
    assert a.state_of("b") is MemberState.DEAD


def test_a_verdict_from_a_member_just_seen_alive_is_only_a_suspicion():
    """After a short partition heals, the side that was cut off still gossips the deaths
    it declared alone. Its accusations count as suspicions until it has been alive in our
    view for accuser_grace, so the accused refute instead of being failed over."""
    _net, a, _b, _c = trio()
    a.handle_datagram(encode_packet(None, [Dead("b", 0, "c", False)]), "c", 1.0)
    assert a.state_of("b") is MemberState.SUSPECT
    # an accuser we do not know at all is no better
    a.handle_datagram(encode_packet(None, [Dead("c", 0, "stranger", False)]), "c", 20.0)
    assert a.state_of("c") is MemberState.SUSPECT


def test_short_partitions_heal_without_false_deaths_on_the_majority_side():
    """The simulator: 3 members split 2|1 for 4 s, then healed. Before accuser_grace,
    22 of 40 seeds declared a healthy member of the majority dead right after the heal
    (the isolated member's stale verdicts); now none may."""
    from membership.sim import Cluster

    bad = []
    for seed in range(40):
        c = Cluster(seed=seed)
        a, b, x = c.start_members(3)
        assert c.run_until(c.converged, timeout=10)
        c.partition([a, b], [x])
        c.run_until(lambda: False, timeout=4.0)
        before = len(c.false_deaths)
        c.heal()
        c.run_until(lambda: False, timeout=20.0)
        wrong = [f for f in c.false_deaths[before:] if f[1] in (a, b) and f[2] in (a, b)]
        if wrong:
            bad.append((seed, wrong))
    assert not bad, bad[:3]


def test_graceful_leave_is_seen_as_left_not_dead():
    net, a, b, c = trio()
    net.run(0.0, 1.0)
    net.absorb("c", c.leave(1.0))
    net.deliver(1.0)
    assert a.state_of("c") is MemberState.LEFT and b.state_of("c") is MemberState.LEFT
    assert net.kinds("a", "c") == ["left"]
    net.run(1.0, 4.0)
    assert c.leave_done
    assert net.kinds("a", "c") == ["left"] and net.kinds("b", "c") == ["left"]
    # a left member stops probing
    before = len(pings_from(net, "c"))
    net.run(4.0, 6.0)
    assert len(pings_from(net, "c")) == before


def test_restarted_member_with_fresh_incarnation_rejoins_higher():
    net, a, b, _c = trio()
    net.nodes.pop("c")
    net.run(0.0, 12.0, step=0.05)
    assert a.state_of("c") is MemberState.DEAD
    dead_inc = a.member("c").incarnation
    c2 = make_node("c")  # restarted process, incarnation 0 again
    net.nodes["c"] = c2
    net.absorb("c", c2.start(12.0, ["a"]))
    net.run(12.0, 14.0)
    assert c2.incarnation > dead_inc
    assert a.state_of("c") is MemberState.ALIVE and b.state_of("c") is MemberState.ALIVE
    assert net.kinds("a", "c")[-1] == "joined"
    assert c2.joined


def test_join_through_seed_and_gossip():
    a, b, c = (make_node(n) for n in "abc")
    net = Net(a, b, c)
    net.absorb("a", a.start(0.0))
    net.absorb("b", b.start(0.0, ["a"]))
    net.deliver(0.0)
    net.absorb("c", c.start(0.0, ["a"]))
    net.deliver(0.0)
    assert b.joined and c.joined
    assert c.state_of("b") is MemberState.ALIVE  # from a's push-pull reply
    net.run(0.0, 1.0)
    assert b.state_of("c") is MemberState.ALIVE  # by gossip
    assert net.kinds("b", "c") == ["joined"]


def test_join_retries_until_the_seed_answers():
    a, b = make_node("a"), make_node("b")
    net = Net(b)  # the seed is not up yet
    net.absorb("b", b.start(0.0, ["a"]))
    net.run(0.0, 1.0)
    assert not b.joined
    net.nodes["a"] = a
    net.absorb("a", a.start(1.0))
    net.run(1.0, 2.0)
    assert b.joined and a.state_of("b") is MemberState.ALIVE


def test_join_later_through_addresses_found_by_discovery():
    """A member started alone (DNS listed nobody yet) joins when join() is given peers."""
    a, b = make_node("a"), make_node("b")
    net = Net(a, b)
    net.absorb("a", a.start(0.0))
    net.absorb("b", b.start(0.0))
    net.run(0.0, 1.0)
    assert a.num_alive() == 1 and b.num_alive() == 1
    net.absorb("b", b.join(["b", "a"], 1.0))  # our own address is skipped
    net.run(1.0, 2.0)
    assert a.state_of("b") is MemberState.ALIVE and b.state_of("a") is MemberState.ALIVE
    assert net.kinds("a", "b") == ["joined"]


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        (MemberMeta("other", 271), "cluster name"),
        (MemberMeta("test", 64), "partition count"),
    ],
)
def test_incompatible_member_is_refused_with_a_reason(meta, reason):
    a = make_node("a")
    x = make_node("x", meta=meta)
    net = Net(a, x)
    net.absorb("a", a.start(0.0))
    net.absorb("x", x.start(0.0, ["a"]))
    net.run(0.0, 2.0)
    refused = [(o, r) for o, r in net.others if isinstance(r, Refused)]
    ours = [r for o, r in refused if o == "a"]
    theirs = [r for o, r in refused if o == "x"]
    assert ours and ours[0].by_us and ours[0].name == "x" and reason in ours[0].reason
    assert theirs and not theirs[0].by_us and reason in theirs[0].reason
    assert a.member("x") is None and not x.joined
    # gossip about it is ignored too
    a.handle_datagram(encode_packet(None, [Alive("x", "x", 5, meta)]), "b", 2.0)
    assert a.member("x") is None


def _pings_to_suspect(cfg: Config) -> list:
    """Only a runs (nothing is delivered), so b stays suspect in a's view.
    By 0.5 s a's gossip ticks have used up the suspect's retransmits, so any
    Suspect still riding on a ping is the buddy system's doing."""
    a, b, c = (make_node(n, cfg) for n in "abc")
    Net(a, b, c).start_all()
    a.handle_datagram(encode_packet(None, [Suspect("b", 0, "c")]), "c", 0.0)
    pkts = []
    while (t := a.next_deadline()) < 1.9:
        for x in a.tick(t):
            if isinstance(x, Send) and x.addr == "b" and x.kind is Kind.DATAGRAM and t > 0.5:
                pkt = decode(x)
                if isinstance(pkt.msg, Ping):
                    pkts.append(pkt)
    assert a.state_of("b") is MemberState.SUSPECT
    assert pkts, "a must have probed b"
    return pkts


def test_buddy_system_tells_the_suspect_in_the_probe():
    for pkt in _pings_to_suspect(CFG):
        assert any(isinstance(g, Suspect) and g.name == "b" for g in pkt.gossip)


def test_buddy_system_off_sends_plain_probes():
    cfg = dataclasses.replace(CFG, lifeguard_buddy=False)
    for pkt in _pings_to_suspect(cfg):
        assert not any(isinstance(g, Suspect) and g.name == "b" for g in pkt.gossip)


def test_awareness_rises_on_failed_probes_and_stretches_the_period():
    cfg = dataclasses.replace(CFG, indirect_checks=0, tcp_fallback_probe=False)
    a, b = make_node("a", cfg), make_node("b", cfg)
    net = Net(a, b)
    net.start_all()
    net.drop = lambda src, dst, s: src == "a"  # a's outbound is broken
    net.run(0.0, 3.0)
    assert a.health_score >= 2
    net.drop = lambda src, dst, s: False
    pings = pings_from(net, "a")
    net.sent.clear()
    t = 3.0
    net.run(t, t + 4 * P)
    n_slow = len(pings_from(net, "a"))
    assert n_slow < 4  # period is scaled by (score + 1)
    net.run(t + 4 * P, 20.0)
    assert a.health_score == 0, "clean probes must bring it back down"
    assert pings


def test_awareness_off_never_changes():
    cfg = dataclasses.replace(CFG, lifeguard_awareness=False, indirect_checks=0)
    a, b = make_node("a", cfg), make_node("b", cfg)
    net = Net(a, b)
    net.start_all()
    net.drop = lambda src, dst, s: src == "a"
    net.run(0.0, 3.0)
    assert a.health_score == 0


def test_helper_nacks_when_the_target_is_silent():
    net, _a, b, _c = trio()
    net.nodes.pop("c")
    out = b.handle_datagram(encode_packet(PingReq(42, "c", "c", "a", True)), "a", 0.0)
    assert any(isinstance(decode(s).msg, Ping) for s in out if isinstance(s, Send))
    out = b.tick(0.0 + CFG.probe_timeout)
    nacks = [decode(s).msg for s in out if isinstance(s, Send)]
    assert Nack(42) in nacks


def test_nacks_spare_the_prober_from_blame():
    """Helpers that nack prove our network works: no awareness penalty."""
    net, a, _b, _c = trio()
    net.nodes.pop("c")
    net.run(0.0, 3 * P)
    assert a.state_of("c") is MemberState.SUSPECT
    assert a.health_score == 0


def _six(cfg: Config = CFG) -> tuple[Net, list[Node]]:
    nodes = [make_node(f"n{i}", cfg) for i in range(6)]
    net = Net(*nodes)
    net.start_all()
    return net, nodes


def test_suspicion_shrinks_with_independent_confirmations():
    _net, nodes = _six()
    a = nodes[0]
    lo = CFG.suspicion_timeout(6)
    hi = CFG.suspicion_max_timeout_mult * lo
    a.handle_datagram(encode_packet(None, [Suspect("n5", 0, "n1")]), "n1", 0.0)
    assert a.state_of("n5") is MemberState.SUSPECT
    a.tick(lo + 0.01)
    assert a.state_of("n5") is MemberState.SUSPECT, "one accuser: wait for the max"
    # two independent confirmations (k = suspicion_mult - 2 = 2)
    a.handle_datagram(encode_packet(None, [Suspect("n5", 0, "n2")]), "n2", lo + 0.02)
    a.handle_datagram(encode_packet(None, [Suspect("n5", 0, "n2")]), "n2", lo + 0.02)  # dup
    a.handle_datagram(encode_packet(None, [Suspect("n5", 0, "n3")]), "n3", lo + 0.03)
    a.tick(lo + 0.04)
    assert a.state_of("n5") is MemberState.DEAD
    assert lo + 0.04 < hi


def test_suspicion_without_confirmations_fires_at_the_max():
    _net, nodes = _six()
    a = nodes[0]
    lo = CFG.suspicion_timeout(6)
    hi = CFG.suspicion_max_timeout_mult * lo
    a.handle_datagram(encode_packet(None, [Suspect("n5", 0, "n1")]), "n1", 0.0)
    a.tick(hi - 0.01)
    assert a.state_of("n5") is MemberState.SUSPECT
    a.tick(hi)
    assert a.state_of("n5") is MemberState.DEAD


def test_fixed_suspicion_timeout_without_lifeguard():
    cfg = CFG.without_lifeguard()
    _net, nodes = _six(cfg)
    a = nodes[0]
    lo = cfg.suspicion_timeout(6)
    a.handle_datagram(encode_packet(None, [Suspect("n5", 0, "n1")]), "n1", 0.0)
    a.tick(lo)
    assert a.state_of("n5") is MemberState.DEAD


def test_malformed_input_is_dropped_not_raised():
    a = make_node("a")
    a.start(0.0)
    out = a.handle_datagram(b"\x93\x01garbage", "evil", 0.0)
    assert [type(x) for x in out] == [Dropped]
    out = a.handle_datagram(b"\x00" * 5000, "evil", 0.0)
    assert isinstance(out[0], Dropped) and "exceeds" in out[0].reason
    out = a.handle_stream(b"\xc1", "evil", 0.0)
    assert isinstance(out[0], Dropped)


def test_ping_for_another_name_is_not_answered():
    a = make_node("a")
    a.start(0.0)
    out = a.handle_datagram(encode_packet(Ping(1, "someone-else", "b")), "b", 0.0)
    assert not any(isinstance(x, Send) for x in out)
    assert any(isinstance(x, Dropped) for x in out)


def test_piggybacked_datagrams_fit_the_budget():
    nodes = [make_node("a")]
    a = nodes[0]
    a.start(0.0)
    big = MemberMeta("test", 271, grpc="g" * 200, zone="z" * 50, version="v" * 30)
    for i in range(200):
        a.handle_datagram(
            encode_packet(None, [Alive(f"member-{i:04d}", f"h{i}:1", 1, big)]), "x", 0.0
        )
    sends = []
    t = 0.0
    for _ in range(50):
        t = a.next_deadline()
        sends += [s for s in a.tick(t) if isinstance(s, Send) and s.kind is Kind.DATAGRAM]
    assert sends
    assert max(len(s.data) for s in sends) <= CFG.max_datagram_size
    assert max(len(decode(s).gossip) for s in sends) >= 3


def test_update_meta_is_gossiped_as_updated():
    net, a, b, _c = trio()
    new = dataclasses.replace(META, grpc="10.9.9.9:5000")
    net.absorb("a", a.update_meta(new, 0.0))
    net.run(0.0, 1.0)
    assert b.member("a").meta.grpc == "10.9.9.9:5000"
    assert net.kinds("b", "a") == ["updated"]


def test_same_seed_same_actions():
    def run() -> list[bytes]:
        a = Node("a", "a", META, rng=random.Random(5))
        a.install([x for x in make_node("b").members()], 0.0)
        out = a.start(0.0)
        for _ in range(30):
            out += a.tick(a.next_deadline())
        return [x.data for x in out if isinstance(x, Send)]

    assert run() == run()


def test_push_pull_is_stream_only_and_carries_large_views():
    a, b = make_node("a"), make_node("b")
    states = [
        MemberInfo(f"member-{i:03d}", f"10.0.{i}.1:7946", META, 0, MemberState.ALIVE)
        for i in range(100)
    ]
    a.install(states, 0.0)
    out = a.start(0.0)
    b_out = b.start(0.0, ["a"])
    join = next(s for s in b_out if isinstance(s, Send))
    assert join.kind is Kind.STREAM
    reply = [s for s in a.handle_stream(join.data, "b", 0.0) if isinstance(s, Send)]
    assert reply[0].kind is Kind.STREAM and len(reply[0].data) > CFG.max_datagram_size
    dropped = b.handle_datagram(reply[0].data, "a", 0.0)
    assert isinstance(dropped[0], Dropped) and b.member("member-042") is None
    b.handle_stream(reply[0].data, "a", 0.0)
    assert b.state_of("member-042") is MemberState.ALIVE and b.num_alive() == 102
    assert out
