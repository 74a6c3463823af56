"""The Ownership core: what a member serves across tables and hand-offs."""

from __future__ import annotations

from partitioning import PlacementConfig, build_table
from partitioning.ownership import Moved, Ownership, Verdict
from partitioning.table import PartitionTable

CONFIG = PlacementConfig(partition_count=16, backups=1)
MEMBERS = ["a", "b", "c"]


def born(me: str) -> Ownership:
    """A member born with its cluster: asked for its table before the first one was
    made, so a first table of epoch 1 lacks nothing to it."""
    o = Ownership(me, 16)
    o.born()
    return o


def table(epoch: int, members: list[str] = MEMBERS) -> PartitionTable:
    return build_table(members, epoch, CONFIG)


def primaries(t: PartitionTable, m: str) -> set[int]:
    return set(t.partitions_of(m).primary)


def test_nothing_is_served_before_a_table() -> None:
    o = born("a")
    assert o.owned() == bytearray(16)
    assert not any(o.serves(p) for p in range(16))
    assert o.owner(0) is None and o.version == 0


def test_verdicts() -> None:
    o = born("a")
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
    o = born("a")
    t = table(1)
    o.install(t)
    mine = primaries(t, "a")
    assert {p for p in range(16) if o.owned()[p]} == mine
    assert {p for p in range(16) if o.serves(p)} == mine
    assert all(o.owner(p) == t.owner(p) for p in range(16))


def test_a_hand_off_survives_older_tables_and_settles_at_its_epoch() -> None:
    t1 = table(1)
    a, b = born("a"), born("b")
    a.install(t1)
    b.install(t1)
    p = min(primaries(t1, "a"))
    a.handed_off(p, "b", 3)
    assert b.take_over(p, 3, "a")
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
    a = born("a")
    t = table(1)
    a.install(t)
    p = min(primaries(t, "a"))
    a.handed_off(p, "b", 2)
    assert a.take_back(p) and a.serves(p)
    assert not a.take_back(p)


def test_a_restart_starts_the_saved_tables_streams_only_if_still_in_use() -> None:
    saved = table(4)
    o = born("a")
    assert o.restarted(saved)
    assert o.owned() == owned_by(saved, "a")
    assert o.start_saved()  # nobody had a newer table: start its streams now
    assert not o.start_saved()  # asked once
    o2 = born("a")
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
    b = born("b")
    b.install(t)
    p = min(primaries(t, "a"))
    assert not b.take_over(p, 3, "a")  # the table of epoch 3 settled it already
    assert not b.serves(p) and b.early == {}
    assert b.take_over(p, 4, "a")  # a hand-off the next table will show
    assert b.serves(p)


def test_a_hand_off_from_a_member_the_table_does_not_name_primary_is_refused():
    """After a heal, a hand-off ordered by the other lineage's coordinator reached its
    source late: by b's table another member serves p, and holds that same table, so
    taking p over would make two primaries under it."""
    t = table(3)
    b = born("b")
    b.install(t)
    p = min(primaries(t, "a"))
    assert not b.take_over(p, 9, "c") and not b.serves(p) and b.early == {}
    assert b.take_over(p, 9, "a") and b.serves(p)


def test_an_unsettled_hand_off_is_reported_and_survives_a_restart():
    """The source of a hand-off that was sent but not confirmed serves nothing of p until
    a table of the hand-off's epoch; it says so (`unsettled`), and a restart with the
    saved table still does not serve p (the saved table cannot show the hand-off)."""
    t = table(3)
    a, b = born("a"), born("b")
    a.install(t)
    b.install(t)
    assert a.unsettled() == b.unsettled() == 0
    p = min(primaries(t, "a"))
    a.handed_off(p, "b", 4)
    assert b.take_over(p, 4, "a")
    assert a.unsettled() == b.unsettled() == 4
    again = born("a")
    assert again.restarted(t, dict(a.moved))
    assert not again.serves(p) and again.owner(p) == "b" and again.unsettled() == 4
    assert not again.owned()[p]
    # a saved hand-off the saved table settled already is not kept
    settled = born("a")
    settled.restarted(table(4), dict(a.moved))
    assert settled.moved == {} and settled.unsettled() == 0
    for o in (a, b, again):
        o.install(table(4))
        assert o.unsettled() == 0


def places(t: PartitionTable, m: str) -> set[int]:
    held = t.partitions_of(m)
    return {*held.primary, *held.backup}


def test_a_member_started_without_data_lacks_the_places_its_first_table_gives_it():
    """c restarted with an empty data dir before anyone noticed: the first table it
    installs (epoch > 1) still names it, for copies it does not hold. It serves none of
    them, and a table that no longer names it there settles them."""
    t = table(3)
    c = Ownership("c", 16)
    assert c.install(t)
    assert c.lacking == places(t, "c") and primaries(t, "c")
    assert not any(c.serves(p) or c.owned()[p] for p in primaries(t, "c"))
    assert c.owner(min(primaries(t, "c"))) == "c"  # the table's word; nobody serves it here
    without = table(4, ["a", "b"])
    assert c.install(without) and c.lacking == set()
    again = table(5)  # filled again, then named: it holds those copies now
    assert c.install(again) and c.lacking == set()
    assert {p for p in range(16) if c.serves(p)} == primaries(again, "c")


def test_a_first_table_of_epoch_one_or_a_restart_from_disk_lacks_nothing():
    fresh = Ownership("c", 16)
    fresh.born()  # asked by the coordinator making it
    assert fresh.install(table(1)) and fresh.lacking == set()  # a new cluster: no copy yet
    restored = Ownership("c", 16)
    assert restored.restarted(table(3)) and restored.lacking == set()
    assert restored.install(table(4)) and restored.lacking == set()
    assert {p for p in range(16) if restored.serves(p)} == primaries(table(4), "c")


def test_a_first_table_of_epoch_one_lacks_nothing_only_to_those_born_with_it():
    """A cluster unchanged since its birth keeps epoch 1. Its table lacks nothing to a
    member that took part in making it (asked for its table while it had none, or the
    coordinator that made it); a member with no data that installs it otherwise joined
    a running cluster (a restart quicker than failure detection): its places lack."""
    restarted = Ownership("c", 16)
    assert restarted.install(table(1)) and restarted.lacking == places(table(1), "c")
    born = Ownership("c", 16)
    born.born()  # the coordinator's ask before it made the first table
    assert born.install(table(1)) and born.lacking == set()
    late = Ownership("c", 16)
    late.born()
    late.install(table(1))
    late.born()  # asked again once it has a table: nothing changes
    assert late.install(table(2)) and late.lacking == set()  # not its first table
    on_disk = Ownership("c", 16, restored=True)
    assert on_disk.install(table(1)) and on_disk.lacking == set()


def test_a_member_restarting_from_disk_lacks_nothing_even_if_a_publish_comes_first():
    """A publish may reach a restarting member before it restores its saved table (its
    gRPC server is up first): its copies are on its disk all the same."""
    t = table(3)
    c = Ownership("c", 16, restored=True)
    assert c.install(table(4)) and c.lacking == set()
    assert not c.restarted(t)  # older than the table in use: nothing to restore
    assert {p for p in range(16) if c.serves(p)} == primaries(table(4), "c")
