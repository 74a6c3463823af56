"""The record store's semantics with an injected clock: TTL, max-idle, conditions, counters."""

from __future__ import annotations

import msgpack
import pytest

from grid.errors import CasFailed, InvalidArgument, TooLarge
from grid.store import IF_ABSENT, IF_PRESENT, IF_VERSION
from grid.store.entry import ENTRY_OVERHEAD, VOLATILE_OVERHEAD
from tests.store.helpers import Clock, make_store


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_put_get_overwrite_delete(clock: Clock) -> None:
    s = make_store(clock)
    m = s.map("m")
    slot = s.put(m, b"k", b"v1", clock()).slot
    assert s.get(m, b"k", clock()).value == b"v1"
    e2 = s.put(m, b"k", b"v2", clock())
    assert e2.value == b"v2" and e2.slot == slot  # keeps its place in the slot list
    assert s.size(m) == 1
    assert s.delete(m, b"k", clock()) is True
    assert s.get(m, b"k", clock()) is None
    assert s.delete(m, b"k", clock()) is False
    assert m.stats.puts == 2 and m.stats.deletes == 1 and m.stats.hits == 1
    assert m.stats.misses == 1


def test_versions_increase_and_carry_member_id(clock: Clock) -> None:
    s = make_store(clock)
    m = s.map("m")
    versions = [(e.ts, e.member) for e in (s.put(m, b"k", b"%d" % i, clock()) for i in range(5))]
    assert [v[0] for v in versions] == sorted({v[0] for v in versions})
    assert all(member == 7 for _, member in versions)


def test_ttl_expires_lazily_and_reports_remaining(clock: Clock) -> None:
    s = make_store(clock)
    m = s.map("m")
    s.put(m, b"k", b"v", clock(), ttl_ms=1000)
    assert s.ttl(m, b"k", clock()) == 1000
    clock.advance(999)
    assert s.get(m, b"k", clock()) is not None
    clock.advance(1)
    assert s.get(m, b"k", clock()) is None
    assert m.stats.expirations == 1 and m.stats.entries == 0
    assert s.used == 0


def test_put_without_ttl_clears_previous_ttl(clock: Clock) -> None:
    s = make_store(clock)
    m = s.map("m")
    s.put(m, b"k", b"v", clock(), ttl_ms=50)
    s.put(m, b"k", b"v", clock())
    clock.advance(10_000)
    assert s.ttl(m, b"k", clock()) == -1
    assert len(s.volatile) == 0


def test_max_idle_slides_with_access(clock: Clock) -> None:
    s = make_store(clock)
    m = s.map("m")
    s.put(m, b"sess", b"x", clock(), max_idle_ms=100)
    for _ in range(10):
        clock.advance(60)
        assert s.get(m, b"sess", clock()) is not None  # each read restarts the idle clock
    clock.advance(60)
    assert s.touch(m, b"sess", clock())
    clock.advance(99)
    assert s.contains(m, b"sess", clock())
    clock.advance(1)
    assert not s.contains(m, b"sess", clock())


def test_contains_and_ttl_are_not_accesses(clock: Clock) -> None:
    s = make_store(clock)
    m = s.map("m")
    s.put(m, b"k", b"v", clock(), max_idle_ms=100)
    clock.advance(60)
    assert s.contains(m, b"k", clock()) and s.ttl(m, b"k", clock()) == 40
    clock.advance(40)
    assert s.get(m, b"k", clock()) is None
    assert m.stats.hits == 0


def test_expire_sets_and_persists(clock: Clock) -> None:
    s = make_store(clock)
    m = s.map("m")
    s.put(m, b"k", b"v", clock())
    assert s.used == ENTRY_OVERHEAD + 2
    before = s.get(m, b"k", clock()).ts
    assert s.expire(m, b"k", 500, clock())
    assert s.used == ENTRY_OVERHEAD + 2 + VOLATILE_OVERHEAD
    assert s.get(m, b"k", clock()).ts > before  # expire is a write: new version
    assert s.ttl(m, b"k", clock()) == 500
    assert s.expire(m, b"k", 0, clock())  # persist
    assert s.ttl(m, b"k", clock()) == -1 and s.used == ENTRY_OVERHEAD + 2
    assert not s.expire(m, b"missing", 10, clock())
    with pytest.raises(InvalidArgument, match="negative"):
        s.expire(m, b"k", -1, clock())


def test_conditions(clock: Clock) -> None:
    s = make_store(clock)
    m = s.map("m")
    with pytest.raises(CasFailed):
        s.put(m, b"k", b"v", clock(), condition=IF_PRESENT)
    e = s.put(m, b"k", b"v", clock(), condition=IF_ABSENT)
    with pytest.raises(CasFailed):
        s.put(m, b"k", b"w", clock(), condition=IF_ABSENT)
    version = (e.ts, e.member)
    s.put(m, b"k", b"w", clock(), condition=IF_VERSION, expected=version)
    with pytest.raises(CasFailed, match="version"):  # the version moved on
        s.put(m, b"k", b"x", clock(), condition=IF_VERSION, expected=version)
    assert s.get(m, b"k", clock()).value == b"w"
    s.put(m, b"k", b"y", clock(), condition=IF_PRESENT)
    assert s.get(m, b"k", clock()).value == b"y"


def test_if_absent_treats_expired_entry_as_absent(clock: Clock) -> None:
    s = make_store(clock)
    m = s.map("m")
    s.put(m, b"lock", b"a", clock(), ttl_ms=10)
    clock.advance(10)
    s.put(m, b"lock", b"b", clock(), condition=IF_ABSENT)
    assert s.get(m, b"lock", clock()).value == b"b"


