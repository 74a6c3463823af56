"""replication/lww.py: the rules one by one (ties, tombstones, clear markers), and the
simulator's store deciding by them."""

from __future__ import annotations

from replication import lww
from replication.hlc import Version
from replication.lww import ZERO, clear_wins, cleared_by, newer, removes, write_wins


def test_the_order_is_ts_then_member_and_hlc_versions_compare_alike() -> None:
    assert newer((2, 0), (1, 9)) and newer((1, 2), (1, 1))
    assert not newer((1, 1), (1, 1))
    assert newer(Version(1, 2), (1, 1)) and not newer((1, 1), Version(1, 2))
    assert Version(0, 0) == lww.ZERO


def test_a_write_must_be_newer_than_the_entry_or_tombstone_and_the_marker() -> None:
    assert write_wins((5, 1), None, ZERO)  # nothing known of the key
    assert write_wins((5, 1), (4, 9), ZERO)  # newer than the entry or tombstone
    assert not write_wins((5, 1), (5, 1), ZERO)  # the same record again: idempotent
    assert not write_wins((5, 1), (5, 2), ZERO)  # older by member
    assert not write_wins((5, 1), None, (5, 1))  # removed by a clear at its version
    assert not write_wins((5, 1), None, (6, 0))  # removed by a later clear
    assert write_wins((7, 0), (6, 5), (6, 9))  # newer than both


def test_a_removal_wins_ties_with_the_entry_it_removed() -> None:
    assert removes((5, 1), (5, 1))  # EXPIRED/EVICTED carry the entry's own version
    assert removes((6, 0), (5, 1))
    assert not removes((5, 1), (5, 2))  # the entry was written after


def test_a_clear_replaces_an_older_marker_and_removes_what_is_not_newer() -> None:
    assert clear_wins((5, 1), ZERO) and clear_wins((5, 2), (5, 1))
    assert not clear_wins((5, 1), (5, 1))
    assert cleared_by((5, 1), (5, 1)) and cleared_by((4, 9), (5, 1))
    assert not cleared_by((5, 2), (5, 1))
