"""The Ownership core: what a member serves across tables and hand-offs."""

from __future__ import annotations

from partitioning import PlacementConfig, build_table
from partitioning.ownership import Moved, Ownership, Verdict
from partitioning.table import PartitionTable

CONFIG = PlacementConfig(partition_count=16, backups=1)
MEMBERS = ["a", "b", "c"]


def table(epoch: int, members: list[str] = MEMBERS) -> PartitionTable:
    return build_table(members, epoch, CONFIG)


def primaries(t: PartitionTable, m: str) -> set[int]:
    return set(t.partitions_of(m).primary)


def test_nothing_is_served_before_a_table() -> None:
    o = Ownership("a", 16)
    assert o.owned() == bytearray(16)
    assert not any(o.serves(p) for p in range(16))
    assert o.owner(0) is None and o.version == 0


def test_verdicts() -> None:
    o = Ownership("a", 16)
    t1, t2 = table(1), table(2)
    assert o.verdict(t1) is Verdict.INSTALL and o.install(t1)
    assert o.verdict(t1) is Verdict.SAME and not o.install(t1)
    assert o.install(t2)
    assert o.verdict(t1) is Verdict.OLDER and not o.install(t1)
    other = build_table(MEMBERS, 1, PlacementConfig(partition_count=8))
    assert o.verdict(other) is Verdict.WRONG_COUNT
    # equal epochs never replace each other, whatever the content
    assert o.verdict(build_table(["a", "b"], 2, CONFIG)) is Verdict.OLDER


def test_owned_is_the_tables_primaries() -> None:
    o = Ownership("a", 16)
    t = table(1)
    o.install(t)
    mine = primaries(t, "a")
    assert {p for p in range(16) if o.owned()[p]} == mine
    assert {p for p in range(16) if o.serves(p)} == mine
    assert all(o.owner(p) == t.owner(p) for p in range(16))


def test_a_hand_off_survives_older_tables_and_settles_at_its_epoch() -> None:
    t1 = table(1)
    a, b = Ownership("a", 16), Ownership("b", 16)
    a.install(t1)
    b.install(t1)
    p = min(primaries(t1, "a"))
    a.handed_off(p, "b", 3)
    b.take_over(p, 3)
    assert not a.serves(p) and not a.owned()[p] and a.owner(p) == "b"
    assert b.serves(p) and b.owned()[p] and b.owner(p) == "b"
    assert a.moved == {p: Moved("b", 3)} and b.early == {p: 3}
    # a table of epoch 2 (published before the hand-off) does not undo it
    t2 = table(2)
    a.install(t2)
    b.install(t2)
    assert not a.serves(p) and b.serves(p)
    # the table of epoch 3 settles it: here it undoes it (the old lists)
    t3 = table(3)
    a.install(t3)
    b.install(t3)
    assert a.moved == {} and b.early == {}
    assert a.serves(p) == (t3.owner(p) == "a") and b.serves(p) == (t3.owner(p) == "b")


def test_take_back() -> None:
    a = Ownership("a", 16)
    t = table(1)
    a.install(t)
    p = min(primaries(t, "a"))
    a.handed_off(p, "b", 2)
    assert a.take_back(p) and a.serves(p)
    assert not a.take_back(p)


def test_a_restart_starts_the_saved_tables_streams_only_if_still_in_use() -> None:
    saved = table(4)
    o = Ownership("a", 16)
    assert o.restarted(saved)
    assert o.owned() == owned_by(saved, "a")
    assert o.start_saved()  # nobody had a newer table: start its streams now
    assert not o.start_saved()  # asked once
    o2 = Ownership("a", 16)
    o2.restarted(saved)
    o2.install(table(5))  # the cluster went on: the install started the streams
    assert not o2.start_saved()


def owned_by(t: PartitionTable, me: str) -> bytearray:
    out = bytearray(t.partition_count)
    for p in primaries(t, me):
        out[p] = 1
    return out


def test_a_hand_off_that_arrives_after_the_table_of_its_epoch_is_not_served():
    """The source gave up waiting (the new owner was paused) and took the partition back;
    the coordinator published the table of the confirm epoch with the old lists. A
    HANDOFF applied after that table must not make a second primary under it."""
    t = table(3)
    b = Ownership("b", 16)
    b.install(t)
    p = min(primaries(t, "a"))
    assert not b.take_over(p, 3)  # the table of epoch 3 settled it already
    assert not b.serves(p) and b.early == {}
    assert b.take_over(p, 4)  # a hand-off the next table will show
    assert b.serves(p)
