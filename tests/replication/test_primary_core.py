"""The primary side's core (replication/primary.py) stepped by hand: what a subscriber
gets, how a message is cut, hand-offs, the waits of sync writes, and flow control."""

from __future__ import annotations

import random

from replication.map_backups import MapBackups
from replication.primary import NOOP, Kind, Primary, known_members
from replication.stream import Phase

PUT = 1


def primary(
    serving: set[int], snapshot: list | None = None, keep: int = 4, **kw: object
) -> Primary:
    core = Primary(
        "p",
        8,
        lambda p: p in serving,
        lambda p, held: list(snapshot or []),
        kw.pop("map_backups", MapBackups(1, {}, 1)),  # type: ignore[arg-type]
        keep=keep,
        rng=random.Random(1),
        **kw,  # type: ignore[arg-type]
    )
    core.on_table(lambda p: ("p", "b"))
    return core


def write(core: Primary, p: int, key: bytes, map_name: str = "m") -> None:
    core.record(p, PUT, map_name, key, b"v" * 10, 1, 1, 0, 0)


def kinds(chunks: list) -> list:
    return [(c.kind, c.partition) for c in chunks]


def test_a_subscriber_within_the_log_catches_up_else_gets_a_snapshot() -> None:
    core = primary({1}, snapshot=[(PUT, "m", b"s", b"v", 1, 1, 0, 0)])
    plog = core.logs[1]
    for i in range(3):
        write(core, 1, b"k%d" % i)
    near = core.open_stream("near")
    core.subscribe(near, 1, plog.term, 1, False)
    chunks, snap = core.drain(near)
    assert kinds(chunks) == [(Kind.SNAPSHOT_END, 1), (Kind.MUTATIONS, 1)]
    assert chunks[0].seq == 1 and chunks[0].term == plog.term and snap == 0
    assert chunks[1].seq == 2 and [r[2] for r in chunks[1].records] == [b"k1", b"k2"]
    far = core.open_stream("far")
    core.subscribe(far, 1, 12345, 1, False)  # another lineage: a snapshot
    chunks, snap = core.drain(far)
    assert kinds(chunks) == [(Kind.SNAPSHOT_BEGIN, 1), (Kind.SNAPSHOT, 1), (Kind.SNAPSHOT_END, 1)]
    assert chunks[2].seq == plog.seq and snap > 0
    assert (core.caught_up, core.snapshots_sent) == (1, 1)
    refused = core.open_stream("other")
    core.subscribe(refused, 2, 0, 0, False)  # not served here
    assert kinds(core.drain(refused)[0]) == [(Kind.REFUSED, 2)]


def test_changes_of_many_partitions_share_one_message_a_chunk_each() -> None:
    core = primary({1, 2})
    f = core.open_stream("b")
    for p in (1, 2):
        core.subscribe(f, p, core.logs[p].term, 0, False)
    core.drain(f)
    for i in range(6):
        write(core, 1 + i % 2, b"k%d" % i)
    assert core.take_ready() == [f]
    chunks, _ = core.drain(f)
    assert kinds(chunks) == [(Kind.MUTATIONS, 1), (Kind.MUTATIONS, 2)]
    assert [len(c.records) for c in chunks] == [3, 3] and f.queued_bytes == 0


def test_a_backup_past_a_maps_backups_gets_a_noop_in_its_place() -> None:
    core = primary({1}, map_backups=MapBackups(1, {"cache": 0}, 1))
    f = core.open_stream("b")
    core.subscribe(f, 1, core.logs[1].term, 0, False)
    core.drain(f)
    write(core, 1, b"x", "cache")
    write(core, 1, b"y", "orders")
    (chunk,) = core.drain(f)[0]
    assert chunk.records[0] == NOOP and chunk.records[1][2] == b"y"


def test_a_hand_off_stops_serving_and_a_failed_one_serves_again_in_a_new_term() -> None:
    serving = {1}
    core = primary(serving)
    term = core.logs[1].term
    write(core, 1, b"k")
    f = core.open_stream("b")
    other = core.open_stream("c")
    core.subscribe(f, 1, term, 1, False)
    core.subscribe(other, 1, term, 1, False)
    core.drain(f), core.drain(other)
    handing, refused = core.handoff([1, 2], "b", epoch=9)
    assert (handing, refused) == ([1], [2])
    assert 1 not in core.logs and core.positions[1].phase is Phase.LIVE
    (h,) = core.drain(f)[0]
    assert (h.kind, h.term, h.seq, h.epoch) == (Kind.HANDOFF, term, 1, 9)
    assert kinds(core.drain(other)[0]) == [(Kind.REFUSED, 1)]
    assert core.taken_over(f, 1) and core.handoffs == 1
    # another partition whose hand-off is not confirmed and never left: it is taken
    # back (the HANDOFF never leaves now), served again in a new term
    serving.add(3)
    core.on_table(lambda p: ("p", "b"))
    core.subscribe(f, 3, core.logs[3].term, 0, False)
    core.drain(f)
    old_term = core.logs[3].term
    core.handoff([3], "b", epoch=10)
    assert core.handoff_failed(3)
    core.resume(3)
    assert core.logs[3].term != old_term
    assert not [c for c in core.drain(f)[0] if c.kind is Kind.HANDOFF]


