"""The RESP request parser: pure, tested without sockets (grid/frontends/resp/parser.py)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grid.frontends.resp.glob import match
from grid.frontends.resp.parser import INLINE_MAX, RespParser, parse_ll, split_inline

ARGS = st.lists(st.binary(max_size=40), min_size=1, max_size=6)


def multibulk(args: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def feed_all(parser: RespParser, pieces: list[bytes]) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    for piece in pieces:
        out.extend(parser.feed(piece))
    return out


def cut(stream: bytes, points: list[int]) -> list[bytes]:
    points = sorted({p for p in points if 0 < p < len(stream)})
    edges = [0, *points, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges)]


@given(st.lists(ARGS, max_size=12), st.lists(st.integers(0, 3000), max_size=40))
def test_any_split_of_a_stream_gives_the_same_requests(
    sent: list[list[bytes]], points: list[int]
) -> None:
    """TCP delivers the stream in pieces of any size: where they fall must not matter."""
    stream = b"".join(multibulk(a) for a in sent)
    parser = RespParser(1 << 20, 1 << 24)
    assert feed_all(parser, cut(stream, points)) == sent
    assert parser.error is None and not parser.partial


WORD = st.text("abcXYZ019:_-{}", min_size=1, max_size=12).map(str.encode)
WORDS = st.lists(WORD, min_size=1, max_size=5)


@given(st.lists(WORDS, max_size=8), st.lists(st.integers(0, 500), max_size=20))
def test_inline_requests_split_anywhere(sent: list[list[bytes]], points: list[int]) -> None:
    stream = b"".join(b" ".join(w) + b"\r\n" for w in sent)
    assert feed_all(RespParser(1 << 20, 1 << 24), cut(stream, points)) == sent


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=10))
def test_garbage_ends_in_requests_or_one_protocol_error(data: bytes, points: list[int]) -> None:
    """Whatever arrives, the parser answers requests or an error and holds bounded state."""
    whole = RespParser(64, 1024)
    split = RespParser(64, 1024)
    a = whole.feed(data)
    b = feed_all(split, cut(data, points))
    if whole.error is None and split.error is None:
        assert a == b
    assert whole.error is None or whole.error.startswith("Protocol error: ")


@pytest.mark.parametrize(
    ("stream", "error"),
    [
        (b"*1\r\nX3\r\nfoo\r\n", "Protocol error: expected '$', got 'X'"),
        (b"*abc\r\n", "Protocol error: invalid multibulk length"),
        (b"*1\r\n$-3\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$100\r\n", "Protocol error: invalid bulk length"),  # over max_bulk (64)
        (b"*2000000\r\n", "Protocol error: invalid multibulk length"),
        (b"*1\r\n$+3\r\n", "Protocol error: invalid bulk length"),
        (b'SET "a b\r\n', "Protocol error: unbalanced quotes in request"),
        (b'SET "a"b\r\n', "Protocol error: unbalanced quotes in request"),
    ],
)
def test_protocol_errors_say_what_redis_says(stream: bytes, error: str) -> None:
    parser = RespParser(64, 1024)
    assert parser.feed(stream) == []
    assert parser.error == error
    assert parser.feed(b"*1\r\n$4\r\nPING\r\n") == []  # nothing after an error


def test_requests_before_an_error_are_returned() -> None:
    parser = RespParser(64, 1024)
    assert parser.feed(b"*1\r\n$4\r\nPING\r\n*1\r\nX") == [[b"PING"]]
    assert parser.feed(b"\r\n") == []
    assert parser.error == "Protocol error: expected '$', got 'X'"


def test_lines_without_an_end_are_bounded() -> None:
    parser = RespParser(64, 1024)
    parser.feed(b"x" * (INLINE_MAX + 1))
    assert parser.error == "Protocol error: too big inline request"
    parser = RespParser(64, 1024)
    parser.feed(b"*1\r\n$" + b"1" * INLINE_MAX)
    assert parser.error == "Protocol error: too big bulk count string"
    parser = RespParser(64, 1024)
    parser.feed(b"*" + b"1" * (INLINE_MAX + 1))
    assert parser.error == "Protocol error: too big mbulk count string"


def test_a_request_larger_than_its_limit_is_refused_before_it_is_buffered() -> None:
    parser = RespParser(600, 1000)
    parser.feed(b"*3\r\n$3\r\nSET\r\n$500\r\n" + b"x" * 500 + b"\r\n$500\r\n")
    assert parser.error == "Protocol error: request larger than 1000 bytes"


def test_empty_requests_are_skipped() -> None:
    parser = RespParser(64, 1024)
    assert parser.feed(b"*0\r\n*-1\r\n\r\n\n  \r\n*1\r\n$4\r\nPING\r\n") == [[b"PING"]]


def test_a_large_bulk_waits_without_reparsing() -> None:
    parser = RespParser(1 << 20, 1 << 22)
    assert parser.feed(b"*2\r\n$3\r\nSET\r\n$100000\r\n") == []
    for _ in range(99):
        assert parser.feed(b"x" * 1000) == []
    assert parser.need > 0 and parser.partial
    assert parser.feed(b"x" * 1000 + b"\r\n") == [[b"SET", b"x" * 100000]]
    assert not parser.partial


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"set a b", [b"set", b"a", b"b"]),
        (b"  set   a\tb  ", [b"set", b"a", b"b"]),
        (b'set "a b" c', [b"set", b"a b", b"c"]),
        (b'set "\\x41\\n\\"" c', [b"set", b'A\n"', b"c"]),
        (b"set 'it\\'s' x", [b"set", b"it's", b"x"]),
        (b'set a"b c"', [b"set", b"ab c"]),
        (b"a\x0bb", [b"a\x0bb"]),
        (b"a\x0cb c", [b"a\x0cb", b"c"]),
        (b"", []),
        (b'"unbalanced', None),
        (b"'x'y", None),
    ],
)
def test_inline_words_follow_sdssplitargs(line: bytes, words: list[bytes] | None) -> None:
    assert split_inline(line) == words


@pytest.mark.parametrize(
    ("text", "value"),
    [(b"0", 0), (b"-1", -1), (b"9223372036854775807", (1 << 63) - 1),
     (b"-9223372036854775808", -(1 << 63)), (b"9223372036854775808", None), (b"01", None),
     (b"+1", None), (b" 1", None), (b"-0", None), (b"", None), (b"1.0", None), (b"1_0", None)],
)  # fmt: skip
def test_integers_parse_as_string2ll(text: bytes, value: int | None) -> None:
    assert parse_ll(text) == value


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        (b"*", b"anything", True),
        (b"h?llo", b"hello", True),
        (b"h*llo", b"heeeello", True),
        (b"h[ae]llo", b"hallo", True),
        (b"h[^e]llo", b"hello", False),
        (b"h[^e]llo", b"hallo", True),
        (b"h[a-b]llo", b"hbllo", True),
        (b"h[b-a]llo", b"hbllo", True),
        (b"h\\*llo", b"h*llo", True),
        (b"h\\*llo", b"hello", False),
        (b"a*", b"", False),
        (b"*", b"", True),
        (b"[abc", b"a", True),
        (b"user:*:name", b"user:42:name", True),
    ],
)
def test_glob_matches_as_redis(pattern: bytes, key: bytes, matches: bool) -> None:
    assert match(pattern, key) is matches


def test_a_nul_byte_hides_a_line_end_as_it_does_from_redis() -> None:
    """Redis finds line ends with strchr, which stops at NUL: it waits for more."""
    for stream in (b"*1\r\n$\x003\r\nfoo\r\n", b"*\x001\r\n", b"GET a\x00b\r\n"):
        parser = RespParser(64, 1024)
        assert parser.feed(stream) == []
        assert parser.error is None and parser.partial
        parser.feed(b"x" * (INLINE_MAX + 1))
        assert parser.error is not None and parser.error.startswith("Protocol error: too big")


class SlowOnly(RespParser):
    """The parser without its fast path, to hold the two to the same answers."""

    def _fast(self, buf: bytes, out: list[list[bytes]]) -> int:
        return 0


TRICKY = st.lists(
    st.lists(st.sampled_from([b"", b"a", b"\r\n", b"x\r\ny", b"$3", b"*1", b"GET"]), min_size=1,
             max_size=4),
    max_size=8,
)  # fmt: skip


@given(TRICKY, st.binary(max_size=20), st.integers(8, 64))
def test_the_fast_path_answers_as_the_full_parser(
    sent: list[list[bytes]], tail: bytes, limit: int
) -> None:
    """Arguments holding CR LF, limits hit, garbage after: the same requests and errors."""
    stream = b"".join(multibulk(a) for a in sent) + tail
    fast, slow = RespParser(limit, 4 * limit, 3), SlowOnly(limit, 4 * limit, 3)
    assert fast.feed(stream) == slow.feed(stream)
    assert fast.error == slow.error


@given(TRICKY, st.binary(max_size=20), st.lists(st.integers(0, 200), max_size=6))
def test_the_unbounded_fast_path_answers_as_the_full_parser(
    sent: list[list[bytes]], tail: bytes, points: list[int]
) -> None:
    """With a member's limits (no request of small arguments can reach one), the fast path
    counts no bytes: it must still take exactly the requests the full parser takes."""
    stream = b"".join(multibulk(a) for a in sent) + tail
    fast, slow = RespParser(1 << 24, 1 << 26), SlowOnly(1 << 24, 1 << 26)
    assert fast.unbounded
    assert feed_all(fast, cut(stream, points)) == feed_all(slow, cut(stream, points))
    assert fast.error == slow.error
    assert fast.partial == slow.partial
