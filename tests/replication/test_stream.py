"""The partition stream's bookkeeping (replication/stream.py): a follower that applies
what the primary sends, in whatever pieces and with whatever losses the network makes,
either ends at the primary's state or asks for a snapshot; never silently diverges."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from replication.stream import STAMP_S, FollowerLog, Phase, PrimaryLog, Verdict, new_term


def test_since_returns_exactly_the_missing_changes() -> None:
    log = PrimaryLog(term=5, keep=4)
    for i in range(10):
        log.append(f"c{i}")
    assert log.seq == 10
    assert log.since(5, 10) == []
    assert log.since(5, 8) == [(9, "c8"), (10, "c9")]
    assert log.since(5, 6) == [(7, "c6"), (8, "c7"), (9, "c8"), (10, "c9")]
    assert log.since(5, 5) is None  # change 6 is no longer kept: snapshot
    assert log.since(4, 8) is None  # another lineage: its seq 8 is another state
    assert log.since(5, 11) is None  # ahead of the primary: cannot be ours


def test_applied_at_is_the_time_of_the_change_within_a_stamp() -> None:
    log = PrimaryLog(term=1, keep=8)
    for i in range(12):  # a change every 4 ms: every other one starts a stamp (STAMP_S 10 ms)
        log.append(f"c{i}", at=100.0 + i * 0.004)
    assert log.first == 5 and log.kept()[0] == (5, "c4")
    assert log.applied_at(4) is None  # no longer kept
    assert log.applied_at(13) is None  # not yet written
    for seq in range(5, 13):
        at = log.applied_at(seq)
        assert at is not None
        true = 100.0 + (seq - 1) * 0.004
        assert true - STAMP_S <= at <= true, (seq, at, true)


def test_follower_takes_snapshot_then_mutations_and_skips_duplicates() -> None:
    f = FollowerLog()
    f.resubscribe()
    assert f.snapshot_begin() is Verdict.APPLY
    assert f.snapshot_records() is Verdict.APPLY
    assert f.snapshot_end(term=3, seq=7) is Verdict.APPLY
    assert (f.term, f.seq, f.phase) == (3, 7, Phase.LIVE)
    assert f.mutations(8, 2) == (Verdict.APPLY, 0)
    assert f.mutations(9, 3) == (Verdict.APPLY, 1)  # 9 was applied: skip it
    assert f.seq == 11
    assert f.mutations(5, 3) == (Verdict.IGNORE, 3)
    assert f.mutations(13, 1) == (Verdict.RESYNC, 0)  # 12 is missing


def test_catch_up_without_snapshot_only_on_the_same_lineage() -> None:
    f = FollowerLog(term=9, seq=40, phase=Phase.LIVE)
    f.resubscribe()
    assert f.mutations(41, 1)[0] is Verdict.RESYNC  # nothing before the primary's answer
    assert f.snapshot_end(9, 40) is Verdict.APPLY
    assert f.phase is Phase.LIVE
    g = FollowerLog(term=9, seq=40, phase=Phase.LIVE)
    g.resubscribe()
    assert g.snapshot_end(10, 40) is Verdict.RESYNC  # a promoted primary's new lineage


def test_terms_are_fresh() -> None:
    assert len({new_term() for _ in range(1000)}) == 1000


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(0, 60),
    keep=st.integers(1, 20),
    pieces=st.lists(st.integers(1, 7), min_size=1, max_size=40),
    lost=st.sets(st.integers(0, 39)),
)
def test_follower_converges_or_asks_for_a_snapshot(
    n: int, keep: int, pieces: list[int], lost: set[int]
) -> None:
    """Changes 1..n go out in pieces, some pieces lost; the follower applies what fits.
    Then it reconnects and the primary answers from `since` or with a snapshot. The
    follower's state must end equal to the primary's."""
    primary = PrimaryLog(term=1, keep=keep)
    follower = FollowerLog(term=1, seq=0, phase=Phase.LIVE)
    applied: list[int] = []
    seq = 0
    for i, size in enumerate(pieces):
        first = seq + 1
        batch = [primary.append(x) for x in range(first, min(n, seq + size) + 1)]
        if not batch:
            break
        seq = batch[-1]
        if i in lost:
            continue
        verdict, skip = follower.mutations(first, len(batch))
        if verdict is Verdict.APPLY:
            applied.extend(batch[skip:])
    # applied is always a gap-free prefix
    assert applied == list(range(1, len(applied) + 1))
    assert follower.seq == len(applied)
    # reconnect: resubscribe with what it has
    follower.resubscribe()
    missing = primary.since(follower.term, follower.seq)
    if missing is None:
        follower.snapshot_begin()
        applied = list(range(1, primary.seq + 1))  # the snapshot is the whole state
        assert follower.snapshot_end(primary.term, primary.seq) is Verdict.APPLY
    else:
        assert follower.snapshot_end(primary.term, follower.seq) is Verdict.APPLY
        if missing:
            verdict, skip = follower.mutations(missing[0][0], len(missing))
            assert verdict is Verdict.APPLY
            applied.extend(s for s, _ in missing[skip:])
    assert applied == list(range(1, primary.seq + 1))
    assert follower.seq == primary.seq
