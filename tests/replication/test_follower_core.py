"""The follower side's core (replication/follower.py) stepped by hand: what it follows
from the table, what a message from a primary makes it do, fills and take-overs."""

from __future__ import annotations

import random
from typing import Any, NamedTuple

from partitioning import PlacementConfig, build_table
from replication.follower import AckPacer, Follower
from replication.map_backups import MapBackups
from replication.primary import Kind, Primary
from replication.stream import Phase

PUT = 1


class C(NamedTuple):
    kind: int
    partition: int
    seq: int = 0
    records: tuple = ()
    term: int = 0
    epoch: int = 0
    error: str = ""

    @property
    def count(self) -> int:
        return len(self.records)


def rec(key: bytes) -> tuple:
    return (PUT, "m", key, b"v", 1, 1, 0, 0)


def member(me: str, table: Any) -> tuple[Follower, list]:
    applied: list = []
    owned = set(table.partitions_of(me).primary)
    core = Primary(me, table.partition_count, lambda p: p in owned, lambda p, h: [],
                   MapBackups(1, {}, 1), rng=random.Random(1))  # fmt: skip
    follower = Follower(
        me,
        core,
        lambda p, *r: applied.append((p, r[2])),
        lambda c: c.records,
        table.owner,
    )
    return follower, applied


def test_it_follows_each_partition_it_backs_up_from_its_primary() -> None:
    table = build_table(["a", "b", "c"], 1, PlacementConfig(partition_count=12, backups=1))
    f, _ = member("b", table)
    plan = f.reconcile(table, now=0.0)
    backed = set(table.partitions_of("b").backup)
    assert {p for parts in plan.subscribe.values() for p in parts} == backed
    for src, parts in plan.subscribe.items():
        assert all(table.owner(p) == src for p in parts)
    subs = f.subscriptions(sorted(backed))
    assert all((s.have_term, s.have_seq, s.all_maps) == (0, 0, False) for s in subs)
    assert f.reconcile(table, now=0.0).subscribe == {}  # nothing new


def test_a_snapshot_then_changes_then_a_gap_then_a_take_over() -> None:
    table = build_table(["a", "b"], 1, PlacementConfig(partition_count=4, backups=1))
    f, applied = member("b", table)
    f.reconcile(table, now=0.0)
    p = table.partitions_of("b").backup[0]
    src = table.owner(p)
    f.subscriptions([p])
    got = f.receive(src, [C(Kind.SNAPSHOT_BEGIN, p), C(Kind.SNAPSHOT, p, 0, (rec(b"s"),)),
                          C(Kind.SNAPSHOT_END, p, 5, term=7)], now=0)  # fmt: skip
    assert got.acks == {p: 5} and (p, True) in got.filled and applied == [(p, b"s")]
    got = f.receive(src, [C(Kind.MUTATIONS, p, 5, (rec(b"dup"), rec(b"new")))], now=0)
    assert got.acks == {p: 6} and applied[-1] == (p, b"new") and len(applied) == 2
    got = f.receive(src, [C(Kind.MUTATIONS, p, 9, (rec(b"late"),))], now=0)  # 7, 8 lost
    assert got.resync == [p] and f.state[p].seq == 0  # asks for a snapshot
    f.subscriptions([p])
    f.receive(src, [C(Kind.SNAPSHOT_BEGIN, p), C(Kind.SNAPSHOT_END, p, 9, term=7)], now=0)
    got = f.receive(src, [C(Kind.HANDOFF, p, 9, term=7, epoch=3)], now=0)
    assert got.taken == [(p, 3)] and f.primary.logs[p].term == 7
    assert f.primary.logs[p].seq == 9 and p not in f.source_of


def test_a_refused_take_over_follows_the_partition_again() -> None:
    """The primary let go of p at HANDOFF (it no longer sends p on this stream), but the
    follower refused to take it over (its table settled the hand-off, or names another
    primary): it must not go on believing it follows p there, or a fill of p from that
    primary would be 'ready' for ever while nothing comes."""
    table = build_table(["a", "b"], 1, PlacementConfig(partition_count=4, backups=1))
    f, _ = member("b", table)
    f.accept_takeover = lambda p, epoch, source: False
    f.reconcile(table, now=0.0)
    p = table.partitions_of("b").backup[0]
    src = table.owner(p)
    f.subscriptions([p])
    f.receive(src, [C(Kind.SNAPSHOT_BEGIN, p), C(Kind.SNAPSHOT_END, p, 4, term=7)], now=0)
    got = f.receive(src, [C(Kind.HANDOFF, p, 4, term=7, epoch=3)], now=0)
    assert got.taken == [] and got.refused and p not in f.source_of
    assert p not in f.primary.logs and f.fill([p], src, now=1.0) == []
    assert p in f.reconcile(table, now=1.0).subscribe[src]


def test_a_fill_is_ready_at_once_when_already_live_and_fails_with_its_stream() -> None:
    table = build_table(["a", "b", "c"], 1, PlacementConfig(partition_count=12, backups=1))
    f, _ = member("b", table)
    f.reconcile(table, now=0.0)
    p = table.partitions_of("b").backup[0]
    src = table.owner(p)
    f.subscriptions([p])
    f.receive(src, [C(Kind.SNAPSHOT_BEGIN, p), C(Kind.SNAPSHOT_END, p, 1, term=2)], now=0)
    assert f.fill([p], src, now=1.0) == [p]  # live already
    q = next(q for q in range(12) if "b" not in table.replicas(q))
    owner = table.owner(q)
    assert f.fill([q], owner, now=1.0) == []
    assert f.unheld(q, table) is False  # filling: it has a role
    plan = f.reconcile(table, now=1.0)
    assert q in plan.subscribe.get(owner, []) and f.subscriptions([q])[0].all_maps
    assert f.in_flight() == 1
    assert q in f.stream_lost(owner)  # not live: failed, the coordinator learns now
    assert f.state[p].phase is Phase.LIVE
    assert f.reconcile(table, now=1.0 + 61).unsubscribe == {owner: [q]}  # never adopted
    assert f.unheld(q, table)


def test_acknowledgements_are_paced_unless_a_take_over_or_a_sync_write_waits() -> None:
    paced = AckPacer(0.05)
    assert paced.due(10.0, taken_over=False) == 10.0  # the first after a quiet spell: now
    paced.sent(10.0)
    assert paced.due(10.01, taken_over=False) == 10.05
    assert paced.due(10.01, taken_over=True) == 10.01
    eager = AckPacer(0.0)  # sync backups configured: someone may wait for every ack
    eager.sent(10.0)
    assert eager.due(10.001, taken_over=False) == 10.001


def test_a_refused_fill_is_no_longer_in_flight() -> None:
    """Its coordinator hears of the failure and orders it again in a later round; counting
    it in flight for as long as it lingers kept the cluster 'moving' for a minute."""
    table = build_table(["a", "b", "c"], 1, PlacementConfig(partition_count=12, backups=1))
    f, _ = member("b", table)
    q = next(q for q in range(12) if "b" not in table.replicas(q))
    owner = table.owner(q)
    f.fill([q], owner, now=0.0)
    f.reconcile(table, now=0.0)
    f.subscriptions([q])
    got = f.receive(owner, [C(Kind.REFUSED, q, error="not the primary")], now=0)
    assert (q, False) in got.filled and got.refused
    assert f.in_flight() == 0
    f.fill([q], owner, now=1.0)  # ordered again: in flight again
    assert f.in_flight() == 1