def test_incr_creates_with_ttl_and_keeps_window(clock: Clock) -> None:
    s = make_store(clock)
    m = s.map("m")
    assert s.incr(m, b"c", 1, 60_000, clock()) == 1
    clock.advance(30_000)
    assert s.incr(m, b"c", 5, 60_000, clock()) == 6
    assert s.ttl(m, b"c", clock()) == 30_000  # the window did not move
    assert msgpack.unpackb(s.get(m, b"c", clock()).value) == 6
    clock.advance(30_000)
    assert s.incr(m, b"c", 1, 60_000, clock()) == 1  # a new window
    assert s.incr(m, b"c", -3, 0, clock()) == -2


def test_incr_rejects_non_integers_and_overflow(clock: Clock) -> None:
    s = make_store(clock)
    m = s.map("m")
    for value in (
        msgpack.packb("12"),
        msgpack.packb(1.5),
        b"\xc1",
        msgpack.packb(True),
        b"x" * 100,
    ):
        s.put(m, b"v", value, clock())
        with pytest.raises(InvalidArgument, match="not an integer"):
            s.incr(m, b"v", 1, 0, clock())
        assert s.get(m, b"v", clock()).value == value  # unchanged
    s.put(m, b"big", msgpack.packb(2**63 - 1), clock())
    with pytest.raises(InvalidArgument, match="overflow"):
        s.incr(m, b"big", 1, 0, clock())
    with pytest.raises(InvalidArgument, match="negative"):
        s.incr(m, b"new", 1, -5, clock())


def test_limits(clock: Clock) -> None:
    s = make_store(clock, max_key_bytes=8, max_value_bytes=16)
    m = s.map("m")
    with pytest.raises(InvalidArgument, match="empty"):
        s.put(m, b"", b"v", clock())
    with pytest.raises(TooLarge, match="max_key_bytes"):
        s.put(m, b"123456789", b"v", clock())
    with pytest.raises(TooLarge, match="max_value_bytes"):
        s.put(m, b"k", b"x" * 17, clock())
    with pytest.raises(InvalidArgument, match="negative"):
        s.put(m, b"k", b"v", clock(), ttl_ms=-1)
    with pytest.raises(InvalidArgument, match="negative"):
        s.put(m, b"k", b"v", clock(), max_idle_ms=-1)
    with pytest.raises(InvalidArgument):
        s.map("")
    assert s.size(m) == 0 and s.used == 0


def test_scan_returns_each_stable_key_exactly_once_despite_writes(clock: Clock) -> None:
    s = make_store(clock)
    m = s.map("m")
    stable = {b"s%04d" % i for i in range(600)}
    for k in stable:
        s.put(m, k, b"v", clock())
    seen: list[bytes] = []
    cursor = b""
    i = 0
    while True:
        keys, cursor = s.scan(m, cursor, 37, clock())
        seen.extend(keys)
        # churn between pages: new keys appear, other keys vanish
        s.put(m, b"new%05d" % i, b"v", clock())
        s.delete(m, b"new%05d" % (i - 3), clock())
        i += 1
        if not cursor:
            break
    assert [k for k in seen if k in stable].__len__() == len(stable)
    assert stable <= set(seen)
    assert len(seen) == len(set(seen))


def test_scan_skips_expired_and_rejects_bad_cursors(clock: Clock) -> None:
    s = make_store(clock)
    m = s.map("m")
    s.put(m, b"a", b"v", clock(), ttl_ms=5)
    s.put(m, b"b", b"v", clock())
    clock.advance(5)
    keys, cursor = s.scan(m, b"", 100, clock())
    assert keys == [b"b"] and cursor == b""
    for bad in (
        b"garbage",
        msgpack.packb([999999, b""]),
        msgpack.packb(["x", b""]),
        b"\x92" + b"\x00" * 5000,
    ):
        with pytest.raises(InvalidArgument, match="cursor"):
            s.scan(m, bad, 10, clock())
    with pytest.raises(InvalidArgument, match="limit"):
        s.scan(m, b"", 10_001, clock())


def test_clear_removes_everything_and_frees_memory(clock: Clock) -> None:
    s = make_store(clock)
    m, other = s.map("m"), s.map("other")
    for i in range(100):
        s.put(m, b"k%d" % i, b"v" * i, clock(), ttl_ms=1000 if i % 2 else 0)
    s.put(other, b"keep", b"v", clock())
    assert s.clear(m) == 100
    assert s.size(m) == 0 and m.stats.bytes == 0 and len(s.volatile) == 0
    assert s.used == other.stats.bytes and len(s.all) == 1
    assert s.get(other, b"keep", clock()) is not None


def test_active_expiry_cycle_reclaims_unread_entries(clock: Clock) -> None:
    s = make_store(clock)
    m = s.map("m")
    for i in range(5000):
        s.put(m, b"t%d" % i, b"v", clock(), ttl_ms=100)
    for i in range(500):
        s.put(m, b"p%d" % i, b"v", clock())
    clock.advance(100)
    cycles = 0
    while s.size(m) > 500 and cycles < 1000:
        s.expire_cycle(budget_ms=50)
        cycles += 1
    assert s.size(m) == 500, "only the entries without TTL remain"
    assert m.stats.expirations == 5000
    assert len(s.volatile) == 0


def test_active_expiry_stops_early_when_little_is_expired(clock: Clock) -> None:
    s = make_store(clock)
    m = s.map("m")
    for i in range(2000):
        s.put(m, b"t%d" % i, b"v", clock(), ttl_ms=100 if i < 20 else 10**9)
    clock.advance(100)
    removed = s.expire_cycle(budget_ms=50)
    assert removed <= 20  # one sample of 20, below the 10% stale threshold: no repeat
    assert s.size(m) >= 1980
