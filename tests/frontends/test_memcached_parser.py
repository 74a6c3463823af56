"""The memcached request parser and items: pure, tested without sockets
(grid/frontends/memcached/parser.py, items.py, grammar.py, keyspace.py)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from grid.frontends.memcached.commands.arith import apply, counter, render
from grid.frontends.memcached.grammar import key_ok, store_line
from grid.frontends.memcached.items import STALE, TOKEN_SENT, pack, unpack, unpack_state
from grid.frontends.memcached.keyspace import EXPIRED, expire_at
from grid.frontends.memcached.parser import BAD_CHUNK, OK, TOO_LARGE, MemcacheParser, Request

KEY = st.text("abcxyz0189:_-", min_size=1, max_size=20).map(str.encode)
VALUE = st.binary(max_size=60)
MAX_ITEM = 40


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, Request]:
    """A request's bytes and what the parser must make of them."""
    kind = draw(st.sampled_from(["get", "set", "ms", "delete", "toolarge", "badchunk", "mn"]))
    key = draw(KEY)
    if kind == "get":
        keys = draw(st.lists(KEY, min_size=1, max_size=4))
        return b"get " + b" ".join(keys) + b"\r\n", Request([b"get", *keys])
    if kind in ("set", "ms"):
        value = draw(VALUE.filter(lambda v: len(v) <= MAX_ITEM))
        if kind == "set":
            args = [b"set", key, b"3", b"0", b"%d" % len(value)]
        else:
            args = [b"ms", key, b"%d" % len(value), b"T0"]
        return b" ".join(args) + b"\r\n" + value + b"\r\n", Request(args, value)
    if kind == "toolarge":
        size = draw(st.integers(MAX_ITEM + 1, 200))
        args = [b"set", key, b"0", b"0", b"%d" % size]
        return b" ".join(args) + b"\r\n" + b"v" * size + b"\r\n", Request(args, None, TOO_LARGE)
    if kind == "badchunk":
        args = [b"set", key, b"0", b"0", b"2"]
        return b" ".join(args) + b"\r\nabXY", Request(args, None, BAD_CHUNK)
    if kind == "delete":
        return b"delete  " + key + b" \n", Request([b"delete", key])
    return b"mn\r\n", Request([b"mn"])


def cut(stream: bytes, points: list[int]) -> list[bytes]:
    points = sorted({p for p in points if 0 < p < len(stream)})
    edges = [0, *points, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges)]


def feed_all(parser: MemcacheParser, pieces: list[bytes]) -> list[Request]:
    out: list[Request] = []
    for piece in pieces:
        out.extend(parser.feed(piece))
    return out


@given(st.lists(requests(), max_size=12), st.lists(st.integers(0, 2000), max_size=40))
def test_any_split_of_a_stream_gives_the_same_requests(
    sent: list[tuple[bytes, Request]], points: list[int]
) -> None:
    """TCP delivers the stream in pieces of any size: where they fall must not matter,
    values too large are dropped without being kept, and nothing is left over."""
    stream = b"".join(data for data, _ in sent)
    parser = MemcacheParser(max_item=MAX_ITEM, max_block=10_000)
    assert feed_all(parser, cut(stream, points)) == [r for _, r in sent]
    assert parser.error is None and not parser.partial
    assert len(parser._rest) == 0


@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=10))
def test_garbage_ends_in_requests_or_one_error_and_bounded_state(
    data: bytes, points: list[int]
) -> None:
    whole = MemcacheParser(max_item=64, max_block=256, max_line=128)
    split = MemcacheParser(max_item=64, max_block=256, max_line=128)
    a = whole.feed(data)
    b = feed_all(split, cut(data, points))
    assert a == b
    assert whole.error == split.error
    assert len(split._rest) <= 256 + 64 + 2


def test_a_line_too_long_is_an_error() -> None:
    parser = MemcacheParser(max_item=10, max_block=100, max_line=16)
    assert parser.feed(b"delete " + b"k" * 20) == []
    assert parser.error == "CLIENT_ERROR line too long"
    assert parser.feed(b"get k\r\n") == []


def test_a_block_beyond_any_value_is_an_error_not_a_read() -> None:
    parser = MemcacheParser(max_item=10, max_block=100)
    assert parser.feed(b"get a\r\nset k 0 0 1000\r\n") == [Request([b"get", b"a"])]
    assert parser.error == "SERVER_ERROR object too large for cache"


