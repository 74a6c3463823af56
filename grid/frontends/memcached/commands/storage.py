"""Storage commands: set, add, replace, append, prepend, cas.

set/add/replace are one PUT each (add: IF_ABSENT, replace: IF_PRESENT). append,
prepend and cas read the item first (grid/frontends/memcached/keyspace.py says
why). As memcached does, a set whose value is too large also removes the key
(no stale value is left behind a failed set), append and prepend keep the item's
flags and expiry, and `noreply` silences every reply, errors about the request
included (as memcached 1.6.18 does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from grid.frontends.memcached import replies as R
from grid.frontends.memcached.grammar import KEY_MAX, key_ok
from grid.frontends.memcached.items import pack
from grid.frontends.memcached.keyspace import EXPIRED, Item, delete_over, expire_at, rmw, write_over
from grid.frontends.memcached.parser import BAD_CHUNK, TOO_LARGE, Request
from grid.frontends.ops import KeyPlan, Plan, Reply
from proto import grid_pb2 as pb

if TYPE_CHECKING:
    from grid.frontends.memcached.server import MemcachedConnection

ARGS = {b"set": 5, b"add": 5, b"replace": 5, b"append": 5, b"prepend": 5, b"cas": 6}
OK_STATUS, NOT_FOUND, CAS_FAILED = pb.OK, pb.NOT_FOUND, pb.CAS_FAILED
CONDITIONS = {b"set": 0, b"add": pb.IF_ABSENT, b"replace": pb.IF_PRESENT}


def quiet(reply: bytes, noreply: bool) -> bytes:
    """`noreply` hides a reply, errors included: memcached 1.6.18 sends nearly all of
    them through the path noreply skips, and a client that asked for no reply would
    read an unexpected one as the answer to its next command."""
    return b"" if noreply else reply


def key_line(args: Sequence[bytes]) -> tuple[bytes, bytes, bool] | bytes:
    """`<command> <key> <argument> [noreply]` (touch, incr, decr): the key, the argument
    and noreply; or, for a line of another shape or a bad key, memcached's reply."""
    if len(args) not in (3, 4):
        return R.ERROR
    key = args[1]
    if len(key) > KEY_MAX or not key_ok(key):
        return R.BAD_FORMAT
    return key, args[2], len(args) == 4 and args[3] == b"noreply"


def _stored(p: KeyPlan) -> bytes:
    """The reply to a set, add or replace (`ctx`: the connection): a lost condition
    (add of a present key, replace of an absent one) is NOT_STORED."""
    status = p.status
    if status == OK_STATUS:
        p.ctx.stats.total_items += 1
        return R.STORED
    if status in (CAS_FAILED, NOT_FOUND):
        return R.NOT_STORED
    return R.result_error(p)


def _stored_quietly(p: KeyPlan) -> bytes:
    _stored(p)
    return b""


def store(c: MemcachedConnection, req: Request) -> Reply:
    args = req.args
    name = args[0]
    line = req.head
    if line is None:
        return R.ERROR if len(args) not in (ARGS[name], ARGS[name] + 1) else R.BAD_FORMAT
    noreply, key = line.noreply, line.key
    c.stats.cmd_set += 1
    m = c.map
    if req.problem == TOO_LARGE:
        too_large = quiet(R.TOO_LARGE, noreply)
        if name == b"set":  # memcached drops the old value rather than keep a stale one
            return Plan([pb.Op(code=pb.DELETE, map=m, key=key)], lambda rs: too_large)
        return too_large
    if req.problem == BAD_CHUNK:
        return quiet(R.BAD_CHUNK, noreply)
    if not key_ok(key):
        return R.BAD_FORMAT
    assert req.data is not None
    value = req.data
    at = expire_at(line.exptime) if line.exptime else 0
    condition = CONDITIONS.get(name)
    if condition is not None:
        if at == EXPIRED:  # nothing is written; the answer is what the write would say
            return _expired(c, name, key, noreply)
        return KeyPlan(pb.PUT, key, pack(line.flags, value), c,
                       _stored_quietly if noreply else _stored, at, condition)  # fmt: skip
    if name == b"cas":
        return _cas(c, key, line.flags, value, at, line.cas, noreply)
    return _concat(c, key, value, name == b"append", noreply)


def _expired(c: MemcachedConnection, name: bytes, key: bytes, noreply: bool) -> Reply:
    m = c.map
    if name == b"add":
        op = pb.Op(code=pb.CONTAINS, map=m, key=key)
    else:
        op = pb.Op(code=pb.DELETE, map=m, key=key)

    def finish(rs: Sequence[pb.Result]) -> bytes:
        r = rs[0]
        if R.failed(r):
            return quiet(R.result_error(r), noreply)
        if name == b"set":
            return quiet(R.STORED, noreply)
        if name == b"add":
            return quiet(R.NOT_STORED if r.count else R.STORED, noreply)
        return quiet(R.STORED if r.count else R.NOT_STORED, noreply)

    return Plan([op], finish)


def _concat(c: MemcachedConnection, key: bytes, part: bytes, after: bool, noreply: bool) -> Reply:
    m, limit = c.map, c.max_item

    def step(item: Item) -> tuple[list[pb.Op], bytes]:
        if item.value is None:
            return [], quiet(R.NOT_STORED, noreply)
        new = item.value + part if after else part + item.value
        if len(new) > limit:
            return [], quiet(R.NO_MEMORY, noreply)
        return [write_over(m, key, item, item.flags, new, item.expire_at)], quiet(R.STORED, noreply)

    return rmw(c.runner, m, key, step, noreply=noreply)


def _cas(
    c: MemcachedConnection, key: bytes, flags: int, value: bytes, at: int, unique: int,
    noreply: bool,
) -> Reply:  # fmt: skip
    m, stats = c.map, c.stats

    def step(item: Item) -> tuple[list[pb.Op], bytes]:
        if item.value is None:
            stats.cas_misses += 1
            return [], quiet(R.NOT_FOUND, noreply)
        if item.cas != unique:
            stats.cas_badval += 1
            return [], quiet(R.EXISTS, noreply)
        stats.cas_hits += 1
        if at == EXPIRED:
            return [delete_over(m, key, item)], quiet(R.STORED, noreply)
        return [write_over(m, key, item, flags, value, at)], quiet(R.STORED, noreply)

    return rmw(c.runner, m, key, step, retry=False, lost=quiet(R.EXISTS, noreply), noreply=noreply)


COMMANDS = {name: store for name in ARGS}
