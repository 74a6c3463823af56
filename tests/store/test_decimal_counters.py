"""The store's two additions for the RESP front end: decimal counters (INCR with
`decimal`, as Redis keeps counters) and deletes that must find the version they read."""

from __future__ import annotations

import pytest

from grid.errors import CasFailed, InvalidArgument
from grid.store.entry import value_of
from tests.store.helpers import Clock, make_store


def test_a_decimal_counter_is_a_decimal_string_and_keeps_its_ttl() -> None:
    clock = Clock()
    store = make_store(clock)
    m = store.map("kv")
    now = clock()
    assert store.incr(m, b"c", 1, 0, now, decimal=True) == 1
    assert store.incr(m, b"c", 10, 0, now, decimal=True) == 11
    assert value_of(store.read(m, b"c", now)) == b"11"
    store.write(m, b"t", b"-5", now, ttl_ms=5000)
    assert store.incr(m, b"t", 2, 0, now, decimal=True) == -3
    assert store.ttl(m, b"t", now) == 5000


@pytest.mark.parametrize(
    "text",
    [b"abc", b" 1", b"1 ", b"+1", b"01", b"-0", b"1.0", b"", b"9223372036854775808", b"\xff"],
)
def test_what_redis_does_not_count_as_an_integer_is_refused(text: bytes) -> None:
    clock = Clock()
    store = make_store(clock)
    m = store.map("kv")
    store.write(m, b"c", text, clock())
    with pytest.raises(InvalidArgument, match="value is not an integer or out of range"):
        store.incr(m, b"c", 1, 0, clock(), decimal=True)


def test_overflow_is_refused_with_redis_words() -> None:
    clock = Clock()
    store = make_store(clock)
    m = store.map("kv")
    store.write(m, b"c", b"9223372036854775807", clock())
    with pytest.raises(InvalidArgument, match="increment or decrement would overflow"):
        store.incr(m, b"c", 1, 0, clock(), decimal=True)


def test_a_delete_with_a_version_removes_only_that_version() -> None:
    clock = Clock()
    store = make_store(clock)
    m = store.map("kv")
    put = store.put(m, b"k", b"1", clock())
    first = (put.ts, put.member)  # (an Entry is a view of the live record: copy it now)
    store.put(m, b"k", b"2", clock())
    with pytest.raises(CasFailed):
        store.delete(m, b"k", clock(), first)
    assert value_of(store.read(m, b"k", clock())) == b"2"
    second = store.get(m, b"k", clock())
    assert second is not None
    assert store.delete(m, b"k", clock(), (second.ts, second.member)) is True
    with pytest.raises(CasFailed):
        store.delete(m, b"k", clock(), (second.ts, second.member))
