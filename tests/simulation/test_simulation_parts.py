"""Parts of the simulator on their own: virtual-time tasks, and the invariant of one
primary per partition per table version."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from simulation.invariants import Invariants, InvariantViolation
from simulation.tasks import Future, gather, resolved, spawn

V = 7 << 32 | 0xABC  # a table version of epoch 7


def owned(*parts: int) -> bytearray:
    out = bytearray(8)
    for p in parts:
        out[p] = 1
    return out


def test_a_task_runs_in_order_and_stops_when_its_member_is_gone() -> None:
    later: Future[int] = Future()
    steps: list[Any] = []
    alive = [True]

    def task() -> Generator[Future[Any], Any, str]:
        steps.append((yield resolved(1)))  # already there: no wait
        steps.append((yield later))
        steps.append((yield gather([resolved(3), resolved(4)])))
        return "done"

    result = spawn(task(), lambda: alive[0])
    assert steps == [1] and not result.done
    later.resolve(2)
    later.resolve(99)  # a second value is ignored (a reply after its deadline)
    assert steps == [1, 2, [3, 4]] and result.value == "done"

    stalled: Future[None] = Future()

    def other() -> Generator[Future[Any], Any, None]:
        yield stalled
        steps.append("ran after the crash")

    spawn(other(), lambda: alive[0])
    alive[0] = False
    stalled.resolve(None)
    assert steps[-1] != "ran after the crash"


def test_two_members_serving_a_partition_under_one_table_version_is_a_violation() -> None:
    inv = Invariants(lambda: 1.0)
    inv.serving("a", V, owned(1, 2))
    inv.serving("b", V + (1 << 32), owned(1))  # another version: a stale table elsewhere
    inv.serving("b", V + (1 << 32), None)
    inv.serving("a", V, owned(2))  # a handed p1 off
    inv.serving("b", V, owned(1), early={1: 8})  # and b took it over
    with pytest.raises(InvariantViolation, match="p2: c and a both serve it as primary"):
        inv.serving("c", V, owned(2))


def test_one_hand_off_makes_one_primary_and_its_table_ends_it() -> None:
    inv = Invariants(lambda: 1.0)
    inv.serving("b", V, owned(1), early={1: 8})
    with pytest.raises(InvariantViolation, match="p1: c and b both serve"):
        inv.serving("c", V - (1 << 32), owned(1), early={1: 8})
    inv = Invariants(lambda: 1.0)
    with pytest.raises(InvariantViolation, match="which its table of epoch 7 has settled"):
        inv.serving("b", V, owned(1), early={1: 7})


@pytest.mark.parametrize("strict", [False, True])
def test_a_hand_off_in_flight_beside_a_table_claim_counts_only_when_strict(strict: bool) -> None:
    """The overlaps grid has today: b took p1 over (confirm epoch 8) while a serves it by
    the same table (it took it back after losing b's word, or restarted with a saved
    table that cannot show the hand-off). The table of epoch 8 settles it."""
    inv = Invariants(lambda: 1.0, strict=strict)
    inv.serving("b", V, owned(1), early={1: 8})
    if strict:
        with pytest.raises(InvariantViolation, match="b by a hand-off of epoch 8"):
            inv.serving("a", V, owned(1))
    else:
        inv.serving("a", V, owned(1))
        inv.serving("a", V - (1 << 32), owned(1))  # a stale table: never a conflict


def _stamp(inv: Invariants, member: str, key: bytes, ts: int, mid: int = 1) -> None:
    inv.stamped(member, 0, key, b"v", ts, mid)
    inv.stored(member, 0, key, b"v", ts, mid)


def test_a_sync_write_confirmed_on_the_primary_alone_is_a_violation() -> None:
    inv = Invariants(lambda: 1.0)
    _stamp(inv, "a", b"s1", 10)
    with pytest.raises(InvariantViolation, match="held by \\['a'\\], fewer than 2"):
        inv.confirmed("a", 0, b"s1", (10, 1), ("a", "b"), 1, 1)
    inv.stored("b", 0, b"s1", b"v", 10, 1)  # the backup applied it
    inv.confirmed("a", 0, b"s1", (10, 1), ("a", "b"), 1, 1)
    inv.confirmed("a", 0, b"s1", (10, 1), ("a",), 1, 1)  # a table with no backup: 1 copy
    assert inv.sync_acked[b"s1"] == (10, 1)


def test_a_confirmed_write_whose_every_copy_is_lost_is_not_claimed() -> None:
    inv = Invariants(lambda: 1.0)
    _stamp(inv, "a", b"s1", 10)
    inv.stored("b", 0, b"s1", b"v", 10, 1)
    inv.confirmed("a", 0, b"s1", (10, 1), ("a", "b"), 1, 1)
    inv.store_lost("a")
    assert inv.all_lost == {}  # b still holds it
    inv.store_lost("b")
    assert inv.all_lost == {b"s1": (10, 1)}


def test_counters_must_keep_every_acknowledged_incr_unless_forked() -> None:
    now = [1.0]
    inv = Invariants(lambda: now[0])
    inv.incremented("a", 0, b"c0.0", 1)
    inv.incr_answered(b"c0.0", 1)
    inv.incremented("a", 0, b"c0.0", 2)
    inv.incr_answered(b"c0.0", 2)
    inv.incr_answered(b"c0.0", None)  # timed out: maybe applied
    inv.counter_final(b"c0.0", 0, 2)
    inv.counter_final(b"c0.0", 0, 3)
    with pytest.raises(InvariantViolation, match="final 4, 2 incrs acknowledged and 1 unknown"):
        inv.counter_final(b"c0.0", 0, 4)  # counted twice
    with pytest.raises(InvariantViolation, match="an acknowledged incr was lost"):
        inv.incremented("b", 0, b"c0.0", 1)  # a new primary without them
    inv.split()  # a split from here on: the counter forks, nothing is claimed
    now[0] = 2.0
    inv.incremented("b", 0, b"c0.0", 1)
    inv.counter_final(b"c0.0", 0, 1)
