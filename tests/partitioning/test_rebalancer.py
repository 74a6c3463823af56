"""The rebalancer's rounds, driven by the in-memory cluster of tests/partitioning/cluster.py."""

import pytest

from partitioning.config import PlacementConfig
from partitioning.decisions import (
    AskTables,
    Fill,
    Handoff,
    Note,
    Publish,
    Resend,
    TablesAsked,
)
from partitioning.epochs import another_lineage, epoch_of, next_epoch
from partitioning.leave import (
    MAX_LEAVE_REDIRECTS,
    NOBODY_STAYS,
    AskLeave,
    Departed,
    Departure,
    DepartureEnd,
    LeaveAnswer,
)
from partitioning.rebalancer import LEAVE_GRACE_S, TABLE_CHECK_S, Rebalancer, View
from partitioning.succession import coordinator_of, newest_table
from partitioning.table import build_table
from tests.partitioning.cluster import Cluster, address

PLACEMENT = PlacementConfig(partition_count=24, backups=1, virtual_nodes=16)


def settled(names: str, placement: PlacementConfig = PLACEMENT, **options: object) -> Cluster:
    cluster = Cluster(placement, **options)  # type: ignore[arg-type]
    for name in names:
        cluster.start(name)
    cluster.settle()
    return cluster


def publishes(decisions: list) -> list:
    return [d.table for d in decisions if isinstance(d, Publish)]


def notes(cluster: Cluster, event: str) -> list[Note]:
    return [n for n in cluster.notes if n.event == event]


def target(names: str, placement: PlacementConfig = PLACEMENT) -> tuple:
    return build_table(list(names), 1, placement).replica_lists


# ---- the first table ---------------------------------------------------------------------------
def test_a_new_cluster_gets_its_first_table_from_the_smallest_name():
    cluster = Cluster(PLACEMENT)
    for name in "cab":
        cluster.start(name)
    decisions = cluster.round("a")
    assert isinstance(decisions[0], AskTables)
    assert publishes(decisions)[0] == build_table(["a", "b", "c"], 1, PLACEMENT)
    assert cluster.members["a"].acting
    assert {m.version for m in cluster.members.values()} == {cluster.members["a"].version}
    assert cluster.round("b") == [] and not cluster.members["b"].acting


def test_no_first_table_while_a_member_does_not_answer():
    core = Rebalancer("a", PLACEMENT, wave_size=2, narrowest=1, restart_wait_s=30, started=0)
    view = View({"a": "a:1", "b": "b:1"}, 1.0)
    assert isinstance(core.begin(view), AskTables)
    assert core.step(TablesAsked(everyone_answered=False), view) is None
    assert core.table is None and core.acting


def test_a_member_that_does_not_coordinate_only_adopts():
    core = Rebalancer("b", PLACEMENT, wave_size=2, narrowest=1, restart_wait_s=30, started=0)
    view = View({"a": "a:1", "b": "b:1"}, 1.0)
    assert core.begin(view) == AskTables(view.live)
    assert core.step(TablesAsked(everyone_answered=True), view) is None
    assert not core.acting and core.pending == 0


def test_the_newest_table_is_adopted():
    assert newest_table({"b": 5, "c": 9, "d": 9}, 3) == ("c", True)
    assert newest_table({"b": 0, "c": None}, 0) == (None, False)
    assert newest_table({"b": 7}, 7) == (None, True)  # ours already


# ---- failover ----------------------------------------------------------------------------------
def test_a_crashed_primary_is_replaced_by_its_first_backup_at_once():
    cluster = settled("abc")
    before = cluster.members["a"].table
    cluster.crash("c")
    failover = publishes(cluster.round("a"))[0]
    for p in range(PLACEMENT.partition_count):
        assert failover.replicas(p) == tuple(m for m in before.replicas(p) if m != "c")
    assert notes(cluster, "members gone: replicas removed")[-1].fields == {
        "gone": ["c"],
        "partitions_without_copy": 0,
    }
    assert cluster.members["a"].table.replica_lists == target("ab")


