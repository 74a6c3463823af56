"""Grid operations on the memcached map: expiry times, and the read-modify-write loop.

Expiry (protocol.txt, "Expiration times"): 0 never expires; up to 30 days
(2,592,000 s) is seconds from now; more is a Unix time; a negative time, or a Unix
time already past, means the item is expired at once. grid takes absolute expiry
times on the wire (`expire_at_ms`), so an exptime becomes one against this member's
clock. An item "expired at once" is never written: a set of one deletes the key
(memcached stores it and it cannot be read), an add only checks the key.

Which commands are one grid operation, and which a loop:

- one operation each (atomic on the key's primary, batched with their pipeline):
  get/gets (GET), set/add/replace (PUT, with IF_ABSENT / IF_PRESENT), delete
  (DELETE), touch (EXPIRE), gat/gats (EXPIRE then GET), flush_all (CLEAR);
- a loop (`rmw`) for what must read the item to write it: append, prepend, incr,
  decr (the client flags are inside the stored bytes, and memcached's counters are
  unsigned 64-bit and wrap, which grid's INCR does not), and cas. Each reads the
  item (value, version, expiry), computes, and writes with IF_VERSION, starting
  over when another writer got in between; `cas` does not start over, since a
  writer in between is exactly its EXISTS.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from grid.frontends.memcached.items import pack, unpack_state
from grid.frontends.memcached.replies import failed, result_error
from grid.frontends.ops import Runner
from proto import grid_pb2 as pb

RELATIVE_MAX = 60 * 60 * 24 * 30
"""exptimes up to 30 days are relative (memcached's REALTIME_MAXDELTA)."""
EXPIRED = -1
"""`expire_at` of an exptime that is already past."""
RETRIES = 100
"""How often a read-modify-write starts over after losing a race to another writer of
its key before it answers SERVER_ERROR (each try is two round trips)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def expire_at(exptime: int, now: int | None = None) -> int:
    """The wall time (ms) an exptime means: 0 = never, EXPIRED = already past. memcached
    keeps an exptime in a signed 32-bit number, so a larger one wraps (2^31 is negative:
    expired), and so does it here."""
    exptime = ((exptime + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
    if exptime == 0:
        return 0
    if exptime < 0:
        return EXPIRED
    now = now_ms() if now is None else now
    if exptime <= RELATIVE_MAX:
        return now + exptime * 1000
    at = exptime * 1000
    return at if at > now else EXPIRED


def ttl_seconds(r: pb.Result, now: int | None = None) -> int:
    """An item's remaining time to live in whole seconds, -1 for none (memcached's 't')."""
    if not r.expire_at_ms:
        return -1
    left = r.expire_at_ms - (now_ms() if now is None else now)
    return max(0, (left + 999) // 1000)


class Item(NamedTuple):
    """An item as a read found it (value None: absent)."""

    value: bytes | None
    flags: int
    version: tuple[int, int]
    expire_at: int
    state: int = 0
    """The meta protocol's bits (items.py: TOKEN_SENT, STALE)."""

    @classmethod
    def of(cls, r: pb.Result) -> Item:
        if r.status != pb.OK:
            return cls(None, 0, (0, 0), 0)
        flags, value, state = unpack_state(r.value)
        return cls(value, flags, (r.version_ts, r.version_member), r.expire_at_ms, state)

    @property
    def cas(self) -> int:
        """The item's CAS unique: its version's HLC timestamp (docs/memcached.md)."""
        return self.version[0]


def write_over(
    m: str, key: bytes, item: Item, flags: int, value: bytes, at: int, state: int = 0
) -> pb.Op:
    """A write that succeeds only if the item is still as `item` saw it."""
    ts, member = item.version
    stored = pack(flags, value, state)
    if item.value is None:
        return pb.Op(code=pb.PUT, map=m, key=key, value=stored, expire_at_ms=at,
                     condition=pb.IF_ABSENT)  # fmt: skip
    return pb.Op(code=pb.PUT, map=m, key=key, value=stored, expire_at_ms=at,
                 condition=pb.IF_VERSION, expected_ts=ts, expected_member=member)  # fmt: skip


def delete_over(m: str, key: bytes, item: Item) -> pb.Op:
    ts, member = item.version
    return pb.Op(code=pb.DELETE, map=m, key=key, condition=pb.IF_VERSION, expected_ts=ts,
                 expected_member=member)  # fmt: skip


Step = Callable[[Item], "tuple[Sequence[pb.Op], bytes]"]
Done = Callable[[Sequence[pb.Result]], bytes]


async def rmw(
    runner: Runner, m: str, key: bytes, step: Step, retry: bool = True,
    lost: bytes = b"", done: Done | None = None, noreply: bool = False,
) -> bytes:  # fmt: skip
    """Read `key`, let `step` choose the writes and the reply, write, and start over if a
    write lost to another writer (unless `retry` is off: then answer `lost`). `done`, if
    given, makes the reply from the writes' results instead. `noreply`: grid's own
    errors are not answered either (the client reads no reply)."""
    get = pb.Op(code=pb.GET, map=m, key=key)
    for _ in range(RETRIES if retry else 1):
        r = (await runner.call([get]))[0]
        if failed(r):
            return b"" if noreply else result_error(r)
        ops, reply = step(Item.of(r))
        if not ops:
            return reply
        results = await runner.call(ops)
        if any(w.status == pb.CAS_FAILED for w in results):
            if retry:
                continue
            return lost
        for w in results:
            if failed(w):
                return b"" if noreply else result_error(w)
        return done(results) if done is not None else reply
    if noreply:
        return b""
    return b"SERVER_ERROR lost %d races in a row with other writers of the key\r\n" % RETRIES
