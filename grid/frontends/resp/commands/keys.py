"""Generic key commands: DEL, UNLINK, EXISTS, TYPE, TOUCH, RENAME, RENAMENX.

Every key is a string in grid, so TYPE answers "string" or "none" and WRONGTYPE
never happens. UNLINK is DEL (a delete frees its entry at once either way).

RENAME moves a value between two keys, which must live in one partition: the
write to the new name and the delete of the old one then go to one primary in one
batch and are applied together under its lock. Keys of different partitions are
refused with Redis Cluster's CROSSSLOT error, whose remedy is grid's too: give
both names the same hash tag ("{user1}:a", "{user1}:b"). The move is a
compare-and-set on the source (keyspace.py): it retries if the source changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from grid.frontends.ops import Plan, Reply
from grid.frontends.resp.common import NO_SUCH_KEY, failed, result_error
from grid.frontends.resp.keyspace import (
    CONTAINS,
    DELETE,
    IF_ABSENT,
    PUT,
    TOUCH,
    Current,
    delete_over,
    rmw,
)
from grid.frontends.resp.replies import OK, ONE, ZERO, error, integer, simple
from grid.frontends.resp.table import ALL_KEYS, command
from partitioning import partition_of
from proto import grid_pb2 as pb

if TYPE_CHECKING:
    from grid.frontends.resp.server import RespConnection

CROSSSLOT = error(
    "CROSSSLOT Keys in request don't hash to the same slot (grid: both keys must be in "
    "one partition; give them the same hash tag, e.g. {user1}:a and {user1}:b)"
)
STRING = simple("string")
NONE = simple("none")


def _count(c: RespConnection, code: int, keys: Sequence[bytes]) -> Reply:
    """One op per key, the reply the sum of their counts (DEL, EXISTS, TOUCH)."""
    m = c.map
    ops = [pb.Op(code=code, map=m, key=k) for k in keys]

    def finish(rs: Sequence[pb.Result]) -> bytes:
        total = 0
        for r in rs:
            if failed(r):
                return result_error(r)
            total += r.count
        return integer(total)

    if len(ops) > c.runner.max_ops:
        return _sum_later(c, ops, finish)
    return Plan(ops, finish)


async def _sum_later(c: RespConnection, ops: list[pb.Op], finish: object) -> bytes:
    return finish(await c.runner.call(ops))  # type: ignore[operator,no-any-return]


def delete(c: RespConnection, args: list[bytes]) -> Reply:
    return _count(c, DELETE, args[1:])


def exists(c: RespConnection, args: list[bytes]) -> Reply:
    return _count(c, CONTAINS, args[1:])


def touch(c: RespConnection, args: list[bytes]) -> Reply:
    return _count(c, TOUCH, args[1:])


def type_(c: RespConnection, args: list[bytes]) -> Reply:
    def finish(rs: Sequence[pb.Result]) -> bytes:
        r = rs[0]
        if failed(r):
            return result_error(r)
        return STRING if r.count else NONE

    return Plan([pb.Op(code=CONTAINS, map=c.map, key=args[1])], finish)


def _rename(c: RespConnection, args: list[bytes], nx: bool) -> Reply:
    src, dst = args[1], args[2]
    partitions = c.config.partitions
    apart = partition_of(src, partitions) != partition_of(dst, partitions)
    m = c.map
    name = "renamenx" if nx else "rename"

    def step(cur: Current) -> tuple[list[pb.Op], bytes]:
        if cur.value is None:
            return [], NO_SUCH_KEY
        if apart:
            return [], CROSSSLOT
        if src == dst:
            return [], ZERO if nx else OK
        put = pb.Op(code=PUT, map=m, key=dst, value=cur.value, expire_at_ms=cur.expire_at,
                    condition=IF_ABSENT if nx else 0)  # fmt: skip
        return [put, delete_over(m, src, cur)], ONE if nx else OK

    if not nx:
        return rmw(c.runner, m, src, name, step)
    return _renamenx(c, src, dst, step)


async def _renamenx(c: RespConnection, src: bytes, dst: bytes, step: object) -> bytes:
    """RENAMENX: 0 when the new name exists (its IF_ABSENT write fails), else RENAME."""
    m = c.map
    found = (await c.runner.call([pb.Op(code=CONTAINS, map=m, key=src),
                                  pb.Op(code=CONTAINS, map=m, key=dst)]))  # fmt: skip
    for r in found:
        if failed(r):
            return result_error(r)
    if not found[0].count:
        return NO_SUCH_KEY
    if partition_of(src, c.config.partitions) != partition_of(dst, c.config.partitions):
        return CROSSSLOT
    if found[1].count:
        return ZERO
    return await rmw(c.runner, m, src, "renamenx", step)  # type: ignore[arg-type]


def rename(c: RespConnection, args: list[bytes]) -> Reply:
    return _rename(c, args, False)


def renamenx(c: RespConnection, args: list[bytes]) -> Reply:
    return _rename(c, args, True)


COMMANDS = [
    command("del", -2, "write", ALL_KEYS, "keyspace", delete),
    command("unlink", -2, "write fast", ALL_KEYS, "keyspace", delete),
    command("exists", -2, "readonly fast", ALL_KEYS, "keyspace", exists),
    command("touch", -2, "readonly fast", ALL_KEYS, "keyspace", touch),
    command("type", 2, "readonly fast", (1, 1, 1), "keyspace", type_),
    command("rename", 3, "write", (1, 2, 1), "keyspace", rename),
    command("renamenx", 3, "write fast", (1, 2, 1), "keyspace", renamenx),
]