def test_without_backups_a_lost_partition_starts_empty_at_its_target_owner():
    placement = PlacementConfig(partition_count=24, backups=0, virtual_nodes=16)
    cluster = settled("abc", placement)
    lost = cluster.members["a"].table.partitions_of("c").primary
    cluster.crash("c")
    failover = publishes(cluster.round("a"))[0]
    after = build_table(["a", "b"], 1, placement)
    for p in lost:
        assert failover.replicas(p) == (after.owner(p),)
    gone = notes(cluster, "members gone: replicas removed")[-1]
    assert gone.fields["partitions_without_copy"] == len(lost) > 0


# ---- coordinator succession --------------------------------------------------------------------
def test_the_coordinator_is_the_smallest_live_name_not_leaving():
    assert coordinator_of({"c": "", "a": "", "b": ""}, set(), "c") == "a"
    assert coordinator_of({"c": "", "a": "", "b": ""}, {"a"}, "c") == "b"
    assert coordinator_of({"a": "", "b": ""}, {"a", "b"}, "b") == "b"  # nobody stays


def test_when_the_coordinator_dies_the_next_name_takes_over_with_its_table():
    cluster = settled("abcd")
    last = cluster.members["b"].table
    cluster.crash("a")
    assert cluster.round("c") == []  # not c's turn
    decisions = cluster.round("b")
    assert cluster.members["b"].acting
    tables = publishes(decisions)
    assert tables[0].epoch > last.epoch
    assert all(m.table == cluster.members["b"].table for m in cluster.members.values())
    assert cluster.members["b"].table.replica_lists == target("bcd")


def test_a_leaving_member_never_coordinates():
    cluster = settled("abc")
    a = cluster.members["a"]
    a.leaving.add("a")
    assert cluster.round("a") == [] and not a.acting
    end = cluster.leave("a")
    assert end.done and end.end is DepartureEnd.HANDED_OFF
    assert cluster.members["b"].acting
    assert cluster.members["b"].table.replica_lists == target("bc")


# ---- waves -------------------------------------------------------------------------------------
def test_a_join_moves_partitions_in_waves_each_published_with_its_hand_offs():
    cluster = settled("abc", wave_size=3)
    cluster.start("d")
    cluster.round("d")  # adopts the table
    decisions = cluster.round("a")
    fills = [d for d in decisions if isinstance(d, Fill)]
    assert fills and all(len({p for o in f.orders for p in o.partitions}) <= 3 for f in fills)
    assert any(o.member == "d" for f in fills for o in f.orders)
    for i, d in enumerate(decisions):
        if isinstance(d, Handoff):  # the next table shows the hand-off, at its epoch
            following = next(x for x in decisions[i:] if isinstance(x, Publish))
            assert following.table.epoch == d.confirm_epoch
    epochs = [t.epoch for t in publishes(decisions)]
    assert epochs == sorted(set(epochs))
    assert cluster.members["a"].table.replica_lists == target("abcd")
    done = notes(cluster, "rebalance round done")[-1].fields
    assert done["settled"] == done["of"] > 0 and cluster.members["a"].pending == 0


def test_a_failed_fill_keeps_the_old_list_and_is_retried_next_round():
    cluster = settled("abc")
    before = cluster.members["a"].table
    after = target("abcd")
    moving = [p for p in range(PLACEMENT.partition_count) if "d" in after[p]]
    cluster.fail_fills = {moving[0]}
    cluster.start("d")
    cluster.round("d")
    cluster.round("a")
    table = cluster.members["a"].table
    assert table.replicas(moving[0]) == before.replicas(moving[0])
    assert all(table.replicas(p) == after[p] for p in moving[1:])
    assert notes(cluster, "partition moves failed; retrying next round")[-1].fields == {
        "partitions": [moving[0]]
    }
    cluster.fail_fills = set()
    cluster.round("a")
    assert cluster.members["a"].table.replica_lists == after


