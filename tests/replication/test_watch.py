"""replication/watch.py: client watches over a primary's logs, stepped by hand."""

from __future__ import annotations

from replication.stream import FollowerLog, Phase, PrimaryLog
from replication.watch import (
    ADDED,
    CLEARED,
    REMOVED,
    UPDATED,
    Notice,
    Watchers,
    kinds_mask,
)

PUT, DELETE, CLEAR = 1, 2, 6


def write(ws: Watchers, logs: dict[int, PrimaryLog], p: int, key: bytes, op: int = PUT,
          existed: bool = False, map_name: str = "m") -> int:  # fmt: skip
    rec = (op, map_name, key, b"v" if op == PUT else None, 1, 1, 0, 0)
    seq = logs[p].append(rec)
    ws.record(p, op, map_name, key, rec[3], 1, 1, 0, existed)
    return seq


def setup() -> tuple[Watchers, dict[int, PrimaryLog]]:
    logs = {0: PrimaryLog(7), 1: PrimaryLog(9)}
    return Watchers(logs, max_events=4), logs


def test_from_now_then_events_with_positions_over_filtered_changes() -> None:
    ws, logs = setup()
    write(ws, logs, 0, b"a")
    w = ws.open(1, "m", b"k", 0, values=True)
    ws.subscribe(w, 0, 0, 0)
    write(ws, logs, 0, b"k1")
    write(ws, logs, 0, b"x")  # filtered out by the prefix
    write(ws, logs, 0, b"k1", existed=True)
    write(ws, logs, 0, b"y", map_name="other")
    chunks = ws.drain(w)
    assert [c.kind for c in chunks] == [Notice.SYNCED, Notice.EVENTS]
    assert chunks[0].seq == 1 and chunks[0].term == 7
    ev = chunks[1]
    assert (ev.prev, ev.seq) == (1, 5)  # the log's seq: filtered changes are covered
    assert [(e.kind, e.key, e.seq, e.value) for e in ev.events] == [
        (ADDED, b"k1", 2, b"v"), (UPDATED, b"k1", 4, b"v")]  # fmt: skip
    assert ws.drain(w) == []
    ws.probe(w)
    (probe,) = ws.drain(w)
    assert (probe.kind, probe.prev, probe.seq, probe.events) == (Notice.EVENTS, 5, 5, [])


def test_kinds_values_and_deletes_of_absent_keys() -> None:
    ws, logs = setup()
    w = ws.open(1, "m", b"", kinds_mask({"removed", "cleared"}), values=False)
    ws.subscribe(w, 1, 0, 0)
    write(ws, logs, 1, b"a")
    write(ws, logs, 1, b"a", DELETE, existed=True)
    write(ws, logs, 1, b"b", DELETE, existed=False)  # a tombstone only: no event
    write(ws, logs, 1, b"", CLEAR)
    _, ev = ws.drain(w)
    assert [(e.kind, e.key, e.value) for e in ev.events] == [(REMOVED, b"a", None),
                                                             (CLEARED, b"", None)]  # fmt: skip
    assert ev.seq == 4


def test_resume_from_the_log_else_reset() -> None:
    ws, logs = setup()
    for i in range(5):
        write(ws, logs, 0, b"k%d" % i)
    w = ws.open(1, "m", b"", 0, values=False)
    ws.subscribe(w, 0, 7, 3)
    synced, ev = ws.drain(w)
    assert (synced.kind, synced.seq, synced.forked) == (Notice.SYNCED, 3, False)
    assert [e.seq for e in ev.events] == [4, 5] and ev.prev == 3
    ws.subscribe(w, 0, 12345, 3)  # another lineage: nothing to resume from
    (reset,) = ws.drain(w)
    assert (reset.kind, reset.term, reset.seq) == (Notice.RESET, 7, 5)


def test_a_promoted_copy_resumes_watchers_of_the_old_lineage() -> None:
    pos = FollowerLog(7, 0, Phase.LIVE)
    pos.keep(1, [(PUT, "m", b"k%d" % i, b"v", 1, 1, 0, 0) for i in range(1, 6)])
    pos.seq = 5
    new = PrimaryLog(99, 5)
    new.prev, new.before = (7, 5), pos.tail()
    new.append((PUT, "m", b"n", b"v", 1, 1, 0, 0))
    ws = Watchers({0: new})
    w = ws.open(1, "m", b"", 0, values=False)
    ws.subscribe(w, 0, 7, 3)  # saw 3 of the old lineage: gets 4, 5 (kept) and 6 (new)
    synced, ev = ws.drain(w)
    assert (synced.term, synced.seq, synced.forked) == (99, 3, False)
    assert [e.seq for e in ev.events] == [4, 5, 6]
    ws.subscribe(w, 0, 7, 8)  # saw changes 6..8 the old primary lost: resumes at the fork
    synced, ev = ws.drain(w)
    assert (synced.seq, synced.forked) == (5, True)
    assert [e.key for e in ev.events] == [b"n"]


def test_a_slow_watch_loses_the_partition_not_the_primary() -> None:
    ws, logs = setup()
    w = ws.open(1, "m", b"", 0, values=False)
    ws.subscribe(w, 0, 0, 0)
    ws.subscribe(w, 1, 0, 0)
    for i in range(6):
        write(ws, logs, 0, b"k%d" % i)
    write(ws, logs, 1, b"other")
    chunks = ws.drain(w)
    kinds = [(c.kind, c.partition) for c in chunks]
    assert (Notice.DROPPED, 0) in kinds and (Notice.EVENTS, 1) in kinds
    assert 0 not in w.subs and ws.dropped == 1 and w.bytes >= 0
    assert 0 not in ws.by_partition
    ws.subscribe(w, 0, 7, 3)  # from where it was: the log still has it
    synced, ev = ws.drain(w)
    assert synced.kind is Notice.SYNCED and [e.seq for e in ev.events] == [4, 5, 6]


def test_a_log_that_ends_tells_its_watchers() -> None:
    ws, logs = setup()
    w = ws.open(1, "m", b"", 0, values=False)
    ws.subscribe(w, 0, 0, 0)
    ws.drain(w)
    del logs[0]
    ws.revalidate()
    (notice,) = ws.drain(w)
    assert (notice.kind, notice.partition) == (Notice.NOT_PRIMARY, 0)
    ws.subscribe(w, 0, 7, 0)
    assert ws.drain(w)[0].kind is Notice.NOT_PRIMARY
    ws.close(w)
    assert not ws.by_partition


def test_a_follower_keeps_about_the_last_256_changes_contiguous() -> None:
    pos = FollowerLog(7, 0, Phase.LIVE)
    rec = (PUT, "m", b"k", b"v", 1, 1, 0, 0)
    first = 1
    for n in (100, 1, 64, 200, 3):
        pos.keep(first, (rec,) * n)
        first += n
    seqs = [s for s, _ in pos.tail()]
    assert seqs == list(range(seqs[0], first)) and 256 <= len(seqs) < 256 + 200
    pos.snapshot_begin()
    assert pos.tail() == []


def test_a_replay_keeps_the_filter_and_an_adds_only_watch_hears_puts() -> None:
    ws, logs = setup()
    write(ws, logs, 0, b"p:a")
    write(ws, logs, 0, b"q:b")
    write(ws, logs, 0, b"p:a", DELETE, existed=True)
    w = ws.open(1, "m", b"p:", kinds_mask({"added"}), values=False)
    ws.subscribe(w, 0, 7, 0)  # a resume: replayed from the log, by the same filter
    _, ev = ws.drain(w)
    assert [(e.kind, e.key) for e in ev.events] == [(ADDED, b"p:a")]
