"""The memcached login gate (grid/frontends/memcached/login.py) as a pure state machine:
every split of a stream gives the same answers, a login hands on exactly the bytes after
it, and a stream over the limits is closed."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from grid.frontends.memcached.login import (
    BAD_FORMAT,
    BAD_TERMINATION,
    FAILURE,
    MAX_BLOCK,
    MAX_LINE,
    STORED,
    UNAUTHENTICATED,
    LoginGate,
)

USERS = {b"alice": b"secret1"}
AFTER = b"set foo 0 0 1\r\na\r\nget foo\r\n"
STREAM = (
    b"get foo\r\n"  # unauthenticated
    b"add x 0 0 13\r\n"  # unauthenticated, and no block is read after it ...
    b"alice secret1\r\n"  # ... so this is a line of its own: unauthenticated
    b"set x 0 0 11\r\nalice wrong\r\n"  # failure
    b"set x 0 0 5\r\nalice\r\n"  # bad format
    b"set x 0 0 2\r\nabcd\r\n"  # bad termination ("ab" then "cd"), then "\r\n": a line
    b"set x 0 0 14 noreply\r\nalice  secret1\r\n"  # STORED (noreply or not)
) + AFTER
ANSWERS = [UNAUTHENTICATED, UNAUTHENTICATED, UNAUTHENTICATED, FAILURE, BAD_FORMAT,
           BAD_TERMINATION, UNAUTHENTICATED, STORED]  # fmt: skip


def gate() -> LoginGate:
    return LoginGate(lambda user, password: USERS.get(user) == password)


def test_one_write_is_answered_in_order_and_the_rest_handed_on() -> None:
    g = gate()
    answers, rest = g.feed(STREAM)
    assert answers == ANSWERS
    assert g.passed and rest == AFTER and not g.partial


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=12))
def test_any_split_gives_the_same_answers(cuts: list[int]) -> None:
    g = gate()
    answers: list[bytes] = []
    rest = b""
    bounds = [0, *sorted(set(cuts)), len(STREAM)]
    for a, b in itertools.pairwise(bounds):
        if g.passed:
            rest += STREAM[a:b]
            continue
        got, after = g.feed(STREAM[a:b])
        answers += got
        rest += after
    assert answers == ANSWERS and rest == AFTER


def test_limits_close_the_connection() -> None:
    long_line = gate()
    assert long_line.feed(b"x" * (MAX_LINE + 1)) == ([], b"")
    assert long_line.closed
    big_block = gate()
    assert big_block.feed(b"set x 0 0 %d\r\n" % (MAX_BLOCK + 1)) == ([], b"")
    assert big_block.closed
    fine = gate()
    fine.feed(b"x" * MAX_LINE)
    assert not fine.closed and fine.partial