def test_a_failed_hand_off_keeps_the_old_primary():
    cluster = settled("abc")
    after = target("abcd")
    handed = [p for p in range(PLACEMENT.partition_count) if after[p][0] == "d"]
    cluster.fail_handoffs = {handed[0]}
    cluster.start("d")
    cluster.round("d")
    cluster.round("a")
    assert cluster.members["a"].table.owner(handed[0]) != "d"
    cluster.fail_handoffs = set()
    cluster.settle()
    assert cluster.members["a"].table.replica_lists == after


@pytest.mark.parametrize("wave_size", [1, 2])
def test_every_hand_off_is_followed_by_the_table_of_its_epoch_even_a_failed_one(wave_size: int):
    """A failed hand-off may have been taken over with only the new owner's word lost:
    it serves the partition by the hand-off until a table of the confirm epoch comes,
    while the source took it back. So that table comes at once, even when no list
    changed."""
    cluster = settled("abc", wave_size=wave_size)
    cluster.fail_handoffs = set(range(PLACEMENT.partition_count))  # every hand-off fails
    cluster.start("d")
    cluster.round("d")
    decisions = cluster.round("a")
    handoffs = [i for i, d in enumerate(decisions) if isinstance(d, Handoff)]
    assert handoffs
    for i in handoffs:  # before anything else is asked of a member
        following = next(d for d in decisions[i + 1 :] if not isinstance(d, Note))
        assert isinstance(following, Publish)
        assert following.table.epoch == decisions[i].confirm_epoch


@pytest.mark.parametrize("change", ["gone", "leaving", "smaller name", "joined", "another lineage"])
def test_waves_stop_for_what_the_next_round_must_do_first(change: str):
    cluster = settled("abc", wave_size=1)
    cluster.start("d")
    cluster.round("d")
    core = cluster.members["a"]
    decision = core.begin(cluster.view())
    while not (isinstance(decision, Note) and decision.event == "rebalancing"):
        decision = core.step(cluster.carry_out(core, decision), cluster.view())
    if change == "gone":
        cluster.crash("c")  # fail over first
    elif change == "leaving":
        assert core.leave_requested("b", cluster.view().live) is None  # release it first
    elif change == "joined":
        cluster.start("e")  # the target changed
    elif change == "another lineage":  # b answered a publish with a higher epoch
        assert core.answered("b", build_table(["b", "c"], core.table.epoch + 5).version)
    else:
        cluster.start("0")  # it coordinates now
    assert core.step(None, cluster.view()) is None
    assert core.pending > 0


# ---- epochs ------------------------------------------------------------------------------------
def test_epochs():
    v = build_table(["a"], 7).version
    assert not another_lineage(v, v)
    assert another_lineage(v, build_table(["b"], 7).version)  # same epoch, other table
    assert another_lineage(v, build_table(["b"], 9).version)
    assert not another_lineage(v, build_table(["b"], 6).version)  # it will install ours
    assert next_epoch(v, 0) == 8 and next_epoch(v, 12) == 13


def test_a_member_holding_another_lineage_is_overtaken():
    cluster = settled("abc")
    a, b = cluster.members["a"], cluster.members["b"]
    foreign = build_table(["b", "c", "x"], a.table.epoch + 3, PLACEMENT)
    b.installed(foreign)  # the other side of a healed split had its own coordinator
    assert a.answered("b", foreign.version)
    decisions = cluster.round("a")
    assert isinstance(decisions[0], Resend) and decisions[0].to == ("b",)
    assert notes(cluster, "a member holds a table of another lineage; republishing above it")
    assert publishes(decisions)[0].epoch == epoch_of(foreign.version) + 1
    assert b.table == a.table and a.table.replica_lists == target("abc")


