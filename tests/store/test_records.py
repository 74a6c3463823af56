"""The record layout (grid/store/entry.py) and the Entry view the simulator and tests use."""

from __future__ import annotations

from grid.store.entry import HEAD_SIZE, VHEAD_SIZE, pack, unpack, value_of, with_slot, with_vslot
from partitioning.keys import partition_of
from tests.store.helpers import Clock, make_store


def test_records_round_trip_and_keep_fields_when_moved() -> None:
    plain = pack(b"value", 1 << 62, 0xFFFFFFFF, 7, 0, 0, 0)
    assert len(plain) == HEAD_SIZE + 5
    assert unpack(plain) == (b"value", 1 << 62, 0xFFFFFFFF, 0, 0)
    timed = pack(b"v", 5, 6, 7, 1_800_000_000_000, 30_000, 9)
    assert len(timed) == VHEAD_SIZE + 1
    assert unpack(timed) == (b"v", 5, 6, 1_800_000_000_000, 30_000)
    assert unpack(with_vslot(with_slot(timed, 123), 456)) == unpack(timed)
    assert value_of(with_slot(plain, 1 << 30)) == b"value"


def test_entry_view_reads_the_current_record_and_writes_versions_through() -> None:
    clock = Clock()
    s = make_store(clock)
    m = s.map("m")
    e = s.put(m, b"k", b"v1", clock(), ttl_ms=1000)
    s.put(m, b"k", b"v2", clock())
    assert e.value == b"v2" and e.expire_at == 0 and e.vslot == -1
    p = partition_of(b"k", s.partitions)
    view = m.parts[p][b"k"]
    view.ts, view.member = 0, 0  # what simulation/plants.py does to plant a bug
    assert m.parts[p].get(b"k").ts == 0 and s.get(m, b"k", clock()).member == 0
    assert s.delete(m, b"k", clock())
    assert e.slot == -1 and e.value == b"v2"  # the last record it saw