def test_a_hand_off_sent_but_not_confirmed_is_not_taken_back() -> None:
    """Once HANDOFF left, the follower may serve the partition and only its word was lost:
    the old primary must not serve it again before a table says who does."""
    serving = {1}
    core = primary(serving)
    f = core.open_stream("b")
    core.subscribe(f, 1, core.logs[1].term, 0, False)
    core.drain(f)
    core.handoff([1], "b", epoch=9)
    serving.discard(1)  # the runtime's routing stops at once
    (h,) = core.drain(f)[0]
    assert h.kind is Kind.HANDOFF
    assert not core.handoff_failed(1)
    assert 1 not in core.logs and not core.handing
    # a stream that closed with HANDOFF still queued: it never left
    serving.add(2)
    core.on_table(lambda p: ("p", "b"))
    core.subscribe(f, 2, core.logs[2].term, 0, False)
    core.handoff([2], "b", epoch=10)
    core.close_stream(f)
    assert core.handoff_failed(2)


def test_sync_waits_come_back_out_of_the_acks_and_fail_with_the_stream() -> None:
    core = primary({1})
    f = core.open_stream("b")
    core.subscribe(f, 1, core.logs[1].term, 0, False)
    write(core, 1, b"k")
    write(core, 1, b"l")
    replicas = lambda p: ("p", "b")  # noqa: E731
    touched = core.take_touched()
    assert touched == {1: (core.logs[1].term, 2)} and core.mark(1) == touched[1]
    assert core.unconfirmed(touched, 1, replicas) == [(1, 2)]
    assert core.wait_ack(f, 1, 2, "write-2") and f.urgent
    assert core.ack(f, 1, 1) == []
    assert core.ack(f, 1, 2) == ["write-2"]
    assert core.unconfirmed(touched, 1, replicas) == [] and core.lost(touched) == []
    assert not core.wait_ack(f, 1, 2, "again")  # already applied: nothing kept
    core.wait_ack(f, 1, 5, "write-5")
    assert core.close_stream(f) == ["write-5"]


def test_a_sync_write_of_an_ended_term_is_lost_not_confirmed_by_the_next() -> None:
    """The member stopped serving p after two writes and took it back: a new term whose
    seqs continue from 2. A backup's ack of seq 3 in the new term says nothing of the
    old term's writes (found by the simulator's sync-backup clients: seq was compared
    without its term)."""
    core = primary({1})
    write(core, 1, b"k")
    write(core, 1, b"l")
    touched = core.take_touched()
    core.end_log(1, "moved")
    core.start_log(1)
    f = core.open_stream("b")
    core.subscribe(f, 1, core.logs[1].term, 2, False)
    write(core, 1, b"m")
    core.ack(f, 1, 3)
    assert core.lost(touched) == [1]


def test_a_sync_write_whose_partition_was_taken_away_is_lost_not_confirmed() -> None:
    """A member alone in a split takes writes; at the heal it adopts the majority's table,
    which gives p to a member that never had them, while a sync write waits: it is lost,
    not confirmed because p is no longer this member's to answer (found by the long
    chaos suite, isolate-one with min_cluster_size 2: a write acknowledged 0.1 s after
    the heal, with no copy on any other member)."""
    serving = {1}
    core = primary(serving)
    write(core, 1, b"k")
    touched = core.take_touched()
    serving.discard(1)
    core.end_log(1, "the majority's table gives it to another member")
    assert core.lost(touched) == [1]


def test_a_sync_write_handed_off_waits_for_the_take_over_then_holds() -> None:
    """A graceful hand-off carries the writes to the new primary: a write waiting over
    it is neither lost nor confirmed until the new primary has taken p over."""
    serving = {1}
    core = primary(serving)
    f = core.open_stream("b")
    core.subscribe(f, 1, core.logs[1].term, 0, False)
    core.drain(f)
    write(core, 1, b"k")
    touched = core.take_touched()
    replicas = lambda p: ("b", "p")  # noqa: E731  (the table after the hand-off)
    core.handoff([1], "b", epoch=9)
    serving.discard(1)
    assert core.lost(touched) == []
    assert core.unconfirmed(touched, 1, replicas) == [(1, 1)]
    assert core.taken_over(f, 1)
    assert core.lost(touched) == [] and core.unconfirmed(touched, 1, replicas) == []
    # a later write of the next term there (served again) is judged by its own log
    serving.add(1)
    core.start_log(1)
    assert core.lost(touched) == [1]