def test_a_lineage_ahead_is_adopted_so_stale_copies_do_not_serve_again():
    """A split healed: b and c moved on without a (their coordinator failed a over, epoch
    +2); a, the smallest name, coordinates again. It takes their table's lists before it
    republishes above them: b and c keep the primaries they served, and a's copies,
    stale by the split, serve nothing until waves give it partitions again (found by
    `grid chaos run --backend netns --scenario isolate-one --min-cluster-size 2`)."""
    cluster = settled("abc")
    a, b, c = (cluster.members[m] for m in "abc")
    ahead = build_table(["b", "c"], a.table.epoch + 2, PLACEMENT)
    b.installed(ahead)
    c.installed(ahead)
    assert a.answered("b", ahead.version)
    decisions = cluster.round("a")
    assert notes(cluster, "a member holds a table of a lineage ahead of ours; adopting it")
    first = publishes(decisions)[0]
    assert first.epoch == ahead.epoch + 1
    assert first.replica_lists == ahead.replica_lists  # theirs, republished above
    cluster.settle()
    assert a.table.replica_lists == target("abc")


def test_a_coordinator_below_min_cluster_size_publishes_nothing():
    """The smaller side of a split with min_cluster_size: no failover, no table, so its
    lineage stays behind the larger side's and is adopted away after the heal."""
    cluster = settled("abc", quorum=2)
    before = cluster.members["a"].table
    cluster.crash("b")
    cluster.crash("c")
    assert not publishes(cluster.round("a"))
    assert cluster.members["a"].table == before
    cluster.start("b")  # back to two: the quorum holds, a fails c over
    cluster.settle()
    assert cluster.members["a"].table.replica_lists == target("ab")


def test_a_member_that_took_another_table_after_answering_is_found_out():
    """Views disagreed for a moment after a heal: b answered a's publish, then another
    coordinator gave it a table of a higher epoch. Nothing tells a; once b's answer is
    older than TABLE_CHECK_S, a sends its table again, sees the other lineage and
    overtakes it."""
    cluster = settled("abc")
    a, b = cluster.members["a"], cluster.members["b"]
    foreign = build_table(["b", "c"], a.table.epoch + 2, PLACEMENT)
    b.installed(foreign)  # after it answered a
    assert not [d for d in cluster.round("a") if isinstance(d, Resend)]  # a does not know
    cluster.now += TABLE_CHECK_S + 1
    decisions = cluster.round("a")
    assert isinstance(decisions[0], Resend) and set(decisions[0].to) == {"b", "c"}
    assert publishes(decisions)[0].epoch == foreign.epoch + 1
    assert b.table == a.table and a.table.replica_lists == target("abc")


def test_a_hand_off_no_table_settled_makes_the_coordinator_publish_its_epoch():
    """The coordinator that ordered a hand-off crashed before publishing the table of
    its epoch; the source serves nothing of the partition until that table comes. A
    member that says so in its answer, or the coordinator's own routing (`View`), makes
    the next coordinator publish a table of at least that epoch."""
    cluster = settled("abc")
    a = cluster.members["a"]
    epoch = a.table.epoch
    assert a.answered("b", a.table.version, epoch + 3)
    decisions = cluster.round("a")
    assert notes(cluster, "a hand-off no table settled; publishing a table of its epoch")
    assert publishes(decisions)[0].epoch == epoch + 3
    assert publishes(decisions)[0].replica_lists == target("abc")
    assert not publishes(cluster.round("a"))  # settled: nothing more
    view = cluster.view()
    decision = a.begin(View(view.live, view.now, a.table.epoch + 1))
    while decision is not None and not isinstance(decision, Publish):
        decision = a.step(cluster.carry_out(a, decision), cluster.view())
    assert isinstance(decision, Publish) and decision.table.epoch == epoch + 4


def test_a_member_at_another_address_gets_the_table_again():
    cluster = settled("abc")
    a = cluster.members["a"]
    view = cluster.view()
    moved = View({**view.live, "b": "elsewhere:1"}, view.now)
    decision = a.begin(moved)
    assert isinstance(decision, Note) and decision.fields == {"members": ["b"]}
    publish = a.step(None, moved)
    assert isinstance(publish, Publish) and publish.table.replica_lists == a.table.replica_lists


