"""incr and decr: unsigned 64-bit decimal counters, as memcached keeps them.

The item's value is the counter's decimal text. incr wraps past 2^64 - 1; decr stops
at 0; a missing item is NOT_FOUND (memcached creates none); a value that is not a
number (leading and trailing spaces are allowed, as memcached's strtoull allows
them) is "CLIENT_ERROR cannot increment or decrement non-numeric value". A result
shorter than the value it replaces is padded with spaces to the old length, as
memcached does when it writes the number in place (protocol.txt allows it), so a
get after `decr` reads what it reads from memcached. Flags and expiry are kept.

A read-modify-write (keyspace.py): grid's INCR is signed and creates missing keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grid.frontends.memcached import replies as R
from grid.frontends.memcached.commands.storage import key_line, quiet
from grid.frontends.memcached.grammar import UINT64_MAX, unsigned
from grid.frontends.memcached.keyspace import Item, rmw, write_over
from grid.frontends.memcached.parser import Request
from grid.frontends.ops import Reply
from proto import grid_pb2 as pb

if TYPE_CHECKING:
    from grid.frontends.memcached.server import MemcachedConnection

_SPACES = b" \t\n\r\v\f"


def counter(value: bytes) -> int | None:
    """A stored value as memcached's incr reads it, or None if it is not a number."""
    digits = value.strip(_SPACES)
    if len(value) > 0 and value[:1] in _SPACES and not digits:
        return None
    return unsigned(digits) if digits else None


def apply(current: int, delta: int, incr: bool) -> int:
    if incr:
        return (current + delta) & UINT64_MAX
    return max(current - delta, 0)


def render(n: int, old: bytes) -> bytes:
    """The stored text of a new count: padded with spaces to `old`'s length if shorter."""
    text = b"%d" % n
    return text.ljust(len(old)) if len(text) < len(old) else text


def incr_decr(c: MemcachedConnection, req: Request) -> Reply:
    line = key_line(req.args)
    if isinstance(line, bytes):
        return line
    key, argument, noreply = line
    delta = unsigned(argument)
    if delta is None:
        return quiet(R.BAD_DELTA, noreply)
    incr = req.args[0] == b"incr"
    m, stats = c.map, c.stats

    def step(item: Item) -> tuple[list[pb.Op], bytes]:
        if item.value is None:
            if incr:
                stats.incr_misses += 1
            else:
                stats.decr_misses += 1
            return [], quiet(R.NOT_FOUND, noreply)
        current = counter(item.value)
        if current is None:
            return [], quiet(R.NON_NUMERIC, noreply)
        n = apply(current, delta, incr)
        if incr:
            stats.incr_hits += 1
        else:
            stats.decr_hits += 1
        new = render(n, item.value)
        return [write_over(m, key, item, item.flags, new, item.expire_at)], quiet(
            b"%d\r\n" % n, noreply
        )

    return rmw(c.runner, m, key, step, noreply=noreply)


COMMANDS = {b"incr": incr_decr, b"decr": incr_decr}
