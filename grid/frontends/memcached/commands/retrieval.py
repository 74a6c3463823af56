"""Retrieval commands: get, gets, gat, gats.

A get of N keys is one Plan of N GETs (split into batches past max_batch_ops); a
gat is an EXPIRE then a GET per key, in one batch, so the value read is the one
touched. The CAS unique `gets` shows is the item's version (keyspace.Item.cas).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from grid.frontends.memcached import replies as R
from grid.frontends.memcached.grammar import key_ok, number
from grid.frontends.memcached.items import unpack
from grid.frontends.memcached.keyspace import EXPIRED, expire_at
from grid.frontends.memcached.parser import Request
from grid.frontends.ops import KeyPlan, Plan, Reply
from proto import grid_pb2 as pb

OK_STATUS, NOT_FOUND = pb.OK, pb.NOT_FOUND

if TYPE_CHECKING:
    from grid.frontends.memcached.server import MemcachedConnection


def _values(
    c: MemcachedConnection, keys: list[bytes], with_cas: bool, rs: Sequence[pb.Result]
) -> bytes:
    stats = c.stats
    out = []
    for key, r in zip(keys, rs, strict=True):
        if r.status == pb.OK:
            stats.get_hits += 1
            flags, value = unpack(r.value)
            if with_cas:
                out.append(b"VALUE %b %d %d %d\r\n%b\r\n" % (key, flags, len(value), r.version_ts,
                                                             value))  # fmt: skip
            else:
                out.append(b"VALUE %b %d %d\r\n%b\r\n" % (key, flags, len(value), value))
        elif r.status == pb.NOT_FOUND:
            stats.get_misses += 1
        else:
            return R.result_error(r)
    out.append(R.END)
    return b"".join(out)


def _one(p: KeyPlan) -> bytes:
    """The reply to a get of one key (the commonest), from its KeyPlan; `_values` for one."""
    status = p.status
    if status == OK_STATUS:
        p.ctx.stats.get_hits += 1
        flags, value = unpack(p.value)
        return b"VALUE %b %d %d\r\n%b\r\nEND\r\n" % (p.key, flags, len(value), value)
    if status == NOT_FOUND:
        p.ctx.stats.get_misses += 1
        return R.END
    return R.result_error(p)


def _one_with_cas(p: KeyPlan) -> bytes:
    if p.status == OK_STATUS:
        p.ctx.stats.get_hits += 1
        flags, value = unpack(p.value)
        return b"VALUE %b %d %d %d\r\n%b\r\nEND\r\n" % (p.key, flags, len(value),
                                                         p.version_ts, value)  # fmt: skip
    return _one(p)


def _plan(c: MemcachedConnection, ops: list[pb.Op], finish: object) -> Reply:
    if len(ops) > c.runner.max_ops:
        return _call(c, ops, finish)
    return Plan(ops, finish)  # type: ignore[arg-type]


async def _call(c: MemcachedConnection, ops: list[pb.Op], finish: object) -> bytes:
    return finish(await c.runner.call(ops))  # type: ignore[operator,no-any-return]


def get(c: MemcachedConnection, req: Request) -> Reply:
    args = req.args
    if len(args) < 2:
        return R.ERROR
    keys = args[1:]
    if not all(map(key_ok, keys)):
        return R.BAD_FORMAT
    c.stats.cmd_get += len(keys)
    m = c.map
    with_cas = args[0] == b"gets"
    if len(keys) == 1:
        return KeyPlan(pb.GET, keys[0], b"", c, _one_with_cas if with_cas else _one)
    ops = [pb.Op(code=pb.GET, map=m, key=k) for k in keys]
    return _plan(c, ops, lambda rs: _values(c, keys, with_cas, rs))


def gat(c: MemcachedConnection, req: Request) -> Reply:
    args = req.args
    if len(args) < 2:
        return R.ERROR
    exptime = number(args[1])
    if exptime is None:
        return R.BAD_EXPTIME
    keys = args[2:]
    if not keys:
        return R.END
    if not all(map(key_ok, keys)):
        return R.BAD_FORMAT
    stats = c.stats
    stats.cmd_get += len(keys)
    stats.cmd_touch += len(keys)
    m = c.map
    at = expire_at(exptime)
    with_cas = args[0] == b"gats"
    ops = []
    for k in keys:  # the value read is the touched one; one touched into the past is
        # shown once, then gone (as memcached answers it)
        if at == EXPIRED:
            ops.append(pb.Op(code=pb.GET, map=m, key=k))
            ops.append(pb.Op(code=pb.DELETE, map=m, key=k))
        else:  # (expire_at_ms 0 with ttl_ms 0: no expiry)
            ops.append(pb.Op(code=pb.EXPIRE, map=m, key=k, expire_at_ms=at))
            ops.append(pb.Op(code=pb.GET, map=m, key=k))
    evens, odds = slice(0, None, 2), slice(1, None, 2)
    reads, touches = (evens, odds) if at == EXPIRED else (odds, evens)

    def finish(rs: Sequence[pb.Result]) -> bytes:
        for r in rs[touches]:
            if R.failed(r):
                return R.result_error(r)
            if r.count:
                stats.touch_hits += 1
            else:
                stats.touch_misses += 1
        return _values(c, keys, with_cas, rs[reads])

    return _plan(c, ops, finish)


COMMANDS = {b"get": get, b"gets": get, b"gat": gat, b"gats": gat}