# ---- restart waits -----------------------------------------------------------------------------
def test_members_of_the_saved_table_are_waited_for_after_a_restart():
    cluster = settled("abc", restart_wait_s=30.0)
    saved = cluster.members["a"].table
    for name in "abc":  # a whole-cluster restart; a is back first
        cluster.crash(name)
    a = cluster.start("a")
    a.installed(saved)
    a.restarted(saved)
    assert a.waiting == {"b", "c"}
    cluster.now += 10
    for table in publishes(cluster.round("a")):
        assert table.replica_lists == saved.replica_lists  # nothing handed out
    cluster.start("b")
    cluster.round("a")
    assert a.waiting == {"c"}
    cluster.now += 25  # past restart_wait_s: c's partitions go to the others
    assert notes(cluster, "members gone: replicas removed") == []
    cluster.settle()
    assert notes(cluster, "members gone: replicas removed")[-1].fields["gone"] == ["c"]
    assert a.waiting == set() and a.table.replica_lists == target("ab")


# ---- graceful leave ----------------------------------------------------------------------------
def test_a_leaver_is_released_then_answered_once_it_holds_nothing():
    cluster = settled("abcd")
    held = cluster.members["a"].table.partitions_of("c").primary
    end = cluster.leave("c")
    # the answer names the table that holds nothing on c: c installs it, hands back, exits
    version = cluster.members["a"].table.version
    assert end == Departed(True, DepartureEnd.HANDED_OFF, "a", "", version=version)
    released = notes(cluster, "leaving members released")[-1].fields
    assert released == {"leavers": ["c"], "handed_off": len(held)}
    assert cluster.members["a"].table.replica_lists == target("abd")


def test_a_member_that_left_and_came_back_takes_partitions_again():
    """A rolling restart: the member leaves gracefully, then starts again with the same
    name (its data dir keeps it). The coordinator that answered its leave must not take
    it for a leaver any more once it was gone."""
    cluster = settled("abcd")
    assert cluster.leave("c").done
    cluster.settle()
    assert cluster.members["a"].table.replica_lists == target("abd")
    cluster.start("c")
    cluster.settle()
    assert "c" not in cluster.members["a"].leaving
    assert cluster.members["a"].table.replica_lists == target("abcd")


def test_a_leaver_that_restarted_before_it_was_seen_gone_stays_after_a_grace():
    """A leaver that crashed and restarted quicker than the failure detector never
    leaves the coordinator's sight: once its leave was answered and the grace passed,
    it is a member like any other again."""
    cluster = settled("abcd")
    a = cluster.members["a"]
    assert a.leave_requested("c", cluster.view().live) is None
    for _ in range(10):
        cluster.round("a")
        if a.leave_progress("c") is not None:
            break
    assert a.leave_progress("c") == LeaveAnswer(True, version=a.table.version)
    cluster.start("c")  # a new incarnation, never seen gone
    cluster.settle()
    assert a.table.replica_lists == target("abd")  # still taken for a leaver
    cluster.now += LEAVE_GRACE_S + 1
    cluster.settle()
    assert "c" not in a.leaving and a.table.replica_lists == target("abcd")


def test_leave_answers():
    cluster = settled("abc")
    live = cluster.view().live
    assert cluster.members["b"].leave_requested("c", live) == LeaveAnswer(
        False, "a coordinates", "a"
    )
    a = cluster.members["a"]
    a.leaving.add("a")
    assert a.leave_requested("b", live) == LeaveAnswer(False, "a is leaving too")
    assert a.leave_requested("c", live) == LeaveAnswer(True, NOBODY_STAYS)


def test_a_departure_asks_the_next_member_when_one_is_leaving_too():
    live = {n: address(n) for n in "abcz"}
    leaving: set[str] = set()
    departure = Departure("z", live, leaving)
    assert departure.next() == AskLeave("a", address("a"))
    assert departure.answered(LeaveAnswer(False, "a is leaving too")) == AskLeave("b", address("b"))
    assert departure.no_answer() == AskLeave("c", address("c"))  # b did not answer
    assert leaving == {"z", "a", "b"}
    end = departure.answered(LeaveAnswer(False, "timed out", ""))
    assert end == Departed(False, DepartureEnd.REFUSED, "c", "timed out")


