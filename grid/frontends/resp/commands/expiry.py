"""Expiry: EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT (NX, XX, GT, LT), TTL, PTTL, EXPIRETIME,
PEXPIRETIME, PERSIST.

grid keeps an absolute expiry on the primary and takes a time to live on the wire,
so absolute times are turned into a TTL against this member's wall clock (and a
TTL back into a time for EXPIRETIME). A time at or before now deletes the key and
answers 1, as Redis does. Without NX/XX/GT/LT an expire is one grid EXPIRE (or
DELETE); with them it must compare against the current expiry first, so it is a
compare-and-set loop on the key (keyspace.py), as is PERSIST.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from grid.frontends.ops import Plan, Reply
from grid.frontends.resp.common import (
    NOT_INTEGER,
    expire_time_error,
    failed,
    int_arg,
    now_ms,
    result_error,
)
from grid.frontends.resp.keyspace import DELETE, EXPIRE, TTL, Current, delete_over, put_over, rmw
from grid.frontends.resp.replies import ONE, ZERO, error, integer
from grid.frontends.resp.table import ONE_KEY, command
from proto import grid_pb2 as pb

if TYPE_CHECKING:
    from grid.frontends.resp.server import RespConnection

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)
NX, XX, GT, LT = 1, 2, 4, 8
_FLAGS = {b"nx": NX, b"xx": XX, b"gt": GT, b"lt": LT}


def _expire(c: RespConnection, args: list[bytes], name: str, unit: int, absolute: bool) -> Reply:
    flags = 0
    for opt in args[3:]:
        flag = _FLAGS.get(opt.lower())
        if flag is None:
            return error(f"ERR Unsupported option {opt.decode(errors='replace')}")
        flags |= flag
    if flags & NX and flags & (XX | GT | LT):
        return error("ERR NX and XX, GT or LT options at the same time are not compatible")
    if flags & GT and flags & LT:
        return error("ERR GT and LT options at the same time are not compatible")
    when = int_arg(args[2])
    if when is None:
        return NOT_INTEGER
    if unit == 1000:
        if when > INT64_MAX // 1000 or when < INT64_MIN // 1000:
            return expire_time_error(name)
        when *= 1000
    base = 0 if absolute else now_ms()
    if when > INT64_MAX - base:
        return expire_time_error(name)
    when += base
    m, key = c.map, args[1]
    if not flags:
        if when <= now_ms():
            op = pb.Op(code=DELETE, map=m, key=key)
        else:
            op = pb.Op(code=EXPIRE, map=m, key=key, expire_at_ms=when)

        def finish(rs: Sequence[pb.Result]) -> bytes:
            r = rs[0]
            return integer(r.count) if not failed(r) else result_error(r)

        return Plan([op], finish)

    def step(cur: Current) -> tuple[list[pb.Op], bytes]:
        if cur.value is None:
            return [], ZERO
        now = now_ms()
        current = cur.expire_at or -1
        if flags & NX and current != -1:
            return [], ZERO
        if flags & XX and current == -1:
            return [], ZERO
        if flags & GT and (current == -1 or when <= current):
            return [], ZERO
        if flags & LT and current != -1 and when >= current:
            return [], ZERO
        if when <= now:
            return [delete_over(m, key, cur)], ONE
        return [put_over(m, key, cur, cur.value, when)], ONE

    return rmw(c.runner, m, key, name, step)


def expire(c: RespConnection, args: list[bytes]) -> Reply:
    return _expire(c, args, "expire", 1000, False)


def pexpire(c: RespConnection, args: list[bytes]) -> Reply:
    return _expire(c, args, "pexpire", 1, False)


def expireat(c: RespConnection, args: list[bytes]) -> Reply:
    return _expire(c, args, "expireat", 1000, True)


def pexpireat(c: RespConnection, args: list[bytes]) -> Reply:
    return _expire(c, args, "pexpireat", 1, True)


def _ttl(c: RespConnection, args: list[bytes], ms: bool, absolute: bool) -> Reply:
    def finish(rs: Sequence[pb.Result]) -> bytes:
        r = rs[0]
        if r.status == pb.NOT_FOUND:
            return integer(-2)
        if failed(r):
            return result_error(r)
        left = r.count
        if left == -1:
            return integer(-1)
        left = max(left, 0)
        if absolute:
            at = r.expire_at_ms
            return integer(at if ms else at // 1000)
        return integer(left if ms else (left + 500) // 1000)

    return Plan([pb.Op(code=TTL, map=c.map, key=args[1])], finish)


def ttl(c: RespConnection, args: list[bytes]) -> Reply:
    return _ttl(c, args, False, False)


def pttl(c: RespConnection, args: list[bytes]) -> Reply:
    return _ttl(c, args, True, False)


def expiretime(c: RespConnection, args: list[bytes]) -> Reply:
    return _ttl(c, args, False, True)


def pexpiretime(c: RespConnection, args: list[bytes]) -> Reply:
    return _ttl(c, args, True, True)


def persist(c: RespConnection, args: list[bytes]) -> Reply:
    m, key = c.map, args[1]

    def step(cur: Current) -> tuple[list[pb.Op], bytes]:
        if cur.value is None or not cur.expire_at:
            return [], ZERO
        return [put_over(m, key, cur, cur.value, 0)], ONE

    return rmw(c.runner, m, key, "persist", step)


_W = "write fast"
COMMANDS = [
    command("expire", -3, _W, ONE_KEY, "keyspace", expire),
    command("pexpire", -3, _W, ONE_KEY, "keyspace", pexpire),
    command("expireat", -3, _W, ONE_KEY, "keyspace", expireat),
    command("pexpireat", -3, _W, ONE_KEY, "keyspace", pexpireat),
    command("ttl", 2, "readonly fast", ONE_KEY, "keyspace", ttl),
    command("pttl", 2, "readonly fast", ONE_KEY, "keyspace", pttl),
    command("expiretime", 2, "readonly fast", ONE_KEY, "keyspace", expiretime),
    command("pexpiretime", 2, "readonly fast", ONE_KEY, "keyspace", pexpiretime),
    command("persist", 2, _W, ONE_KEY, "keyspace", persist),
]
