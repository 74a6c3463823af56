"""Routing's table.json (grid/member/placement/routing.py): the table in use, the
addresses, the hand-offs no table settled yet and the members known, read back at a
restart."""

from __future__ import annotations

import json
from pathlib import Path

from grid.member.placement.routing import TABLE_FILE, Routing
from partitioning import PlacementConfig, build_table
from partitioning.ownership import Moved
from tests.store.helpers import make_store

PARTITIONS = 271


def routing(data_dir: Path) -> Routing:
    store = make_store()
    assert store.partitions == PARTITIONS
    return Routing("a", "a:1", store, str(data_dir))


def test_a_hand_off_is_saved_with_the_table_and_not_served_after_a_restart(
    tmp_path: Path,
) -> None:
    table = build_table(["a", "b"], 3, PlacementConfig(partition_count=PARTITIONS))
    r = routing(tmp_path)
    assert r.install(table, {"b": "b:1"})
    p = table.partitions_of("a").primary[0]
    with r.store.lock:
        r.handed_off(p, "b", 4)
    r.known = ("a", "b", "c")  # the coordinator's: c is dead, never departed
    r.save()
    saved = r.load_saved()
    assert saved is not None and saved.moved == {p: Moved("b", 4)}
    assert saved.known == ("a", "b", "c")
    assert saved.table == table and saved.addresses["b"] == "b:1"
    again = routing(tmp_path)
    assert again.restarted(saved)
    assert not again.serves(p) and again.owner(p) == "b" and again.unsettled() == 4
    assert again.lacking == frozenset()  # restored from disk: it holds its copies
    served = [q for q in table.partitions_of("a").primary if q != p]
    assert all(again.serves(q) for q in served)


def test_a_table_file_without_moved_loads_as_no_hand_off(tmp_path: Path) -> None:
    """A file written before `moved` was saved (an older member)."""
    table = build_table(["a", "b"], 3, PlacementConfig(partition_count=PARTITIONS))
    old = {"table": table.to_dict(), "addresses": {"a": "a:1", "b": "b:1"}}
    (tmp_path / TABLE_FILE).write_text(json.dumps(old))
    saved = routing(tmp_path).load_saved()
    assert saved is not None and saved.table == table and saved.moved == {}
    assert saved.known == ()
    again = routing(tmp_path)
    assert again.restarted(saved)
    assert all(again.serves(p) for p in table.partitions_of("a").primary)


def test_a_member_with_no_table_file_lacks_what_its_first_table_names_it_for(
    tmp_path: Path,
) -> None:
    table = build_table(["a", "b"], 3, PlacementConfig(partition_count=PARTITIONS))
    r = routing(tmp_path)
    assert r.load_saved() is None
    assert r.install(table, {})
    held = table.partitions_of("a")
    assert r.lacking == frozenset(held.primary) | frozenset(held.backup)
    assert not any(r.serves(p) for p in held.primary)


def test_a_member_with_a_table_file_lacks_nothing_if_a_publish_comes_first(
    tmp_path: Path,
) -> None:
    """The gRPC server is up before the coordinator restores the saved table: a publish
    installed first must not make the member's copies on disk count as lacking."""
    placement = PlacementConfig(partition_count=PARTITIONS)
    first = routing(tmp_path)
    assert first.install(build_table(["a", "b"], 3, placement), {})
    newer = build_table(["a", "b"], 4, placement)
    again = routing(tmp_path)
    assert again.install(newer, {}) and again.lacking == frozenset()
    assert all(again.serves(p) for p in newer.partitions_of("a").primary)