@pytest.mark.parametrize("answer", ["redirect", "nobody"])
def test_a_departure_ends(answer: str):
    live = {n: address(n) for n in "abcdefghz"}
    departure = Departure("z", live, set())
    step = departure.next()
    if answer == "nobody":
        departure.leaving.update(live)
        assert departure.no_answer() == Departed(True, DepartureEnd.NOBODY_STAYS)
        return
    names = iter("bcdefgh")
    while isinstance(step, AskLeave):  # every member names another coordinator
        name = next(names)
        step = departure.answered(LeaveAnswer(False, f"{name} coordinates", name))
    assert step == Departed(
        False, DepartureEnd.NO_COORDINATOR, asked=tuple("abcdefgh"[:MAX_LEAVE_REDIRECTS])
    )


def test_a_member_that_joins_again_after_leaving_is_no_longer_leaving():
    """A graceful leave is over when the member comes back (a rolling restart): before
    this, its name stayed in `leaving` for good and it never got partitions again."""
    r = Rebalancer("a", PlacementConfig(partition_count=7, backups=1), wave_size=4,
                   narrowest=1, restart_wait_s=0.0, started=0.0)  # fmt: skip
    r.leave_requested("b", {"a": "", "b": "", "c": ""})
    assert "b" in r.leaving
    r.seen("b")  # alive while leaving: still leaving
    assert "b" in r.leaving
    r.rejoined("b")
    assert "b" not in r.leaving


def test_copies_a_member_lacks_are_failed_over_then_filled_again():
    """c restarted without its data quicker than failure detection: the table still
    names it. Its answer to a publish says which copies it lacks; the coordinator takes
    c out of those lists (their other replica serves), then the waves fill c again."""
    cluster = settled("abc")
    a = cluster.members["a"]
    before = a.table
    lacking = set(before.partitions_of("c").primary) | set(before.partitions_of("c").backup)
    assert lacking and a.answered("c", before.version, 0, lacking)
    failover = publishes(cluster.round("a"))[0]
    for p in range(PLACEMENT.partition_count):
        assert failover.replicas(p) == tuple(m for m in before.replicas(p) if m != "c")
    note = notes(cluster, "members lack their copies (restarted without data): replicas removed")
    assert note[-1].fields == {"members": ["c"], "partitions_without_copy": 0}
    # c installs that table: it names c nowhere, so c lacks nothing any more
    assert not a.answered("c", a.table.version, 0, ())
    cluster.settle()
    assert a.table.replica_lists == target("abc")


def test_a_member_that_lacks_its_only_copy_is_not_made_its_owner_again():
    """Without backups a copy that c lacks exists nowhere: the partition starts empty, on
    a member that knows it does (not on c, which would serve it as if it held it)."""
    placement = PlacementConfig(partition_count=24, backups=0, virtual_nodes=16)
    cluster = settled("abc", placement)
    a = cluster.members["a"]
    lost = a.table.partitions_of("c").primary
    assert a.answered("c", a.table.version, 0, lost)
    failover = publishes(cluster.round("a"))[0]
    assert all(failover.replicas(p) != ("c",) and len(failover.replicas(p)) == 1 for p in lost)


def test_a_member_asking_for_the_table_is_sent_it_again():
    """A member that asks for our table (it starts, or is back from a stall) gets the
    next publish, whose answer tells what it lacks; asking again before it answered is
    no news."""
    cluster = settled("abc")
    a = cluster.members["a"]
    assert a.asked("b") and not a.asked("b")
    assert not a.asked("z")  # never published to
    decisions = cluster.round("a")
    assert [d.to for d in decisions if isinstance(d, Resend)] == [("b",)]
