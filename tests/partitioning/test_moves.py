"""The pure pieces of the rebalancer: failover, the release of leavers, one wave."""

from partitioning.decisions import FillOrder, HandoffOrder
from partitioning.failover import drop_gone
from partitioning.release import Release
from partitioning.table import PartitionTable
from partitioning.wave import Wave


def table_of(*lists: tuple[str, ...], backups: int = 2) -> PartitionTable:
    members = tuple(sorted({m for r in lists for m in r}))
    return PartitionTable.of_layout(5, len(lists), backups, members, tuple(lists))


# ---- failover --------------------------------------------------------------------------------
def test_a_dead_primary_is_replaced_by_its_first_backup():
    layout = (("a", "b", "c"), ("b", "a", "c"), ("c", "b", "a"))
    target = table_of(("b", "c"), ("b", "c"), ("c", "b"))
    failover = drop_gone(layout, {"a"}, target)
    assert failover.layout == (("b", "c"), ("b", "c"), ("c", "b"))
    assert failover.lost == ()


def test_a_partition_with_no_surviving_copy_starts_empty_at_its_target_owner():
    layout = (("a",), ("b",), ("a", "c"))
    target = table_of(("b",), ("b",), ("b",), backups=0)
    failover = drop_gone(layout, {"a", "c"}, target)
    assert failover.layout == (("b",), ("b",), ("b",))
    assert failover.lost == (0, 2)


# ---- release of leavers ----------------------------------------------------------------------
def test_a_leaver_hands_its_primaries_to_its_first_staying_backup():
    layout = (("a", "b", "c"), ("a", "c", "b"), ("b", "a", "c"), ("c", "b", "a"))
    release = Release(layout, {"a"}, {"a", "b", "c"}, narrowest=2)
    assert release.orders == (HandoffOrder("a", "b", (0,)), HandoffOrder("a", "c", (1,)))
    assert release.handed_off(set()) == (("b", "c"), ("c", "b"), ("b", "c"), ("c", "b"))


def test_a_failed_release_keeps_the_leaver_primary_but_drops_its_backups():
    layout = (("a", "b"), ("b", "a"))
    release = Release(layout, {"a"}, {"a", "b"}, narrowest=1)
    assert release.handed_off({0}) == (("a", "b"), ("b",))


def test_the_heir_skips_leaving_and_dead_backups():
    layout = (("a", "b", "c", "d"),)
    release = Release(layout, {"a", "b"}, {"a", "b", "d"}, narrowest=3)  # c is dead
    assert release.orders == (HandoffOrder("a", "d", (0,)),)


def test_per_map_backups_an_heir_past_the_narrowest_rank_is_not_handed_the_partition():
    # a map with one backup: the rank-2 backup lacks it, so it cannot take over by hand-off
    layout = (("a", "b", "c"), ("a", "c", "b"))
    narrow = Release(layout, {"a", "b"}, {"a", "b", "c"}, narrowest=1)
    assert narrow.orders == (HandoffOrder("a", "c", (1,)),)
    # partition 0 keeps its leaving primary (and backups) until a wave fills a new one
    assert narrow.handed_off(set()) == (("a", "b", "c"), ("c",))
    wide = Release(layout, {"a", "b"}, {"a", "b", "c"}, narrowest=2)
    assert wide.orders == (HandoffOrder("a", "c", (0, 1)),)


# ---- one wave --------------------------------------------------------------------------------
LIVE = {"a", "b", "c", "d"}


def test_fills_are_grouped_by_member_and_source():
    layout = (("a", "b"), ("a", "c"), ("b", "a"), ("c", "d"))
    target = table_of(("d", "b"), ("a", "d"), ("b", "d"), ("c", "d"), backups=1)
    wave = Wave([0, 1, 2, 3], layout, target, LIVE, narrowest=1)
    assert wave.fills() == (FillOrder("d", "a", (0, 1)), FillOrder("d", "b", (2,)))


def test_hand_offs_where_the_primary_changes_and_the_fill_did_not_fail():
    layout = (("a", "b"), ("a", "c"), ("b", "a"), ("c", "d"))
    target = table_of(("d", "b"), ("c", "a"), ("a", "b"), ("d", "c"), backups=1)
    wave = Wave([0, 1, 2, 3], layout, target, LIVE, narrowest=1)
    assert wave.filled({0}) == (
        HandoffOrder("a", "c", (1,)),
        HandoffOrder("b", "a", (2,)),
        HandoffOrder("c", "d", (3,)),
    )


def test_failed_fills_and_hand_offs_keep_their_old_lists():
    layout = (("a", "b"), ("a", "c"), ("b", "a"), ("c", "d"))
    target = table_of(("d", "b"), ("c", "a"), ("a", "b"), ("d", "c"), backups=1)
    wave = Wave([0, 1, 2, 3], layout, target, LIVE, narrowest=1)
    wave.fills()
    wave.filled({0})
    assert wave.handed_off({3}) == (("a", "b"), ("c", "a"), ("a", "b"), ("c", "d"))
    assert wave.failed == {0, 3}


def test_a_wave_leaves_partitions_outside_it_alone():
    layout = (("a", "b"), ("a", "b"))
    target = table_of(("c", "a"), ("c", "a"), backups=1)
    wave = Wave([1], layout, target, LIVE, narrowest=1)
    assert wave.fills() == (FillOrder("c", "a", (1,)),)
    assert wave.filled(()) == (HandoffOrder("a", "c", (1,)),)
    assert wave.handed_off(()) == (("a", "b"), ("c", "a"))


def test_a_partition_whose_primary_is_not_live_is_not_moved():
    layout = (("x", "a"),)  # x: restarting, waited for
    target = table_of(("x", "b"), backups=1)
    wave = Wave([0], layout, target, LIVE, narrowest=1)
    assert wave.fills() == ()
    assert wave.filled(()) == ()
    assert wave.handed_off(()) == layout


def test_per_map_backups_a_new_primary_past_the_narrowest_rank_is_filled_first():
    layout = (("a", "b", "c"),)
    target = table_of(("c", "b", "d"))
    narrow = Wave([0], layout, target, LIVE, narrowest=1)
    assert narrow.fills() == (FillOrder("c", "a", (0,)), FillOrder("d", "a", (0,)))
    wide = Wave([0], layout, target, LIVE, narrowest=2)
    assert wide.fills() == (FillOrder("d", "a", (0,)),)


def test_target_members_not_live_are_left_out_of_the_new_lists():
    layout = (("a", "b"),)
    target = table_of(("a", "x"), backups=1)  # x waited for after a restart
    wave = Wave([0], layout, target, LIVE, narrowest=1)
    assert wave.fills() == ()
    assert wave.filled(()) == ()
    assert wave.handed_off(()) == (("a",),)