def test_a_too_large_value_is_dropped_as_it_arrives() -> None:
    parser = MemcacheParser(max_item=10, max_block=10_000)
    assert parser.feed(b"set k 0 0 5000\r\n" + b"x" * 100) == []
    assert parser.partial and len(parser._rest) == 0
    for _ in range(49):
        assert parser.feed(b"x" * 100) == []
    out = parser.feed(b"\r\nget k\r\n")
    assert out == [Request([b"set", b"k", b"0", b"0", b"5000"], None, TOO_LARGE),
                   Request([b"get", b"k"])]  # fmt: skip


def test_a_refused_storage_line_has_no_block() -> None:
    """As memcached: the bytes after a bad storage line are read as commands."""
    parser = MemcacheParser(max_item=10, max_block=100)
    out = parser.feed(b"set k 0 0 -1\r\nget k\r\nset k 0 0\r\n")
    assert out == [Request([b"set", b"k", b"0", b"0", b"-1"]), Request([b"get", b"k"]),
                   Request([b"set", b"k", b"0", b"0"])]  # fmt: skip
    assert out[0].problem == OK


def test_store_line() -> None:
    assert store_line([b"set", b"k", b"1", b"2", b"3"]) == (b"k", 1, 2, 3, 0, False)
    assert store_line([b"cas", b"k", b"1", b"2", b"3", b"9", b"noreply"]) == (
        b"k", 1, 2, 3, 9, True)  # fmt: skip
    assert store_line([b"set", b"k", b"4294967296", b"0", b"1"]) == (b"k", 0, 0, 1, 0, False)
    for bad in ([b"set", b"k", b"-1", b"0", b"1"], [b"set", b"k", b"0", b"0", b"-1"],
                [b"set", b"k" * 251, b"0", b"0", b"1"], [b"set", b"k", b"0", b"0"]):  # fmt: skip
        assert store_line(bad) is None


def test_keys() -> None:
    assert key_ok(b"k" * 250) and not key_ok(b"k" * 251)
    assert not key_ok(b"a\x01b") and not key_ok(b"a\x7fb") and not key_ok(b"")


@given(st.integers(0, 2**32 - 1), VALUE, st.sampled_from([0, TOKEN_SENT, STALE, 3]))
def test_flags_and_state_round_trip(flags: int, value: bytes, state: int) -> None:
    stored = pack(flags, value, state)
    assert unpack_state(stored) == (flags, value, state)
    assert unpack(stored) == (flags, value)
    if flags == 0 and state == 0 and value[:1] not in (b"\xc0", b"\xc1"):
        assert stored == value  # plain bytes to the SDK and RESP


def test_expire_at() -> None:
    now = 1_800_000_000_000
    assert expire_at(0, now) == 0
    assert expire_at(-1, now) == EXPIRED
    assert expire_at(10, now) == now + 10_000
    assert expire_at(2_592_000, now) == now + 2_592_000_000
    assert expire_at(2_592_001, now) == EXPIRED  # a Unix time in 1970
    assert expire_at(1_900_000_000, now) == 1_900_000_000_000
    assert expire_at(2**31, now) == EXPIRED  # wraps to negative, as in memcached


def test_counters() -> None:
    assert counter(b"10") == 10 and counter(b"0 ") == 0 and counter(b" 7 ") == 7
    assert counter(b"ab") is None and counter(b"-1") is None and counter(b"") is None
    assert counter(b"18446744073709551616") is None
    assert apply(2**64 - 1, 2, True) == 1 and apply(5, 10, False) == 0
    assert render(0, b"10") == b"0 " and render(100, b"10") == b"100"


def test_a_multi_get_may_be_longer_than_other_lines() -> None:
    """Clients send multi-gets of any size unsplit; memcached reads them."""
    keys = [b"key:%d" % i for i in range(20_000)]
    line = b"get " + b" ".join(keys) + b"\r\n"
    parser = MemcacheParser(max_item=10, max_block=1 << 20, max_line=1024)
    pieces = [line[i : i + 1400] for i in range(0, len(line), 1400)]
    assert feed_all(parser, pieces) == [Request([b"get", *keys])]
    refused = MemcacheParser(max_item=10, max_block=1 << 20, max_line=1024)
    assert feed_all(refused, [b"delete " + b"k" * 700, b"k" * 700]) == []
    assert refused.error == "CLIENT_ERROR line too long"