def test_a_backup_dropped_from_the_table_does_not_confirm_a_waiting_write() -> None:
    """This member's view of a split takes the backup for dead and a table drops it while
    a sync write waits: the write still needs the one backup its table asked for (a
    replacement that fills, or a timeout), not none (found by the netns chaos run
    isolate-one: an increment confirmed with no copy elsewhere, lost at the heal)."""
    core = primary({1})
    f = core.open_stream("b")
    core.subscribe(f, 1, core.logs[1].term, 0, False)
    write(core, 1, b"k")
    touched = core.take_touched()
    floor = core.needs(touched, 1, lambda p: ("p", "b"), members=2)
    assert floor == {1: 1}
    # a failover of this member's own view left p with no backup, two members named:
    # the write still needs one; a table of one member needs none
    assert core.needs(touched, 1, lambda p: ("p",), members=2) == {1: 1}
    assert core.needs(touched, 1, lambda p: ("p",), members=1) == {1: 0}
    alone = lambda p: ("p",)  # noqa: E731
    assert core.unconfirmed(touched, 1, alone) == []  # without the floor: "confirmed"
    assert core.unconfirmed(touched, 1, alone, floor=floor) == [(1, 1)]
    core.ack(f, 1, 1)
    assert core.unconfirmed(touched, 1, lambda p: ("p", "b"), floor=floor) == []


def test_a_member_alone_without_a_majority_in_sight_needs_the_backups_it_lost() -> None:
    """A member alone on its side of a split failed the others over: its table names
    only itself, as the last member of a cluster would. Its membership still knows the
    others (dead, never departed); seeing no majority of them, its sync writes need
    the backups they would have had, not none (the netns chaos run partition-halves:
    254 acknowledged puts missing at an audit). A side that sees a majority goes by
    its table: a crash of a minority of members does not stop sync writes."""
    core = primary({1})
    write(core, 1, b"k")
    touched = core.take_touched()
    alone = lambda p: ("p",)  # noqa: E731
    # 1 of 3 in sight: needs its one backup, so the write is not confirmed
    floor = core.needs(touched, 1, alone, members=1, live=1, known=3)
    assert floor == {1: 1}
    assert core.unconfirmed(touched, 1, alone, floor=floor) == [(1, 1)]
    assert core.needs(touched, 2, alone, members=1, live=1, known=3) == {1: 2}
    # a cluster of one (the others left: not known any more) needs nothing
    assert core.needs(touched, 1, alone, members=1, live=1, known=1) == {1: 0}
    # 2 of 3 in sight, a majority: the table of two decides, one backup at most
    pair = lambda p: ("p", "b")  # noqa: E731
    assert core.needs(touched, 2, pair, members=2, live=2, known=3) == {1: 1}
    # 2 of 4 in sight is no majority: the dead count, as many as asked for
    assert core.needs(touched, 2, pair, members=2, live=2, known=4) == {1: 2}
    # ranks (per-map backups) still cap what a write may need
    assert core.needs(touched, 2, alone, ranks=1, members=1, live=1, known=3) == {1: 1}


def test_a_follower_that_does_not_drain_is_cut_off_not_the_writers() -> None:
    core = primary({1}, max_queue_bytes=500)
    f = core.open_stream("slow")
    core.subscribe(f, 1, core.logs[1].term, 0, False)
    core.drain(f)
    for i in range(40):
        write(core, 1, b"key-%d" % i)
    assert core.overflows == 1 and f.closed and not f.queue
    assert [g.name for g, _ in core.take_closing()] == ["slow"]
    assert core.logs[1].seq == 40  # the writes went on
    core.close_stream(f)
    again = core.open_stream("slow")
    core.subscribe(again, 1, core.logs[1].term, 0, False)  # too far behind: a snapshot
    assert core.drain(again)[0][0].kind is Kind.SNAPSHOT_BEGIN


def test_only_live_changes_linger() -> None:
    core = primary({1, 2})
    f = core.open_stream("b")
    core.subscribe(f, 1, core.logs[1].term, 0, False)
    core.subscribe(f, 2, core.logs[2].term, 0, False)
    core.drain(f)
    write(core, 1, b"k")
    assert core.lingers(f)  # a live change: may wait for more to share its message
    assert core.wait_ack(f, 1, 1, "sync-write")
    assert not core.lingers(f)  # someone waits for it
    core.sending(f)
    core.drain(f)
    core.handoff([2], "b", epoch=3)
    assert not core.lingers(f)  # a hand-off goes at once


def test_known_members_count_the_saved_and_the_seeds_only_while_alone() -> None:
    """A member restarted on its side of a split hears from nobody: the members saved
    with its table count (or, with no table saved, one for each seed), so it is not a
    cluster of one; once the gossip knows anyone, the gossip alone counts."""
    assert known_members("a", [], ["a", "b", "c"]) == {"a", "b", "c"}
    assert known_members("a", [], [], ["10.0.0.2:7000"]) == {"a", "seed 10.0.0.2:7000"}
    assert known_members("a", ["b"], ["a", "b", "c"], ["x"]) == {"a", "b"}
    assert known_members("a", [], []) == {"a"}  # no seeds, nothing saved: one member
